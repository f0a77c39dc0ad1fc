"""The training page's charts, from its reports: plotly figures, a few hundred points each.

One colour per network on every chart: with batch norm teal, plain orange, batch norm + noise
purple, noise alone magenta; batch norm after the ReLU purple beside before (teal). Accuracies
are drawn as percentages, with chance (10 %) dashed.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer.mlp import UNIT, Curve
from bnviz.explorer.theme import CHANCE, INPUT_COLOR, LAYOUT, finite
from bnviz.explorer.training.engine import SeedsReport, SweepReport

COLORS = {"bn": "#1b9e77", "plain": "#d95f02", "noisy-bn": "#7570b3", "noise": "#e7298a",
          "noisy-bn-strong": "#a6761d", "before": "#1b9e77", "after": "#7570b3"}  # fmt: skip
NAMES = {"bn": "with batch norm", "plain": "plain (no batch norm)", "noisy-bn": "batch norm + the paper's noise",
         "noise": "the paper's noise, no batch norm", "noisy-bn-strong": "batch norm + a stronger noise",
         "before": "Linear → BN → ReLU", "after": "Linear → ReLU → BN"}  # fmt: skip
SMOOTHNESS_FLOOR = 1e-6  # a range of 0 (or below) is drawn at the floor of the log axis


def _band(color: str, alpha: float = 0.18) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _accuracy_axis(fig: go.Figure, **where: object) -> None:
    fig.update_yaxes(title_text="test accuracy", tickformat=".0%", range=[0, 1.02], **where)
    fig.add_hline(y=CHANCE, line=dict(color=INPUT_COLOR, dash="dot", width=1), **where)


def _mean_band(fig: go.Figure, variant: str, curves: tuple[Curve, ...], row: int | None = None,
               col: int | None = None, show: bool = True) -> None:  # fmt: skip
    """Mean test accuracy over the seeds, a line; min to max over the seeds, a band."""
    steps = list(curves[0].steps)
    per_step = list(zip(*(c.test_accuracy for c in curves), strict=True))
    color, where = COLORS[variant], dict(row=row, col=col) if row else {}
    if len(curves) > 1:
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=[max(a) for a in per_step] + [min(a) for a in per_step][::-1],
                                 fill="toself", fillcolor=_band(color), line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=variant), **where)  # fmt: skip
    fig.add_trace(go.Scatter(x=steps, y=[sum(a) / len(a) for a in per_step], mode="lines", name=NAMES[variant],
                             legendgroup=variant, showlegend=show, line=dict(color=color, width=2.5),
                             hovertemplate=f"{NAMES[variant]}, step %{{x}}: %{{y:.1%}}<extra></extra>"),
                  **where)  # fmt: skip


# --- experiment 1 ----------------------------------------------------------------------------------


def _seeds_title(n: int) -> str:
    """A title's account of the seeds, short enough for a phone (the page's caption says the band is the
    lowest to the highest seed)."""
    return f"{n} seeds" if n > 1 else "one seed"


def accuracy_figure(report: SeedsReport) -> go.Figure:
    """(a) Test accuracy against SGD steps, both networks: the mean over the seeds, a band from the
    lowest to the highest."""
    fig = go.Figure()
    for variant in ("bn", "plain"):
        _mean_band(fig, variant, report.curves[variant])
    fig.update_xaxes(title_text="SGD step", rangemode="tozero")
    _accuracy_axis(fig)
    c = report.config
    fig.update_layout(height=360, title=f"Test accuracy (lr {c.lr:g}, {_seeds_title(len(c.seeds))})",
                      **LAYOUT)  # fmt: skip
    return fig


def _mean_of(curves: tuple[Curve, ...], name: str) -> list[float]:
    """A percentile's mean over the seeds at each evaluation (NaN where a seed's is not finite)."""
    rows = zip(*(getattr(c, name) for c in curves), strict=True)
    return [sum(r) / len(r) if all(math.isfinite(v) for v in r) else math.nan for r in rows]


def percentiles_figure(report: SeedsReport) -> go.Figure:
    """(b, c) The 15th, 50th and 85th percentiles of one last-layer sigmoid's input over the test
    split, against steps, each the mean over the seeds: batch norm left, plain right, one y axis
    for both."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=(NAMES["bn"], NAMES["plain"]))  # fmt: skip
    for col, variant in ((1, "bn"), (2, "plain")):
        curves, color = report.curves[variant], COLORS[variant]
        steps = list(curves[0].steps)
        p15, p50, p85 = (_mean_of(curves, q) for q in ("p15", "p50", "p85"))
        fig.add_trace(go.Scatter(x=steps + steps[::-1], y=[finite(v) for v in p85 + p15[::-1]], fill="toself",
                                 fillcolor=_band(color, 0.25), line=dict(width=0), hoverinfo="skip",
                                 name="15th to 85th percentile", legendgroup="band", showlegend=col == 1),
                      row=1, col=col)  # fmt: skip
        for q, values, dash in (("15th", p15, "dot"), ("50th", p50, "solid"), ("85th", p85, "dot")):
            fig.add_trace(go.Scatter(x=steps, y=[finite(v) for v in values], mode="lines",
                                     line=dict(color=color, width=2.5 if q == "50th" else 1, dash=dash),
                                     name="median" if q == "50th" else "15th and 85th percentiles",
                                     legendgroup=q if q == "50th" else "tails", showlegend=col == 1 and q != "85th",
                                     hovertemplate=f"{q} percentile, step %{{x}}: %{{y:.3g}}<extra></extra>"),
                          row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="SGD step", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text=f"input of sigmoid unit {UNIT}, last hidden layer", row=1, col=1)
    n = len(report.config.seeds)
    fig.update_layout(height=380, title=f"A sigmoid's input ({_seeds_title(n)})",
                      **LAYOUT)  # fmt: skip
    return fig


