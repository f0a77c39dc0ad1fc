"""``/inference``'s charts from a report: the folded network's differences, each freezing variant's
running statistics over fine-tuning, and the outputs' drift. Pure plotly."""

from __future__ import annotations

import itertools

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer.inference.engine import CHANNEL_SYMBOLS, LOG_EDGES, STEP_TICKS, VARIANT_STYLE, InferenceReport
from bnviz.explorer.inference.url import VARIANTS
from bnviz.explorer.theme import BNVIZ_COLOR, INPUT_COLOR, LAYOUT


def _short(values: list[float]) -> list[float]:
    """Six significant digits: what a hover label shows, in a third of the JSON."""
    return [float(f"{v:.6g}") for v in values]


def _step_axis(fig: go.Figure, steps: int) -> None:
    """Integer ticks on every x axis (they count fine-tuning steps): at most about six, a round
    number of steps apart, so that they fit a phone-wide subplot."""
    dtick = next((d for d in STEP_TICKS if steps / d <= 6), STEP_TICKS[-1])
    fig.update_xaxes(tickformat="d", dtick=dtick, rangemode="tozero")


def fold_difference_figure(report: InferenceReport) -> go.Figure:
    """log10 |difference| histograms: folded vs unfolded in eval (rounding), and the fold vs the
    training-mode output (batch statistics against running ones)."""
    fig = go.Figure()
    rows = (
        ("vs unfolded, eval: rounding", report.outputs, BNVIZ_COLOR),
        ("vs training mode: wrong statistics", report.train_mode, INPUT_COLOR),
    )
    for name, part, color in rows:
        h = part.get("histogram")
        if not h:
            continue
        edges = h["edges"]
        centers = [round((lo + hi) / 2, 6) for lo, hi in itertools.pairwise(edges)]
        fig.add_trace(
            go.Bar(
                x=centers,
                y=h["counts"],
                width=edges[1] - edges[0],
                name=name,
                marker_color=color,
                opacity=0.7,
                hovertemplate=f"{name}<br>|difference| ≈ 10^%{{x:.2f}}: %{{y}} values<extra></extra>",
            )
        )
    lo, hi = int(LOG_EDGES[0]), int(LOG_EDGES[1])
    ticks = list(range(lo, hi + 1, 2))
    fig.update_xaxes(
        title_text="|difference| (log scale)", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks], range=[lo, hi]
    )
    fig.update_yaxes(title_text="how many scores")
    fig.update_layout(barmode="overlay", height=360, title="How far the folded output is off", **LAYOUT)
    return fig


def _stat_ranges(report: InferenceReport) -> dict[str, list[float]]:
    """Per statistic, one y range for every variant's chart, so a flat line and a drifting one
    are drawn on the same scale."""
    out = {}
    for stat in ("running_mean", "running_var"):
        values = [x for v in report.freezing.get("variants", {}).values() for step in v[stat] for x in step]
        if not values:
            continue
        lo, hi = min(values), max(values)
        pad = 0.06 * (hi - lo) or 0.05 * max(abs(hi), 1e-3)
        out[stat] = [lo - pad, hi + pad]
    return out


def running_stats_figure(report: InferenceReport, variant: str) -> go.Figure:
    """One variant: the first batch norm's running mean (left) and variance (right) per
    fine-tuning step, a line per channel; every variant's chart on the same y ranges."""
    v = report.freezing.get("variants", {}).get(variant)
    steps = report.freezing.get("steps", [])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14, subplot_titles=("running_mean", "running_var"))
    if v is None:
        return fig
    color, _ = VARIANT_STYLE[variant]
    ranges = _stat_ranges(report)
    for col, stat in ((1, "running_mean"), (2, "running_var")):
        for c in report.freezing["channels"]:
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=_short([s[c] for s in v[stat]]),
                    mode="lines+markers",
                    name=f"channel {c}",
                    legendgroup=f"c{c}",
                    showlegend=col == 1,
                    line=dict(color=color, width=1.5),
                    marker=dict(size=6, symbol=CHANNEL_SYMBOLS[c % len(CHANNEL_SYMBOLS)]),
                    opacity=1.0 - 0.15 * c,
                    hovertemplate=f"{stat}, channel {c}, step %{{x}}: %{{y:.6g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        if stat in ranges:
            fig.update_yaxes(range=ranges[stat], row=1, col=col)
    _step_axis(fig, len(steps))
    fig.update_xaxes(title_text="fine-tuning step")
    number = list(VARIANTS).index(variant) + 1
    fig.update_layout(height=340, title=f"First batch norm, variant {number}", **LAYOUT)
    return fig


def output_drift_figure(report: InferenceReport) -> go.Figure:
    """The change due to the batch norms' state alone — today's network vs today's with step 0's batch
    norms put back (top) — and all of the eval output's change since step 0 (bottom): mean |change|
    on the probe batch."""
    variants = report.freezing.get("variants", {})
    steps = report.freezing.get("steps", [])
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.14,
        subplot_titles=("the part due to the batch norms", "all of it (the network fine-tunes)"),
    )
    for number, (key, v) in enumerate(variants.items(), start=1):
        color, dash = VARIANT_STYLE[key]
        for row, stat in ((1, "bn_drift"), (2, "output_drift")):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=_short(v[stat]),
                    mode="lines+markers",
                    name=f"{number}. {v['label']}",
                    legendgroup=key,
                    showlegend=row == 1,
                    line=dict(color=color, dash=dash),
                    hovertemplate=f"{v['label']}, step %{{x}}: %{{y:.3g}}<extra></extra>",
                ),
                row=row,
                col=1,
            )
    _step_axis(fig, len(steps))
    fig.update_xaxes(title_text="fine-tuning step", row=2, col=1)
    fig.update_yaxes(title_text="mean |Δ output|", rangemode="tozero")
    layout = {**LAYOUT, "margin": {**LAYOUT["margin"], "b": 110}}  # the legend may take two rows
    fig.update_layout(height=520, title="How far the output moves", **layout)
    return fig


def all_figures(report: InferenceReport) -> dict[str, go.Figure]:
    """Every chart of a report, by name: the fold's differences, one running-statistics chart per
    freezing variant (``running_stats_<variant>``) and the output's drift."""
    return {
        "fold_difference": fold_difference_figure(report),
        **{f"running_stats_{key}": running_stats_figure(report, key) for key in VARIANTS},
        "output_drift": output_drift_figure(report),
    }
