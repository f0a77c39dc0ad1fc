"""One comparison: a frozen config → bnviz and torch run side by side → a plain report.

Both sides start from the same state, see ``steps`` training batches from the chosen
distribution, then the displayed batch in the chosen mode, and backpropagate the same fixed
upstream gradient. The report holds only plain data (floats, lists, numpy arrays), so it can be
cached and shared between users; no live module ever leaves this file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnviz
from bnviz.autograd import reduce_dims
from bnviz.explorer import picture
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.data import population_stats, sample_batch, upstream_gradient
from bnviz.explorer.layer.lessons import EpsEffect, GradientLesson, eps_effect, gradient_lesson
from bnviz.explorer.layer.own import channel_stats
from bnviz.explorer.layer.url import DTYPES, Config
from bnviz.explorer.parity import (
    Diff,
    as_accurate,
    diff,
    grad_input_atol,
    normalized,
    row_slices,
    sum_tolerance,
    tolerance,
)
from bnviz.explorer.picture import Cells

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
    gradients: GradientLesson | None = None
    eps: EpsEffect | None = None

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
            module.bias.copy_(_bias(config))
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


def _grad_input_atol(
    config: Config, x_hat: Tensor, inv_std: Tensor, g: Tensor, has_weight: bool, rtol: float, atol: float
) -> float | Tensor:
    """Allowance for ∂L/∂x: ``parity.grad_input_atol`` with batch statistics; none to sum with the
    running ones."""
    if config.mode != "train" and config.track_running_stats:  # running statistics: no sums
        return atol
    return grad_input_atol(x_hat, inv_std, g, _weight(config) if has_weight else None, rtol, atol)


def _weight(config: Config) -> Tensor:
    """γ as every side is initialised (see ``make_module``)."""
    return torch.linspace(0.5, 1.5, config.num_features, dtype=torch.float64)


def _bias(config: Config) -> Tensor:
    """β as every side is initialised (see ``make_module``)."""
    return torch.linspace(-0.5, 0.5, config.num_features, dtype=torch.float64)


def affine_of(config: Config, channel: int) -> tuple[float, float] | None:
    """γ and β of ``channel`` as the page sets them — from 0.5 to 1.5 and from −0.5 to 0.5 across
    the channels, where torch starts at 1 and 0 — or None without an affine transform."""
    if not config.affine or not 0 <= channel < config.num_features:
        return None
    step = 1 / (config.num_features - 1) if config.num_features > 1 else 0.0
    return 0.5 + channel * step, -0.5 + channel * step


def _max_err(a: Tensor | None, truth: Tensor | None) -> float | None:
    if a is None or truth is None or a.shape != truth.shape or a.numel() == 0:
        return None
    return max(  # in blocks of rows: no float64 copy of a large tensor
        float((a[rows].detach().double() - truth[rows].detach().double()).abs().nan_to_num(0.0).max())
        for rows in row_slices(truth)
    )


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
        exact = sum(int((a[rows].detach() == b[rows].detach()).sum()) for rows in row_slices(a)) / a.numel()
    return Quantity(name, d.max_abs, d.max_rel, d.ok, exact, _max_err(a, truth), _max_err(b, truth), absent)


def _draw(config: Config, shape: tuple[int, ...], dist: str, seed: int, step: int, dtype: torch.dtype) -> Tensor:
    x = sample_batch(dist, shape, seed, step, dtype, config.device)
    return x.movedim(1, -1) if config.features_last else x


def _own(config: Config, own: Tensor | None, dtype: torch.dtype) -> Tensor:
    """The visitor's tensor as this view's batch: a copy in the view's dtype and device."""
    if own is None or tuple(own.shape) != config.shape:
        raise ValueError(f"this view runs on an uploaded tensor of shape {config.shape}: pass it as own=")
    return own.to(device=config.device, dtype=dtype, copy=True)


def training_batch(config: Config, step: int, dtype: torch.dtype | None = None, own: Tensor | None = None) -> Tensor:
    """Training batch ``step`` (0 ≤ step < ``config.steps``): ``train_batch`` samples of the
    seeded stream (see ``sample_batch``), or the visitor's own tensor (``config.own``: every
    training batch is that tensor). A run draws each when it needs it, so only one is alive."""
    dtype = dtype or DTYPES[config.dtype]
    if config.own:
        return _own(config, own, dtype)
    return _draw(config, config.channels_first().train_shape, config.dist, config.seed, step, dtype)


