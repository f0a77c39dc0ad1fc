r"""The /inference page's engine: folding batch norm into the conv before it, and freezing it for
fine-tuning — a frozen config → one seeded run → a plain report → plotly figures.

**Folding.** A small network of bnviz layers (conv → BatchNorm2d → ReLU → conv → BatchNorm2d →
ReLU → pool → linear) is trained a few SGD steps on a seeded synthetic task (three classes; class
k brightens input channel k), put in eval mode and folded by ``bnviz.fold_batch_norms``:

.. math::
    W' = W \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \qquad
    b' = (b - \hat\mu) \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta

The report has those numbers for one channel, the folded and unfolded outputs on a probe batch
and their difference (rounding only), the forward times, and what folding a *training-mode*
network would give: its output uses each batch's statistics, the fold the running ones.

**Freezing.** From the trained state, the same fine-tuning batches — from a shifted
distribution (``x · 1.5 + shift``), so running statistics would visibly move — in three
variants: ``requires_grad=False`` on the batch norms' γ, β (the statistics still move);
``bn.eval()`` and then the loop's ``model.train()`` (which silently undoes it); and
``bnviz.freeze_batch_norm`` (nothing moves). The rest of the network trains in all three.

Everything returned is plain data (floats, ints, strings, lists, dicts): no tensor and no
module leaves this file, so a report can be cached and shared between users. The page's
sentences with the report's numbers in them (``pair_text``, ``variant_text``, …) are built here
too, from fixed words and numbers only, so the page does no arithmetic and they are tested here.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

import bnviz
from bnviz.explorer.inference.url import CLASSES, DTYPES, TIMING_REPEATS, VARIANTS, InferenceConfig
from bnviz.explorer.parity import diff, tolerance
from bnviz.explorer.text import sci
from bnviz.explorer.theme import BNVIZ_COLOR, INPUT_COLOR, LAYOUT, TORCH_COLOR
from bnviz.fold import BATCH_NORMS, FrozenBatchNorm
from bnviz.hosting.serve import Cancelled

SHIFT_SCALE = 1.5  # fine-tuning inputs: x · SHIFT_SCALE + shift
WEIGHT_VALUES = 6  # weights shown per channel in the formula
PLOT_CHANNELS = 4  # channels of the first batch norm drawn over the fine-tuning steps
STEP_TICKS = (1, 2, 5, 10, 20, 25, 50)  # distances between the ticks of a step axis
CHANNEL_SYMBOLS = ("circle", "square", "diamond", "triangle-up")  # one marker per channel drawn
MOVED = ("running_mean", "running_var", "weight")  # the first batch norm's state, compared before and after
LOG_EDGES = (-12.0, 2.0)  # log10 |difference| histogram range
BINS = 42
VARIANT_CODE = {  # what each variant does to the trained model, as a reader would write it
    "requires_grad": "for bn in batch_norms:\n    bn.weight.requires_grad_(False)\n    bn.bias.requires_grad_(False)",
    "bn_eval": "for bn in batch_norms:\n    bn.eval()\nfor x, y in batches:\n    model.train()\n    ...",
    "eval_after_train": (
        "for bn in batch_norms:\n    bn.weight.requires_grad_(False)\n    bn.bias.requires_grad_(False)\n"
        "for x, y in batches:\n    model.train()\n    for bn in batch_norms:\n"
        "        bn.eval()  # after model.train(), every time\n    ..."
    ),
    "freeze": "model = bnviz.freeze_batch_norm(model)",
}
VARIANT_STYLE = {  # plain torch idioms in torch's blue, bnviz's freeze in red
    "requires_grad": (TORCH_COLOR, "solid"),
    "bn_eval": (TORCH_COLOR, "dot"),
    "eval_after_train": (TORCH_COLOR, "dash"),
    "freeze": (BNVIZ_COLOR, "solid"),
}


@dataclass(frozen=True)
class InferenceReport:
    """Everything the page shows for one config; plain data only.

    ``layers_before`` / ``layers_after``: the network's layers, unfolded and folded.
    ``pairs``: per folded conv → batch norm pair, the formula's numbers for ``config.channel``.
    ``outputs``: folded vs unfolded eval outputs on the probe batch (first values, differences,
    a log10 |difference| histogram). ``timing``: median forward times (ms). ``train_mode``:
    the fold against the training-mode output, and what ``fold_batch_norms`` says to it.
    ``freezing``: per variant and step, the first batch norm's statistics and γ, and how far the
    output moved; per variant, how far that batch norm's state moved in all (``moved``).
    """

    config: InferenceConfig
    train_losses: list[float] = field(default_factory=list)
    layers_before: list[str] = field(default_factory=list)
    layers_after: list[str] = field(default_factory=list)
    pairs: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    train_mode: dict[str, Any] = field(default_factory=dict)
    freezing: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"match"`` when the folded network's output equals the unfolded one's within the
        dtype's rounding (``|folded − unfolded| ≤ atol + rtol · |unfolded|`` everywhere)."""
        return "match" if self.outputs.get("ok") else "mismatch"


