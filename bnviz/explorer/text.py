"""Numbers and tables as every page's words print them: plain text built from numbers and fixed
words only (never from text a visitor typed), safe to render as Markdown."""

from __future__ import annotations

import math

E_NOTATION = (
    "Numbers like `1.2e-07` are scientific notation: 1.2 × 10⁻⁷ = 0.00000012. float32 keeps about 7 "
    "significant digits, so a difference near 1e-7 of a value of size 1 is its last digit."
)


def sci(v: float | None) -> str:
    """A difference as the tables print it: ``4.77e-07``, ``0`` when bit-identical, ``—`` when none."""
    if v is None:
        return "—"
    return "0" if v == 0 else f"{v:.2e}"


def sci_unbroken(v: float | None) -> str:
    """``sci`` for a narrow table cell: the exponent's minus is a non-breaking hyphen (U+2011), so
    that a browser never wraps ``4.77e-07`` after its hyphen on a phone."""
    return sci(v).replace("-", "\u2011")


def pct(a: float) -> str:
    """``0.9916`` → ``"99.2 %"``."""
    return f"{100 * a:.1f} %" if math.isfinite(a) else "not a number"


def points(a: float) -> str:
    """A difference of accuracies in percentage points: ``0.031`` → ``"3.1 points"``."""
    return f"{100 * a:.1f} points"


def listing(values: list[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def seeds_text(seeds: tuple[int, ...]) -> str:
    """``(0,)`` → ``"seed 0"``; ``(0, 1, 2)`` → ``"seeds 0, 1 and 2"``."""
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {listing([str(s) for s in seeds])}"


def markdown_table(rows: list[dict[str, str]]) -> str:
    """Rows of plain text as a Markdown table (selectable, found by Ctrl+F). Cells come from
    numbers and fixed words only; ``|`` is escaped all the same."""
    if not rows:
        return ""
    head = list(rows[0])

    def cell(v: str) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)
