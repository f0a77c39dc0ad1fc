"""One comparison: a frozen config → bnviz and torch run side by side → a plain report.

Both sides start from the same state, see ``steps`` training batches from the chosen
distribution, then the displayed batch in the chosen mode, and backpropagate the same fixed
upstream gradient. The report holds only plain data (floats, lists, numpy arrays), so it can be
cached and shared between users; no live module ever leaves this file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnviz
from bnviz.explorer.data import DISTRIBUTIONS, population_stats, sample_batch
from bnviz.explorer.parity import Diff, diff, sum_tolerance, tolerance

LAYERS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNorm")
MODES = ("train", "eval")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda")
MAX_ELEMENTS = 2_000_000  # per batch
MAX_STEPS = 100
MAX_WORK = 16_000_000  # elements × (steps + 1): bounds the time of one comparison (3 sides)
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

    @property
    def num_features(self) -> int:
        """C: dim 1 of the shape (dim 0 for a rank-1 shape, so torch gets to reject the rank)."""
        if len(self.shape) >= 2:
            return self.shape[1]
        return self.shape[0] if self.shape else 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


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
        (not 0 <= config.steps <= MAX_STEPS, f"steps must be between 0 and {MAX_STEPS}"),
        (
            config.numel * (config.steps + 1) > MAX_WORK,
            f"{config.numel:,} elements × {config.steps + 1} batches is over the limit of {MAX_WORK:,}; "
            "use fewer steps or a smaller shape",
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

    ``ok`` when bnviz is within tolerance of torch, or at least as close to the truth as torch
    is (then the difference is torch's own rounding: its CPU kernels accumulate some sums in
    float32). ``err_bnviz``/``err_torch`` are None for float64 configs, where torch is the truth.
    """

    name: str
    max_abs: float
    max_rel: float
    within_tolerance: bool
    exact_fraction: float  # share of elements that agree bit for bit
    err_bnviz: float | None = None
    err_torch: float | None = None

    @property
    def ok(self) -> bool:
        if self.within_tolerance:
            return True
        return self.err_bnviz is not None and self.err_torch is not None and self.err_bnviz <= self.err_torch


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
        "running_mean": None if s["running_mean"] is None else s["running_mean"][:PLOT_CHANNELS].double().tolist(),
        "running_var": None if s["running_var"] is None else s["running_var"][:PLOT_CHANNELS].double().tolist(),
        "num_batches_tracked": None if s["num_batches_tracked"] is None else int(s["num_batches_tracked"]),
    }


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
    name: str, a: Tensor | None, b: Tensor | None, truth: Tensor | None, rtol: float, atol: float | Tensor | None
) -> Quantity:
    atol = 0.0 if atol is None else atol
    d: Diff = diff(a, b, rtol, atol)
    exact = 1.0
    if a is not None and b is not None and a.shape == b.shape and a.numel():
        exact = float((a.detach() == b.detach()).float().mean())
    return Quantity(name, d.max_abs, d.max_rel, d.ok, exact, _max_err(a, truth), _max_err(b, truth))


def _run_side(module: nn.Module, config: Config, batches: list[Tensor], upstream: Tensor, record: list) -> dict:
    """Train on ``batches[:-1]``, then run the displayed batch in the chosen mode and backpropagate."""
    module.train()
    for x in batches[:-1]:
        with torch.no_grad():
            module(x)
        record.append(_snapshot(module))
    before = _state(module)
    before = {k: None if v is None else v.clone() for k, v in before.items()}
    module.train(config.mode == "train")
    x = batches[-1].clone().requires_grad_()
    y = module(x)
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


def run_comparison(config: Config) -> Report:
    """Run ``config`` on both sides and report every difference; never raises for bad set-ups.

    A set-up that makes either side raise is reported as an ``ErrorReport`` with both messages.
    """
    reason = refusal(config)
    if reason is not None:
        raise ValueError(reason)
    dtype = DTYPES[config.dtype]
    rtol, atol = tolerance(dtype)
    batches = [
        sample_batch(config.dist, config.shape, config.seed, step, dtype, config.device)
        for step in range(config.steps + 1)
    ]
    upstream = sample_batch("normal", config.shape, config.seed + 7919, 0, dtype, config.device)
    sides, records, errors = {}, {"bnviz": [], "torch": []}, {}
    for name in ("bnviz", "torch"):
        try:
            sides[name] = _run_side(make_module(config, name), config, batches, upstream, records[name])
        except Exception as exc:  # reported to the user, side by side
            errors[name] = _format_error(exc)
    if errors:
        stage = f"after {len(records['torch'])} of {config.steps} training steps" if records["torch"] else "setup"
        return Report(config, rtol, atol, error=ErrorReport(errors.get("bnviz"), errors.get("torch"), stage))
    truth: dict[str, Any] = {}
    if dtype != torch.float64:  # the same (rounded) values through torch in float64
        truth = _run_side(make_module(config, "truth"), config, [t.double() for t in batches], upstream.double(), [])

    a, b = sides["bnviz"], sides["torch"]
    g = upstream.double()
    x_hat = inv_std = None
    if b["x"].numel():  # an error-free set-up has rank ≥ 2
        x_hat, inv_std = _normalized(b["x"], config.eps)
    t = truth.get
    quantities = (
        _compare("output", a["y"], b["y"], t("y"), rtol, atol),
        _compare("running_mean", a["running_mean"], b["running_mean"], t("running_mean"), rtol, atol),
        _compare("running_var", a["running_var"], b["running_var"], t("running_var"), rtol, atol),
        _compare("num_batches_tracked", a["num_batches_tracked"], b["num_batches_tracked"], None, 0.0, 0.0),
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
        ),
        _compare("grad bias", a["grad_bias"], b["grad_bias"], t("grad_bias"), rtol, sum_tolerance(g, rtol, atol)),
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
    return Report(config, rtol, atol, quantities, None, history, _channel_stats(config, a), histograms)


def _channel_stats(config: Config, side: dict[str, Any]) -> dict[str, Any]:
    """Per-channel numbers of the displayed batch for the "which axes are reduced" panel (float64)."""
    x = side["x"].double()
    if x.dim() < 2:
        return {}
    dims = [0, *range(2, x.dim())]
    n = x.numel() // max(x.size(1), 1)
    k = min(x.size(1), 64)
    var_b, mean = torch.var_mean(x, dims, correction=0) if n else (torch.zeros(x.size(1)),) * 2
    var_u = var_b * n / (n - 1) if n > 1 else torch.full_like(var_b, float("nan"))
    # What a home-made one-pass variance gives in float32: E[x²] − E[x]² (cancellation).
    x32 = side["x"].float()
    var_naive = (x32 * x32).mean(dims) - x32.mean(dims) ** 2 if n else var_b

    def first(t: Tensor | None) -> list[float] | None:
        return None if t is None else t[:k].double().cpu().tolist()

    return {
        "reduced_dims": dims,
        "n": n,
        "mean": first(mean),
        "var_biased": first(var_b),
        "var_unbiased": first(var_u),
        "var_naive_f32": first(var_naive),
        "running_mean_before": first(side["before"]["running_mean"]),
        "running_var_before": first(side["before"]["running_var"]),
        "running_mean_after": first(side["running_mean"]),
        "running_var_after": first(side["running_var"]),
        "num_batches_tracked": None if side["num_batches_tracked"] is None else int(side["num_batches_tracked"]),
    }
