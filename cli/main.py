"""``saga-checkout``: the operators' command line over the HTTP API.

Human-readable tables by default, ``--json`` for scripts. Any failure of a call
is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from cli.client import Api, ApiError, admin_token
from cli.load import place_orders

__all__ = ["app"]

app = typer.Typer(help=__doc__.splitlines()[0] if __doc__ else None, no_args_is_help=True)
orders = typer.Typer(help="Place, show and cancel orders.", no_args_is_help=True)
sagas = typer.Typer(help="List, show, retry, abort and resolve sagas.", no_args_is_help=True)
letters = typer.Typer(help="Messages a handler gave up on.", no_args_is_help=True)
app.add_typer(orders, name="orders")
app.add_typer(sagas, name="sagas")
app.add_typer(letters, name="dead-letters")

# Piped output is for reading in a log or a file: wide enough for ids and type names.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)
P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Options:
    api: Api
    as_json: bool


def _options(ctx: typer.Context) -> Options:
    options: Options = ctx.obj
    return options


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Option(envvar="SAGA_URL", help="where the API is")
    ] = "http://127.0.0.1:8000",
    token: Annotated[
        str | None, typer.Option(help="admin token (else SAGA_ADMIN_TOKEN, else --token-file)")
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="file holding the admin token (default DATA_DIR/admin-token)"),
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="the app's data directory")] = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts")] = False,
) -> None:
    """Talk to a running saga checkout (``serve`` runs one)."""
    token = admin_token(token, token_file, data_dir)
    ctx.obj = Options(Api(url.rstrip("/"), token), as_json)


def _fails_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Turn an API failure into one line on stderr and exit status 1."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ApiError as exc:
            err.print(f"error: {exc}" if not str(exc).startswith("cannot reach") else str(exc),
                      markup=False, highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1) from None

    return run


def _table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=any(columns))
    for n, column in enumerate(columns):
        # The first column is an id to copy: never cut or wrapped.
        table.add_column(column, no_wrap=n == 0, min_width=None, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    return table


def _emit(options: Options, data: Any, human: Callable[[], object]) -> None:
    if options.as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(human())


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve(ctx: typer.Context) -> None:
    """Run the system: the same as ``python main.py [options]`` (``serve --help`` lists them)."""
    import main as composition_root

    composition_root.main(list(ctx.args))


@app.command()
@_fails_cleanly
def seed(
    ctx: typer.Context,
    products: Annotated[int, typer.Option(min=1)] = 10,
    customers: Annotated[int, typer.Option(min=1)] = 10,
) -> None:
    """A demo catalog: products sku-1..N (1000 in stock), customers customer-1..M (rich)."""
    options = _options(ctx)
    for n in range(1, products + 1):
        options.api.put(
            f"/products/sku-{n}",
            {"name": f"Product {n}", "price_cents": 100 * (n % 20 + 1), "stock": 1000},
        )
    for n in range(1, customers + 1):
        options.api.put(
            f"/customers/customer-{n}", {"name": f"Customer {n}", "balance_cents": 10_000_000}
        )
    data = {"products": products, "customers": customers}
    _emit(options, data, lambda: f"seeded {products} products and {customers} customers")


@orders.command("place")
@_fails_cleanly
def orders_place(
    ctx: typer.Context,
    count: Annotated[int, typer.Option(min=1)] = 100,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 8,
    fail_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="share of orders shipped where nobody delivers")
    ] = 0.0,
    products: Annotated[int, typer.Option(min=1, help="as given to seed")] = 10,
    customers: Annotated[int, typer.Option(min=1, help="as given to seed")] = 10,
) -> None:
    """Place orders over the seed catalog, follow each to its end, then summarise."""
    options = _options(ctx)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=err, disable=options.as_json,
    ) as progress:  # fmt: skip
        task = progress.add_task("orders", total=count)
        result = anyio.run(
            lambda: place_orders(
                options.api, count=count, concurrency=concurrency, fail_fraction=fail_fraction,
                products=products, customers=customers,
                advance=lambda: progress.advance(task),
            )
        )  # fmt: skip
    summary = result.as_json()

    def human() -> Table:
        rows: list[tuple[str, Any]] = [("placed", result.placed), ("completed", result.completed)]
        rows += [(f"cancelled: {reason}", n) for reason, n in result.cancelled.most_common()]
        if result.pending:
            rows.append(("still pending", result.pending))
        rows += [
            ("sagas/s", f"{result.per_second:.1f}"),
            ("p50", f"{result.percentile(50) * 1000:.0f} ms"),
            ("p99", f"{result.percentile(99) * 1000:.0f} ms"),
        ]
        return _table("summary", ("", "value"), rows)

    _emit(options, summary, human)


def _timeline_table(entries: list[dict[str, Any]]) -> Table:
    rows = [
        (e["at"][11:23], e["module"], e.get("to") or "", e["type"], e["kind"],
         "compensation" if e["compensation"] else "")
        for e in entries
    ]  # fmt: skip
    return _table("timeline", ("at", "from", "to", "message", "kind", ""), rows)


@orders.command("show")
@_fails_cleanly
def orders_show(ctx: typer.Context, order_id: str) -> None:
    """The order and its saga's timeline."""
    options = _options(ctx)
    order = options.api.get(f"/orders/{order_id}")
    timeline = options.api.get(f"/orders/{order_id}/timeline")

    def human() -> object:
        address = order["shipping_address"]
        facts = [
            ("order", order["order_id"]), ("status", order["status"]),
            ("reason", order.get("reason") or ""), ("customer", order["customer_id"]),
            ("total", f"{order['total_cents'] / 100:.2f}"),
            ("address", f"{address['name']}, {address['line1']}, {address['postal_code']}"
                        f" {address['city']}, {address['country']}"),
        ]  # fmt: skip
        lines = [(i["sku"], i["quantity"], f"{i['unit_price_cents'] / 100:.2f}")
                 for i in order["items"]]  # fmt: skip
        group = Table.grid(padding=(1, 0))
        group.add_row(_table(None, ("", ""), facts))
        group.add_row(_table("lines", ("sku", "quantity", "unit price"), lines))
        group.add_row(_timeline_table(timeline))
        return group

    _emit(options, {"order": order, "timeline": timeline}, human)


