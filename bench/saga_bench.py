"""End-to-end throughput and latency of the checkout saga, through the HTTP API.

    python -m bench.saga_bench --n 2000 --concurrency 64            # spawn the app
    python -m bench.saga_bench --n 2000 --concurrency 64 --reps 3   # 3 fresh runs + summary
    python -m bench.saga_bench --url http://127.0.0.1:8000          # a running app

It seeds a catalog and customers through the API, then C concurrent clients
each place an order and wait for its terminal status, then go on with the next
order: by default in one request (``POST /orders`` with ``Prefer: wait=30``,
which answers once the order has ended), with ``--poll`` in two (the POST, then
the long poll ``GET /orders/{id}?wait=30``, as before that header existed). A
deterministic fraction of the orders ship to a country that is not served, so
their saga compensates (stock released, payment refunded, order cancelled);
``--fail-mode mixed`` rotates payment, stock and shipping failures instead.

stdout: one JSON object per run; with ``--reps`` a line per run (each in a fresh
bench process, and with ``--spawn`` a fresh app and data dir) and a summary
line. Progress goes to stderr. The exit status is non-zero if any run had
errors or, when spawned, invariant violations in the audit of the databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.environment import ROOT, admin_headers, free_port, git_state, machine
from bench.invariants import audit, counts
from bench.lean_http import LeanClient
from bench.orders import order_body
from bench.soak import RssSampler, db_sizes, window_rates

SERVED_COUNTRY = "DE"
UNSERVED_COUNTRY = "AQ"  # not in the default shipping countries
N_SKUS = 20
N_CUSTOMERS = 50
STOCK = 10**9
BALANCE = 10**12
WAIT_S = 30
ORDER_TIMEOUT_S = 120.0
JSON_HEADERS = {"content-type": "application/json"}
WAITING_HEADERS = {**JSON_HEADERS, "prefer": f"wait={WAIT_S}"}
REASONS = {
    "shipping": "shipping failed: country_not_served",
    "payment": "payment failed: insufficient_funds",
    "stock": "stock failed: insufficient_stock",
}


def log(message: str) -> None:
    print(f"[saga_bench] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces: fields are counted after its ")".
    fields = stat.rpartition(")")[2].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """All CPUs' (busy, total) seconds since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def cpu_idle_percent(seconds: float = 3.0) -> float:
    """The machine's idle CPU share over ``seconds``."""
    busy0, total0 = machine_cpu()
    time.sleep(seconds)
    busy1, total1 = machine_cpu()
    return 100.0 - 100.0 * (busy1 - busy0) / max(total1 - total0, 1e-9)


