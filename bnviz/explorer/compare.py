"""One comparison: a frozen config → bnviz and torch run side by side → a plain report.

Both sides start from the same state, see ``steps`` training batches from the chosen
distribution, then the displayed batch in the chosen mode, and backpropagate the same fixed
upstream gradient. The report holds only plain data (floats, lists, numpy arrays), so it can be
cached and shared between users; no live module ever leaves this file.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnviz
from bnviz.autograd import reduce_dims
from bnviz.explorer import picture
from bnviz.explorer.data import DISTRIBUTIONS, population_stats, sample_batch
from bnviz.explorer.parity import Diff, as_accurate, diff, sum_tolerance, tolerance
from bnviz.explorer.picture import Cells

LAYERS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNorm")
MODES = ("train", "eval")
LAYOUTS = ("channels-first", "features-last")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda")
MAX_ELEMENTS = 2_000_000  # per batch
MAX_STEPS = 100
MAX_WORK = 16_000_000  # values of every batch together: bounds the time of one comparison (3 sides)
MAX_TRAIN_BATCH = 4096
MAX_RANK = 8
PLOT_CHANNELS = 8  # channels drawn in the per-channel plots
BINS = 40


class TorchBatchNorm(_BatchNorm):
    """torch's reference for ``bnviz.BatchNorm``: torch's own ``_BatchNorm`` policy driving
    ``F.batch_norm`` with its buffers, for any rank ≥ 2 (the check torch leaves to subclasses)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")


TORCH_LAYERS: dict[str, type[nn.Module]] = {
    "BatchNorm1d": nn.BatchNorm1d,
    "BatchNorm2d": nn.BatchNorm2d,
    "BatchNorm3d": nn.BatchNorm3d,
    "BatchNorm": TorchBatchNorm,
}
BNVIZ_LAYERS: dict[str, type[nn.Module]] = {
    "BatchNorm1d": bnviz.BatchNorm1d,
    "BatchNorm2d": bnviz.BatchNorm2d,
    "BatchNorm3d": bnviz.BatchNorm3d,
    "BatchNorm": bnviz.BatchNorm,
}


@dataclass(frozen=True)
class Config:
    """Everything that defines one view; hashable, so it keys the app's cache."""

    layer: str = "BatchNorm2d"
    shape: tuple[int, ...] = (8, 3, 16, 16)
    mode: str = "train"
    momentum: float | None = 0.1
    eps: float = 1e-5
    affine: bool = True
    track_running_stats: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    dist: str = "normal"
    seed: int = 0
    steps: int = 5
    train_batch: int = 8
    layout: str = "channels-first"

    @property
    def features_last(self) -> bool:
        """The shape lists its features last, ``(N, L…, C)``, as a transformer's tensors do."""
        return self.layout == "features-last" and len(self.shape) >= 3

    @property
    def num_features(self) -> int:
        """C: dim 1 of the shape — the last dim for a features-last layout (the layer is built for
        the features, and torch then checks them against dim 1) — and dim 0 for a rank-1 shape, so
        that torch gets to reject the rank."""
        if self.features_last:
            return self.shape[-1]
        if len(self.shape) >= 2:
            return self.shape[1]
        return self.shape[0] if self.shape else 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def train_shape(self) -> tuple[int, ...]:
        """The shape of the training batches before the displayed one: ``train_batch`` samples."""
        return (self.train_batch, *self.shape[1:]) if len(self.shape) >= 2 else self.shape

    @property
    def work(self) -> int:
        """Values processed: every training batch and the displayed one."""
        return math.prod(self.train_shape) * self.steps + self.numel

    def channels_first(self) -> Config:
        """The same view with the features moved to dim 1: the fix for a features-last tensor."""
        if not self.features_last:
            return self
        s = self.shape
        return replace(self, shape=(s[0], s[-1], *s[1:-1]), layout="channels-first")


