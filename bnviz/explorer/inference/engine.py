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
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

import bnviz
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.inference.url import CLASSES, DTYPES, TIMING_REPEATS, VARIANTS, InferenceConfig
from bnviz.explorer.parity import diff, tolerance
from bnviz.explorer.theme import BNVIZ_COLOR, TORCH_COLOR
from bnviz.fold import BATCH_NORMS, FrozenBatchNorm

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


def run(config: InferenceConfig, stopped: Stopped = never, progress: Progress = ignore) -> InferenceReport:
    """Train, fold and fine-tune as the module docstring describes; raises ``ValueError`` for a
    refused config. ``stopped`` is asked between steps and variants (``check_stop``)."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)

    def check() -> None:
        check_stop(stopped)

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
