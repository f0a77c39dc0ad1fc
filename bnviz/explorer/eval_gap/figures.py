"""The eval-gap page's charts, from its reports: plotly figures of a few dozen numbers each.

Colours mean the same on every chart: train mode green and eval mode orange (as on the layer
page); the cause magenta and its fix teal; a formula's prediction purple; the exact population
statistics (PreciseBN) black; momenta in purples, lighter for smaller; torch blue and bnviz red
(as everywhere). Accuracies are drawn as percentages; ratios to the population's statistics
have a dotted line at 1.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer.eval_gap.engine import ORDERS, BatchesReport, DropoutReport, LagReport
from bnviz.explorer.eval_gap.measure import TABLE_UNITS
from bnviz.explorer.eval_gap.steps import ACCUMULATION_VARIANTS, AccumulationReport, CheckpointReport, PassesReport
from bnviz.explorer.eval_gap.url import CHECKPOINT_VARIANTS, DROPOUT_VARIANTS
from bnviz.explorer.theme import (
    BNVIZ_COLOR,
    CHANCE,
    EVAL_COLOR,
    INPUT_COLOR,
    LAYOUT,
    TORCH_COLOR,
    TRAIN_COLOR,
    finite,
    log_ticks,
)

CAUSE_COLOR = "#e7298a"
FIX_COLOR = "#1b9e77"
PREDICTED_COLOR = "#7570b3"
EXACT_COLOR = "#222222"
MOMENTUM_COLORS = ("#cbc9e2", "#9e9ac8", "#756bb1", "#54278f", "#3f007d", "#2d004b")  # smallest momentum first
ORDER_COLORS = {"sorted": CAUSE_COLOR, "shuffled": FIX_COLOR}
ORDER_NAMES = {"sorted": "sorted by class", "shuffled": "shuffled"}
DROPOUT_NAMES = {"before-bn": "dropout before each BN", "head": "fix 1: dropout after the last BN",
                 "none": "no dropout"}  # fmt: skip
ACCUMULATION_NAMES = {"big": "one batch of k·n", "micro": "k micro-batches of n",
                      "micro-adjusted": "k micro-batches, momentum adjusted"}  # fmt: skip
ACCUMULATION_COLORS = {"big": FIX_COLOR, "micro": CAUSE_COLOR, "micro-adjusted": PREDICTED_COLOR}
WAY_NAMES = {
    "trained": "running statistics as trained",
    "separate": "two forward passes",
    "together": "one concatenated forward",
}
WAY_COLORS = {"trained": INPUT_COLOR, "separate": CAUSE_COLOR, "together": PREDICTED_COLOR}
CHECKPOINT_NAMES = {
    "torch": "torch, no checkpointing", "torch-reentrant": "torch, checkpoint (reentrant)",
    "torch-non-reentrant": "torch, checkpoint (non-reentrant)", "torch-fix": "torch, checkpoint, momentum 1 − √(1 − m)",
    "bnviz": "bnviz, no checkpointing", "bnviz-reentrant": "bnviz, checkpoint (reentrant)",
    "bnviz-non-reentrant": "bnviz, checkpoint (non-reentrant)",
}  # fmt: skip
CHECKPOINT_COLORS = {"torch": TORCH_COLOR, "torch-reentrant": "#6baed6", "torch-non-reentrant": "#9ecae1",
                     "torch-fix": "#08306b", "bnviz": BNVIZ_COLOR, "bnviz-reentrant": "#fb6a4a",
                     "bnviz-non-reentrant": "#fcae91"}  # fmt: skip


def _layers(n: int) -> list[str]:
    return [f"batch norm {k + 1}" for k in range(n)]


def _accuracy_axis(fig: go.Figure, chance: bool = True, **where: object) -> None:
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], **where)
    if chance:
        fig.add_hline(y=CHANCE, line=dict(color=INPUT_COLOR, dash="dot", width=1), **where)


def _one_line(fig: go.Figure, **where: object) -> None:
    fig.add_hline(y=1.0, line=dict(color=INPUT_COLOR, dash="dot", width=1), **where)


def _bar(name: str, x: list[str], y: list[float], color: str, fmt: str = ".3f", **kw: object) -> go.Bar:
    return go.Bar(name=name, x=x, y=[finite(v) for v in y], marker_color=color,
                  hovertemplate=f"{name}, %{{x}}: %{{y:{fmt}}}<extra></extra>", **kw)  # fmt: skip


# --- 1. non-i.i.d. batches -------------------------------------------------------------------------


def batches_accuracy_figure(report: BatchesReport) -> go.Figure:
    """Accuracy over training, sorted minibatches left and shuffled right: train mode (on the
    training images, in minibatches made the training's way) and eval mode (test split)."""
    run = report.runs[0]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[ORDER_NAMES[o] for o in ORDERS])  # fmt: skip
    for col, order in enumerate(ORDERS, start=1):
        r = run.orders[order]
        steps = list(r.curve.steps)
        for mode, ys, color in (("train mode", r.train_mode, TRAIN_COLOR), ("eval mode", r.curve.test_accuracy,
                                                                             EVAL_COLOR)):  # fmt: skip
            fig.add_trace(go.Scatter(x=steps, y=list(ys), mode="lines+markers", name=mode, legendgroup=mode,
                                     showlegend=col == 1, line=dict(color=color, width=2.5),
                                     hovertemplate=f"{ORDER_NAMES[order]}, {mode}, step %{{x}}: %{{y:.1%}}"
                                                   "<extra></extra>"), row=1, col=col)  # fmt: skip
        fig.update_xaxes(title_text="SGD step", rangemode="tozero", row=1, col=col)
        _accuracy_axis(fig, row=1, col=col)
    fig.update_layout(height=380, title=f"Accuracy, train mode and eval mode (seed {run.seed})", **LAYOUT)
    return fig


