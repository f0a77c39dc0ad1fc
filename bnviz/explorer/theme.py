"""The look every page's charts share: bnviz red, torch blue, the plotly layout, and the axis and
bar helpers. Pure plotly, no streamlit."""

from __future__ import annotations

import itertools
import math
from typing import Any

import plotly.graph_objects as go

from bnviz.explorer.digits import CLASSES

BNVIZ_COLOR = "#d62728"  # bnviz is red on every chart
TORCH_COLOR = "#1f77b4"  # torch is blue on every chart
INPUT_COLOR = "#7f7f7f"
TRAIN_COLOR = "#2ca02c"  # train mode vs eval mode (the same layer, so neither red nor blue)
EVAL_COLOR = "#ff7f0e"
DIFF_COLORS = ("#6a3d9a", "#33a02c", "#b15928", "#e7298a", "#666666", "#1b9e77")  # |bnviz − torch| per quantity
VALUE_TICKS = ",.6~g"  # 9,997.5 rather than 9.9975k
# The legend sits at the figure's bottom edge, under the axis titles, whatever the figure's height.
LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=85),
               legend=dict(orientation="h", yref="container", y=0.0, yanchor="bottom", x=0))  # fmt: skip


def plain_ticks(fig: go.Figure) -> go.Figure:
    """Value axes with plain numbers (no SI suffixes like 9.997k)."""
    fig.update_xaxes(tickformat=VALUE_TICKS, exponentformat="e")
    fig.update_yaxes(tickformat=VALUE_TICKS, exponentformat="e")
    return fig


def log_ticks(values: list[float]) -> tuple[list[float], list[str]]:
    """Readable ticks for a log axis over ``values``: every power of ten in their range, and 2
    and 5 times each when the range spans fewer than three decades; labels as plain numbers
    (``0.02``, ``1``, ``500``). plotly's own minor labels read "7 6 5 4 3 2 0.01 9 8"."""
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if not positive:
        return [], []
    lo, hi = math.floor(math.log10(min(positive))), math.ceil(math.log10(max(positive)))
    steps = (1,) if hi - lo >= 3 else (1, 2, 5)
    near = (min(positive) / 1.5, max(positive) * 1.5)
    ticks = [m * 10.0**e for e in range(lo, hi + 1) for m in steps if near[0] <= m * 10.0**e <= near[1]]
    return ticks, [f"{t:,.6g}" for t in ticks]


def integer_axis(fig: go.Figure, **where: Any) -> None:
    """An axis of steps or channels: whole numbers only."""
    fig.update_xaxes(tickformat="d", dtick=1, **where)


def bars(edges: list[float], counts: list[int], name: str, color: str, show: bool, opacity: float = 0.6) -> go.Bar:
    centers = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
    width = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
    return go.Bar(
        x=[round(c, 6) for c in centers],
        y=counts,
        width=width,
        name=name,
        marker_color=color,
        opacity=opacity,
        showlegend=show,
        legendgroup=name,
    )


def outline(edges: list[float], counts: list[int], name: str, color: str, show: bool = True) -> go.Bar:
    """Bars drawn as outlines only: torch's histogram over bnviz's filled one, so both show."""
    trace = bars(edges, counts, name, color, show, 1.0)
    trace.marker = dict(color="rgba(0,0,0,0)", line=dict(color=color, width=1.5))
    return trace


CHANCE = 1 / CLASSES  # a digits classifier's accuracy by guessing


def finite(v: float) -> float | None:
    """A value plotly can draw; None (a gap) for nan and inf."""
    return v if math.isfinite(v) else None