# ---------------------------------------------------------------------------------------------
# The network and the task
# ---------------------------------------------------------------------------------------------


def build_network(config: InferenceConfig) -> nn.Sequential:
    """conv → BN → ReLU → conv (no bias) → BN → ReLU → pool → linear, with bnviz's layers, seeded."""
    c = config.channels
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's generator
        torch.manual_seed(config.seed)
        net = nn.Sequential(
            nn.Conv2d(CLASSES, c, 3, padding=1),
            bnviz.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1, bias=False),
            bnviz.BatchNorm2d(c),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c, CLASSES),
        )
    return net.to(DTYPES[config.dtype])


def task_batch(config: InferenceConfig, step: int, shifted: bool = False) -> tuple[Tensor, Tensor]:
    """Batch ``step`` of the seeded task: ``(images (N, 3, H, W), labels (N,))``; class k adds 1 to
    input channel k. ``shifted``: the fine-tuning distribution, ``x · SHIFT_SCALE + shift``."""
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step + (500_009 if shifted else 0))
    n, s = config.batch_size, config.image_size
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    x = torch.randn(n, CLASSES, s, s, generator=gen, dtype=torch.float64)
    x[torch.arange(n), labels] += 1.0
    if shifted:
        x = x * SHIFT_SCALE + config.shift
    return x.to(DTYPES[config.dtype]), labels


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, labels: Tensor) -> float:
    loss = nn.functional.cross_entropy(model(x), labels)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def _optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (*BATCH_NORMS, FrozenBatchNorm))]


def _layers(model: nn.Module) -> list[str]:
    return [f"{name}: {type(m).__name__}" for name, m in model.named_children()]


# ---------------------------------------------------------------------------------------------
# Folding
# ---------------------------------------------------------------------------------------------


def _floats(t: Tensor) -> list[float]:
    return t.detach().double().flatten().tolist()


def _pair_numbers(conv: nn.Module, bn: nn.Module, fused: nn.Module, c: int, where: str) -> dict[str, Any]:
    """The fold's formula for channel ``c``: inputs, the scale s = γ / √(σ̂² + ε), and results."""
    gamma, beta = float(bn.weight[c].detach()), float(bn.bias[c].detach())
    mean, var = float(bn.running_mean[c]), float(bn.running_var[c])
    return {
        "pair": where,
        "channel": c,
        "gamma": gamma,
        "beta": beta,
        "running_mean": mean,
        "running_var": var,
        "eps": bn.eps,
        "scale": gamma / math.sqrt(var + bn.eps),
        "has_bias": conv.bias is not None,
        "weights": conv.weight[c].numel(),  # the weights that make channel c: C_in · k · k
        "w_before": _floats(conv.weight[c])[:WEIGHT_VALUES],
        "w_after": _floats(fused.weight[c])[:WEIGHT_VALUES],
        "b_before": float(conv.bias[c].detach()) if conv.bias is not None else 0.0,
        "b_after": float(fused.bias[c].detach()),
    }


def _log_histogram(d: Tensor) -> dict[str, Any]:
    """Counts of log10 |d| over the nonzero differences, and how many are exactly zero."""
    v = d.detach().double().abs().flatten().numpy()
    nonzero = v[v > 0]
    edges = np.linspace(*LOG_EDGES, BINS + 1)
    logs = np.clip(np.log10(nonzero), *LOG_EDGES)
    return {
        "edges": edges.tolist(),
        "counts": np.histogram(logs, bins=edges)[0].tolist(),
        "exact": int((v == 0).sum()),
        "total": int(v.size),
    }


def _difference(a: Tensor, b: Tensor) -> dict[str, Any]:
    d = (a.double() - b.double()).abs()
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "histogram": _log_histogram(d)}