def batches_statistics_figure(report: BatchesReport) -> go.Figure:
    """Per batch norm, as a ratio to the exact population variance: the running variance, and
    the mean of the minibatches' variances, for each order."""
    run = report.runs[0]
    n = len(run.orders["sorted"].var_ratio)
    fig = go.Figure()
    for order in ORDERS:
        r = run.orders[order]
        fig.add_trace(_bar(f"{ORDER_NAMES[order]}: running variance", _layers(n), list(r.var_ratio),
                           ORDER_COLORS[order]))  # fmt: skip
        fig.add_trace(_bar(f"{ORDER_NAMES[order]}: mean of the minibatches' variances", _layers(n),
                           list(r.batch_var_ratio), ORDER_COLORS[order], marker_pattern_shape="/"))  # fmt: skip
    _one_line(fig)
    fig.update_yaxes(title_text="÷ population variance")
    fig.update_layout(barmode="group", height=360, title=f"Variances ÷ the exact variance (seed {run.seed})", **LAYOUT)
    return fig


def seeds_figure(title: str, rows: list[tuple[str, tuple[float, ...], str]], seeds: tuple[int, ...],
                 axis: str = "test accuracy", percent: bool = True) -> go.Figure:  # fmt: skip
    """Every seed's value of each quantity (``rows``: label, one value per seed, colour) as dots, and
    their mean as a wide dash: the spread a verdict over the seeds is made from."""
    fig = go.Figure()
    fmt = ".1%" if percent else ".3g"
    for label, values, color in rows:
        fig.add_trace(go.Scatter(x=[label] * len(values), y=[finite(v) for v in values], mode="markers",
                                 marker=dict(color=color, size=9, opacity=0.75), showlegend=False,
                                 text=[f"seed {s}" for s in seeds],
                                 hovertemplate=f"%{{text}}: %{{y:{fmt}}}<extra>{label}</extra>"))  # fmt: skip
        mean = [v for v in values if v == v]
        fig.add_trace(go.Scatter(x=[label], y=[sum(mean) / len(mean) if mean else None], mode="markers",
                                 marker=dict(symbol="line-ew-open", size=40, line=dict(width=3, color=color)),
                                 showlegend=False, hovertemplate=f"mean: %{{y:{fmt}}}<extra>{label}</extra>"))
    fig.update_yaxes(title_text=axis, tickformat=".0%" if percent else None)
    fig.update_layout(height=360, title=f"{title} ({len(seeds)} seeds)", **LAYOUT)
    return fig


def batches_seeds_figure(report: BatchesReport) -> go.Figure:
    """Final train-mode and eval-mode accuracy of each order, every seed."""
    rows = [(f"{ORDER_NAMES[o]}, {mode}", tuple(getattr(r.orders[o], attr) for r in report.runs), color)
            for o in ORDERS for mode, attr, color in (("train mode", "train_mode_final", TRAIN_COLOR),
                                                      ("eval mode", "eval_test", EVAL_COLOR))]  # fmt: skip
    return seeds_figure("Final accuracy", rows, report.config.seeds)


