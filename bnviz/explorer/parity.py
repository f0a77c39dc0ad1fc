"""How close is close enough: per-dtype tolerances and the differences bnviz reports.

A value ``a`` matches the reference ``r`` when ``|a − r| ≤ atol + rtol · |r|`` elementwise —
``torch.testing.assert_close``'s rule with its default tolerances per dtype. A sum over n values
(∂L/∂weight, ∂L/∂bias) may differ by a few ulps of the *summands* rather than of the sum (torch
accumulates in double on the CPU, bnviz in the input's dtype), so its absolute tolerance grows
with ``rtol · Σ|summand|``: see ``sum_tolerance``.
float16/bfloat16 results are rounded from intermediates as large as the tensor's largest value,
so for them atol is at least ``rtol · max|r|`` (about one ulp of the largest value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# (rtol, atol) — torch.testing.assert_close's defaults.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)`` for comparing values of ``dtype``."""
    return _TOLERANCES.get(dtype, (0.0, 0.0))


@dataclass(frozen=True)
class Diff:
    """Largest absolute and relative difference of ``actual`` from ``expected``, and the verdict."""

    max_abs: float
    max_rel: float
    ok: bool


CHUNK = 1 << 18  # values compared at a time: the float64 temporaries stay a few MB whatever the tensor's size


def row_slices(t: Tensor) -> list[Any]:
    """Index objects covering ``t`` in blocks of whole rows of dim 0, about ``CHUNK`` values each
    (one block, ``...``, for a small or 0-dim tensor)."""
    if t.dim() == 0 or t.numel() <= CHUNK:
        return [...]
    rows = max(1, CHUNK // max(1, t.numel() // t.size(0)))
    return [slice(start, start + rows) for start in range(0, t.size(0), rows)]


def max_abs(a: Tensor, b: Tensor) -> float:
    """``max |a − b|`` in float64 (0 for empty tensors)."""
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _nanmax(a: float, b: float) -> float:
    """``max`` that keeps a NaN (as ``Tensor.max`` does)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def diff(actual: Tensor | None, expected: Tensor | None, rtol: float, atol: float | Tensor) -> Diff:
    """Compare two tensors elementwise: ok iff shapes agree and ``|a − e| ≤ atol + rtol·|e|``.

    ``atol`` may be a tensor broadcasting against ``expected`` (a per-channel allowance for sums).

    NaNs in the same places count as equal (a constant channel with eps = 0 gives NaN in both).
    Compared in blocks of rows (``row_slices``), so that a large tensor needs no float64 copy.
    """
    if actual is None or expected is None:
        same = actual is None and expected is None
        return Diff(0.0 if same else float("inf"), 0.0 if same else float("inf"), same)
    if actual.shape != expected.shape:
        return Diff(float("inf"), float("inf"), False)
    if actual.numel() == 0:
        return Diff(0.0, 0.0, True)
    if isinstance(atol, Tensor):
        atol = atol.detach().double().cpu()
    if expected.dtype in (torch.float16, torch.bfloat16):
        top = float(expected.detach().abs().max())
        atol = torch.clamp_min(torch.as_tensor(atol, dtype=torch.float64), rtol * top)
    sliced = isinstance(atol, Tensor) and atol.dim() == expected.dim() > 0 and atol.size(0) == expected.size(0)
    max_abs = max_rel = 0.0
    ok = True
    for rows in row_slices(expected):
        a, e = actual[rows].detach().double().cpu(), expected[rows].detach().double().cpu()
        tol = atol[rows] if sliced else atol
        both_nan = a.isnan() & e.isnan()
        abs_d = (a - e).abs().masked_fill(both_nan, 0.0)
        rel_d = abs_d / e.abs().clamp_min(torch.finfo(torch.float64).tiny)
        ok = ok and bool((abs_d <= tol + rtol * e.abs().masked_fill(both_nan, 0.0)).all())
        ok = ok and not bool(abs_d.isnan().any())
        max_abs, max_rel = _nanmax(max_abs, float(abs_d.max())), _nanmax(max_rel, float(rel_d.max()))
    return Diff(max_abs, max_rel, ok)


def sum_tolerance(summands: Tensor, rtol: float, atol: float) -> Tensor:
    """Per-channel atol for a sum over every dim but 1: ``atol + rtol · Σ|summand|``."""
    dims = [0, *range(2, summands.dim())]
    return atol + rtol * summands.detach().double().abs().sum(dims)


def normalized(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``(x_hat, inv_std)`` of a batch-norm input with its batch's statistics, in float64 and
    broadcastable to ``x``: they size the tolerances of the gradients."""
    x = x.double()
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
    inv_std = (var + eps).rsqrt()
    return (x - mean) * inv_std, inv_std


def grad_input_atol(
    x_hat: Tensor, inv_std: Tensor, g: Tensor, weight: Tensor | None, rtol: float, atol: float
) -> Tensor:
    """Allowance for batch norm's ∂L/∂x = w·inv_std·(g − Σg/n − x_hat·Σ(g·x_hat)/n) with batch
    statistics: each sum may be off by ``rtol·Σ|summand|``, scaled by ``|w·inv_std|/n`` (and
    ``|x_hat|``). This is what makes the check fair where the backward cancels — a statistic over
    two values leaves ∂L/∂x a tiny difference of large terms, and its rounding is large too."""
    dims, shape = [0, *range(2, x_hat.dim())], [1, -1, *([1] * (x_hat.dim() - 2))]
    n = x_hat.numel() // x_hat.size(1)
    w = weight.detach().double().view(shape) if weight is not None else 1.0
    g = g.double()
    sum_g = g.abs().sum(dims, keepdim=True)
    sum_gx = (g * x_hat).abs().sum(dims, keepdim=True)
    return atol + rtol * (w * inv_std).abs() * (sum_g + x_hat.abs() * sum_gx) / n


# When bnviz and torch differ by more than the tolerance, both are compared with a float64 run of
# the same values. Where both are at float32's limit (a mean that dwarfs the spread: 10⁴ ± 1 leaves
# float32 about 3 decimal digits of the spread), their errors are rounding noise that differs by a
# factor of a few either way — measured up to 6.3× on large-mean batches split over ranks, 3.8× on
# single batches — so bnviz counts as accurate when it is within this factor of torch's own error.
# A real discrepancy is orders of magnitude larger (the tests inject ones of 1e-4 on unit data).
ROUNDING_FACTOR = 8.0


def as_accurate(err_bnviz: float | None, err_torch: float | None) -> bool:
    """bnviz's error against the float64 truth is no more than ``ROUNDING_FACTOR`` × torch's."""
    if err_bnviz is None or err_torch is None:
        return False
    return err_bnviz <= ROUNDING_FACTOR * err_torch + 1e-12