def _median_ms(fns: dict[str, Any], x: Tensor, repeats: int) -> dict[str, float]:
    """Median forward time (ms) of each network, runs interleaved (and their order alternated) so
    that a slow moment of the machine hits both."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    with torch.no_grad():
        for fn in fns.values():  # warm-up
            fn(x)
        for r in range(repeats):
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                fns[name](x)
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _folding(config: InferenceConfig, model: nn.Module, probe: Tensor) -> dict[str, Any]:
    """The fold of the trained eval-mode ``model``, checked on ``probe``."""
    model.eval()
    folded = bnviz.fold_batch_norms(model)
    c = config.channel
    pairs = [
        _pair_numbers(model[0], model[1], folded[0], c, "0: Conv2d → 1: BatchNorm2d"),
        _pair_numbers(model[3], model[4], folded[3], c, "3: Conv2d (no bias) → 4: BatchNorm2d"),
    ]
    with torch.no_grad():
        unfolded_y, folded_y = model(probe), folded(probe)
        # The training-mode network normalizes with the probe's own statistics; the fold bakes in
        # the running ones (a copy: a training-mode forward moves the running statistics).
        train_y = copy.deepcopy(model).train()(probe)
    eval_diff = _difference(folded_y, unfolded_y)
    rtol, atol = tolerance(probe.dtype)
    eval_diff.update(rtol=rtol, atol=atol, ok=diff(folded_y, unfolded_y, rtol, atol).ok)
    train_diff = _difference(folded_y, train_y)
    try:  # what bnviz says to a request to fold the training-mode network
        bnviz.fold_batch_norms(copy.deepcopy(model).train())
        refused = ""
    except ValueError as exc:
        refused = f"ValueError: {exc}"
    scale = float(train_y.double().abs().mean())
    timing = _median_ms({"unfolded": model, "folded": folded}, probe, TIMING_REPEATS)
    return {
        "layers_after": _layers(folded),
        "pairs": pairs,
        "outputs": {
            "unfolded": _floats(unfolded_y[0]),
            "folded": _floats(folded_y[0]),
            **eval_diff,
        },
        "timing": {
            **{f"{k}_ms": v for k, v in timing.items()},
            "speedup": timing["unfolded"] / timing["folded"] if timing["folded"] > 0 else float("nan"),
            "repeats": TIMING_REPEATS,
        },
        "train_mode": {
            "train_output": _floats(train_y[0]),
            "folded": _floats(folded_y[0]),
            "output_scale": scale,
            "relative": train_diff["max_abs"] / scale if scale > 0 else float("inf"),
            "refused": refused,
            **train_diff,
        },
    }


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------


def _prepare(model: nn.Module, variant: str) -> nn.Module:
    """Apply one of the ways of "freezing" the batch norms to a trained model (``eval_after_train``
    also puts them back in eval after every ``model.train()``: see ``_fine_tune``)."""
    if variant in ("requires_grad", "eval_after_train"):
        for bn in _norms(model):
            for p in bn.parameters():
                p.requires_grad_(False)
    elif variant == "bn_eval":
        for bn in _norms(model):
            bn.eval()
    else:
        model = bnviz.freeze_batch_norm(model)
    return model


def _norm_state(model: nn.Module) -> dict[str, Tensor]:
    """Every batch norm's parameters and buffers, by state-dict name (cloned)."""
    names = {id(m) for m in _norms(model)}
    out = {}
    for prefix, m in model.named_modules():
        if id(m) in names:
            out.update({f"{prefix}.{k}": v.detach().clone() for k, v in m.state_dict().items()})
    return out


def _probe(model: nn.Module, probe: Tensor) -> Tensor:
    model.eval()
    with torch.no_grad():
        return model(probe)