def refusal(config: Config) -> str | None:
    """Why this config is not run at all (too big, unknown option, no GPU), or None.

    Checked on plain integers, before anything is allocated.
    """
    checks = [
        (config.layer not in LAYERS, f"unknown layer; choose one of {', '.join(LAYERS)}"),
        (config.mode not in MODES, "mode must be train or eval"),
        (config.dtype not in DTYPES, f"unknown dtype; choose one of {', '.join(DTYPES)}"),
        (config.dist not in DISTRIBUTIONS, f"unknown distribution; choose one of {', '.join(DISTRIBUTIONS)}"),
        (config.device not in DEVICES, "device must be cpu or cuda"),
        (not 1 <= len(config.shape) <= MAX_RANK, f"the shape needs 1 to {MAX_RANK} dimensions"),
        (any(d < 0 for d in config.shape), "dimensions cannot be negative"),
        (config.numel > MAX_ELEMENTS, f"{config.numel:,} elements is over the limit of {MAX_ELEMENTS:,} per batch"),
        (config.layout not in LAYOUTS, f"layout must be {' or '.join(LAYOUTS)}"),
        (not 0 <= config.steps <= MAX_STEPS, f"steps must be between 0 and {MAX_STEPS}"),
        (not 1 <= config.train_batch <= MAX_TRAIN_BATCH, f"the training batch size is 1 to {MAX_TRAIN_BATCH:,}"),
        (
            math.prod(config.train_shape) > MAX_ELEMENTS,
            f"training batches of {math.prod(config.train_shape):,} elements are over the limit of {MAX_ELEMENTS:,}",
        ),
        (
            config.work > MAX_WORK,
            f"{config.steps} training batches and the displayed one hold {config.work:,} elements, over the limit "
            f"of {MAX_WORK:,}; use fewer steps or a smaller shape",
        ),
        (
            config.device == "cuda" and not torch.cuda.is_available(),
            "device cuda was asked for, but this server has no CUDA GPU; use cpu",
        ),
    ]
    return next((message for failed, message in checks if failed), None)


@dataclass(frozen=True)
class Quantity:
    """One compared quantity: how far bnviz is from torch, and each from the float64 truth.

    ``ok`` when bnviz is within tolerance of torch, or about as close to the truth as torch is
    (``parity.as_accurate``: then the difference is rounding — torch's CPU kernels accumulate some
    sums in float32, and at a large mean both are at float32's limit). ``err_bnviz``/``err_torch``
    are None for float64 configs, where torch is the truth.
    """

    name: str
    max_abs: float
    max_rel: float
    within_tolerance: bool
    exact_fraction: float  # share of elements that agree bit for bit
    err_bnviz: float | None = None
    err_torch: float | None = None
    absent: str | None = None  # why neither side has this quantity ("not tracked", …), or None

    @property
    def ok(self) -> bool:
        if self.within_tolerance:
            return True
        return as_accurate(self.err_bnviz, self.err_torch)


@dataclass(frozen=True)
class ErrorReport:
    """What each side raised (``"Type: message"``, or None) and whether they agree."""

    bnviz: str | None
    torch: str | None
    stage: str

    @property
    def agree(self) -> bool:
        return self.bnviz == self.torch


@dataclass(frozen=True)
class Report:
    """Everything the app shows for one config; plain data only."""

    config: Config
    rtol: float
    atol: float
    quantities: tuple[Quantity, ...] = ()
    error: ErrorReport | None = None
    history: dict[str, Any] = field(default_factory=dict)
    channels: dict[str, Any] = field(default_factory=dict)
    histograms: dict[str, Any] = field(default_factory=dict)
    modes: dict[str, Any] = field(default_factory=dict)
    cells: Cells | None = None

    @property
    def verdict(self) -> str:
        """``"match"`` when every quantity is within tolerance (or both sides raise the same error)."""
        if self.error is not None:
            return "match" if self.error.agree else "mismatch"
        return "match" if all(q.ok for q in self.quantities) else "mismatch"


def _format_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def make_module(config: Config, side: str) -> nn.Module:
    """A fresh layer for ``side`` ("bnviz", "torch", or "truth": torch in float64), with the
    same non-trivial initial state on every side (γ ≠ 1, β ≠ 0)."""
    param_dtype = torch.float64 if config.dtype == "float64" or side == "truth" else torch.float32
    layer = (BNVIZ_LAYERS if side == "bnviz" else TORCH_LAYERS)[config.layer]
    module = layer(
        config.num_features,
        eps=config.eps,
        momentum=config.momentum,
        affine=config.affine,
        track_running_stats=config.track_running_stats,
        device=config.device,
        dtype=param_dtype,
    )
    if config.affine:
        with torch.no_grad():
            module.weight.copy_(_weight(config))
            module.bias.copy_(torch.linspace(-0.5, 0.5, config.num_features))
    return module


def _state(m: nn.Module) -> dict[str, Tensor | None]:
    return {k: getattr(m, k) for k in ("running_mean", "running_var", "num_batches_tracked")}