def drift_figures(report: SeedsReport) -> dict[str, go.Figure]:
    """Experiment 1's charts by name."""
    return {"accuracy": accuracy_figure(report), "percentiles": percentiles_figure(report)}


# --- experiment 2 ----------------------------------------------------------------------------------


def sweep_figure(report: SweepReport) -> go.Figure:
    """Final test accuracy against the learning rate (log axis): per network the mean over the
    seeds (line), each seed (small dots) and the min-to-max spread (error bars)."""
    fig = go.Figure()
    lrs, seeds = list(report.config.lrs), report.config.seeds
    for variant in ("bn", "plain"):
        color, summary = COLORS[variant], report.summary(variant)
        means = [m for m, _, _ in summary]
        fig.add_trace(go.Scatter(
            x=lrs, y=means, mode="lines+markers", name=f"{NAMES[variant]}: mean of {len(seeds)} seeds",
            legendgroup=variant, line=dict(color=color, width=2.5), marker=dict(size=9),
            error_y=dict(type="data", symmetric=False, array=[hi - m for m, _, hi in summary],
                         arrayminus=[m - lo for m, lo, _ in summary], color=color, thickness=1.5, width=6),
            hovertemplate="learning rate %{x:g}: mean %{y:.1%}<extra></extra>",
        ))  # fmt: skip
        xs = [lr for lr, row in zip(lrs, report.accuracy[variant], strict=True) for _ in row]
        ys = [a for row in report.accuracy[variant] for a in row]
        text = [f"seed {s}" for _ in lrs for s in seeds]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{NAMES[variant]}: each seed",
                                 legendgroup=variant, showlegend=False, text=text,
                                 marker=dict(color=color, size=5, opacity=0.5, symbol="circle-open"),
                                 hovertemplate="learning rate %{x:g}, %{text}: %{y:.1%}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(type="log", title_text="learning rate (log scale)", tickvals=lrs, ticktext=[f"{v:g}" for v in lrs])
    _accuracy_axis(fig)
    c = report.config
    fig.update_layout(height=400, title=f"Final test accuracy after {c.steps:,} steps, by learning rate", **LAYOUT)
    return fig


# --- experiment 3 ----------------------------------------------------------------------------------


def noise_figure(report: SeedsReport) -> go.Figure:
    """Test accuracy against steps for the five networks: the mean over the seeds, and the band
    from the lowest to the highest seed."""
    fig = go.Figure()
    for variant in report.curves:
        _mean_band(fig, variant, report.curves[variant])
    fig.update_xaxes(title_text="SGD step", rangemode="tozero")
    _accuracy_axis(fig)
    n = len(report.config.seeds)
    fig.update_layout(height=380, title=f"Test accuracy, mean of {n} seed{'s' if n > 1 else ''}", **LAYOUT)
    return fig