def _fine_tune(
    config: InferenceConfig, trained: dict[str, Tensor], variant: str, batches: list, probe: Tensor
) -> dict[str, Any]:
    """Fine-tune a copy of the trained network in one variant; record every step from step 0."""
    model = build_network(config)
    model.load_state_dict(trained)
    model = _prepare(model, variant)
    opt = _optimizer(model, config.lr)
    first = _norms(model)[0]
    shown = min(config.channels, PLOT_CHANNELS)
    norm0 = _norm_state(model)
    start = {key: getattr(first, key).detach().clone() for key in MOVED}
    keys = ("running_mean", "running_var", "weight", "output_drift", "bn_drift", "losses", "bn_training")
    record: dict[str, list] = {key: [] for key in keys}
    y0 = _probe(model, probe)
    shadow = copy.deepcopy(model)

    def snapshot() -> None:
        record["running_mean"].append(_floats(first.running_mean[:shown]))
        record["running_var"].append(_floats(first.running_var[:shown]))
        record["weight"].append(_floats(first.weight[:shown]))
        y = _probe(model, probe)
        # the part of the change due to the batch norms' state: today's weights, step 0's batch norms
        shadow.load_state_dict(model.state_dict())
        shadow.load_state_dict(norm0, strict=False)
        record["output_drift"].append(float((y.double() - y0.double()).abs().mean()))
        record["bn_drift"].append(float((y.double() - _probe(shadow, probe).double()).abs().mean()))

    snapshot()
    for x, labels in batches:
        model.train()  # as a training loop does (each epoch): it reaches every submodule
        if variant == "eval_after_train":  # the plain-PyTorch fix: the batch norms back in eval, every time
            for bn in _norms(model):
                bn.eval()
        record["bn_training"].append(bool(first.training))  # the mode the batch norm steps in
        record["losses"].append(_step(model, opt, x, labels))
        snapshot()
    # how far the first batch norm's state moved, over all its channels: (C,) -> ()
    moved = {key: float((getattr(first, key).detach().double() - start[key].double()).abs().max()) for key in MOVED}
    return {"label": VARIANTS[variant], "moved": moved, **record}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_inference(config: InferenceConfig, should_stop: Callable[[], bool] | None = None) -> InferenceReport:
    """Train, fold and fine-tune as the module docstring describes; raises ``ValueError`` for a
    refused config. ``should_stop`` is asked between steps and variants; when it says yes the run
    raises ``serve.Cancelled``."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)

    def check() -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("stopped: the view is no longer wanted")

    model = build_network(config)
    layers_before = _layers(model)
    opt = _optimizer(model, config.lr)
    model.train()
    losses = []
    for step in range(config.train_steps):
        check()
        losses.append(_step(model, opt, *task_batch(config, step)))
    probe = task_batch(config, 999_983)[0]  # a fixed batch from the training distribution
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}

    fold = _folding(config, model, probe)
    batches = [task_batch(config, 10_000 + s, shifted=True) for s in range(config.finetune_steps)]
    variants = {}
    for variant in VARIANTS:
        check()
        variants[variant] = _fine_tune(config, trained, variant, batches, probe)
    return InferenceReport(
        config=config,
        train_losses=losses,
        layers_before=layers_before,
        layers_after=fold["layers_after"],
        pairs=fold["pairs"],
        outputs=fold["outputs"],
        timing=fold["timing"],
        train_mode=fold["train_mode"],
        freezing={
            "steps": list(range(config.finetune_steps + 1)),
            "channels": list(range(min(config.channels, PLOT_CHANNELS))),
            "variants": variants,
        },
    )


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Words: the page's sentences with the report's numbers (fixed text and numbers only, never user
# text, so the page can render them as Markdown)
# ---------------------------------------------------------------------------------------------


def _g(v: float) -> str:
    """A value as the page prints it: six significant digits, a true minus sign."""
    return f"{v:.6g}".replace("-", "−")


def _g7(v: float) -> str:
    """A score with the 7 significant digits float32 carries."""
    return f"{v:.7g}".replace("-", "−")


def _paren(v: float) -> str:
    """A value to subtract or multiply: negative ones in parentheses."""
    return f"({_g(v)})" if v < 0 else _g(v)


def verdict_detail(report: InferenceReport) -> str:
    """The badge's line: how far the folded output is from the unfolded one, against the rounding allowed."""
    out, dtype = report.outputs, report.config.dtype
    allowed = f"allowed: {out['atol']:g} + {out['rtol']:g} × |value|"
    if report.verdict == "match":
        return (
            f"Folding is exact: the folded network's outputs equal the unfolded one's up to {sci(out['max_abs'])}, "
            f"{dtype} rounding ({allowed})."
        )
    return f"The folded network's outputs differ from the unfolded one's by up to {sci(out['max_abs'])} ({allowed})."