def batches_figures(report: BatchesReport) -> dict[str, go.Figure]:
    """Section 1's charts by name."""
    return {"seeds": batches_seeds_figure(report), "accuracy": batches_accuracy_figure(report),
            "statistics": batches_statistics_figure(report)}  # fmt: skip


# --- 2. running statistics that lag ----------------------------------------------------------------


def _momentum_colors(momenta: tuple[float, ...]) -> dict[float, str]:
    ranked = sorted(momenta)
    return {m: MOMENTUM_COLORS[ranked.index(m) % len(MOMENTUM_COLORS)] for m in momenta}


def lag_accuracy_figure(report: LagReport) -> go.Figure:
    """Test accuracy in eval mode over training: with the running statistics of each momentum,
    and with the exact population statistics of the same weights (PreciseBN)."""
    run = report.runs[0]
    fig = go.Figure()
    steps, colors = list(run.steps), _momentum_colors(report.config.momenta)
    for m in report.config.momenta:
        fig.add_trace(go.Scatter(x=steps, y=list(run.accuracy[m]), mode="lines+markers", name=f"momentum {m:g}",
                                 line=dict(color=colors[m], width=2.5),
                                 hovertemplate=f"momentum {m:g}, step %{{x}}: %{{y:.1%}}<extra></extra>"))  # fmt: skip
    fig.add_trace(go.Scatter(x=steps, y=list(run.exact), mode="lines", name="exact statistics (PreciseBN)",
                             line=dict(color=EXACT_COLOR, width=2, dash="dash"),
                             hovertemplate="exact statistics, step %{x}: %{y:.1%}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title_text="SGD step", rangemode="tozero")
    _accuracy_axis(fig)
    fig.update_layout(height=380, title=f"Eval-mode test accuracy (seed {run.seed})", **LAYOUT)
    return fig


def lag_distance_figure(report: LagReport) -> go.Figure:
    """How far each momentum's running variance is from the exact one, over training (log axis)."""
    run = report.runs[0]
    fig = go.Figure()
    steps, colors = list(run.steps), _momentum_colors(report.config.momenta)
    for m in report.config.momenta:
        fig.add_trace(go.Scatter(x=steps, y=[finite(v) for v in run.var_error[m]], mode="lines+markers",
                                 name=f"momentum {m:g}", line=dict(color=colors[m], width=2.5),
                                 hovertemplate=f"momentum {m:g}, step %{{x}}: %{{y:.3g}}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title_text="SGD step", rangemode="tozero")
    ticks, labels = log_ticks([v for m in report.config.momenta for v in run.var_error[m]])
    fig.update_yaxes(type="log", title_text="mean |running var ÷ exact var − 1|", tickvals=ticks, ticktext=labels)
    fig.update_layout(height=360, title=f"Running variance against exact (seed {run.seed})", **LAYOUT)
    return fig


def lag_variance_figure(report: LagReport) -> go.Figure:
    """At the end, per batch norm, as a ratio to the exact population variance: the mean over an
    epoch of shuffled minibatches of their unbiased and their biased variances (the running
    variances are on the distance chart)."""
    run = report.runs[0]
    n = len(run.batch_var)
    fig = go.Figure()
    fig.add_trace(_bar("mean of minibatch variances (unbiased, ÷ (n − 1))", _layers(n), list(run.batch_var),
                       FIX_COLOR, fmt=".4f"))  # fmt: skip
    fig.add_trace(_bar("mean of minibatch variances (biased, ÷ n)", _layers(n), list(run.biased_batch_var),
                       FIX_COLOR, fmt=".4f", marker_pattern_shape="/"))  # fmt: skip
    fig.add_hline(y=1.0, line=dict(color=EXACT_COLOR, dash="dash", width=1.5), annotation_text="exact population",
                  annotation_position="top left")  # fmt: skip
    values = [v for v in (*run.batch_var, *run.biased_batch_var, 1.0) if v == v]
    pad = max(0.01, (max(values) - min(values)) * 0.3)
    fig.update_yaxes(title_text="÷ exact population variance", range=[min(values) - pad, max(values) + pad])
    fig.update_layout(barmode="group", height=360, title=f"Batch variances ÷ exact variance (seed {run.seed})",
                      **LAYOUT)  # fmt: skip
    return fig


def lag_seeds_figure(report: LagReport) -> go.Figure:
    """Each momentum's largest shortfall against the exact statistics after step 0, as the running
    statistics are and with the initial buffers' share taken out, every seed."""
    colors = _momentum_colors(report.config.momenta)
    rows = []
    for m in report.config.momenta:
        rows.append((f"momentum {m:g}", report.lags(m).differences, colors[m]))
        rows.append((f"momentum {m:g}, initial buffers out", report.lags_unbiased(m).differences, EXACT_COLOR))
    return seeds_figure("Shortfall vs exact stats", rows, report.config.seeds,
                        axis="points below exact")  # fmt: skip


def lag_figures(report: LagReport) -> dict[str, go.Figure]:
    """Section 2's charts by name."""
    return {"seeds": lag_seeds_figure(report), "accuracy": lag_accuracy_figure(report),
            "distance": lag_distance_figure(report), "variance": lag_variance_figure(report)}  # fmt: skip


# --- 3. dropout before batch norm ------------------------------------------------------------------


def dropout_shift_figure(report: DropoutReport) -> go.Figure:
    """Left, the dropout alone on the same inputs: measured variance ratio against the formula,
    and for the inputs centred to zero mean against 1/(1 − p). Right, in the network: the
    variance shift max(real/running, running/real) before the fix, the formula's, and after each fix."""
    run = report.runs[0]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("dropout alone", "in the network"))  # fmt: skip
    layers = run.layers
    names = _layers(len(layers))
    left = (("measured", [s.isolated for s in layers], CAUSE_COLOR, ""),
            ("formula", [s.isolated_predicted for s in layers], PREDICTED_COLOR, ""),
            ("centred input", [s.centred for s in layers], CAUSE_COLOR, "/"),
            ("1/(1−p)", [s.simple for s in layers], PREDICTED_COLOR, "/"))  # fmt: skip
    for name, ys, color, shape in left:
        fig.add_trace(_bar(name, names, ys, color, marker_pattern_shape=shape, legendgroup=name), row=1, col=1)
    right = (("shift", [s.shift for s in layers], CAUSE_COLOR),
             ("formula's shift", [s.predicted for s in layers], PREDICTED_COLOR),
             ("fix 1", [s.shift_head for s in layers], FIX_COLOR),
             ("fix 2", [s.shift_exact for s in layers], EXACT_COLOR))  # fmt: skip
    for name, ys, color in right:
        fig.add_trace(_bar(name, names, ys, color, legendgroup=name), row=1, col=2)
    for col in (1, 2):
        _one_line(fig, row=1, col=col)
    fig.update_yaxes(title_text="train ÷ eval variance", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="variance shift", rangemode="tozero", row=1, col=2)
    fig.update_layout(barmode="group", height=420, title=f"Variance shift, p = {report.config.p:g}, seed "
                      f"{run.seed}", **LAYOUT)  # fmt: skip
    return fig


def dropout_accuracy_figure(report: DropoutReport) -> go.Figure:
    """Test accuracy of each network in train mode (dropout on) and eval mode, and of the first
    network with its statistics recomputed in eval mode (fix 2)."""
    run = report.runs[0]
    names = [DROPOUT_NAMES[v] for v in DROPOUT_VARIANTS] + ["fix 2: statistics recomputed in eval mode"]
    fig = go.Figure()
    fig.add_trace(_bar("train mode", names[:3], [run.train_mode[v] for v in DROPOUT_VARIANTS], TRAIN_COLOR,
                       fmt=".1%"))  # fmt: skip
    fig.add_trace(_bar("eval mode", names, [run.eval_mode[v] for v in DROPOUT_VARIANTS] + [run.exact_eval],
                       EVAL_COLOR, fmt=".1%"))  # fmt: skip
    _accuracy_axis(fig)
    fig.update_layout(barmode="group", height=380, title=f"Test accuracy, train and eval mode (seed {run.seed})",
                      **LAYOUT)  # fmt: skip
    return fig


def dropout_seeds_figure(report: DropoutReport) -> go.Figure:
    """The dropout network's test accuracy in train and eval mode, and in eval mode the same
    network without dropout and the two fixes, every seed."""
    runs = report.runs
    rows = [(f"{DROPOUT_NAMES['before-bn']}, train mode", tuple(r.train_mode["before-bn"] for r in runs), TRAIN_COLOR),
            (f"{DROPOUT_NAMES['before-bn']}, eval mode", tuple(r.eval_mode["before-bn"] for r in runs), CAUSE_COLOR),
            (DROPOUT_NAMES["none"], tuple(r.eval_mode["none"] for r in runs), INPUT_COLOR),
            (DROPOUT_NAMES["head"], tuple(r.eval_mode["head"] for r in runs), FIX_COLOR),
            ("fix 2: statistics recomputed, dropout off", tuple(r.exact_eval for r in runs), EXACT_COLOR)]  # fmt: skip
    return seeds_figure("Test accuracy", rows, report.config.seeds)


def dropout_figures(report: DropoutReport) -> dict[str, go.Figure]:
    """Section 3's charts by name."""
    return {"seeds": dropout_seeds_figure(report), "shift": dropout_shift_figure(report),
            "accuracy": dropout_accuracy_figure(report)}  # fmt: skip


# --- 4. micro-batches and gradient accumulation ----------------------------------------------------


def accumulation_spread_figure(report: AccumulationReport) -> go.Figure:
    """Per batch norm: the spread over minibatches of their means (in population σ) and of their
    variances (in population variance), for micro-batches of n and batches of k·n."""
    c = report.config
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("means (÷ σ)", "variances "
                                        "(÷ σ²)"))  # fmt: skip
    for size, color, label in ((c.micro_batch, CAUSE_COLOR, f"micro-batches of n = {c.micro_batch}"),
                               (c.batch, FIX_COLOR, f"one batch of k·n = {c.batch}")):  # fmt: skip
        names = _layers(len(report.mean_spread[size]))
        fig.add_trace(_bar(label, names, list(report.mean_spread[size]), color, legendgroup=label), row=1, col=1)
        fig.add_trace(_bar(label, names, list(report.var_spread[size]), color, legendgroup=label, showlegend=False),
                      row=1, col=2)  # fmt: skip
    fig.update_yaxes(title_text="std over minibatches", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(barmode="group", height=380, title="The statistics' spread",
                      **LAYOUT)  # fmt: skip
    return fig


def accumulation_buffers_figure(report: AccumulationReport) -> go.Figure:
    """Per batch norm, how far each network's running statistics are from the exact ones of
    its weights: mean error (÷ σ) left, variance error right."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("mean error (÷ σ)", "variance error"))  # fmt: skip
    for v in ACCUMULATION_VARIANTS:
        label = f"{ACCUMULATION_NAMES[v]}: {report.counted[v]:,} counted"
        names = _layers(len(report.mean_error[v]))
        fig.add_trace(_bar(label, names, list(report.mean_error[v]), ACCUMULATION_COLORS[v], legendgroup=v),
                      row=1, col=1)  # fmt: skip
        fig.add_trace(_bar(label, names, list(report.var_error[v]), ACCUMULATION_COLORS[v], legendgroup=v,
                           showlegend=False), row=1, col=2)  # fmt: skip
    for col in (1, 2):
        fig.update_yaxes(rangemode="tozero", row=1, col=col)
    fig.update_layout(barmode="group", height=400, title="Running statistics against exact", **LAYOUT)  # fmt: skip
    return fig


def accumulation_figures(report: AccumulationReport) -> dict[str, go.Figure]:
    """Section 4's charts by name."""
    return {"spread": accumulation_spread_figure(report), "buffers": accumulation_buffers_figure(report)}


# --- 5. two forward passes against one concatenated batch ------------------------------------------


def passes_figure(report: PassesReport) -> go.Figure:
    """Three panels, one above the other (readable on a phone). Top: each logit of some images of
    A, run alone (x) against as half of the concatenated batch (y); on the diagonal they would
    agree. Middle, per batch norm: how far the running means each way leaves are from the exact
    means of the real training images (÷ σ). Bottom: test accuracy in eval mode with them."""
    fig = make_subplots(rows=3, cols=1, vertical_spacing=0.13,
                        subplot_titles=("A's logits: alone, and in cat([A, B])", "running mean vs the real images' "
                                        "(÷ σ)", "test accuracy, eval mode"))  # fmt: skip
    xs, ys = [a for a, _ in report.logits], [b for _, b in report.logits]
    if xs:
        lo, hi = min(xs + ys), max(xs + ys)
        diagonal = dict(color=INPUT_COLOR, dash="dot", width=1)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=diagonal, hoverinfo="skip",
                                 showlegend=False), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", marker=dict(color=CAUSE_COLOR, size=5, opacity=0.6),
                                 showlegend=False, hovertemplate="alone %{x:.3f}, concatenated %{y:.3f}"
                                                                 "<extra></extra>"), row=1, col=1)  # fmt: skip
    fig.update_xaxes(title_text="logit, A alone", row=1, col=1)
    fig.update_yaxes(title_text="logit, A in cat([A, B])", row=1, col=1)
    for way in ("separate", "together"):
        label = f"{WAY_NAMES[way]} ({report.counted[way]} batches counted)"
        names = _layers(len(report.real_mean_error[way]))
        fig.add_trace(_bar(label, names, list(report.real_mean_error[way]), WAY_COLORS[way]), row=2, col=1)
    ways = list(report.eval_accuracy)
    accs = [report.eval_accuracy[w] for w in ways]
    for w in ways:
        fig.add_trace(go.Bar(x=[WAY_NAMES[w]], y=[report.eval_accuracy[w]], marker_color=WAY_COLORS[w],
                             name=f"{WAY_NAMES[w]}", showlegend=w == "trained",
                             hovertemplate="%{x}: %{y:.1%}<extra></extra>"), row=3, col=1)  # fmt: skip
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    fig.update_xaxes(showticklabels=False, row=3, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".1%", range=[max(0.0, min(accs) - 0.05), 1.005], row=3, col=1)
    fig.update_layout(barmode="group", height=900, title="Two passes against one", **LAYOUT)  # fmt: skip
    return fig


