r"""Batch norm as a ``torch.autograd.Function``: the forward and its closed-form backward, side by side.

Per channel c, over the n = N·L₁·L₂·… values that share it (every dim but dim 1):

    mean    = Σ x / n
    var     = Σ (x − mean)² / n                 biased: this one normalizes
    inv_std = 1 / √(var + eps)
    x_hat   = (x − mean) · inv_std
    y       = x_hat · weight + bias  = x · scale + shift,  scale = weight · inv_std,
                                                         shift = bias − mean · scale

and, with g = ∂L/∂y,

    ∂L/∂bias   = Σ g
    ∂L/∂weight = Σ g · x_hat
    ∂L/∂x      = weight · inv_std · (g − Σg / n − x_hat · Σ(g · x_hat) / n)    batch statistics
    ∂L/∂x      = weight · inv_std · g                                         running statistics

Statistics are computed on shifted data (a rough mean first, then sums of ``x − rough``), so a
channel whose mean dwarfs its spread loses nothing to cancellation; per-channel arithmetic runs
in float64, as torch's CPU kernel accumulates in double. float16/bfloat16 inputs compute in
float32 and return their own dtype.

The backward is written with differentiable torch ops, so double backward works: under
``create_graph=True`` the statistics are recomputed from the saved input, and autograd
differentiates the closed form itself.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnviz._checks import REDUCED


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 compute in float32; float32 and float64 in themselves."""
    return torch.float32 if dtype in REDUCED else dtype


def reduce_dims(x: Tensor) -> list[int]:
    """Every dim but the channel dim 1: ``(N, C, *)`` reduces over ``[0, 2, 3, …]``."""
    return [0, *range(2, x.dim())]


def channel_shape(x: Tensor) -> list[int]:
    """Shape that broadcasts a ``(C,)`` vector along dim 1 of ``x``: ``[1, C, 1, …]``."""
    return [1, x.size(1), *([1] * (x.dim() - 2))]


def output_format(x: Tensor) -> torch.memory_format:
    """torch keeps channels_last (and channels_last_3d) inputs in that layout; else contiguous."""
    if not x.is_contiguous():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


def centred_statistics(x: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel ``mean`` and ``m2 = Σ (x − mean)²``, both float64, by shifted data.

    A first pass gives a rough mean ``s = Σx / n`` in x's dtype; a second pass sums the
    deviations ``d = x − s`` (written into ``out`` when given) and their squares, so that
    ``mean = s + Σd / n`` and ``m2 = Σd² − (Σd)² / n``. No large values are ever squared or
    subtracted, so a channel whose mean dwarfs its spread keeps its accuracy.
    Differentiable when called with grad mode on.
    """
    dims, shape = reduce_dims(x), channel_shape(x)
    n = x.numel() // x.size(1)
    rough = x.sum(dims) / n  # (N, C, *) -> (C,)
    d = x - rough.view(shape) if out is None else torch.sub(x, rough.view(shape), out=out)
    sum_d = d.sum(dims).double()  # (N, C, *) -> (C,)
    sum_d2 = d.square().sum(dims).double()  # (N, C, *) -> (C,)
    return rough.double() + sum_d / n, sum_d2 - sum_d * sum_d / n


def update_running_stats(
    running_mean: Tensor,
    running_var: Tensor,
    mean: Tensor,
    unbiased_var: Tensor,
    momentum: float | Tensor,
) -> None:
    """``running ← momentum · batch + (1 − momentum) · running``, in place, in float64.

    ``momentum`` may be a 0-d tensor (``1 / num_batches_tracked`` for a cumulative average),
    which keeps the update free of host synchronisation.
    """
    with torch.no_grad():
        for running, batch in ((running_mean, mean), (running_var, unbiased_var)):
            new = momentum * batch.double() + (1 - momentum) * running.double()
            running.copy_(new)


class BatchNormFunction(torch.autograd.Function):
    """``y = (x − mean) · inv_std · weight + bias`` with batch or running statistics."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float | Tensor,
        eps: float,
    ) -> Tensor:
        ctx.training, ctx.eps = training, eps
        ctx.weight_dtype = None if weight is None else weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        if input.numel() == 0:
            ctx.save_for_backward(input, weight, None, None)
            return torch.empty_like(input)
        cdtype = compute_dtype(input.dtype)
        x = input.to(cdtype)
        shape = channel_shape(x)
        n = x.numel() // x.size(1)
        out = torch.empty_like(x, memory_format=output_format(input))
        if training:
            mean64, m2 = centred_statistics(x, out=out)
            if running_mean is not None and running_var is not None:
                update_running_stats(running_mean, running_var, mean64, m2 / (n - 1), momentum)
            # torch keeps batch statistics in the parameters' dtype (float32 ones for a
            # float16/bfloat16 input, else the input's): round them the same way.
            params = [t for t in (weight, bias, running_mean, running_var) if t is not None]
            stats_dtype = params[0].dtype if params else cdtype
            mean = mean64.to(stats_dtype).to(cdtype)
            inv_std = (m2 / n + eps).rsqrt().to(stats_dtype).to(cdtype)
        else:  # the caller has checked that both running statistics are given
            mean = running_mean.to(cdtype)  # type: ignore[union-attr]
            inv_std = torch.rsqrt(running_var.to(cdtype) + eps)  # type: ignore[union-attr]
        # y = x · scale + shift in one fused pass, scale and shift rounded once from exact
        # float64 products: torch's own form, so results agree to the last bit in most cases.
        scale = inv_std if weight is None else (inv_std.double() * weight.double()).to(cdtype)
        shift = -mean.double() * scale.double()
        if bias is not None:
            shift = shift + bias.double()
        y = torch.addcmul(shift.to(cdtype).view(shape), x, scale.view(shape), out=out)
        ctx.save_for_backward(input, weight, mean, inv_std)
        return y.to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        input, weight, mean, inv_std = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        nones = (None,) * 5
        if input.numel() == 0:
            grad_w = torch.zeros_like(weight) if need_w else None
            grad_b = torch.zeros(input.size(1), dtype=ctx.bias_dtype, device=input.device) if need_b else None
            return torch.zeros_like(input), grad_w, grad_b, *nones
        cdtype = compute_dtype(input.dtype)
        x, g = input.to(cdtype), grad_output.to(cdtype)
        dims, shape = reduce_dims(x), channel_shape(x)
        n = x.numel() // x.size(1)
        if ctx.training and torch.is_grad_enabled():  # create_graph: statistics as functions of x
            mean64, m2 = centred_statistics(x)
            mean, inv_std = mean64.to(cdtype), (m2 / n + ctx.eps).rsqrt().to(cdtype)
        x_hat = (x - mean.view(shape)) * inv_std.view(shape)
        sum_g = g.sum(dims)  # (N, C, *) -> (C,)
        sum_g_xhat = (g * x_hat).sum(dims)  # (N, C, *) -> (C,)
        w_inv_std = inv_std if weight is None else inv_std * weight.to(cdtype)
        grad_x = grad_w = grad_b = None
        if need_x:
            if ctx.training:
                inner = g - (sum_g / n).view(shape) - x_hat * (sum_g_xhat / n).view(shape)
            else:
                inner = g
            grad_x = (inner * w_inv_std.view(shape)).to(input.dtype)
        if need_w:
            grad_w = sum_g_xhat.to(ctx.weight_dtype)
        if need_b:
            grad_b = sum_g.to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, *nones
