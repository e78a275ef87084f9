"""Mermaid sequence diagrams of a saga, generated from its definition.

One diagram for the success path and one for each way it can fail: a step's
failure reply (the steps before it are undone, last first) and, for the
pivot, its lock taken first (a cancellation or an abort). In orchestration
every step is a command from checkout and a reply to it; in choreography each
event goes straight to the module that reacts to it. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from checkout.definition import SagaDefinition, Step, StepKind

__all__ = ["STYLES", "Path", "diagrams", "paths", "render", "steps_table"]

STYLES = ("orchestration", "choreography")


@dataclass(frozen=True, slots=True)
class Path:
    """One way through the saga: the steps that succeed, then the one that fails (if any)."""

    title: str
    succeeded: tuple[Step, ...]
    failed: Step | None


def paths(definition: SagaDefinition) -> Iterator[Path]:
    """The success path, then one path per step that can fail, in step order."""
    yield Path("success", definition.steps, None)
    for index, step in enumerate(definition.steps):
        if step.failed:
            cause = (
                "its lock is taken first (a cancellation or an abort)"
                if step is definition.pivot
                else f"{_name(step.failed[0].TYPE)}"
            )
            yield Path(f"{step.name} fails: {cause}", definition.steps[:index], step)


def _name(type_name: str) -> str:
    return type_name.partition(".")[2]


def _alias(module: str) -> str:
    return module.upper() if module != "checkout" else "C"


def _participants(definition: SagaDefinition, orchestrated: bool) -> list[str]:
    modules = list(dict.fromkeys(step.module for step in definition.steps))
    lines = [f"    participant {_alias(m)} as {m}" for m in modules]
    if orchestrated:
        lines.insert(1, "    participant C as checkout")
    return lines


def _undone(definition: SagaDefinition, path: Path) -> list[Step]:
    assert path.failed is not None
    names = definition.undo_order([s.name for s in path.succeeded])
    return [definition.step(name) for name in names]


def _orchestrated(definition: SagaDefinition, path: Path) -> list[str]:
    lines: list[str] = []
    for step in path.succeeded:
        module = _alias(step.module)
        if step.action is not None:
            lines.append(f"    C->>{module}: {_name(step.action.type.TYPE)}")
        lines.append(f"    {module}->>C: {_name(step.succeeded.TYPE)}")
    if path.failed is None:
        return lines
    failed = path.failed
    module = _alias(failed.module)
    if failed is definition.pivot and failed.lock is not None:
        lines.append(f"    Note over {module}: the lock is taken ({_name(failed.lock.type.TYPE)})")
    if failed.action is not None:
        lines.append(f"    C->>{module}: {_name(failed.action.type.TYPE)}")
    lines.append(f"    {module}->>C: {_name(failed.failed[0].TYPE)}")
    for step in _undone(definition, path):
        assert step.compensation is not None
        assert step.compensated is not None
        undoer = _alias(step.module)
        lines.append(f"    C->>{undoer}: {_name(step.compensation.type.TYPE)} (compensation)")
        lines.append(f"    {undoer}->>C: {_name(step.compensated.TYPE)}")
    return lines


def _choreographed(definition: SagaDefinition, path: Path) -> list[str]:
    lines: list[str] = []
    for step in path.succeeded:
        following = definition.after(step)
        source = _alias(step.module)
        if following is None:
            lines.append(f"    Note over {source}: {_name(step.succeeded.TYPE)}: completed")
        else:
            target = _alias(following.module)
            lines.append(f"    {source}-->>{target}: {_name(step.succeeded.TYPE)}")
    if path.failed is None:
        return lines
    failed = path.failed
    source = _alias(failed.module)
    if failed is definition.pivot and failed.lock is not None:
        lines.append(f"    Note over {source}: the lock is taken ({_name(failed.lock.type.TYPE)})")
    event = failed.failed[0].TYPE
    for step in _undone(definition, path):
        assert step.compensated is not None
        lines.append(f"    {source}-->>{_alias(step.module)}: {_name(event)}")
        source, event = _alias(step.module), step.compensated.TYPE
    lines.append(f"    Note over {source}: {_name(event)}: compensated")
    return lines


def diagrams(definition: SagaDefinition, style: str) -> Iterator[tuple[str, str]]:
    """``(title, mermaid text)`` for every path of ``definition`` in ``style``."""
    if style not in STYLES:
        raise ValueError(f"unknown saga style {style!r}; choose from {', '.join(STYLES)}")
    orchestrated = style == "orchestration"
    for path in paths(definition):
        title = f"{definition.name} v{definition.version}, {style}: {path.title}"
        body = (_orchestrated if orchestrated else _choreographed)(definition, path)
        text = "\n".join(
            ["sequenceDiagram", f"    title {title}", *_participants(definition, orchestrated),
             *body]
        )  # fmt: skip
        yield title, text


def steps_table(definition: SagaDefinition) -> str:
    """A Markdown table of the steps: kind, module, messages, and retry policy."""

    def names(types: tuple[type, ...]) -> str:
        return ", ".join(f"`{t.TYPE}`" for t in types) or "-"  # type: ignore[attr-defined]

    rows = [
        "| step | kind | module | action | succeeded | failed | compensation | timeout, attempts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in definition.steps:
        action = f"`{step.action.type.TYPE}`" if step.action else "(starts the saga)"
        undo = (
            f"`{step.compensation.type.TYPE}` → `{step.compensated.TYPE}`"
            if step.compensation is not None and step.compensated is not None
            else "-"
        )
        if step.lock is not None:
            undo = f"lock: `{step.lock.type.TYPE}`"
        timeout = f"{step.timeout} s" if step.timeout else "`--timeouts` step"
        attempts = step.attempts or "`--timeouts` attempts"
        if step.kind is not StepKind.COMPENSATABLE:
            attempts = "until it succeeds" if step.kind is StepKind.RETRIABLE else attempts
        policy = "-" if step.action is None else f"{timeout}; {attempts}"
        rows.append(
            f"| {step.name} | {step.kind} | {step.module} | {action} | `{step.succeeded.TYPE}`"
            f" | {names(step.failed)} | {undo} | {policy} |"
        )
    return "\n".join(rows) + "\n"


def render(definition: SagaDefinition, styles: tuple[str, ...] = STYLES) -> str:
    """Markdown: every diagram of every style in a fenced ``mermaid`` block."""
    blocks = [
        f"```mermaid\n{text}\n```" for style in styles for _, text in diagrams(definition, style)
    ]
    return "\n\n".join(blocks) + "\n"
