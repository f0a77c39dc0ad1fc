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
module leaves this file, so a report can be cached and shared between users.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

import bnviz
from bnviz.explorer.plots import BNVIZ_COLOR, INPUT_COLOR, TORCH_COLOR
from bnviz.fold import BATCH_NORMS, FrozenBatchNorm

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CLASSES = 3  # = input channels: class k brightens input channel k
SHIFT_SCALE = 1.5  # fine-tuning inputs: x · SHIFT_SCALE + shift
TIMING_REPEATS = 11  # interleaved forward timings per network
WEIGHT_VALUES = 6  # weights shown per channel in the formula
PLOT_CHANNELS = 4  # channels of the first batch norm drawn over the fine-tuning steps
MAX_BATCH = 256
MAX_CHANNELS = 64
MAX_IMAGE = 32
MAX_STEPS = 200
MAX_FINETUNE_STEPS = 100  # x 24 traces: keeps the running-statistics figure under 100 KB
MAX_BATCH_VALUES = 32_768  # one conv layer's activations: batch × channels × image²
MAX_WORK = 800_000  # activation values over every forward pass of a run
LOG_EDGES = (-12.0, 2.0)  # log10 |difference| histogram range
BINS = 42
VARIANTS = {
    "requires_grad": "requires_grad=False on γ, β",
    "bn_eval": "bn.eval(), then model.train()",
    "freeze": "bnviz.freeze_batch_norm",
}
VARIANT_STYLE = {  # plain torch idioms in torch's blue, bnviz's freeze in red
    "requires_grad": (TORCH_COLOR, "solid"),
    "bn_eval": (TORCH_COLOR, "dot"),
    "freeze": (BNVIZ_COLOR, "solid"),
}
_LAYOUT = dict(template="plotly_white", margin=dict(l=50, r=20, t=60, b=40), legend=dict(orientation="h", y=-0.2))


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that defines one run; hashable, so it keys the app's cache."""

    batch_size: int = 16
    channels: int = 4
    image_size: int = 8
    train_steps: int = 15
    finetune_steps: int = 8
    lr: float = 0.05
    shift: float = 2.0  # added to the fine-tuning inputs (after scaling them by SHIFT_SCALE)
    channel: int = 0  # the channel whose fold is spelled out
    seed: int = 0
    dtype: str = "float32"

    @property
    def batch_values(self) -> int:
        """One conv layer's activations for one batch: N · C · H · W."""
        return self.batch_size * max(self.channels, CLASSES) * self.image_size**2

    @property
    def passes(self) -> int:
        """Forward passes of a run: training, 3 variants × (fine-tuning steps + 2 probes per
        recorded step), timings, and the few probes of the folding section."""
        return self.train_steps + 3 * (self.finetune_steps + 2 * (self.finetune_steps + 1)) + 2 * TIMING_REPEATS + 6

    @property
    def work(self) -> int:
        return self.batch_values * self.passes


def refusal(config: InferenceConfig) -> str | None:
    """Why this config is not run (too big, out of range, unknown option), or None.

    Checked on plain numbers, before anything is allocated.
    """
    checks = [
        (config.dtype not in DTYPES, f"unknown dtype; choose one of {', '.join(DTYPES)}"),
        (not 2 <= config.batch_size <= MAX_BATCH, f"batch size must be between 2 and {MAX_BATCH}"),
        (not 1 <= config.channels <= MAX_CHANNELS, f"channels must be between 1 and {MAX_CHANNELS}"),
        (not 3 <= config.image_size <= MAX_IMAGE, f"image size must be between 3 and {MAX_IMAGE}"),
        (not 0 <= config.train_steps <= MAX_STEPS, f"training steps must be between 0 and {MAX_STEPS}"),
        (
            not 1 <= config.finetune_steps <= MAX_FINETUNE_STEPS,
            f"fine-tuning steps must be between 1 and {MAX_FINETUNE_STEPS}",
        ),
        (not 0.0 < config.lr <= 1.0, "the learning rate must be in (0, 1]"),
        (not math.isfinite(config.shift) or abs(config.shift) > 100, "the shift must be between -100 and 100"),
        (not 0 <= config.channel < config.channels, f"channel must be between 0 and {config.channels - 1}"),
        (
            config.batch_values > MAX_BATCH_VALUES,
            f"{config.batch_values:,} activation values per batch is over the limit of {MAX_BATCH_VALUES:,}; "
            "use a smaller batch, fewer channels or smaller images",
        ),
        (
            config.work > MAX_WORK,
            f"{config.batch_values:,} values × {config.passes} forward passes is over the limit of {MAX_WORK:,}; "
            "use fewer steps or a smaller batch",
        ),
    ]
    return next((message for failed, message in checks if failed), None)