def passes_figures(report: PassesReport) -> dict[str, go.Figure]:
    """Section 5's chart by name."""
    return {"passes": passes_figure(report)}


# --- 6. activation checkpointing -------------------------------------------------------------------


def checkpoint_figure(report: CheckpointReport) -> go.Figure:
    """Left: ``num_batches_tracked`` of the first batch norm per network. Right: its running
    variance, first units, side by side."""
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.1,
                        subplot_titles=("batches counted", "running_var (layer 1)"))  # fmt: skip
    names = [CHECKPOINT_NAMES[v] for v in CHECKPOINT_VARIANTS]
    fig.add_trace(go.Bar(x=names, y=[report.counted[v][0] for v in CHECKPOINT_VARIANTS],
                         marker_color=[CHECKPOINT_COLORS[v] for v in CHECKPOINT_VARIANTS], showlegend=False,
                         hovertemplate="%{x}: %{y}<extra></extra>"), row=1, col=1)  # fmt: skip
    units = [f"unit {j}" for j in range(TABLE_UNITS)]
    for v in CHECKPOINT_VARIANTS:
        fig.add_trace(_bar(CHECKPOINT_NAMES[v], units, list(report.first_var[v]), CHECKPOINT_COLORS[v], fmt=".6g"),
                      row=1, col=2)  # fmt: skip
    fig.add_hline(y=report.config.steps, line=dict(color=INPUT_COLOR, dash="dot", width=1), row=1, col=1)
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_yaxes(title_text="num_batches_tracked", row=1, col=1)
    fig.update_layout(barmode="group", height=420, title=f"Buffers after {report.config.steps} steps", **LAYOUT)
    return fig


