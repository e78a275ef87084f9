"""Composition root: builds every module, the bus and checkout, and serves the HTTP API.

``python main.py`` runs the whole system in one process on its embedded
default: SQLite files under ``./data`` and the in-process bus.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
import uvicorn
from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.exceptions import NotAuthorizedException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_503_SERVICE_UNAVAILABLE
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST

from bus.chaos import ChaosPlan, ChaosTransport
from bus.consumer import Consumer, Route
from bus.faults import CrashPoints
from bus.kafka import (
    PASSWORD_ENV,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    USERNAME_ENV,
    KafkaAccessError,
    KafkaSecurity,
    KafkaSettings,
    KafkaTransport,
    check_access,
)
from bus.local import LocalTransport, SourceMismatchError, database_file
from bus.memory import InMemoryTransport
from bus.messages import Message, MessageRegistry
from bus.module import ModuleHandle
from bus.ports import Transport
from bus.relay import OutboxRelay
from bus.retention import Retention, RetentionTask, parse_duration
from bus.retry import RetryPolicy, backoff
from checkout import contract as checkout_contract
from checkout import module as checkout_module
from checkout.choreography import Choreography
from checkout.definition import DefinitionError, Definitions, StepKind
from checkout.diagrams import STYLES, render
from checkout.flow import DEFINITIONS
from checkout.modes import check_versions, claim_mode
from checkout.operations import dead_letter_routes, saga_action_routes
from checkout.policies import REFERENCE_DATA, SAGA_NEWS, reactions
from checkout.policy import SagaTimeouts
from checkout.retention import prune_finished_sagas, prune_finished_timelines
from modules import inventory, order, payment, shipping
from modules.faults import FaultPlan, StepFaults
from modules.inventory import module as inventory_module
from modules.order import module as order_module
from modules.payment import module as payment_module
from modules.shipping import module as shipping_module
from modules.shipping.domain import parse_countries
from telemetry import logs, metrics, tracing
from ui import Dashboard, static_router, swagger_plugin, ui_routes
from web.auth import (
    PUBLIC,
    SECURITY_SCHEMES,
    TokenError,
    admin_guard,
    document_access,
    ensure_token,
    is_public,
)
from web.http import StrictStructs, document_body_limit, edge_checks, options_routes, problems
from web.limits import MAX_BODY_BYTES

log = logging.getLogger("checkout")


@dataclass(frozen=True)
class Participant:
    """A module beyond the built-in ones that a flow's steps name: its contract and builder.

    ``build(data_dir, faults=..., synchronous=..., crash_points=...)`` returns its handle.
    """

    name: str
    messages: tuple[type[Message], ...]
    build: Callable[..., ModuleHandle]


@dataclass(frozen=True)
class Flow:
    """The saga definitions to run, and the participants they need beyond the built-in modules."""

    definitions: Definitions
    participants: tuple[Participant, ...] = ()


CHECKOUT_FLOW = Flow(DEFINITIONS)


def fault_steps(definitions: Definitions) -> tuple[str, ...]:
    """The steps a seeded business fault can fail: those before the pivot that can fail."""
    return tuple(
        step.name
        for step in definitions.current.steps
        if step.failed and step.kind is StepKind.COMPENSATABLE
    )


def load_flow(spec: str) -> Flow:
    """``module:attribute`` naming a ``Flow``; empty means the checkout's own."""
    if not spec:
        return CHECKOUT_FLOW
    module_name, _, attribute = spec.partition(":")
    flow = getattr(importlib.import_module(module_name), attribute)
    # (Duck-typed: run as a script, this file's Flow is __main__.Flow.)
    if not isinstance(getattr(flow, "definitions", None), Definitions):
        raise TypeError(f"{spec} is not a Flow")
    return flow  # type: ignore[no-any-return]


def _option(default: Any, help: str | None = None, **argparse_options: Any) -> Any:
    """A setting's default and its command-line form, declared together."""
    return field(default=default, metadata={"help": help, **argparse_options})