@orders.command("cancel")
@_fails_cleanly
def orders_cancel(
    ctx: typer.Context,
    order_id: str,
    reason: Annotated[str | None, typer.Option(help="why, kept with the order")] = None,
) -> None:
    """Cancel an order while its saga runs (the saga then undoes what it did)."""
    options = _options(ctx)
    answer = options.api.post(f"/orders/{order_id}/cancel", {"reason": reason} if reason else None)
    _emit(options, answer, lambda: f"order {order_id}: {answer['status']} ({answer['reason']})")


SAGA_COLUMNS = ("order", "status", "step", "last message", "age", "stuck")


@sagas.command("list")
@_fails_cleanly
def sagas_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(help="RUNNING, COMPENSATING, PARKED, STUCK, COMPLETED or COMPENSATED"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Sagas, newest first, with their current step and age."""
    options = _options(ctx)
    found = options.api.get("/sagas", status=status and status.upper(), limit=limit)
    rows = [
        (s["order_id"], s["status"], s["step"], s["last_message"], f"{s['age_seconds']:.1f}s",
         "STUCK" if s["stuck"] else "")
        for s in found
    ]  # fmt: skip
    _emit(options, found, lambda: _table(f"{len(found)} sagas", SAGA_COLUMNS, rows))


@sagas.command("show")
@_fails_cleanly
def sagas_show(ctx: typer.Context, order_id: str) -> None:
    """A saga: status, style, each step done, undone or not, and its timeline."""
    options = _options(ctx)
    detail = options.api.get(f"/sagas/{order_id}")
    timeline = options.api.get(f"/orders/{order_id}/timeline")

    def human() -> object:
        facts = [
            ("saga", detail["order_id"]), ("status", detail["status"]),
            ("style", detail["style"]), ("definition", f"v{detail['definition_version']}"),
            ("step", detail["step"]),
            *(("resolved by hand", note) for note in detail.get("notes", [])),
        ]  # fmt: skip
        steps = [(s["name"], s["kind"], s["module"], s["outcome"], s.get("last_error") or "")
                 for s in detail["steps"]]  # fmt: skip
        group = Table.grid(padding=(1, 0))
        group.add_row(_table(None, ("", ""), facts))
        group.add_row(_table("steps", ("step", "kind", "module", "outcome", "last error"), steps))
        group.add_row(_timeline_table(timeline))
        return group

    _emit(options, {"saga": detail, "timeline": timeline}, human)


def _saga_action(ctx: typer.Context, order_id: str, action: str, body: Any = None) -> None:
    options = _options(ctx)
    answer = options.api.post(f"/sagas/{order_id}/{action}", body)
    _emit(options, answer, lambda: f"{action} of saga {order_id} accepted")


@sagas.command("retry")
@_fails_cleanly
def sagas_retry(ctx: typer.Context, order_id: str) -> None:
    """Send the saga's current step again."""
    _saga_action(ctx, order_id, "retry")


@sagas.command("abort")
@_fails_cleanly
def sagas_abort(
    ctx: typer.Context,
    order_id: str,
    reason: Annotated[str, typer.Option()] = "aborted by operator",
) -> None:
    """Compensate a running saga now."""
    _saga_action(ctx, order_id, "abort", {"reason": reason})


@sagas.command("resolve")
@_fails_cleanly
def sagas_resolve(
    ctx: typer.Context,
    order_id: str,
    note: Annotated[str, typer.Option(help="what was done by hand (kept in the saga)")],
) -> None:
    """Record that a PARKED compensation was done by hand; the saga then finishes undoing."""
    _saga_action(ctx, order_id, "resolve", {"note": note})


@letters.command("list")
@_fails_cleanly
def letters_list(
    ctx: typer.Context,
    status: Annotated[
        str, typer.Option(help="DEAD, RETRYING, DELIVERED, DISCARDED or ALL")
    ] = "DEAD",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
) -> None:
    """Messages a handler could not process."""
    options = _options(ctx)
    found = options.api.get("/dead-letters", status=status.upper(), limit=limit)
    rows = [(d["id"], d["status"], d["type"], d["order_id"], d["attempts"], d["error"] or "")
            for d in found]  # fmt: skip
    columns = ("id", "status", "message", "order", "attempts", "error")
    _emit(options, found, lambda: _table(f"{len(found)} dead letters", columns, rows))


def _letter_action(ctx: typer.Context, letter_id: str, action: str) -> None:
    options = _options(ctx)
    answer = options.api.post(f"/dead-letters/{letter_id}/{action}")
    _emit(options, answer, lambda: f"{action} {letter_id}: now {answer['status']}")


@letters.command("replay")
@_fails_cleanly
def letters_replay(ctx: typer.Context, letter_id: str) -> None:
    """Try a DEAD message again."""
    _letter_action(ctx, letter_id, "replay")


@letters.command("discard")
@_fails_cleanly
def letters_discard(ctx: typer.Context, letter_id: str) -> None:
    """Give up on a message for good."""
    _letter_action(ctx, letter_id, "discard")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def diagram(ctx: typer.Context) -> None:
    """The saga as Mermaid diagrams, from its definition (``main.py diagram [--saga S]``)."""
    import main as composition_root

    composition_root.main(["diagram", *ctx.args])


if __name__ == "__main__":
    sys.exit(app())