def network_text(report: InferenceReport) -> str:
    """The network and its training, in one paragraph."""
    config, c = report.config, report.config.channels
    losses = report.train_losses
    trained = (
        f"It is trained for {len(losses)} SGD steps (loss {losses[0]:.3g} → {losses[-1]:.3g})"
        if losses
        else "It is not trained (0 steps), so its running statistics are still their starting values 0 and 1"
    )
    return (
        f"Conv2d({CLASSES}→{c}) → **BatchNorm2d({c})** → ReLU → Conv2d({c}→{c}, no bias) → **BatchNorm2d({c})** → "
        f"ReLU → average pool → Linear({c}→{CLASSES}), with bnviz's batch-norm layers. {trained} on batches of "
        f"{config.batch_size} random {config.image_size}×{config.image_size} images in {CLASSES} classes (class k "
        "brightens input channel k), then put in eval mode with `model.eval()`. Every comparison below runs on one "
        f"fixed probe batch of {config.batch_size} more images from the same task."
    )


def pair_text(pair: dict[str, Any]) -> str:
    """The fold of one conv → batch norm pair for one channel, with the numbers in the formula."""
    c, eps, scale = pair["channel"], f"{pair['eps']:g}", _g(pair["scale"])
    conv = f"bias b = {_g(pair['b_before'])}" if pair["has_bias"] else "no bias, so b = 0 (the folded conv gets one)"
    lines = [
        f"**{pair['pair']}, channel {c}**",
        f"- batch norm: γ = {_g(pair['gamma'])}, β = {_g(pair['beta'])}, mean = {_g(pair['running_mean'])}, "
        f"var = {_g(pair['running_var'])}, eps = {eps}",
        f"- conv: {pair['weights']} weights W make channel {c}; {conv}",
        f"- s = γ / √(var + eps) = {_g(pair['gamma'])} / √({_g(pair['running_var'])} + {eps}) = **{scale}**",
        f"- W′ = W · s: every weight times {scale} (the first {len(pair['w_before'])} in the table)",
        f"- b′ = (b − mean) · s + β = ({_g(pair['b_before'])} − {_paren(pair['running_mean'])}) · {scale} + "
        f"{_paren(pair['beta'])} = **{_g(pair['b_after'])}**",
    ]
    return "\n".join(lines)


def weight_rows(pair: dict[str, Any]) -> list[dict[str, str]]:
    """The first weights of the pair's channel, before and after folding."""
    return [
        {"W": _g(w), "W′ = W · s": _g(w_folded)} for w, w_folded in zip(pair["w_before"], pair["w_after"], strict=True)
    ]


def output_rows(report: InferenceReport) -> list[dict[str, str]]:
    """The first probe image's class scores, unfolded and folded (both in eval mode)."""
    out = report.outputs
    return [{"unfolded": _g7(u), "folded": _g7(f)} for u, f in zip(out["unfolded"], out["folded"], strict=True)]


def difference_text(report: InferenceReport) -> str:
    """What the difference chart shows, with its numbers."""
    out, train = report.outputs, report.train_mode
    h = out["histogram"]
    return (
        f"Over the {h['total']} scores of the {report.config.batch_size} probe images, folded and unfolded differ by "
        f"at most {sci(out['max_abs'])} (mean {sci(out['mean_abs'])}); {h['exact']} of them are bit-identical (a "
        "zero has no place on a log axis). The differences come from rounding: the folded network multiplies by s "
        "before summing, the unfolded one after. The grey bars are the training-mode network's scores against the "
        f"folded ones: up to {_g(train['max_abs'])}."
    )


def timing_text(report: InferenceReport) -> str:
    """The forward times of both networks."""
    t = report.timing
    return (
        f"One forward pass of the {report.config.batch_size} probe images (median of {t['repeats']}): unfolded "
        f"{t['unfolded_ms']:.3f} ms, folded {t['folded_ms']:.3f} ms, so the folded network is {t['speedup']:.2f}× "
        "as fast: two layers fewer to run. The gain depends on the machine and the network; here it is measured, "
        "on this server's CPU."
    )


def train_mode_text(report: InferenceReport) -> str:
    """Why the training-mode network cannot be folded, and by how much the fold would be off."""
    train, out = report.train_mode, report.outputs
    first = f"first probe image's scores: ({', '.join(_g(v) for v in train['train_output'])}) in training mode, " + (
        f"({', '.join(_g(v) for v in train['folded'])}) folded"
    )
    if train["max_abs"] <= out["atol"] + out["rtol"] * train["output_scale"]:
        return (
            "In training mode a batch norm normalizes with the statistics of the batch it is given, not the running "
            f"ones. Here the training-mode scores happen to equal the folded ones (up to {sci(train['max_abs'])}; "
            f"the {first}): this network's output no longer depends on its batch norms (every ReLU may be silent, "
            "as a large learning rate can make them). In general they differ, and folding a training-mode network "
            "is refused:"
        )
    return (
        "**Folding a network in training mode gives the wrong answer.** In training mode a batch norm normalizes "
        "with the mean and variance of the batch it is given; the fold bakes in the running ones. On the probe "
        f"batch the training-mode scores differ from the folded ones by up to {_g(train['max_abs'])} (mean "
        f"{_g(train['mean_abs'])}), {train['relative']:.3g}× the scores' mean size of {_g(train['output_scale'])}; "
        f"the {first}. So `bnviz.fold_batch_norms` refuses a model in training mode (torch's and bnviz's "
        "`fuse_conv_bn_eval` raise `AssertionError: Fusion only for eval!`):"
    )