def shown_batch(config: Config, dtype: torch.dtype | None = None, own: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The displayed batch (batch ``steps`` of the stream, or the visitor's own tensor) and the
    fixed upstream gradient."""
    dtype, first = dtype or DTYPES[config.dtype], config.channels_first()
    if config.own:
        shown = _own(config, own, dtype)
    else:
        shown = _draw(config, first.shape, config.dist, config.seed, config.steps, dtype)
    upstream = upstream_gradient(first.shape, config.seed, dtype, config.device)
    return shown, upstream.movedim(1, -1) if config.features_last else upstream


def config_batches(config: Config, dtype: torch.dtype | None = None) -> tuple[list[Tensor], Tensor, Tensor]:
    """The training batches, the displayed batch and the fixed upstream gradient of ``config``.

    A features-last view draws the same values channels-first and moves the features to the
    end, so its fix (``config.channels_first()``) sees exactly these values.
    """
    training = [training_batch(config, step, dtype) for step in range(config.steps)]
    return training, *shown_batch(config, dtype)


def population(config: Config, own: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per channel, the mean and variance the running statistics approach: the synthetic
    distribution's, or — the visitor's tensor being every training batch — that tensor's own
    mean and unbiased variance."""
    if config.own and own is not None:
        return channel_stats(own, config.features_last)
    return population_stats(config.num_features, config.dist)


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


def _train(
    modules: dict[str, nn.Module], config: Config, records: dict[str, list], errors: dict, check: Callable[[], None],
    own: Tensor | None = None,
) -> None:
    """Every side in lockstep on the same training batches, drawn one at a time (only one is
    alive: the peak does not grow with ``steps``). ``records`` gets the running statistics before
    the first step and after each; a side that raises leaves the run, its error in ``errors``."""
    for name, module in modules.items():
        module.train()
        records[name].append(_snapshot(module))
    for step in range(config.steps):
        check()
        x = training_batch(config, step, own=own)
        for name, module in list(modules.items()):
            try:
                with torch.no_grad():
                    module(x.double() if name == "truth" else x)
            except Exception as exc:
                errors[name] = SideError(exc, _stage(config, step))
                del modules[name]
                continue
            records[name].append(_snapshot(module))
        del x


def _run_side(module: nn.Module, config: Config, shown: Tensor, upstream: Tensor, record: list) -> dict:
    """The displayed batch in the chosen mode after training, and its backward from ``upstream``.
    ``record`` gets the running statistics after it."""
    before = {k: None if v is None else v.clone() for k, v in _state(module).items()}
    module.train(config.mode == "train")
    x = shown.detach().requires_grad_()  # the displayed batch itself (nothing writes to it): no copy
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
        **_state(module),
    }


def run(config: Config, stopped: Stopped = never, progress: Progress = ignore, own: Tensor | None = None) -> Report:
    """Run ``config`` on both sides and report every difference; never raises for bad set-ups.

    A set-up that makes either side raise is reported as an ``ErrorReport`` with both messages
    and where they were raised. ``stopped`` is asked between steps (``check_stop``: a visitor
    changed the view or left); the run is short, so ``progress`` is not called.

    Memory: the training batches are drawn one at a time, the displayed batch is not copied per
    side, the train/eval probes are summarized one mode at a time, differences are taken in blocks
    of rows, and each intermediate is dropped once summarized — the peak is what
    ``memory.estimate_bytes`` budgets, whatever ``steps``.

    ``own``: the visitor's tensor, for a config with ``own`` set (its digest): every training
    batch and the displayed batch are that tensor.
    """
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
    check = partial(check_stop, stopped)
    dtype = DTYPES[config.dtype]
    rtol, atol = tolerance(dtype)
    modules, errors = {}, {}
    for name in ("bnviz", "torch", *(("truth",) if dtype != torch.float64 else ())):
        try:
            modules[name] = make_module(config, name)
        except Exception as exc:  # raised while building the layer
            errors[name] = SideError(exc, "while building the layer")
    records: dict[str, list] = {name: [] for name in ("bnviz", "torch", "truth")}
    _train(modules, config, records, errors, check, own)
    if {"bnviz", "torch"} <= errors.keys():  # both refused a training batch: the displayed one is never drawn
        return Report(config, rtol, atol, error=ErrorReport(str(errors["bnviz"]), str(errors["torch"]),
                                                            errors["torch"].stage))  # fmt: skip
    shown, upstream = shown_batch(config, own=own)
    modes = _modes(modules["bnviz"], modules["torch"], shown, rtol) if {"bnviz", "torch"} <= modules.keys() else {}
    sides = {}
    for name in ("bnviz", "torch"):
        if name in modules:
            check()
            try:
                sides[name] = _run_side(modules[name], config, shown, upstream, records[name])
            except SideError as exc:  # reported to the user, side by side
                errors[name] = exc
    errors.pop("truth", None)  # the float64 run is torch's: it only ever raises where torch does
    if errors:
        messages, stages = {k: str(v) for k, v in errors.items()}, {k: v.stage for k, v in errors.items()}
        stage = stages.get("torch") or stages["bnviz"]
        return Report(config, rtol, atol, error=ErrorReport(messages.get("bnviz"), messages.get("torch"), stage))
    g = upstream.double()
    truth: dict[str, Any] = {}
    if "truth" in modules:  # the same (rounded) values through torch in float64; only what is compared kept
        check()
        ran = _run_side(modules["truth"], config, shown.double(), g, [])
        truth = {k: ran[k] for k in ("y", "grad_input", "grad_weight", "grad_bias", "running_mean", "running_var")}
        del ran
    del modules

    a, b = sides["bnviz"], sides["torch"]
    x_hat = inv_std = None
    if b["x"].numel():  # an error-free set-up has rank ≥ 2
        x_hat, inv_std = normalized(b["x"], config.eps)
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
    del truth, t, g, x_hat, inv_std  # the float64 run is summarized: free it before the histograms
    check()
    pop_mean, pop_var = population(config, own)
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
    grouping = picture.Grouping(tuple(a["x"].shape), tuple(reduce_dims(a["x"])), features_last=config.features_last)
    cells = picture.cells(a["x"], grouping)
    lesson = None
    if a["x"].numel() and a["grad_input"] is not None:
        weight = _weight(config) if config.affine else None
        lesson = gradient_lesson(config, a["x"], upstream, a["grad_input"], b["grad_input"], b["running_var"], weight,
                                 PLOT_CHANNELS)  # fmt: skip
    many = a["x"].numel() > a["x"].size(1)  # 2 or more values per channel
    eps = eps_effect(config, a["x"], PLOT_CHANNELS) if many else None
    return Report(config, rtol, atol, quantities, None, history, _channel_stats(a), histograms, modes, cells, lesson,
                  eps)  # fmt: skip


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


def _probe(module: nn.Module, x: Tensor, mode: str) -> tuple[Tensor | str, dict[str, Tensor | None]]:
    """``x`` through a copy of ``module`` in ``mode`` under ``torch.no_grad()``: the output (or the
    error, e.g. a batch of one in train mode: eval still works) and the copy's state after it."""
    probe = copy.deepcopy(module).train(mode == "train")
    try:
        with torch.no_grad():
            out: Tensor | str = probe(x)
    except Exception as exc:
        out = _format_error(exc)
    return out, _state(probe)


def _modes(ours: nn.Module, ref: nn.Module, x: Tensor, rtol: float) -> dict[str, Any]:
    """The displayed batch ``x`` in train mode and in eval mode, from the modules' state after
    training (through copies, under ``torch.no_grad()``), per channel: pre-binned outputs with
    their mean and standard deviation, and what ``torch.no_grad()`` in train mode did to the
    running statistics (it still updates them: only ``.eval()`` switches to them). ``agree``:
    bnviz's probes equal torch's. One mode at a time: the probes are summarized, then freed."""
    before = _state(ours)
    no_grad = {
        "running_mean_before": _first(before["running_mean"]),
        "running_var_before": _first(before["running_var"]),
        "num_batches_tracked_before": _count(before["num_batches_tracked"]),
    }
    agree, errors, kept = True, {}, {}
    for mode in ("train", "eval"):
        (pa, after), (pb, after_ref) = _probe(ours, x, mode), _probe(ref, x, mode)
        if isinstance(pa, Tensor) and isinstance(pb, Tensor):
            agree &= diff(pa, pb, rtol, 10 * rtol).ok
        else:
            agree &= pa == pb if isinstance(pa, str) else False
        if mode == "train":
            for key in ("running_mean", "running_var"):
                agree &= diff(after[key], after_ref[key], rtol, 10 * rtol).ok
            no_grad.update(
                running_mean_after=_first(after["running_mean"]),
                running_var_after=_first(after["running_var"]),
                num_batches_tracked_after=_count(after["num_batches_tracked"]),
            )
        errors[mode] = pa if isinstance(pa, str) else None
        if isinstance(pa, Tensor) and x.dim() >= 2:  # (N, C, *) -> (N, PLOT_CHANNELS, *): what is drawn
            kept[mode] = pa.narrow(1, 0, min(x.size(1), PLOT_CHANNELS)).double()
        del pa, pb
    channels = []
    for c in range(min(x.size(1), PLOT_CHANNELS) if x.dim() >= 2 else 0):
        values = {m: y.select(1, c).reshape(-1) for m, y in kept.items()}
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
    return {"errors": errors, "channels": channels, "no_grad": no_grad, "agree": bool(agree)}
