"""Report → plotly figures. Pure plotly, no streamlit; every histogram arrives pre-binned, so a
figure's JSON stays small whatever the tensor size."""

from __future__ import annotations

import itertools
import math
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer import picture
from bnviz.explorer.layer.engine import Report
from bnviz.explorer.theme import (
    BNVIZ_COLOR,
    DIFF_COLORS,
    EVAL_COLOR,
    INPUT_COLOR,
    LAYOUT,
    TORCH_COLOR,
    TRAIN_COLOR,
    VALUE_TICKS,
    bars,
    integer_axis,
    outline,
    plain_ticks,
)


def distributions_figure(report: Report, channel: int = 0) -> go.Figure:
    """One channel: the input's histogram (left) and both outputs (right; bnviz filled red,
    torch outlined blue — where they agree the outline sits exactly on the bar)."""
    h = next((h for h in report.histograms.get("channels", []) if h["channel"] == channel), None)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=(f"channel {channel}: input", f"channel {channel}: output"))  # fmt: skip
    if h is not None:
        fig.add_trace(bars(h["input_edges"], h["input"], "input", INPUT_COLOR, True), row=1, col=1)
        fig.add_trace(bars(h["output_edges"], h["bnviz"], "bnviz output", BNVIZ_COLOR, True, 0.45), row=1, col=2)
        fig.add_trace(outline(h["output_edges"], h["torch"], "torch output", TORCH_COLOR), row=1, col=2)
    fig.update_layout(barmode="overlay", height=340, title=f"Channel {channel}, before and after",
                      **LAYOUT)  # fmt: skip
    return plain_ticks(fig)


def modes_figure(report: Report, channel: int = 0) -> go.Figure:
    """One channel of the displayed batch through the same layer in train mode (the batch's own
    statistics) and in eval mode (the running statistics), overlaid."""
    fig = go.Figure()
    entry = next((h for h in report.modes.get("channels", []) if h["channel"] == channel), None)
    if entry is not None:
        for mode, color in (("train", TRAIN_COLOR), ("eval", EVAL_COLOR)):
            if mode in entry:
                label = f"{mode} mode: mean {entry[f'{mode}_mean']:.3g}, std {entry[f'{mode}_std']:.3g}"
                fig.add_trace(bars(entry["edges"], entry[mode], label, color, True, 0.55))
    fig.update_xaxes(title_text=f"output of channel {channel}")
    fig.update_yaxes(title_text="count")
    fig.update_layout(barmode="overlay", height=330, title=f"Channel {channel}: train vs eval",
                      **LAYOUT)  # fmt: skip
    return plain_ticks(fig)


def running_stats_figure(report: Report, channel: int = 0) -> go.Figure:
    """running_mean and running_var from step 0 (the initial values) to the displayed batch:
    ``channel`` on both sides (bnviz a red line, torch blue markers) against its population value
    (dashed), the other drawn channels as faint grey lines."""
    hist = report.history
    fig = make_subplots(rows=1, cols=2, subplot_titles=("running_mean", "running_var"), horizontal_spacing=0.12)
    steps = list(range(len(hist.get("bnviz", []))))
    for col, key, pop_key in ((1, "running_mean", "population_mean"), (2, "running_var", "population_var")):
        snaps = {side: [s[key] for s in hist.get(side, [])] for side in ("bnviz", "torch")}
        if not steps or snaps["bnviz"][0] is None:
            continue
        count = len(snaps["bnviz"][0])
        for c in (c for c in range(count) if c != channel):
            fig.add_trace(go.Scatter(x=steps, y=[s[c] for s in snaps["bnviz"]], mode="lines", showlegend=False,
                                     line=dict(color="#cccccc", width=1), name=f"channel {c}",
                                     hovertemplate=f"channel {c}: %{{y:.6g}}<extra></extra>"),
                          row=1, col=col)  # fmt: skip
        if channel >= count:
            continue
        for side, color, mode in (("bnviz", BNVIZ_COLOR, "lines"), ("torch", TORCH_COLOR, "markers")):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=[s[channel] for s in snaps[side]],
                    mode=mode,
                    name=f"{side}, channel {channel}",
                    legendgroup=side,
                    showlegend=col == 1,
                    line=dict(color=color, width=2.5),
                    marker=dict(color=color, size=7, symbol="circle-open", line=dict(width=2)),
                    hovertemplate=f"{side}, step %{{x}}: %{{y:.6g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.add_hline(y=hist[pop_key][channel], line=dict(color=INPUT_COLOR, dash="dash", width=1), row=1, col=col)
    fig.update_xaxes(title_text="step")
    integer_axis(fig)
    fig.update_layout(height=400, title=f"Running statistics, channel {channel}", **LAYOUT)
    fig.update_yaxes(tickformat=VALUE_TICKS, exponentformat="e")
    return fig