def smoothness_figure(report: SeedsReport) -> go.Figure:
    """The loss's range along the gradient at the probed steps (log axis), with and without
    batch norm: mean over the seeds, error bars from the lowest to the highest seed; a probe
    whose loss was not finite is left out."""
    fig = go.Figure()
    for variant in ("bn", "plain"):
        curves = report.curves.get(variant, ())
        if not curves or not curves[0].probe_steps:
            continue
        steps = list(curves[0].probe_steps)
        per_step = [[max(v, SMOOTHNESS_FLOOR) for v in values if math.isfinite(v)]
                    for values in zip(*(c.smoothness for c in curves), strict=True)]  # fmt: skip
        mean = [sum(v) / len(v) if v else None for v in per_step]
        up = [max(v) - m if v and m is not None else 0 for v, m in zip(per_step, mean, strict=True)]
        down = [m - min(v) if v and m is not None else 0 for v, m in zip(per_step, mean, strict=True)]
        color = COLORS[variant]
        fig.add_trace(go.Scatter(
            x=steps, y=mean, mode="lines+markers", name=NAMES[variant], line=dict(color=color, width=2.5),
            marker=dict(size=9), error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, color=color),
            hovertemplate="step %{x}: loss range %{y:.3g}<extra></extra>",
        ))  # fmt: skip
    fig.update_xaxes(title_text="SGD step")
    fig.update_yaxes(type="log", title_text="max − min of the loss along the gradient", exponentformat="e")
    fig.update_layout(height=380, title="Loss range along the gradient", **LAYOUT)
    return fig


def noise_figures(report: SeedsReport) -> dict[str, go.Figure]:
    """Experiment 3's charts by name."""
    return {"accuracy": noise_figure(report), "smoothness": smoothness_figure(report)}


# --- experiment 4 ----------------------------------------------------------------------------------


def placement_figure(report: SeedsReport) -> go.Figure:
    """Left: final test accuracy of each seed, before and after, a grey line joining the two
    networks of one seed (same weights, same minibatches), and the mean (a wide dash). Right: mean
    test accuracy against steps, band from the lowest to the highest seed."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.12,
                        subplot_titles=("each seed, at the end", "over training"))  # fmt: skip
    seeds = report.config.seeds
    names = [NAMES[v] for v in report.curves]
    for k, seed in enumerate(seeds):
        ys = [report.finals(v)[k] for v in report.curves]
        fig.add_trace(go.Scatter(x=names, y=ys, mode="lines+markers", line=dict(color="#bbbbbb", width=1),
                                 marker=dict(color=[COLORS[v] for v in report.curves], size=8), showlegend=False,
                                 name=f"seed {seed}", hovertemplate=f"seed {seed}: %{{y:.1%}}<extra></extra>"),
                      row=1, col=1)  # fmt: skip
    for variant in report.curves:
        finals = report.finals(variant)
        fig.add_trace(go.Scatter(x=[NAMES[variant]], y=[sum(finals) / len(finals)], mode="markers",
                                 marker=dict(symbol="line-ew-open", size=44, color=COLORS[variant],
                                             line=dict(width=3, color=COLORS[variant])),
                                 name=f"{NAMES[variant]}: mean", showlegend=False,
                                 hovertemplate="mean of the seeds: %{y:.1%}<extra></extra>"), row=1, col=1)  # fmt: skip
        _mean_band(fig, variant, report.curves[variant], row=1, col=2)
    fig.update_xaxes(title_text="SGD step", rangemode="tozero", row=1, col=2)
    lows = [min(report.finals(v)) for v in report.curves]
    fig.update_yaxes(title_text="test accuracy", tickformat=".1%", range=[max(0.0, min(lows) - 0.05), 1.005], row=1,
                     col=1)  # fmt: skip
    _accuracy_axis(fig, row=1, col=2)
    fig.update_layout(height=400, title=f"Batch norm before or after the ReLU ({len(seeds)} seeds)", **LAYOUT)
    return fig


def placement_figures(report: SeedsReport) -> dict[str, go.Figure]:
    """Experiment 4's chart by name."""
    return {"placement": placement_figure(report)}