def wait_for_idle(percent: float, max_wait: float) -> float:
    """Block until the CPUs are at least ``percent`` idle (or ``max_wait`` s passed)."""
    deadline = time.monotonic() + max_wait
    while True:
        idle = cpu_idle_percent()
        if idle >= percent or time.monotonic() > deadline:
            return round(idle, 1)
        log(f"machine busy ({idle:.0f}% idle < {percent:.0f}%): waiting")


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the workload --------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Which orders are placed, and which of them must compensate (and why)."""

    tag: str
    fail_fraction: float
    fail_mode: str
    seed: int = 0
    skus: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, tag: str, fail_fraction: float, fail_mode: str, seed: int) -> Workload:
        return cls(
            tag,
            fail_fraction,
            fail_mode,
            seed,
            [f"{tag}-sku-{i:02d}" for i in range(N_SKUS)],
            [f"{tag}-cust-{i:02d}" for i in range(N_CUSTOMERS)],
        )

    @property
    def broke_customer(self) -> str:
        return f"{self.tag}-broke"

    @property
    def sold_out_sku(self) -> str:
        return f"{self.tag}-sold-out"

    def products(self) -> dict[str, tuple[int, int]]:
        """``{sku: (price_cents, stock)}``."""
        rng = random.Random(self.seed)
        products = {sku: (rng.randrange(100, 5000), STOCK) for sku in self.skus}
        if self.fail_mode == "mixed":
            products[self.sold_out_sku] = (100, 0)
        return products

    def balances(self) -> dict[str, int]:
        balances = dict.fromkeys(self.customers, BALANCE)
        if self.fail_mode == "mixed":
            balances[self.broke_customer] = 0
        return balances

    def failure(self, index: int) -> str | None:
        """The step at which order ``index`` fails, or None: exactly round(n * f) of n fail."""
        f = self.fail_fraction
        if int((index + 1) * f) == int(index * f):
            return None
        if self.fail_mode == "shipping":
            return "shipping"
        return ("shipping", "payment", "stock")[int(index * f) % 3]

    def order(self, index: int) -> dict[str, Any]:
        rng = random.Random(self.seed * 1_000_003 + index)
        lines = rng.randint(1, 3)
        items = {sku: rng.randint(1, 3) for sku in rng.sample(self.skus, lines)}
        customer = self.customers[index % len(self.customers)]
        country = SERVED_COUNTRY
        failure = self.failure(index)
        if failure == "shipping":
            country = UNSERVED_COUNTRY
        elif failure == "payment":
            customer = self.broke_customer
        elif failure == "stock":
            items[self.sold_out_sku] = 1
        return order_body(customer, items, country=country)


# -- the clients ---------------------------------------------------------------


@dataclass
class Phase:
    latencies_ms: list[float] = field(default_factory=list)
    # The same latencies by final status: a compensated saga runs twice the messages.
    by_status_ms: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    first_start: float = math.inf
    last_end: float = 0.0
    ends: list[float] = field(default_factory=list)  # completion times (for --soak)


async def seed(
    client: httpx.AsyncClient, workload: Workload, urls: dict[str, str] | None = None
) -> None:
    """Products to inventory, customers to payment (by default both on the client's base URL)."""
    urls = urls or {"inventory": "", "payment": ""}

    async def put(path: str, body: dict[str, Any]) -> None:
        response = await client.put(path, json=body)
        if response.status_code != 200:
            raise RuntimeError(f"PUT {path}: {response.status_code} {response.text}")

    await asyncio.gather(
        *(
            put(
                f"{urls['inventory']}/products/{sku}",
                {"name": sku, "price_cents": price, "stock": stock},
            )
            for sku, (price, stock) in workload.products().items()
        ),
        *(
            put(f"{urls['payment']}/customers/{cid}", {"name": cid, "balance_cents": balance})
            for cid, balance in workload.balances().items()
        ),
    )


Client = httpx.AsyncClient | LeanClient
TRANSPORT_ERRORS = (httpx.TransportError, OSError, TimeoutError)


async def one_saga(
    client: Client, workload: Workload, index: int, phase: Phase, *, poll: bool
) -> None:
    start = time.perf_counter()
    phase.first_start = min(phase.first_start, start)
    payload = json.dumps(workload.order(index)).encode()
    phase.requests += 1
    while True:
        try:
            response = await client.post(
                "/orders", content=payload, headers=JSON_HEADERS if poll else WAITING_HEADERS
            )
        except TRANSPORT_ERRORS as exc:
            raise RuntimeError(f"POST /orders: {exc!r}") from exc
        # Across processes the order module learns of the catalog a moment after
        # the PUTs: during the warm-up an order can meet an unknown sku.
        if response.status_code != 422 or time.perf_counter() - start > 10:
            break
        await asyncio.sleep(0.05)
    if response.status_code != 202:
        raise RuntimeError(f"POST /orders: {response.status_code} {response.text[:200]}")
    body = response.json()
    order_id = body["order_id"]
    while body["status"] == "PENDING":
        phase.requests += 1
        try:
            response = await client.get(f"/orders/{order_id}?wait={WAIT_S}")
        except TRANSPORT_ERRORS as exc:
            raise RuntimeError(f"GET /orders/{order_id}: {exc!r}") from exc
        if response.status_code != 200:
            raise RuntimeError(f"GET /orders/{order_id}: {response.status_code}")
        body = response.json()
        if body["status"] == "PENDING" and time.perf_counter() - start > ORDER_TIMEOUT_S:
            raise RuntimeError(f"order {order_id} still PENDING after {ORDER_TIMEOUT_S} s")
    end = time.perf_counter()
    phase.last_end = max(phase.last_end, end)
    phase.ends.append(end)
    latency_ms = (end - start) * 1000
    phase.latencies_ms.append(latency_ms)
    status = body["status"]
    phase.outcomes[status] = phase.outcomes.get(status, 0) + 1
    phase.by_status_ms.setdefault(status, []).append(latency_ms)
    failure = workload.failure(index)
    want = "CANCELLED" if failure else "COMPLETED"
    if status != want or (failure and body.get("reason") != REASONS[failure]):
        raise RuntimeError(
            f"order #{index} {order_id}: {status} ({body.get('reason')}), expected {want}"
            + (f" ({REASONS[failure]})" if failure else "")
        )


async def drive(
    clients: Sequence[Client],
    workload: Workload,
    first: int,
    count: int,
    concurrency: int,
    *,
    poll: bool = False,
) -> Phase:
    phase = Phase()
    next_index = first
    end_index = first + count
    progress_every = max(count // 10, 1)

    async def worker(client: Client) -> None:
        nonlocal next_index
        while next_index < end_index:
            index = next_index
            next_index += 1
            try:
                await one_saga(client, workload, index, phase, poll=poll)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                phase.errors.append(f"{type(exc).__name__}: {exc}")
            done = len(phase.latencies_ms) + len(phase.errors)
            if done % progress_every == 0:
                log(f"  {done}/{count} sagas done")

    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(concurrency)))
    return phase


