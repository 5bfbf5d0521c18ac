"""The terminal's tables (the grid summary, `ablations.status`, `ablations.reproduce`): columns
left-aligned to their widest cell, two spaces apart, header first."""

from __future__ import annotations


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)