def checkpoint_table(report: CheckpointReport) -> list[dict[str, object]]:
    """The buffers side by side, one row per network: its name, ``num_batches_tracked`` per
    layer, the first batch norm's first running means and variances, and the largest
    differences from the unchecked network with the same layer."""
    rows = []
    for v in CHECKPOINT_VARIANTS:
        row: dict[str, object] = {"network": CHECKPOINT_NAMES[v],
                                  "num_batches_tracked": " / ".join(str(n) for n in report.counted[v])}  # fmt: skip
        for j in range(TABLE_UNITS):
            row[f"running_mean[{j}]"] = round(report.first_mean[v][j], 6)
        for j in range(TABLE_UNITS):
            row[f"running_var[{j}]"] = round(report.first_var[v][j], 6)
        row["max |Δ running_mean|"] = float(f"{report.mean_difference[v]:.3g}")
        row["max |Δ running_var|"] = float(f"{report.var_difference[v]:.3g}")
        row["max |Δ weights|"] = float(f"{report.weight_difference[v]:.3g}")
        rows.append(row)
    return rows


def checkpoint_figures(report: CheckpointReport) -> dict[str, go.Figure]:
    """Section 6's chart by name."""
    return {"buffers": checkpoint_figure(report)}


FIGURES = {
    BatchesReport: batches_figures, LagReport: lag_figures, DropoutReport: dropout_figures,
    AccumulationReport: accumulation_figures, PassesReport: passes_figures, CheckpointReport: checkpoint_figures,
}  # fmt: skip


def figures(report: object) -> dict[str, go.Figure]:
    """Any section's charts by name."""
    return FIGURES[type(report)](report)  # type: ignore[arg-type]