# -- the app -------------------------------------------------------------------


SPLIT = ("order", "payment", "inventory", "shipping", "checkout")


def layout(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules of each process the app runs as (``all``: one process)."""
    if args.processes:
        return tuple(args.processes.split("/"))
    return SPLIT if args.split else ("all",)


class App:
    """The app as subprocesses on a fresh data dir and free ports: one process with
    every module, or several, each running the modules of one entry of ``layout``
    (``--split``: one per module; ``--processes``: any grouping)."""

    def __init__(
        self,
        synchronous: str,
        keep: bool,
        saga: str = "orchestration",
        bus: str = "memory",
        kafka_bootstrap: str = "127.0.0.1:9092",
        layout: Sequence[str] = ("all",),
    ) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="saga-bench-"))
        self.data_dir = self.workdir / "data"
        self.synchronous = synchronous
        self.saga = saga
        self.bus = bus
        self.kafka_bootstrap = kafka_bootstrap
        self.keep = keep
        self.ports = {modules: free_port() for modules in layout}
        self.log_path = self.workdir / "app.log"
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.killed = False
        self.extra_args: list[str] = []  # --app-args

    def url_of(self, module: str) -> str:
        port = next(
            port
            for modules, port in self.ports.items()
            if modules == "all" or module in modules.split(",")
        )
        return f"http://127.0.0.1:{port}"

    @property
    def url(self) -> str:
        return self.url_of("order")

    @property
    def pid(self) -> int | None:
        """The first process (for logs); ``pids`` has them all."""
        return next(iter(self.procs.values())).pid if self.procs else None

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs.values()]

    async def start(self) -> None:
        prefix = f"bench{os.getpid()}x{int(time.time())}."
        with self.log_path.open("wb") as app_log:
            for module, port in self.ports.items():
                cmd = [
                    sys.executable, str(ROOT / "main.py"), "--data-dir", str(self.data_dir),
                    "--port", str(port), "--log-level", "WARNING",
                    "--synchronous", self.synchronous, "--saga", self.saga,
                    "--bus", self.bus, "--modules", module,
                ]  # fmt: skip
                if self.bus == "kafka":
                    cmd += ["--kafka-bootstrap", self.kafka_bootstrap, "--kafka-prefix", prefix]
                cmd += self.extra_args
                log(f"starting app: {' '.join(cmd)}")
                self.procs[module] = await asyncio.create_subprocess_exec(
                    *cmd, cwd=ROOT, stdout=app_log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            for module, port in self.ports.items():
                while True:
                    proc = self.procs[module]
                    if proc.returncode is not None:
                        raise RuntimeError(f"app exited with {proc.returncode}: {self.log_tail()}")
                    with contextlib.suppress(httpx.TransportError):
                        health = await client.get(f"http://127.0.0.1:{port}/health")
                        if health.status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"app not healthy after 60 s: {self.log_tail()}")
                    await asyncio.sleep(0.1)
        log(f"app pid {self.pid} healthy (all pids {self.pids}), orders on {self.url},"
            f" data in {self.data_dir}")  # fmt: skip

    async def stop(self) -> int | None:
        """SIGTERM, then wait; uvicorn re-raises the signal after its graceful
        shutdown, so a clean stop exits with -15. Returns the first bad exit code."""
        codes = []
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                log("app did not stop within 30 s of SIGTERM: killing it")
                self.killed = True
                proc.kill()
                await proc.wait()
            codes.append(proc.returncode)
        return next((c for c in codes if c != -signal.SIGTERM), codes[0] if codes else None)

    def log_tail(self, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def cleanup(self) -> None:
        if self.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- one run -------------------------------------------------------------------


def _cpu(pids: list[int]) -> float | None:
    """CPU seconds of all the app's processes."""
    seconds = [proc_cpu_seconds(pid) for pid in pids]
    return None if not pids or None in seconds else sum(s for s in seconds if s is not None)


async def run_once(args: argparse.Namespace) -> dict[str, Any]:
    admin_headers()  # before the app starts: it inherits the token from the environment
    app = (
        None
        if args.url
        else App(
            args.synchronous, args.keep, args.saga, args.bus, args.kafka_bootstrap, layout(args)
        )
    )
    tag = f"b{os.getpid()}x{int(time.time()) % 100000}"
    workload = Workload.build(tag, args.fail_fraction, args.fail_mode, args.seed)
    record: dict[str, Any] = {"kind": "run"}
    if app is not None:
        app.extra_args = shlex.split(args.app_args)
    try:
        if app is not None:
            await app.start()
        url = args.url or (app.url if app else "")
        # Each client's pool holds a connection per worker it serves. Idle
        # connections expire before uvicorn's 5 s keep-alive timeout closes
        # them, so that a request never races the server's close.
        per_client = math.ceil(args.concurrency / args.clients)
        limits = httpx.Limits(
            max_connections=per_client, max_keepalive_connections=per_client, keepalive_expiry=2.0
        )
        timeout = httpx.Timeout(WAIT_S + 30, connect=10)
        async with contextlib.AsyncExitStack() as stack:
            seeder = await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, headers=admin_headers(), timeout=timeout)
            )
            clients: list[Client] = [
                await stack.enter_async_context(
                    LeanClient(
                        url, headers=admin_headers(), connections=per_client, timeout=WAIT_S + 30
                    )
                    if args.client == "lean"
                    else httpx.AsyncClient(
                        base_url=url, headers=admin_headers(), limits=limits, timeout=timeout
                    )
                )
                for _ in range(args.clients)
            ]
            log(f"seeding {N_SKUS} products and {N_CUSTOMERS} customers (tag {tag})")
            urls = (
                {"inventory": app.url_of("inventory"), "payment": app.url_of("payment")}
                if app
                else None
            )
            await seed(seeder, workload, urls)
            if args.warmup:
                log(f"warm-up: {args.warmup} sagas")
                warm = await drive(
                    clients, workload, 0, args.warmup, args.concurrency, poll=args.poll
                )
                if warm.errors:
                    log(f"warm-up errors: {warm.errors[:3]}")
            pid = app.pid if app else None
            pids = app.pids if app else []
            load_before = loadavg()
            cpu_app_0 = _cpu(pids)
            cpu_self_0 = self_cpu_seconds()
            machine_0 = machine_cpu()
            log(f"measuring: {args.n} sagas, C={args.concurrency}, load {load_before}")
            with RssSampler(pids, args.soak_every) as rss:
                phase = await drive(
                    clients, workload, args.warmup, args.n, args.concurrency, poll=args.poll
                )
            if args.soak:
                record["soak"] = {**window_rates(phase.first_start, phase.ends), **rss.report()}
            cpu_app_1 = _cpu(pids)
            cpu_self_1 = self_cpu_seconds()
            machine_1 = machine_cpu()
            load_after = loadavg()
        wall = phase.last_end - phase.first_start if phase.latencies_ms else math.nan
        lat = sorted(phase.latencies_ms)
        expected_cancelled = sum(
            1 for i in range(args.warmup, args.warmup + args.n) if workload.failure(i)
        )
        app_cpu = cpu_app_1 - cpu_app_0 if cpu_app_0 is not None and cpu_app_1 is not None else None
        client_cpu = cpu_self_1 - cpu_self_0
        machine_busy = machine_1[0] - machine_0[0]
        machine_span = machine_1[1] - machine_0[1]
        record.update(
            {
                "n": args.n,
                "concurrency": args.concurrency,
                "clients": args.clients,
                "client": args.client,
                "protocol": "poll" if args.poll else "prefer-wait",
                "warmup": args.warmup,
                "fail_fraction": args.fail_fraction,
                "fail_mode": args.fail_mode,
                "spawned": app is not None,
                "synchronous": args.synchronous if app is not None else "unknown (--url)",
                "saga": args.saga if app is not None else "unknown (--url)",
                "bus": args.bus if app is not None else "unknown (--url)",
                "processes": len(pids) if app is not None else None,
                "wall_s": round(wall, 3),
                "sagas_per_s": round(len(lat) / wall, 1) if lat else 0.0,
                "p50_ms": round(percentile(lat, 50), 2),
                "p95_ms": round(percentile(lat, 95), 2),
                "p99_ms": round(percentile(lat, 99), 2),
                "max_ms": round(lat[-1], 2) if lat else math.nan,
                "latency_by_status_ms": {
                    status: {f"p{p}": round(percentile(sorted(values), p), 2) for p in (50, 95, 99)}
                    for status, values in sorted(phase.by_status_ms.items())
                },
                "outcomes": {
                    "COMPLETED": phase.outcomes.get("COMPLETED", 0),
                    "CANCELLED": phase.outcomes.get("CANCELLED", 0),
                },
                "expected_cancelled": expected_cancelled,
                "http_requests": phase.requests,
                "errors": len(phase.errors),
                "error_samples": phase.errors[:5],
                "loadavg_before": load_before,
                "loadavg_after": load_after,
                "app_pid": pid,
                "app_cpu_s": round(app_cpu, 2) if app_cpu is not None else None,
                "app_cpu_ms_per_saga": round(app_cpu * 1000 / args.n, 2)
                if app_cpu is not None
                else None,
                "app_cpu_cores": round(app_cpu / wall, 2) if app_cpu is not None and lat else None,
                "client_cpu_s": round(client_cpu, 2),
                "client_cpu_ms_per_saga": round(client_cpu * 1000 / args.n, 2),
                # All CPUs during the measured phase: how busy the machine was,
                # and how much of that was neither the app nor this client.
                "machine_busy_percent": round(100 * machine_busy / max(machine_span, 1e-9), 1),
                "other_cpu_cores": round((machine_busy - client_cpu - (app_cpu or 0)) / wall, 2)
                if lat
                else None,
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "machine": machine(),
                "git": git_state(),
                "url": url,
            }
        )
    finally:
        if app is not None:
            rc = await app.stop()
            log(f"app stopped (exit code {rc})")
            record["app_exit_code"] = rc
            record["app_killed"] = app.killed
    if app is not None:
        if args.soak:
            record.setdefault("soak", {})["db_bytes"] = db_sizes(app.data_dir)
        try:
            products = workload.products()
            violations = audit(
                app.data_dir,
                initial_stock={sku: stock for sku, (_, stock) in products.items()},
                initial_balance=workload.balances(),
            )
            record["orders_in_db"] = counts(app.data_dir)
            record["violations"] = len(violations)
            record["violation_samples"] = violations[:5]
            if violations:
                log(f"{len(violations)} invariant violations; app log tail:\n{app.log_tail()}")
        finally:
            app.cleanup()
    return record


