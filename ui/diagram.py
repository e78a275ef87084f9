"""The path a saga actually took, drawn on the server as an SVG sequence diagram.

Each message of the timeline is an arrow from the module that sent it to the
module(s) that acted on it: a command's target, or for an event the modules
whose next messages name it as their cause. Compensations are drawn in red,
operator commands in blue. No JavaScript is needed, so it renders offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from ui.queries import Entry

__all__ = ["sequence_svg"]

# The modules in the order a reader expects them, left to right.
LANES = ("order", "checkout", "payment", "inventory", "shipping")
LANE_WIDTH = 150
ROW = 28
TOP = 46


def _receivers(entry: Entry, caused: dict[str, set[str]]) -> list[str]:
    if entry.target is not None:
        return [entry.target]
    return sorted(caused.get(entry.message_id, set()) - {entry.source})


def _colour(entry: Entry) -> str:
    if entry.compensation:
        return "#c0392b"
    if entry.type.startswith("checkout."):
        return "#1f5fbf"
    return "#333333"


def sequence_svg(entries: Sequence[Entry]) -> str:
    """An SVG of the timeline (already in causal order) as a sequence diagram."""
    caused: dict[str, set[str]] = {}
    for entry in entries:
        if entry.causation_id is not None:
            caused.setdefault(entry.causation_id, set()).add(entry.source)
    seen = {entry.source for entry in entries} | {e.target for e in entries if e.target}
    lanes = [lane for lane in LANES if lane in seen] + sorted(seen - set(LANES))
    x = {lane: 20 + LANE_WIDTH // 2 + i * LANE_WIDTH for i, lane in enumerate(lanes)}
    width = 40 + LANE_WIDTH * max(len(lanes), 1)
    height = TOP + ROW * (len(entries) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="path-diagram" width="{width}"'
        f' height="{height}" viewBox="0 0 {width} {height}" role="img"'
        ' aria-label="the path this saga took">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"'
        ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
        ' fill="context-stroke"/></marker></defs>',
    ]
    for lane, cx in x.items():
        parts.append(
            f'<rect x="{cx - 55}" y="6" width="110" height="24" rx="4" fill="#eef2f7"'
            f' stroke="#8899aa"/><text x="{cx}" y="23" text-anchor="middle"'
            f' font-size="13" font-family="sans-serif">{escape(lane)}</text>'
            f'<line x1="{cx}" y1="30" x2="{cx}" y2="{height - 6}" stroke="#bbb"'
            ' stroke-dasharray="4 3"/>'
        )
    for row, entry in enumerate(entries):
        y = TOP + ROW * row + ROW // 2
        colour = _colour(entry)
        label = escape(entry.type.partition(".")[2] or entry.type)
        start = x[entry.source]
        receivers = [r for r in _receivers(entry, caused) if r in x]
        dash = ' stroke-dasharray="6 3"' if entry.kind == "event" else ""
        if not receivers:
            parts.append(f'<circle cx="{start}" cy="{y}" r="4" fill="{colour}"/>')
            parts.append(
                f'<text x="{start + 8}" y="{y - 4}" font-size="11" font-family="sans-serif"'
                f' fill="{colour}">{label}</text>'
            )
            continue
        for receiver in receivers:
            end = x[receiver]
            if end == start:
                parts.append(
                    f'<path d="M{start},{y - 6} h24 v12 h-24" fill="none" stroke="{colour}"'
                    f' marker-end="url(#arrow)"{dash}/>'
                )
            else:
                shrink = 4 if end > start else -4
                parts.append(
                    f'<line x1="{start}" y1="{y}" x2="{end - shrink}" y2="{y}"'
                    f' stroke="{colour}" stroke-width="1.5" marker-end="url(#arrow)"{dash}/>'
                )
        mid = (start + x[receivers[0]]) // 2 if x[receivers[0]] != start else start + 30
        anchor = "middle" if x[receivers[0]] != start else "start"
        parts.append(
            f'<text x="{mid}" y="{y - 4}" text-anchor="{anchor}" font-size="11"'
            f' font-family="sans-serif" fill="{colour}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