def _checked(parse: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that keeps the text but turns a bad value into a usage error."""

    def check(value: str) -> str:
        try:
            parse(value)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value

    return check


@dataclass(frozen=True)
class Settings:
    """Everything that can be configured, with the embedded defaults.

    Each field is also a command-line option (``data_dir`` is ``--data-dir``):
    its default, type and help are declared here once.
    """

    data_dir: Path = _option(Path("data"), "where the SQLite files live (default ./data)")
    host: str = _option("127.0.0.1")
    port: int = _option(8000)
    saga: str = _option("orchestration", choices=["orchestration", "choreography"])
    synchronous: str = _option(
        "FULL",
        "SQLite durability: FULL (the default) survives power loss; NORMAL only a process"
        " crash, and a power loss can then break conservation across modules (README)",
        choices=["NORMAL", "FULL"],
    )
    faults: str = _option(
        "",
        "inject business failures, e.g. payment=0.1,stock=0.05,shipping=0.05",
        type=_checked(lambda spec: FaultPlan.parse(spec, steps=fault_steps(DEFINITIONS))),
    )
    fault_seed: int = _option(0)
    ship_countries: str = _option(
        "", "comma-separated ISO country codes served (default: see README)",
        type=_checked(parse_countries),
    )  # fmt: skip
    stuck_after: float = _option(60.0, "seconds before a running saga counts as stuck")
    crash_at: str = _option("", argparse.SUPPRESS, type=_checked(CrashPoints.parse))
    retry: str = _option(
        "",
        "retry policy for failing handlers, e.g. attempts=5,base=0.05,cap=5 (the default)",
        type=_checked(RetryPolicy.parse),
    )
    chaos: str = _option(
        "",
        "inject bus faults: duplicate, delay, exception, hang rates, for all types or per"
        " type, e.g. 'duplicate=0.05,hang=0.01;payment.ProcessPayment:exception=0.2'",
        type=_checked(ChaosPlan.parse),
    )
    timeouts: str = _option(
        "",
        "saga step timeout (s), attempts before compensating, whole-saga deadline (s),"
        " backoff cap (s): e.g. step=10,attempts=3,saga=300,cap=120 (the default)",
        type=_checked(SagaTimeouts.parse),
    )
    bus: str = _option(
        "memory",
        "the in-process bus (default), local (processes on one machine sharing --data-dir,"
        " each reading the modules' outboxes: see --modules) or Apache Kafka",
        choices=["memory", "local", "kafka"],
    )
    # The Kafka defaults are the transport's own (bus/kafka.py), declared there once.
    kafka_bootstrap: str = _option(KafkaSettings.bootstrap, metavar="HOST:PORT")
    kafka_partitions: int = _option(
        KafkaSettings.partitions,
        "partitions of each topic the app creates: how many processes may share one module's"
        " consumer group (topics that exist keep theirs)",
    )
    kafka_replication: int = _option(KafkaSettings.replication)
    kafka_prefix: str = _option(
        KafkaSettings.prefix,
        "prefix of topic and consumer group names (lets several systems share a broker)",
    )
    kafka_commit_interval: float = _option(
        KafkaSettings.commit_interval,
        "seconds between a consumer's offset commits (0: after every batch); a crash"
        " redelivers what was handled since, and the inboxes drop it",
        metavar="S",
    )
    kafka_security_protocol: str = _option("PLAINTEXT", choices=list(SECURITY_PROTOCOLS))
    kafka_sasl_mechanism: str = _option(
        "PLAIN", "with SASL_PLAINTEXT or SASL_SSL", choices=list(SASL_MECHANISMS)
    )
    kafka_credentials_file: Path | None = _option(
        None,
        f"file with lines username=... and password=... for SASL (or set {USERNAME_ENV} and"
        f" {PASSWORD_ENV}; never on the command line)",
        type=Path,
        metavar="PATH",
    )
    kafka_ca_file: Path | None = _option(
        None, "CA certificates (PEM) to verify the broker with SSL", type=Path, metavar="PATH"
    )
    modules: str = _option(
        "all",
        "modules this process runs: all (default) or a list of order, payment, inventory,"
        " shipping, checkout; each process serves the HTTP routes of its own modules",
        type=_checked(lambda spec: parse_modules(spec)),
    )
    chaos_seed: int = _option(0)
    dedup_window: str = _option(
        "7d",
        "how long dispatched outbox rows and processed inbox ids are kept (e.g. 7d, 12h):"
        " longer than any redelivery can come late, Kafka retention included (README)",
        type=_checked(parse_duration),
    )
    keep_finished_sagas: str = _option(
        "30d",
        "how long a finished saga's timeline and state are kept (at least the dedup window)",
        type=_checked(parse_duration),
    )
    retention_batch: int = _option(500, "rows pruned per transaction")
    retention_interval: float = _option(60.0, "seconds between retention sweeps")
    kafka_retention: str = _option(
        "3d",
        "retention.ms of the Kafka topics this app creates (shorter than the dedup window)",
        type=_checked(parse_duration),
    )
    flow: str = _option("", argparse.SUPPRESS, type=_checked(load_flow))
    log_level: str = _option("INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    log_format: str = _option(
        "text",
        "text (default: for a terminal) or json (one object per line, for a log pipeline)",
        choices=["text", "json"],
    )
    access_log: bool = _option(False, "log every HTTP request (uvicorn's access log)",
                               action="store_true")  # fmt: skip
    metrics: bool = _option(
        True,
        "count and time sagas, steps, messages and commits for GET /metrics (--no-metrics:"
        " only the gauges read from the databases at scrape time)",
        action=argparse.BooleanOptionalAction,
    )
    tracing: bool = _option(
        False,
        "export OpenTelemetry spans (OTLP, configured by the standard OTEL_* variables);"
        " also on when OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT is set",
        action="store_true",
    )
    admin_token_file: Path | None = _option(
        None,
        "file holding the admin token (default: the SAGA_ADMIN_TOKEN environment variable,"
        " else <data-dir>/admin-token, generated on first start)",
        type=Path,
        metavar="PATH",
    )


@dataclass
class System:
    """The running parts, built by ``build_system`` and started by ``run``."""

    registry: MessageRegistry
    transport: Transport
    modules: list[ModuleHandle]
    relays: list[OutboxRelay]
    consumers: list[Consumer]
    saga_mode: str
    definitions: Definitions
    health: dict[str, str] = field(default_factory=dict)
    retention: list[RetentionTask] = field(default_factory=list)

    @property
    def checkout(self) -> ModuleHandle | None:
        """Checkout's handle, if this process runs it."""
        return next((m for m in self.modules if m.name == "checkout"), None)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[System]:
        async with AsyncExitStack() as stack:
            for module in self.modules:
                await stack.enter_async_context(module.db)
            checkout = self.checkout
            if checkout is not None:
                previous = await checkout.db.transact(partial(claim_mode, mode=self.saga_mode))
                if previous is not None:
                    log.info("saga mode changed from %s to %s", previous, self.saga_mode)
                await checkout.db.transact(partial(check_versions, definitions=self.definitions))
            # Whatever a previous run committed but did not deliver goes first.
            for relay in self.relays:
                await relay.recover()
            task_group = await stack.enter_async_context(anyio.create_task_group())
            task_group.start_soon(self._supervise, "transport", self.transport.run)
            for module in self.modules:
                for name, task in module.background.items():
                    task_group.start_soon(self._supervise, name, task)
            for consumer in self.consumers:
                task_group.start_soon(self._supervise, f"retry:{consumer.name}", consumer.run)
            for pruning in self.retention:
                task_group.start_soon(self._supervise, f"retention:{pruning.db.name}", pruning.run)
            stack.callback(task_group.cancel_scope.cancel)
            yield self

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a background part; restart it with backoff if it fails (a broker that
        is not up yet, a disk error), and let /health say so meanwhile."""
        failures = 0
        while True:
            self.health[name] = "running"
            try:
                await run()
                return
            except Exception as exc:
                failures += 1
                self.health[name] = f"restarting after: {exc!r}"
                log.exception("%s failed (%d times); restarting", name, failures)
                await anyio.sleep(backoff(failures, base=0.25, cap=10.0))


MODULES = ("order", "payment", "inventory", "shipping", "checkout")
# Allocations between two collections of the young generation (CPython's default: 700).
GC_THRESHOLD = 20_000


def parse_modules(spec: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """``all`` or a comma-separated list of module names (``extra``: a flow's participants)."""
    known = (*MODULES, *extra)
    names = {name.strip() for name in spec.split(",") if name.strip()}
    if names == {"all"}:
        return frozenset(known)
    unknown = names - set(known)
    if unknown or not names:
        raise ValueError(f"unknown {sorted(unknown)}; choose from all, {', '.join(known)}")
    return frozenset(names)


def kafka_settings(settings: Settings) -> KafkaSettings:
    """The Kafka transport's settings; raises ``KafkaAccessError`` if security is incomplete."""
    security = KafkaSecurity.load(
        settings.kafka_security_protocol,
        settings.kafka_sasl_mechanism,
        credentials_file=settings.kafka_credentials_file,
        ca_file=settings.kafka_ca_file,
    )
    return KafkaSettings(
        bootstrap=settings.kafka_bootstrap,
        partitions=settings.kafka_partitions,
        replication=settings.kafka_replication,
        prefix=settings.kafka_prefix,
        security=security,
        commit_interval=settings.kafka_commit_interval,
    )


def retention_of(settings: Settings) -> Retention:
    """The retention settings, checked against each other (``ValueError`` if they clash)."""
    retention = Retention(
        dedup_window=parse_duration(settings.dedup_window),
        keep_finished=parse_duration(settings.keep_finished_sagas),
        batch=settings.retention_batch,
        interval=settings.retention_interval,
    )
    if (
        settings.bus == "kafka"
        and parse_duration(settings.kafka_retention) >= retention.dedup_window
    ):
        # A consumer group replaying from the start of a topic would redeliver
        # messages whose inbox ids are gone: they would be handled twice.
        raise ValueError("--kafka-retention must be shorter than --dedup-window")
    return retention


def _transport(settings: Settings, registry: MessageRegistry, modules: Iterable[str]) -> Transport:
    if settings.bus == "kafka":
        kafka = kafka_settings(settings)
        retention_ms = int(parse_duration(settings.kafka_retention) * 1000)
        return KafkaTransport(registry, replace(kafka, retention_ms=retention_ms))
    if settings.bus == "local":
        # Every module's database, whichever process runs it (build_system holds the
        # modules of this process to the same files).
        data_dir = settings.data_dir
        sources = {name: database_file(data_dir, name) for name in modules}
        return LocalTransport(registry, sources, data_dir / "bus")
    return InMemoryTransport(registry)


def build_system(
    settings: Settings, *, transport: Transport | None = None, flow: Flow | None = None
) -> System:
    """Build every module and wire them to the bus; nothing runs yet.

    Raises ``DefinitionError`` (one line: the step and the rule) for a flow
    whose definitions break a rule.
    """
    flow = flow or load_flow(settings.flow)
    definitions = flow.definitions
    contracts: dict[str, tuple[type[Message], ...]] = {
        "order": order.MESSAGES, "payment": payment.MESSAGES, "inventory": inventory.MESSAGES,
        "shipping": shipping.MESSAGES, "checkout": checkout_contract.MESSAGES,
        **{p.name: p.messages for p in flow.participants},
    }  # fmt: skip
    definitions.validate(contracts)
    metrics.configure(style=settings.saga, enabled=settings.metrics)
    tracing.name_steps(
        {
            m.TYPE: step.name
            for step in reversed(definitions.current.steps)
            for m, _ in step.messages()
        }
    )
    orchestrate = settings.saga == "orchestration"
    data_dir = settings.data_dir
    faults = FaultPlan.parse(settings.faults, settings.fault_seed, steps=fault_steps(definitions))

    def faults_of(module: str) -> StepFaults:
        """A participant's faults: those of the steps it runs, by the current definition."""
        return faults.for_steps([s.name for s in definitions.current.steps if s.module == module])

    crash = CrashPoints.parse(settings.crash_at)
    chaos = ChaosPlan.parse(settings.chaos, settings.chaos_seed)
    policy = RetryPolicy.parse(settings.retry)
    timeouts = SagaTimeouts.parse(settings.timeouts)
    retention = retention_of(settings)
    common: dict[str, Any] = {"synchronous": settings.synchronous, "crash_points": crash}
    registry = MessageRegistry.from_contracts(*contracts.values())
    bus = transport or _transport(settings, registry, contracts)  # every module, by name
    if chaos is not None:
        bus = ChaosTransport(bus, chaos)
    wanted = parse_modules(settings.modules, tuple(p.name for p in flow.participants))
    countries = parse_countries(settings.ship_countries)
    builders: dict[str, Callable[[], ModuleHandle]] = {
        "order": lambda: order_module.build(
            data_dir, pivot=definitions.current.pivot.name, **common
        ),
        "payment": lambda: payment_module.build(data_dir, faults=faults_of("payment"), **common),
        "inventory": lambda: inventory_module.build(
            data_dir, faults=faults_of("inventory"), **common
        ),
        "shipping": lambda: shipping_module.build(
            data_dir, countries=countries, faults=faults_of("shipping"), **common
        ),
    }
    for participant in flow.participants:
        builders[participant.name] = partial(
            participant.build, data_dir, faults=faults_of(participant.name), **common
        )
    modules = [build() for name, build in builders.items() if name in wanted]
    tracker = None
    if "checkout" in wanted:
        checkout, tracker = checkout_module.build(
            data_dir,
            registry,
            definitions,
            orchestrate=orchestrate,
            timeouts=timeouts,
            stuck_after=settings.stuck_after,
            **common,
        )
        modules.append(checkout)
    local = _unwrapped(bus)
    if isinstance(local, LocalTransport):
        for module in modules:
            local.check(module.name, module.db.path)
    choreography = None if orchestrate else Choreography(definitions)
    relays, consumers = [], []
    for module in modules:
        relays.append(OutboxRelay(module.db, bus, registry))
        routes: dict[str, Route] = {
            **module.commands,
            **reactions(module.name, module.commands, {**REFERENCE_DATA, **SAGA_NEWS}),
        }
        if choreography is not None:
            routes |= choreography.routes(module.name, module.commands)
            module.db.context_for = choreography.context_for
        # The tracker records, in checkout's own transactions, every message
        # checkout emits and every one delivered to it (most of a saga's);
        # its subscription brings the rest.
        witness = tracker.witness if tracker is not None and module.name == "checkout" else None
        consumers.append(
            Consumer(module.name, module.db, routes, registry, policy=policy, chaos=chaos,
                     witness=witness)
        )  # fmt: skip
    if tracker is not None:
        checkout.db.emit_hooks.append(tracker.record)
        witnessed = next(c for c in consumers if c.name == "checkout").routes
        observed = tracker.subscription(registry, witnessed)
        if observed:  # a flow whose every event checkout takes needs no subscription
            consumers.append(
                Consumer("tracker", checkout.db, {}, registry, observer=tracker.record,
                         observes=observed, dedupe=False, policy=policy)
            )  # fmt: skip
    for consumer in consumers:
        bus.subscribe(consumer.name, consumer.types, consumer)
    keep = retention.keep_finished
    finished = [
        ("timelines", prune_finished_timelines, keep),
        ("sagas", prune_finished_sagas, keep),
    ]
    pruning = [
        RetentionTask.for_bus(m.db, retention, finished if m.name == "checkout" else ())
        for m in modules
    ]
    return System(
        registry, bus, modules, relays, consumers, settings.saga, definitions, retention=pruning
    )


def create_app(
    settings: Settings, *, transport: Transport | None = None, flow: Flow | None = None
) -> Litestar:
    """The HTTP application; its lifespan runs the whole system.

    Every route needs the admin token except those marked public (``web/auth.py``).
    """
    system = build_system(settings, transport=transport, flow=flow)
    token = ensure_token(settings.data_dir, settings.admin_token_file)
    log.info("admin routes take the token from %s", token.source)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with system.run():
            yield

    @get("/health", operation_id="health", tags=["system"], opt=PUBLIC, responses=problems(503))
    async def health() -> Response[dict[str, Any]]:
        """Up when every background part of the system is running."""
        ok = bool(system.health) and all(v == "running" for v in system.health.values())
        return Response(
            {
                "status": "ok" if ok else "unavailable",
                "saga": settings.saga,
                "parts": system.health,
            },
            status_code=200 if ok else HTTP_503_SERVICE_UNAVAILABLE,
        )

    metrics_registry = metrics.app_registry(
        metrics.DatabaseCollector(
            {module.name: module.db.path for module in system.modules},
            checkout=system.checkout.db.path if system.checkout is not None else None,
            stuck_after=settings.stuck_after,
            kafka_lag=_kafka_lag(system.transport),
            local_lag=_local_lag(system.transport),
        )
    )

    @get("/metrics", operation_id="metrics", tags=["system"], media_type=MediaType.TEXT)
    async def metrics_route() -> Response[str]:
        """Prometheus metrics of this process's modules (text format)."""
        body = await anyio.to_thread.run_sync(metrics.render, metrics_registry)
        return Response(body.decode(), media_type=CONTENT_TYPE_LATEST)

    def bad_input(request: Request[Any, Any, Any], exc: msgspec.DecodeError) -> Response[Any]:
        return Response(
            {"status_code": HTTP_400_BAD_REQUEST, "detail": f"Validation failed: {exc}"},
            status_code=HTTP_400_BAD_REQUEST,
            media_type=MediaType.JSON,
        )

    def refused(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
        # JSON whatever the route serves (/metrics serves text): the 401 is documented so.
        return Response(
            {"status_code": exc.status_code, "detail": exc.detail},
            status_code=exc.status_code,
            media_type=MediaType.JSON,
            headers=exc.headers,
        )

    def invalid(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
        # Litestar reports a missing body as a KeyError on the handler's 'data'.
        extra = exc.extra if isinstance(exc.extra, list) else []
        if any(e.get("key") == "data" and e.get("message") == "'data'" for e in extra):
            exc = ValidationException(
                "Validation failed: the request body is missing; send a JSON object",
                extra=[{"key": "body", "message": "missing or empty"}],
            )
        return Response(
            {"status_code": exc.status_code, "detail": exc.detail, "extra": exc.extra},
            status_code=exc.status_code,
            media_type=MediaType.JSON,
        )

    checkout = system.checkout
    handlers = [
        health,
        metrics_route,
        *(h for m in system.modules for h in m.route_handlers),
        *(saga_action_routes(checkout.db) if checkout is not None else ()),
        *dead_letter_routes(system.consumers),
        *(
            ui_routes(_dashboard(settings, system, checkout, token.value))
            if checkout is not None
            else ()
        ),
    ]
    document_access(handlers)
    document_body_limit(handlers)
    # The token guards every handler not marked public, through one router: a public
    # route (placing an order) then runs no guard at all (Litestar copies the handler
    # for each guard it calls). The OPTIONS handlers first: Litestar then adds none.
    # The assets' router (public) last.
    admin = Router(
        "/",
        route_handlers=[*options_routes(handlers), *(h for h in handlers if not is_public(h))],
        guards=[admin_guard(token)],
    )
    routes = [admin, *(h for h in handlers if is_public(h)), static_router()]
    app = Litestar(
        route_handlers=routes,
        lifespan=[lifespan],
        exception_handlers={
            msgspec.DecodeError: bad_input,
            ValidationException: invalid,
            NotAuthorizedException: refused,
        },
        request_max_body_size=MAX_BODY_BYTES,
        before_request=_before_request,
        plugins=[StrictStructs(), *_tracing_plugins()],
        logging_config=None,  # main() configures logging for the whole process
        openapi_config=OpenAPIConfig(
            title="Saga checkout",
            version="0.1.0",
            render_plugins=[swagger_plugin()],
            # The schema and its pages are public: they describe the API, hold no data.
            openapi_router=Router(
                "/schema", route_handlers=[], opt=PUBLIC, include_in_schema=False
            ),
            components=Components(security_schemes=dict(SECURITY_SCHEMES)),
        ),
    )
    app.state.system = system
    return app


def _unwrapped(transport: Transport) -> Transport:
    """The transport itself, under a ChaosTransport if there is one."""
    inner: Transport = getattr(transport, "inner", transport)
    return inner


def _local_lag(transport: Transport) -> Callable[[], dict[tuple[str, str], int]] | None:
    inner = _unwrapped(transport)
    return inner.lag if isinstance(inner, LocalTransport) else None


def _kafka_lag(transport: Transport) -> Callable[[], dict[tuple[str, str, int], int]] | None:
    inner = _unwrapped(transport)
    if isinstance(inner, KafkaTransport):
        return lambda: dict(inner.lag)
    return None


def _tracing_plugins() -> list[OpenTelemetryPlugin]:
    """The HTTP server spans, when tracing is on (nothing is added while it is off)."""
    provider = tracing.provider()
    if provider is None:
        return []
    config = OpenTelemetryConfig(
        tracer_provider=provider,
        exclude_spans=["receive", "send"],
        scope_span_details_extractor=_route_span_name,
    )
    return [OpenTelemetryPlugin(config)]


def _route_span_name(scope: Any) -> tuple[str, dict[str, str]]:
    """The server span's name until routing names it (``_name_server_span``): the
    method only, never the raw path with its ids."""
    return str(scope.get("method", "HTTP")), {}


async def _before_request(request: Request[Any, Any, Any]) -> None:
    await edge_checks(request)
    if tracing.ENABLED:
        await _name_server_span(request)


async def _name_server_span(request: Request[Any, Any, Any]) -> None:
    """Name the server span ``{method} {route}`` once the route is known."""
    route = request.scope.get("path_template") or ""
    span = trace.get_current_span()
    span.update_name(f"{request.method} {route}")
    span.set_attribute("http.route", route)


def _dashboard(settings: Settings, system: System, checkout: ModuleHandle, token: str) -> Dashboard:
    """The dashboard at /ui reads this process's databases (served where checkout runs)."""
    return Dashboard(
        checkout=checkout.db,
        definitions=system.definitions,
        databases=[module.db for module in system.modules],
        dead_letter_sources=[(consumer.name, consumer.db) for consumer in system.consumers],
        saga_style=settings.saga,
        stuck_after=settings.stuck_after,
        module_names=[module.name for module in system.modules],
        health=system.health,
        admin_token=lambda: token,  # what the login form checks a token against
    )


def parse_args(argv: list[str] | None = None) -> Settings:
    """The settings from the command line; a bad value is a usage error (exit 2)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    for option in fields(Settings):
        extra = dict(option.metadata)
        if not {"type", "choices", "action"} & extra.keys() and option.default is not None:
            extra["type"] = type(option.default)
        parser.add_argument(
            f"--{option.name.replace('_', '-')}", dest=option.name, default=option.default, **extra
        )
    settings = Settings(**vars(parser.parse_args(argv)))
    try:
        retention_of(settings)
    except ValueError as exc:
        parser.error(str(exc))
    if settings.bus == "local" and settings.chaos:
        # Its copies and delays act on publish, which this transport only uses to wake.
        parser.error("--chaos needs the memory or kafka bus (not local)")
    return settings


def diagram(argv: list[str]) -> str:
    """``main.py diagram``: the saga's Mermaid diagrams, generated from its definition."""
    parser = argparse.ArgumentParser(
        prog="main.py diagram",
        description="Print Mermaid sequence diagrams of the saga: its success path and each"
        " compensation path, generated from the saga definition.",
    )
    parser.add_argument("--saga", choices=STYLES, help="one saga style (default: both)")
    parser.add_argument("--version", type=int, help="a definition version (default: the current)")
    parser.add_argument("--flow", default="", help=argparse.SUPPRESS, type=_checked(load_flow))
    args = parser.parse_args(argv)
    definitions = load_flow(args.flow).definitions
    definition = definitions.get(args.version or definitions.current.version)
    if definition is None:
        parser.error(f"no definition v{args.version}; this build has {definitions.versions}")
    return render(definition, (args.saga,) if args.saga else STYLES)


def configure_tracing(settings: Settings, exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on if asked (option, environment, or an explicit exporter); True if on."""
    enabled = settings.tracing or exporter is not None or tracing.enabled_by_environment()
    modules = sorted(parse_modules(settings.modules))
    tracing.configure(
        enabled=enabled,
        service_name="saga-checkout"
        if len(modules) == len(MODULES)
        else "saga-" + "-".join(modules),
        messaging_system="kafka" if settings.bus == "kafka" else "saga-bus",
        destination_prefix=settings.kafka_prefix,
        exporter=exporter,
    )
    return enabled


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["diagram"]:
        print(diagram(argv[1:]), end="")  # noqa: T201 - the command's output
        return
    settings = parse_args(argv)
    logs.configure(settings.log_format, settings.log_level)
    configure_tracing(settings)
    try:
        app = create_app(settings)
        if settings.bus == "kafka":
            # Wrong credentials stop the process here, with one line; a broker that is
            # not up yet does not (the transport keeps trying, /health says so).
            anyio.run(check_access, kafka_settings(settings))
    except TokenError as exc:
        raise SystemExit(f"main.py: {exc}") from None
    except KafkaAccessError as exc:
        raise SystemExit(f"main.py: kafka: {exc}") from None
    except DefinitionError as exc:
        raise SystemExit(f"saga definition refused: {exc}") from None
    except SourceMismatchError as exc:
        raise SystemExit(f"main.py: {exc}") from None
    # Everything built so far lives as long as the process: keep it out of the
    # collector's scans, and collect the young generation less often (a saga's
    # garbage is short-lived; the default threshold, 700, ran a collection every
    # few messages: bench/README.md).
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # logs.configure set up every logger, uvicorn's included
        access_log=settings.access_log,
        lifespan="on",
    )
    try:
        uvicorn.Server(config).run()
    finally:
        tracing.shutdown()


if __name__ == "__main__":
    main()