def run_failed(record: dict[str, Any]) -> bool:
    return bool(record.get("errors")) or bool(record.get("violations"))


# -- repetitions ---------------------------------------------------------------


def child_argv(args: argparse.Namespace) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "bench.saga_bench",
        "--reps",
        "1",
        "--n",
        str(args.n),
        "--concurrency",
        str(args.concurrency),
        "--clients",
        str(args.clients),
        "--client",
        args.client,
        "--warmup",
        str(args.warmup),
        "--fail-fraction",
        str(args.fail_fraction),
        "--fail-mode",
        args.fail_mode,
        "--synchronous",
        args.synchronous,
        "--saga",
        args.saga,
        "--seed",
        str(args.seed),
        "--bus",
        args.bus,
        "--kafka-bootstrap",
        args.kafka_bootstrap,
    ]
    if args.split:
        argv.append("--split")
    if args.processes:
        argv += ["--processes", args.processes]
    if args.poll:
        argv.append("--poll")
    if args.soak:
        argv += ["--soak", "--soak-every", str(args.soak_every)]
    if args.app_args:
        argv += ["--app-args", args.app_args]
    if args.url:
        argv += ["--url", args.url]
    if args.keep:
        argv.append("--keep")
    if args.wait_idle:
        argv += ["--wait-idle", str(args.wait_idle), "--wait-max", str(args.wait_max)]
    return argv


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    def mmm(key: str) -> dict[str, float] | None:
        values = [r[key] for r in runs if isinstance(r.get(key), int | float)]
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    load = [r["loadavg_before"][0] for r in runs if r.get("loadavg_before")]
    return {
        "kind": "summary",
        "reps": len(runs),
        "failed_runs": sum(1 for r in runs if run_failed(r)),
        "n": args.n,
        "concurrency": args.concurrency,
        "clients": args.clients,
        "synchronous": runs[0]["synchronous"] if runs else args.synchronous,
        "saga": runs[0]["saga"] if runs else args.saga,
        "fail_fraction": args.fail_fraction,
        "fail_mode": args.fail_mode,
        **{
            key: mmm(key)
            for key in (
                "sagas_per_s",
                "p50_ms",
                "p95_ms",
                "p99_ms",
                "max_ms",
                "app_cpu_ms_per_saga",
                "client_cpu_ms_per_saga",
                "other_cpu_cores",
            )
        },
        "errors": sum(r.get("errors", 0) for r in runs),
        "violations": sum(r.get("violations", 0) for r in runs),
        "loadavg_1m_before": {"min": min(load), "max": max(load)} if load else None,
    }