def _snapshot(m: nn.Module) -> dict[str, list[float] | int | None]:
    s = _state(m)
    return {
        "running_mean": _first(s["running_mean"], PLOT_CHANNELS),
        "running_var": _first(s["running_var"], PLOT_CHANNELS),
        "num_batches_tracked": _count(s["num_batches_tracked"]),
    }


def _first(t: Tensor | None, k: int = 64) -> list[float] | None:
    """The first ``k`` values as float64 numbers (what the tables show)."""
    return None if t is None else t[:k].double().cpu().tolist()


def _count(t: Tensor | None) -> int | None:
    return None if t is None else int(t)


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    return np.histogram(values, bins=edges)[0].tolist()


def _per_channel_histograms(x: Tensor, y: Tensor, y_ref: Tensor) -> list[dict[str, Any]]:
    """Pre-binned histograms of input and both outputs for the first channels."""
    out = []
    if x.dim() < 2:
        return out
    for c in range(min(x.size(1), PLOT_CHANNELS)):
        xs, ys, rs = (t.select(1, c).detach().double().cpu().numpy().ravel() for t in (x, y, y_ref))
        finite = [v[np.isfinite(v)] for v in (xs, ys, rs)]
        if any(v.size == 0 for v in finite):
            continue
        in_edges = np.histogram_bin_edges(finite[0], bins=BINS)
        out_lo, out_hi = min(finite[1].min(), finite[2].min()), max(finite[1].max(), finite[2].max())
        out_edges = np.linspace(out_lo, out_hi if out_hi > out_lo else out_lo + 1, BINS + 1)
        out.append(
            {
                "channel": c,
                "input_edges": in_edges.tolist(),
                "input": _histogram(finite[0], in_edges),
                "output_edges": out_edges.tolist(),
                "bnviz": _histogram(finite[1], out_edges),
                "torch": _histogram(finite[2], out_edges),
            }
        )
    return out


def _diff_histogram(a: Tensor, b: Tensor) -> dict[str, Any]:
    """Histogram of log10 |a − b| over the nonzero differences, plus the count of exact ones."""
    d = (a.detach().double() - b.detach().double()).abs().cpu().numpy().ravel()
    d = d[np.isfinite(d)]
    nonzero = d[d > 0]
    edges = np.linspace(-18, 2, BINS + 1)
    logs = np.clip(np.log10(nonzero), -18, 2) if nonzero.size else nonzero
    return {"edges": edges.tolist(), "counts": _histogram(logs, edges), "exact": int((d == 0).sum()), "total": d.size}