def diff_figure(report: Report) -> go.Figure:
    """Distribution of |bnviz − torch| per quantity on a log scale; exact agreements counted apart."""
    fig = go.Figure()
    lo_tick, hi_tick = 2, -18
    for i, (name, h) in enumerate(report.histograms.get("diffs", {}).items()):
        edges = h["edges"]
        centers = [(lo + hi) / 2 for lo, hi in itertools.pairwise(edges)]
        fig.add_trace(go.Bar(x=centers, y=h["counts"], name=name, opacity=0.75, width=edges[1] - edges[0],
                             marker_color=DIFF_COLORS[i % len(DIFF_COLORS)]))  # fmt: skip
        used = [c for c, n in zip(centers, h["counts"], strict=True) if n]
        if used:
            lo_tick, hi_tick = min(lo_tick, math.floor(min(used))), max(hi_tick, math.ceil(max(used)))
    if lo_tick > hi_tick:  # every element agrees bit for bit
        lo_tick, hi_tick = -8, 0
    ticks = list(range(lo_tick, hi_tick + 1))
    fig.update_xaxes(
        title_text="|bnviz − torch| (log scale)",
        tickvals=ticks, ticktext=[f"1e{t}" for t in ticks], range=[lo_tick - 0.5, hi_tick + 0.5],
    )  # fmt: skip
    fig.update_yaxes(title_text="count")
    fig.update_layout(
        barmode="overlay",
        height=420,
        title="Differences from torch",
        **LAYOUT,
    )
    return fig


def gradients_figure(report: Report) -> go.Figure:
    """∂L/∂x's distribution, both sides overlaid (top), and ∂L/∂γ, ∂L/∂β per channel (below)."""
    grads = report.histograms
    fig = make_subplots(
        rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], vertical_spacing=0.2, horizontal_spacing=0.12,
        subplot_titles=("grad input", "grad weight", "grad bias"),
    )  # fmt: skip
    gi = grads.get("grad_input")
    if gi and gi["edges"]:
        fig.add_trace(bars(gi["edges"], gi["bnviz"], "bnviz", BNVIZ_COLOR, True, 0.45), row=1, col=1)
        fig.add_trace(outline(gi["edges"], gi["torch"], "torch", TORCH_COLOR), row=1, col=1)
    for col, key in ((1, "grad_weight"), (2, "grad_bias")):
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
                    marker=dict(color=color, symbol="circle-open" if side == "torch" else "x", size=13 if side ==
                                "torch" else 8, line=dict(width=2) if side == "torch" else None),
                ),
                row=2,
                col=col,
            )
    plain_ticks(fig)
    for col in (1, 2):
        fig.update_xaxes(title_text="channel", row=2, col=col)
        integer_axis(fig, row=2, col=col)
    fig.update_layout(barmode="overlay", height=560, title="Gradients", **LAYOUT)
    return fig


def gradient_lesson_figure(report: Report) -> go.Figure:
    """Per channel: the mean of the upstream gradient ∂L/∂y and of ∂L/∂x over the channel's values
    (left), and each one's cosine with x̂ (right) — bnviz's ∂L/∂x as crosses, torch's as circles."""
    lesson = report.gradients
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("channel mean", "cosine with x̂"))  # fmt: skip
    if lesson is not None:
        series = (
            ("upstream ∂L/∂y", lesson.mean_upstream, lesson.cos_upstream, INPUT_COLOR, "diamond", 10),
            ("bnviz ∂L/∂x", lesson.mean_bnviz, lesson.cos_bnviz, BNVIZ_COLOR, "x", 9),
            ("torch ∂L/∂x", lesson.mean_torch, lesson.cos_torch, TORCH_COLOR, "circle-open", 14),
        )
        for col in (1, 2):
            for name, means, cosines, color, symbol, size in series:
                values = means if col == 1 else cosines
                fig.add_trace(go.Scatter(
                    x=list(range(len(values))), y=list(values), mode="markers", name=name, showlegend=col == 1,
                    marker=dict(color=color, symbol=symbol, size=size, line=dict(width=2, color=color)),
                ), row=1, col=col)  # fmt: skip
            fig.add_hline(y=0, line=dict(color="#888", width=1, dash="dot"), row=1, col=col)
            fig.update_xaxes(title_text="channel", row=1, col=col)
            integer_axis(fig, row=1, col=col)
    fig.update_layout(height=340, title="The gradient: ∂L/∂y in, ∂L/∂x out", **LAYOUT)
    return plain_ticks(fig)


def figure_bytes(fig: go.Figure) -> int:
    """Size of the figure's JSON, what the browser receives."""
    return len(fig.to_json().encode())


def cube(report: Report, channel: int = 0) -> str | None:
    """The statistics picture of a report's displayed batch (an SVG document), ``channel`` shaded."""
    if report.cells is None:
        return None
    grouping = picture.Grouping(report.cells.shape, tuple(report.channels.get("reduced_dims", ())),
                                features_last=report.config.features_last)
    return picture.cube_svg(grouping, 0, channel)


def all_figures(report: Report, channel: int = 0) -> dict[str, go.Figure]:
    """Every chart of a report, by section name, with ``channel`` the one in focus. Empty for a
    report that carries an error."""
    if report.error is not None:
        return {}
    figures = {"cells": picture.cells_figure(report.cells, channel)} if report.cells is not None else {}
    return {
        **figures,
        "modes": modes_figure(report, channel),
        "distributions": distributions_figure(report, channel),
        "running": running_stats_figure(report, channel),
        "differences": diff_figure(report),
        "gradients": gradients_figure(report),
        "gradient_lesson": gradient_lesson_figure(report),
    }