@dataclass(frozen=True)
class InferenceReport:
    """Everything the page shows for one config; plain data only.

    ``layers_before`` / ``layers_after``: the network's layers, unfolded and folded.
    ``pairs``: per folded conv → batch norm pair, the formula's numbers for ``config.channel``.
    ``outputs``: folded vs unfolded eval outputs on the probe batch (first values, differences,
    a log10 |difference| histogram). ``timing``: median forward times (ms). ``train_mode``:
    the fold against the training-mode output. ``freezing``: per variant and step, the first
    batch norm's statistics and γ, and how far the output moved.
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
    train_diff = _difference(folded_y, train_y)
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
            **train_diff,
        },
    }


# ---------------------------------------------------------------------------------------------
# Freezing
# ---------------------------------------------------------------------------------------------


def _prepare(model: nn.Module, variant: str) -> nn.Module:
    """Apply one of the three ways of "freezing" the batch norms to a trained model."""
    if variant == "requires_grad":
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
        record["bn_training"].append(bool(first.training))  # the mode the batch norm steps in
        record["losses"].append(_step(model, opt, x, labels))
        snapshot()
    return {"label": VARIANTS[variant], **record}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run_inference(config: InferenceConfig) -> InferenceReport:
    """Train, fold and fine-tune as the module docstring describes; raises ``ValueError`` for a
    refused config."""
    reason = refusal(config)
    if reason is not None:
        raise ValueError(reason)
    model = build_network(config)
    layers_before = _layers(model)
    opt = _optimizer(model, config.lr)
    model.train()
    losses = [_step(model, opt, *task_batch(config, step)) for step in range(config.train_steps)]
    probe = task_batch(config, 999_983)[0]  # a fixed batch from the training distribution
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}

    fold = _folding(config, model, probe)
    batches = [task_batch(config, 10_000 + s, shifted=True) for s in range(config.finetune_steps)]
    variants = {variant: _fine_tune(config, trained, variant, batches, probe) for variant in VARIANTS}
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
    """Integer ticks on every x axis (they count fine-tuning steps)."""
    fig.update_xaxes(tickformat="d", dtick=max(1, math.ceil(steps / 10)), rangemode="tozero")


def fold_difference_figure(report: InferenceReport) -> go.Figure:
    """log10 |difference| histograms: folded vs unfolded in eval (rounding), and the fold vs the
    training-mode output (batch statistics against running ones)."""
    fig = go.Figure()
    rows = (
        ("folded vs unfolded (eval)", report.outputs, BNVIZ_COLOR),
        ("folded vs training-mode output", report.train_mode, INPUT_COLOR),
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
                name=f"{name}: max {part['max_abs']:.2e}, {h['exact']}/{h['total']} exact",
                marker_color=color,
                opacity=0.7,
            )
        )
    lo, hi = int(LOG_EDGES[0]), int(LOG_EDGES[1])
    ticks = list(range(lo, hi + 1, 2))
    fig.update_xaxes(
        title_text="|difference| (log scale)", tickvals=ticks, ticktext=[f"1e{t}" for t in ticks], range=[lo, hi]
    )
    fig.update_yaxes(title_text="output values")
    fig.update_layout(barmode="overlay", height=380, title="Folded output: rounding vs the wrong statistics", **_LAYOUT)
    return fig


def running_stats_figure(report: InferenceReport) -> go.Figure:
    """The first batch norm's running mean (top) and variance (bottom) per fine-tuning step, one
    column per variant, a line per channel."""
    variants = report.freezing.get("variants", {})
    steps = report.freezing.get("steps", [])
    fig = make_subplots(
        rows=2,
        cols=max(len(variants), 1),
        shared_xaxes=True,
        shared_yaxes=True,  # per row: a frozen flat line and a drifting one on the same scale
        horizontal_spacing=0.04,
        vertical_spacing=0.1,
        subplot_titles=[v["label"] for v in variants.values()],
    )
    for col, (key, v) in enumerate(variants.items(), start=1):
        color, _ = VARIANT_STYLE[key]
        for row, stat in ((1, "running_mean"), (2, "running_var")):
            for c in report.freezing["channels"]:
                fig.add_trace(
                    go.Scatter(
                        x=steps,
                        y=_short([s[c] for s in v[stat]]),
                        mode="lines+markers",
                        name=f"{v['label']}: c{c}",
                        showlegend=False,
                        line=dict(color=color, width=1.5),
                        marker=dict(size=4),
                        opacity=1.0 - 0.15 * c,
                        hovertemplate=f"{stat} c{c}, step %{{x}}: %{{y:.6g}}<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
    fig.update_yaxes(title_text="running_mean", row=1, col=1)
    fig.update_yaxes(title_text="running_var", row=2, col=1)
    _step_axis(fig, len(steps))
    fig.update_xaxes(title_text="fine-tuning step", row=2)
    fig.update_layout(height=480, title="Running statistics of the first batch norm during fine-tuning", **_LAYOUT)
    return fig


def output_drift_figure(report: InferenceReport) -> go.Figure:
    """Mean |change| of the eval output on the probe batch since step 0 (left), and the change due to
    the batch norms' state alone: today's network vs today's with step 0's batch norms put back (right)."""
    variants = report.freezing.get("variants", {})
    steps = report.freezing.get("steps", [])
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=("output change since step 0", "change from the batch norms' state alone"),
    )
    for key, v in variants.items():
        color, dash = VARIANT_STYLE[key]
        for col, stat in ((1, "output_drift"), (2, "bn_drift")):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=_short(v[stat]),
                    mode="lines+markers",
                    name=v["label"],
                    legendgroup=key,
                    showlegend=col == 1,
                    line=dict(color=color, dash=dash),
                    hovertemplate=f"{v['label']}, step %{{x}}: %{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    _step_axis(fig, len(steps))
    fig.update_xaxes(title_text="fine-tuning step")
    fig.update_yaxes(title_text="mean |Δ output|", col=1)
    fig.update_layout(height=400, title="How far the output moves during fine-tuning", **_LAYOUT)
    return fig


def all_figures(report: InferenceReport) -> dict[str, go.Figure]:
    """Every chart of a report, by section name."""
    return {
        "fold_difference": fold_difference_figure(report),
        "running_stats": running_stats_figure(report),
        "output_drift": output_drift_figure(report),
    }