def _value_histogram(a: Tensor, b: Tensor) -> dict[str, Any]:
    """Common-binned histograms of two tensors (gradients of bnviz and torch)."""
    va, vb = (t.detach().double().cpu().numpy().ravel() for t in (a, b))
    both = np.concatenate([va[np.isfinite(va)], vb[np.isfinite(vb)]])
    if both.size == 0:
        return {"edges": [], "bnviz": [], "torch": []}
    lo, hi = float(both.min()), float(both.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
    return {"edges": edges.tolist(), "bnviz": _histogram(va, edges), "torch": _histogram(vb, edges)}


def _normalized(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(x_hat, inv_std)`` with the batch's statistics, in float64 and broadcastable to ``x``
    (they size the tolerances of the gradients)."""
    x = x.double()
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
    inv_std = (var + eps).rsqrt()
    return (x - mean) * inv_std, inv_std


def _grad_input_atol(
    config: Config, x_hat: Tensor, inv_std: Tensor, g: Tensor, has_weight: bool, rtol: float, atol: float
) -> float | Tensor:
    """Allowance for ∂L/∂x = w·inv_std·(g − Σg/n − x_hat·Σ(g·x_hat)/n) with batch statistics: each
    sum may be off by ``rtol·Σ|summand|``, scaled by ``|w·inv_std|/n`` (and ``|x_hat|``)."""
    if config.mode != "train" and config.track_running_stats:  # running statistics: no sums
        return atol
    dims, shape = [0, *range(2, x_hat.dim())], [1, -1, *([1] * (x_hat.dim() - 2))]
    n = x_hat.numel() // x_hat.size(1)
    w = _weight(config).view(shape) if has_weight else 1.0
    sum_g = g.abs().sum(dims, keepdim=True)
    sum_gx = (g * x_hat).abs().sum(dims, keepdim=True)
    return atol + rtol * (w * inv_std).abs() * (sum_g + x_hat.abs() * sum_gx) / n


def _weight(config: Config) -> Tensor:
    """γ as every side is initialised (see ``make_module``)."""
    return torch.linspace(0.5, 1.5, config.num_features, dtype=torch.float64)


def _max_err(a: Tensor | None, truth: Tensor | None) -> float | None:
    if a is None or truth is None or a.shape != truth.shape or a.numel() == 0:
        return None
    return float((a.detach().double() - truth.detach().double()).abs().nan_to_num(0.0).max())


def _compare(
    name: str,
    a: Tensor | None,
    b: Tensor | None,
    truth: Tensor | None,
    rtol: float,
    atol: float | Tensor | None,
    absent: str | None = None,
) -> Quantity:
    """``absent`` names why the quantity may not exist; it is kept when neither side has it."""
    atol = 0.0 if atol is None else atol
    absent = absent if a is None and b is None else None
    d: Diff = diff(a, b, rtol, atol)
    exact = 1.0
    if a is not None and b is not None and a.shape == b.shape and a.numel():
        exact = float((a.detach() == b.detach()).float().mean())
    return Quantity(name, d.max_abs, d.max_rel, d.ok, exact, _max_err(a, truth), _max_err(b, truth), absent)


def config_batches(config: Config, dtype: torch.dtype | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
    """The training batches, the displayed batch and the fixed upstream gradient of ``config``.

    Batch ``step`` of the seeded stream (see ``sample_batch``); the training batches hold
    ``train_batch`` samples. A features-last view draws the same values channels-first and moves
    the features to the end, so its fix (``config.channels_first()``) sees exactly these values.
    """
    dtype = dtype or DTYPES[config.dtype]
    first = config.channels_first()

    def batch(shape: tuple[int, ...], dist: str, seed: int, step: int) -> Tensor:
        x = sample_batch(dist, shape, seed, step, dtype, config.device)
        return x.movedim(1, -1) if config.features_last else x

    training = [batch(first.train_shape, config.dist, config.seed, step) for step in range(config.steps)]
    shown = batch(first.shape, config.dist, config.seed, config.steps)
    return training, shown, batch(first.shape, "normal", config.seed + 7919, 0)


def _stage(config: Config, step: int | None) -> str:
    """Where a run raised, in words: a training step (with its batch size) or the displayed batch."""
    if step is None:
        n = config.shape[0] if config.shape else 0
        return f"at the displayed batch ({config.mode} mode, batch of {n})"
    return f"at training step {step + 1} of {config.steps} (train mode, batch of {config.train_shape[0]})"


class SideError(Exception):
    """An exception of one side, with where it happened."""

    def __init__(self, exc: BaseException, stage: str) -> None:
        super().__init__(_format_error(exc))
        self.stage = stage


def _probe_modes(module: nn.Module, x: Tensor) -> dict[str, Any]:
    """The same batch, from the same state, in train mode and in eval mode — both under
    ``torch.no_grad()`` — and what the train-mode call did to the running statistics (no_grad does
    not stop the update: only ``.eval()`` switches to the running statistics)."""
    out: dict[str, Any] = {}
    for mode in ("train", "eval"):
        probe = copy.deepcopy(module).train(mode == "train")
        try:
            with torch.no_grad():
                out[mode] = probe(x)
        except Exception as exc:  # e.g. a batch of one in train mode: eval still works
            out[mode] = _format_error(exc)
        if mode == "train":
            out["after_no_grad"] = _state(probe)
    return out


def _run_side(
    module: nn.Module, config: Config, training: list[Tensor], shown: Tensor, upstream: Tensor, record: list
) -> dict:
    """Train on the ``training`` batches, then run the displayed batch in the chosen mode and
    backpropagate. ``record`` gets the running statistics before the first step and after each."""
    module.train()
    record.append(_snapshot(module))
    for step, x in enumerate(training):
        try:
            with torch.no_grad():
                module(x)
        except Exception as exc:
            raise SideError(exc, _stage(config, step)) from exc
        record.append(_snapshot(module))
    before = {k: None if v is None else v.clone() for k, v in _state(module).items()}
    probes = _probe_modes(module, shown)
    module.train(config.mode == "train")
    x = shown.clone().requires_grad_()
    try:
        y = module(x)
    except Exception as exc:
        raise SideError(exc, _stage(config, None)) from exc
    params = [p for p in (module.weight, module.bias) if p is not None]
    grads = torch.autograd.grad(y, [x, *params], upstream.to(y.dtype)) if y.numel() or params else (None,)
    record.append(_snapshot(module))
    return {
        "x": x.detach(),
        "y": y.detach(),
        "grad_input": grads[0],
        "grad_weight": grads[1] if len(grads) > 1 else None,
        "grad_bias": grads[2] if len(grads) > 2 else None,
        "before": before,
        "probes": probes,
        **_state(module),
    }


def run_comparison(config: Config) -> Report:
    """Run ``config`` on both sides and report every difference; never raises for bad set-ups.

    A set-up that makes either side raise is reported as an ``ErrorReport`` with both messages
    and where they were raised.
    """
    reason = refusal(config)
    if reason is not None:
        raise ValueError(reason)
    dtype = DTYPES[config.dtype]
    rtol, atol = tolerance(dtype)
    training, shown, upstream = config_batches(config)
    sides, records, errors, stages = {}, {"bnviz": [], "torch": []}, {}, {}
    for name in ("bnviz", "torch"):
        try:
            sides[name] = _run_side(make_module(config, name), config, training, shown, upstream, records[name])
        except SideError as exc:  # reported to the user, side by side
            errors[name], stages[name] = str(exc), exc.stage
        except Exception as exc:  # raised while building the layer
            errors[name], stages[name] = _format_error(exc), "while building the layer"
    if errors:
        stage = stages.get("torch") or stages["bnviz"]
        return Report(config, rtol, atol, error=ErrorReport(errors.get("bnviz"), errors.get("torch"), stage))
    truth: dict[str, Any] = {}
    if dtype != torch.float64:  # the same (rounded) values through torch in float64
        truth = _run_side(
            make_module(config, "truth"), config, [t.double() for t in training], shown.double(), upstream.double(), []
        )

    a, b = sides["bnviz"], sides["torch"]
    g = upstream.double()
    x_hat = inv_std = None
    if b["x"].numel():  # an error-free set-up has rank ≥ 2
        x_hat, inv_std = _normalized(b["x"], config.eps)
    t = truth.get
    untracked = "not tracked"
    quantities = (
        _compare("output", a["y"], b["y"], t("y"), rtol, atol),
        _compare("running_mean", a["running_mean"], b["running_mean"], t("running_mean"), rtol, atol, untracked),
        _compare("running_var", a["running_var"], b["running_var"], t("running_var"), rtol, atol, untracked),
        _compare("num_batches_tracked", a["num_batches_tracked"], b["num_batches_tracked"], None, 0.0, 0.0, untracked),
        _compare(
            "grad input",
            a["grad_input"],
            b["grad_input"],
            t("grad_input"),
            rtol,
            atol
            if x_hat is None
            else _grad_input_atol(config, x_hat, inv_std, g, a["grad_weight"] is not None, rtol, atol),
        ),
        _compare(
            "grad weight",
            a["grad_weight"],
            b["grad_weight"],
            t("grad_weight"),
            rtol,
            None if x_hat is None or a["grad_weight"] is None else sum_tolerance(g * x_hat, rtol, atol),
            "no weight",
        ),
        _compare(
            "grad bias", a["grad_bias"], b["grad_bias"], t("grad_bias"), rtol, sum_tolerance(g, rtol, atol),
            "no bias",
        ),
    )
    pop_mean, pop_var = population_stats(config.num_features, config.dist)
    history = {
        "bnviz": records["bnviz"],
        "torch": records["torch"],
        "population_mean": pop_mean[:PLOT_CHANNELS].tolist(),
        "population_var": pop_var[:PLOT_CHANNELS].tolist(),
    }
    histograms = {
        "channels": _per_channel_histograms(a["x"], a["y"], b["y"]),
        "diffs": {
            q: _diff_histogram(a[k], b[k])
            for q, k in (
                ("output", "y"),
                ("grad input", "grad_input"),
                ("running_mean", "running_mean"),
                ("running_var", "running_var"),
                ("grad weight", "grad_weight"),
                ("grad bias", "grad_bias"),
            )
            if a[k] is not None and b[k] is not None
        },
        "grad_input": _value_histogram(a["grad_input"], b["grad_input"]) if a["grad_input"] is not None else None,
        "grad_params": {
            k: {"bnviz": a[k][:PLOT_CHANNELS].double().tolist(), "torch": b[k][:PLOT_CHANNELS].double().tolist()}
            for k in ("grad_weight", "grad_bias")
            if a[k] is not None
        },
    }
    cells = picture.cells(a["x"], picture.Grouping(tuple(a["x"].shape), tuple(reduce_dims(a["x"]))))
    return Report(
        config, rtol, atol, quantities, None, history, _channel_stats(a), histograms, _modes(a, b, rtol), cells
    )


def _channel_stats(side: dict[str, Any]) -> dict[str, Any]:
    """Per-channel numbers of the displayed batch for the "what batch norm does" panel (float64)."""
    x = side["x"].double()
    if x.dim() < 2:
        return {}
    dims = reduce_dims(x)
    n = x.numel() // max(x.size(1), 1)
    nan = torch.full((x.size(1),), float("nan"), dtype=torch.float64)
    var_b, mean = torch.var_mean(x, dims, correction=0) if n else (nan, nan)
    var_u = var_b * n / (n - 1) if n > 1 else nan
    # What a home-made one-pass variance gives in float32: E[x²] − E[x]² (cancellation).
    x32 = side["x"].float()
    var_naive = (x32 * x32).mean(dims) - x32.mean(dims) ** 2 if n else nan
    # How many different values each channel's input holds (a float16 input at 10⁴ holds few)
    distinct = [int(side["x"].select(1, c).unique().numel()) for c in range(min(x.size(1), PLOT_CHANNELS))]
    return {
        "reduced_dims": dims,
        "n": n,
        "mean": _first(mean),
        "var_biased": _first(var_b),
        "var_unbiased": _first(var_u),
        "var_naive_f32": _first(var_naive),
        "distinct": distinct,
        "running_mean_before": _first(side["before"]["running_mean"]),
        "running_var_before": _first(side["before"]["running_var"]),
        "running_mean_after": _first(side["running_mean"]),
        "running_var_after": _first(side["running_var"]),
        "num_batches_tracked_before": _count(side["before"]["num_batches_tracked"]),
        "num_batches_tracked": _count(side["num_batches_tracked"]),
    }


def _modes(a: dict[str, Any], b: dict[str, Any], rtol: float) -> dict[str, Any]:
    """The displayed batch in train mode and in eval mode, from the same state, per channel:
    pre-binned outputs with their mean and standard deviation, and what ``torch.no_grad()`` in
    train mode did to the running statistics. ``agree``: bnviz's probes equal torch's."""
    pa, pb = a["probes"], b["probes"]
    agree = True
    for m in ("train", "eval"):
        if isinstance(pa[m], Tensor) and isinstance(pb[m], Tensor):
            agree &= diff(pa[m], pb[m], rtol, 10 * rtol).ok
        else:
            agree &= pa[m] == pb[m] if isinstance(pa[m], str) else False
    for key in ("running_mean", "running_var"):
        agree &= diff(pa["after_no_grad"][key], pb["after_no_grad"][key], rtol, 10 * rtol).ok
    outputs = {m: pa[m].double() for m in ("train", "eval") if isinstance(pa[m], Tensor)}
    x = a["x"]
    channels = []
    for c in range(min(x.size(1), PLOT_CHANNELS) if x.dim() >= 2 else 0):
        values = {m: y.select(1, c).reshape(-1) for m, y in outputs.items()}
        values = {m: v[v.isfinite()].cpu() for m, v in values.items()}
        if not values or any(v.numel() == 0 for v in values.values()):
            continue
        lo, hi = min(float(v.min()) for v in values.values()), max(float(v.max()) for v in values.values())
        edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
        entry: dict[str, Any] = {"channel": c, "edges": edges.tolist()}
        for m, v in values.items():
            entry[m] = _histogram(v.numpy(), edges)
            entry[f"{m}_mean"], entry[f"{m}_std"] = float(v.mean()), float(v.std(correction=0))
        channels.append(entry)
    after = pa["after_no_grad"]
    return {
        "errors": {m: pa[m] if isinstance(pa[m], str) else None for m in ("train", "eval")},
        "channels": channels,
        "no_grad": {
            "running_mean_before": _first(a["before"]["running_mean"]),
            "running_mean_after": _first(after["running_mean"]),
            "running_var_before": _first(a["before"]["running_var"]),
            "running_var_after": _first(after["running_var"]),
            "num_batches_tracked_before": _count(a["before"]["num_batches_tracked"]),
            "num_batches_tracked_after": _count(after["num_batches_tracked"]),
        },
        "agree": bool(agree),
    }