def repeat(args: argparse.Namespace) -> int:
    runs: list[dict[str, Any]] = []
    status = 0
    for rep in range(1, args.reps + 1):
        log(f"rep {rep}/{args.reps}, load {loadavg()}")
        proc = subprocess.run(child_argv(args), cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if not lines:
            log(f"rep {rep} produced no result (exit code {proc.returncode})")
            status = 1
            continue
        record = json.loads(lines[-1])
        record["rep"] = rep
        print(json.dumps(record), flush=True)
        runs.append(record)
        if proc.returncode != 0 or run_failed(record):
            status = 1
    if runs:
        print(json.dumps(summarize(runs, args)), flush=True)
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=2000, help="measured sagas (default 2000)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="concurrent callers (default 64)"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="benchmark an app that is already running at URL")
    target.add_argument(
        "--spawn",
        action="store_true",
        default=True,
        help="start the app on a fresh data dir and a free port (the default)",
    )
    parser.add_argument(
        "--synchronous",
        choices=["NORMAL", "FULL"],
        default="FULL",
        help="SQLite durability of the spawned app (default FULL, the app's default)",
    )
    parser.add_argument(
        "--saga",
        choices=["orchestration", "choreography"],
        default="orchestration",
        help="saga mode of the spawned app (default orchestration)",
    )
    parser.add_argument(
        "--fail-fraction",
        type=float,
        default=0.1,
        help="share of orders that compensate (default 0.1)",
    )
    parser.add_argument(
        "--fail-mode",
        choices=["shipping", "mixed"],
        default="shipping",
        help="shipping: unserved country (release + refund + cancel); mixed: rotate"
        " shipping, payment (insufficient funds) and stock (sold out) failures",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="clients the workers are spread over, each with its own connections (default 1;"
        " with --client httpx, httpcore's pool scan costs O(connections) per request, so a"
        " few smaller pools cost the client less CPU at high concurrency)",
    )
    parser.add_argument(
        "--client",
        choices=["lean", "httpx"],
        default="lean",
        help="the HTTP client the workers use: lean (bench/lean_http.py, default: about a"
        " tenth of httpx's CPU per request, which the app would otherwise share) or httpx",
    )
    parser.add_argument(
        "--poll",
        action="store_true",
        help="two requests per order: POST /orders, then GET /orders/{id}?wait=30 (default:"
        " one, POST /orders with 'Prefer: wait=30')",
    )
    parser.add_argument(
        "--warmup", type=int, default=100, help="unmeasured sagas first (default 100)"
    )
    parser.add_argument("--reps", type=int, default=1, help="runs, each in a fresh process")
    parser.add_argument(
        "--bus",
        choices=["memory", "local", "kafka"],
        default="memory",
        help="the spawned app's bus",
    )
    parser.add_argument("--kafka-bootstrap", default="127.0.0.1:9092")
    parser.add_argument(
        "--split",
        action="store_true",
        help="with --bus kafka or local: one process per module (five), instead of one with all",
    )
    parser.add_argument(
        "--processes",
        metavar="SPEC",
        help="with --bus kafka or local: the processes' modules, '/' between processes, e.g."
        " order,payment,inventory,shipping/checkout",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of prices and order lines")
    parser.add_argument("--keep", action="store_true", help="keep the spawned app's data dir")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="PCT",
        help="before each run, wait until the CPUs are at least PCT%% idle (shared machines)",
    )
    parser.add_argument(
        "--wait-max", type=float, default=600.0, help="give up waiting for idle after this many s"
    )
    parser.add_argument(
        "--soak",
        action="store_true",
        help="report a long run's flatness: throughput of the first and last 10%% of the"
        " sagas, the app's RSS over time and the databases' sizes at the end",
    )
    parser.add_argument(
        "--soak-every", type=float, default=5.0, help="seconds between RSS samples (default 5)"
    )
    parser.add_argument(
        "--app-args",
        default="",
        help="extra options for the spawned app, e.g. '--dedup-window 60s"
        " --keep-finished-sagas 60s --retention-interval 10' (retention during a soak)",
    )
    args = parser.parse_args(argv)
    if min(args.n, args.concurrency, args.reps, args.clients) < 1 or args.warmup < 0:
        parser.error("--n, --concurrency, --clients and --reps must be >= 1, --warmup >= 0")
    args.clients = min(args.clients, args.concurrency)
    if not 0 <= args.fail_fraction < 1:
        parser.error("--fail-fraction must be in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reps > 1:
        return repeat(args)
    idle = wait_for_idle(args.wait_idle, args.wait_max) if args.wait_idle else None
    record = asyncio.run(run_once(args))
    if idle is not None:
        record["idle_percent_before"] = idle
    print(json.dumps(record), flush=True)
    return 1 if run_failed(record) else 0


if __name__ == "__main__":
    sys.exit(main())
