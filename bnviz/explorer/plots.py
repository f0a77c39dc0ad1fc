"""Report → plotly figures. Pure plotly, no streamlit; every histogram arrives pre-binned, so a
figure's JSON stays small whatever the tensor size."""

from __future__ import annotations

import itertools
import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer.compare import Report

BNVIZ_COLOR = "#d62728"
TORCH_COLOR = "#1f77b4"
INPUT_COLOR = "#7f7f7f"
MAX_DIST_CHANNELS = 4
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=50, b=40), legend=dict(orientation="h", y=-0.15))


def _bars(edges: list[float], counts: list[int], name: str, color: str, show: bool, opacity: float = 0.6) -> go.Bar:
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


def distributions_figure(report: Report) -> go.Figure:
    """Per channel: the input's histogram (left) and both outputs overlaid (right)."""
    channels = report.histograms.get("channels", [])[:MAX_DIST_CHANNELS]
    rows = max(len(channels), 1)
    fig = make_subplots(
        rows=rows,
        cols=2,
        horizontal_spacing=0.08,
        vertical_spacing=0.12 if rows > 1 else 0.2,
        subplot_titles=[
            t for h in channels for t in (f"channel {h['channel']}: input", f"channel {h['channel']}: output")
        ],
    )
    for row, h in enumerate(channels, start=1):
        first = row == 1
        fig.add_trace(_bars(h["input_edges"], h["input"], "input", INPUT_COLOR, first), row=row, col=1)
        fig.add_trace(_bars(h["output_edges"], h["bnviz"], "bnviz output", BNVIZ_COLOR, first, 0.5), row=row, col=2)
        fig.add_trace(_bars(h["output_edges"], h["torch"], "torch output", TORCH_COLOR, first, 0.5), row=row, col=2)
    fig.update_layout(barmode="overlay", height=220 * rows + 80, title="Distributions per channel", **_LAYOUT)
    return fig


def running_stats_figure(report: Report) -> go.Figure:
    """running_mean and running_var per channel at every step, both sides, with population values."""
    hist = report.history
    fig = make_subplots(rows=1, cols=2, subplot_titles=("running_mean", "running_var"), horizontal_spacing=0.1)
    steps = list(range(1, len(hist.get("bnviz", [])) + 1))
    for col, key, pop_key in ((1, "running_mean", "population_mean"), (2, "running_var", "population_var")):
        snaps = {side: [s[key] for s in hist.get(side, [])] for side in ("bnviz", "torch")}
        if not steps or snaps["bnviz"][0] is None:
            continue
        for c in range(len(snaps["bnviz"][0])):
            for side, color, dash, mode in (
                ("bnviz", BNVIZ_COLOR, "solid", "lines"),
                ("torch", TORCH_COLOR, "dot", "markers"),
            ):
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=[s[c] for s in snaps[side]],
                        mode=mode,
                        name=side,
                        legendgroup=side,
                        showlegend=(col == 1 and c == 0),
                        line=dict(color=color, dash=dash),
                        marker=dict(color=color, size=6, symbol="circle-open"),
                        hovertemplate=f"{side} c{c}: %{{y:.6g}}",
                    ),
                    row=1,
                    col=col,
                )
            pop = hist[pop_key][c]
            fig.add_hline(y=pop, line=dict(color=INPUT_COLOR, dash="dash", width=1), row=1, col=col)
    fig.update_xaxes(title_text="step (the last one is the displayed batch)")
    fig.update_layout(height=380, title="Running statistics (dashed: population values)", **_LAYOUT)
    return fig


def diff_figure(report: Report) -> go.Figure:
    """Distribution of |bnviz − torch| per quantity on a log scale; exact agreements counted apart."""
    fig = go.Figure()
    notes = []
    lo_tick, hi_tick = 2, -18
    for name, h in report.histograms.get("diffs", {}).items():
        edges = h["edges"]
        centers = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        fig.add_trace(go.Bar(x=centers, y=h["counts"], name=name, opacity=0.75, width=edges[1] - edges[0]))
        notes.append(f"{name}: {h['exact']}/{h['total']} bit-exact")
        used = [c for c, n in zip(centers, h["counts"], strict=True) if n]
        if used:
            lo_tick, hi_tick = min(lo_tick, math.floor(min(used))), max(hi_tick, math.ceil(max(used)))
    if lo_tick > hi_tick:  # every element agrees bit for bit
        lo_tick, hi_tick = -8, 0
    ticks = list(range(lo_tick, hi_tick + 1))
    fig.update_xaxes(
        title_text="|bnviz − torch| over the elements that differ (log scale)",
        tickvals=ticks, ticktext=[f"1e{t}" for t in ticks], range=[lo_tick - 0.5, hi_tick + 0.5],
    )  # fmt: skip
    fig.update_yaxes(title_text="count")
    subtitle = "; ".join(notes)
    fig.update_layout(
        barmode="overlay",
        height=420,
        title=dict(text="Differences from torch", subtitle=dict(text=subtitle)),
        **_LAYOUT,
    )
    return fig


def gradients_figure(report: Report) -> go.Figure:
    """∂L/∂x's distribution, both sides overlaid, and ∂L/∂γ, ∂L/∂β per channel."""
    grads = report.histograms
    fig = make_subplots(
        rows=1, cols=3, column_widths=[0.5, 0.25, 0.25], subplot_titles=("grad input", "grad weight", "grad bias")
    )
    gi = grads.get("grad_input")
    if gi and gi["edges"]:
        fig.add_trace(_bars(gi["edges"], gi["bnviz"], "bnviz", BNVIZ_COLOR, True, 0.5), row=1, col=1)
        fig.add_trace(_bars(gi["edges"], gi["torch"], "torch", TORCH_COLOR, True, 0.5), row=1, col=1)
    for col, key in ((2, "grad_weight"), (3, "grad_bias")):
        values: dict[str, Any] | None = grads.get("grad_params", {}).get(key)
        if not values:
            continue
        for side, color in (("bnviz", BNVIZ_COLOR), ("torch", TORCH_COLOR)):
            fig.add_trace(
                go.Scatter(
                    x=list(range(len(values[side]))),
                    y=values[side],
                    mode="markers",
                    showlegend=False,
                    name=f"{side} {key}",
                    marker=dict(color=color, symbol="circle" if side == "torch" else "x", size=9),
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="channel", row=1, col=2)
    fig.update_xaxes(title_text="channel", row=1, col=3)
    fig.update_layout(barmode="overlay", height=380, title="Gradients (fixed random upstream gradient)", **_LAYOUT)
    return fig


def figure_bytes(fig: go.Figure) -> int:
    """Size of the figure's JSON, what the browser receives."""
    return len(fig.to_json().encode())


def all_figures(report: Report) -> dict[str, go.Figure]:
    """Every chart of a report, by section name. Empty for a report that carries an error."""
    if report.error is not None:
        return {}
    return {
        "distributions": distributions_figure(report),
        "running": running_stats_figure(report),
        "differences": diff_figure(report),
        "gradients": gradients_figure(report),
    }