def finetune_text(report: InferenceReport) -> str:
    """How the fine-tuning runs."""
    config = report.config
    shown = report.freezing["channels"]
    channels = f"channel {shown[0]}" if len(shown) == 1 else f"channels {shown[0]}–{shown[-1]}"
    return (
        f"The trained network is fine-tuned on new data, its inputs scaled by {SHIFT_SCALE:g} and shifted by "
        f'{_g(config.shift)}, for {config.finetune_steps} SGD steps, in {len(VARIANTS)} copies. Each copy "freezes" '
        "its batch norms in one common way, and the loop calls `model.train()` before every step, as training loops "
        f"do. The charts follow the first batch norm (layer 1), {channels}, on the same scales for all of them."
    )


def variant_text(report: InferenceReport, variant: str) -> str:
    """What happened to the first batch norm in one freezing variant, with the numbers."""
    v = report.freezing["variants"][variant]
    moved = v["moved"]
    steps = len(v["bn_training"])
    training = sum(v["bn_training"])
    stats = f"running_mean moved by up to {_g(moved['running_mean'])} and running_var by {_g(moved['running_var'])}"
    if variant == "requires_grad":
        return (
            f"γ and β stop learning (γ moved by {_g(moved['weight'])}), but the layer is still in training mode: it "
            f"normalizes each batch with that batch's own statistics and keeps updating its running ones — {stats}. "
            "`requires_grad` stops the optimizer; the running statistics are not learned, they are updated by the "
            "forward pass itself."
        )
    if variant == "bn_eval":
        return (
            "`bn.eval()` puts the batch norm in eval mode — until the loop's `model.train()`, which sets every "
            f"submodule back to training mode: the batch norm was in training mode at {training} of {steps} steps. "
            f"The freeze is silently undone: {stats}, and γ, still learnable, by {_g(moved['weight'])}."
        )
    if variant == "eval_after_train":
        still = "nothing moved" if not any(moved.values()) else f"{stats}, γ by {_g(moved['weight'])}"
        return (
            "The fix in plain PyTorch is the order: put the batch norms in eval *after* `model.train()`, at every "
            f"step, and stop their parameters' gradients. The batch norm was in training mode at {training} of "
            f"{steps} steps, and {still}."
        )
    still = (
        "nothing moved: running_mean, running_var and γ are exactly their step-0 values"
        if not any(moved.values())
        else f"{stats}, γ by {_g(moved['weight'])}"
    )
    return (
        "`freeze_batch_norm` replaces each batch norm by a FrozenBatchNorm holding the same numbers. It normalizes "
        "with its stored statistics in every mode, and its γ, β are buffers, not parameters, so neither "
        f"`model.train()` nor the optimizer reaches them. It was in training mode at {training} of {steps} steps, "
        f"and {still}."
    )


def drift_text(report: InferenceReport) -> str:
    """What the output-drift chart shows, with each variant's last value."""
    variants = report.freezing["variants"]
    last = ", ".join(f"{i}: {_g(v['bn_drift'][-1])}" for i, v in enumerate(variants.values(), start=1))
    still = [f"{i}" for i, v in enumerate(variants.values(), start=1) if not any(v["bn_drift"])]
    held = (f"{' and '.join(still)} keep{'s' if len(still) == 1 else ''} it at zero" if still
            else "none keeps it at zero")  # fmt: skip
    return (
        "How much the network's eval-mode scores on the probe images changed since step 0 (mean |change|). Top: the "
        "part due to the batch norms alone — today's network against today's with step 0's batch norms put back — "
        f"after the last step: {last}; {held}. Bottom: all of the change; it grows in every variant, as it should: "
        "the convs and the linear layer are being fine-tuned."
    )
