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

Statistics are computed on shifted data (a rough mean first — of the first chunk — then sums of
``x − rough``), so a
channel whose mean dwarfs its spread loses nothing to cancellation; per-channel arithmetic runs
in float64, as torch's CPU kernel accumulates in double. float16/bfloat16 inputs compute in
float32 and return their own dtype.

Speed: the input is seen as an ``(A, C, B)`` view (``(N, C, L)`` when contiguous, ``(N·L, C, 1)``
when channels-last) without copying, and the passes that need ``x − mean`` walk it in chunks of
about a million values through one reusable buffer, summing as they go. So a training forward
plus backward allocates exactly two input-sized tensors — the output and ∂L/∂x — as torch does.

The backward's closed form is also written with differentiable torch ops: under
``create_graph=True`` the statistics are recomputed from the saved input and autograd
differentiates the closed form itself, so double backward works.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bnviz._checks import REDUCED


def cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``t.to(dtype)``, skipping the dispatcher when ``t`` already has that dtype (a no-op ``.to``
    costs a microsecond, and a batch-norm step has dozens of them)."""
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


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


def centred_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``mean`` and ``m2 = Σ (x − mean)²`` of ``(N, C, *)``, both float64, by shifted
    data, with differentiable ops (the double-backward path; the forward uses ``centred_sums``).

    A rough mean ``s = Σx / n`` first, then the deviations ``d = x − s``:
    ``mean = s + Σd / n`` and ``m2 = Σd² − (Σd)² / n``. No large values are ever squared or
    subtracted, so a channel whose mean dwarfs its spread keeps its accuracy.
    """
    dims, shape = reduce_dims(x), channel_shape(x)
    n = x.numel() // x.size(1)
    rough = x.sum(dims) / n  # (N, C, *) -> (C,)
    d = x - rough.view(shape)
    sum_d = d.sum(dims).double()  # (N, C, *) -> (C,)
    sum_d2 = d.square().sum(dims).double()  # (N, C, *) -> (C,)
    return rough.double() + sum_d / n, sum_d2 - sum_d * sum_d / n


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, unbiased_var: Tensor, momentum: float | Tensor
) -> None:
    """``running ← (1 − momentum) · running + momentum · batch``, in place.

    ``lerp`` is exact at momentum 0 and 1 and within an ulp elsewhere. ``momentum`` may be a
    0-d tensor (``1 / num_batches_tracked`` for a cumulative average), which keeps the update
    free of host synchronisation.
    """
    with torch.no_grad():
        for running, batch in ((running_mean, mean), (running_var, unbiased_var)):
            weight = cast(momentum, running.dtype) if isinstance(momentum, Tensor) else momentum
            running.lerp_(cast(batch, running.dtype), weight)


CHUNK = 1 << 20  # values per chunk of the passes that need x − mean (4 MiB in float32)


def channel_view(t: Tensor) -> Tensor | None:
    """``t`` as an ``(A, C, B)`` view whose dims 0 and 2 hold everything but the channels — or
    ``(A, C)`` when B would be 1 — or None when its strides allow neither without a copy.

    Contiguous ``(N, C, *)`` → ``(N, C, L)``; channels-last (C the fastest dim) → ``(N·L, C)``.
    Two tensors with the same strides get the same view, element for element. (torch's
    elementwise kernels are twice as slow on a trailing size-1 dim, hence the 2-D form.)
    """
    c = t.size(1)
    if t.is_contiguous():
        view = t.view(t.size(0), c, -1)
        return view if view.size(2) != 1 else view.view(t.size(0), c)
    moved = t.movedim(1, -1)
    if moved.is_contiguous():
        return moved.view(-1, c)
    return None


def _dims(view: Tensor) -> tuple[int, ...]:
    """The reduced dims of a channel view: (A, C, B) -> (0, 2); (A, C) -> (0,)."""
    return (0, 2) if view.dim() == 3 else (0,)


def _per_channel(view: Tensor, t: Tensor) -> Tensor:
    """A (C,) vector shaped to broadcast along dim 1 of a channel view."""
    return t.view(1, -1, 1) if view.dim() == 3 else t.view(1, -1)


def _chunks(view: Tensor) -> int:
    """Rows of dim 0 per chunk."""
    return max(1, CHUNK // max(1, math.prod(view.shape[1:])))


def _split(view: Tensor, rows: int) -> tuple[Tensor, ...]:
    """``view`` in chunks of ``rows`` rows (itself alone when it fits in one)."""
    return (view,) if rows >= view.size(0) else view.split(rows)


def _buffer(view: Tensor, rows: int) -> Tensor:
    """The one reusable chunk buffer for a pass over ``view``."""
    return torch.empty((min(rows, view.size(0)), *view.shape[1:]), dtype=view.dtype, device=view.device)


def centred_sums(xv: Tensor, shift: Tensor, gv: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per channel of an ``(A, C, B)`` view, in float64, with ``d = x − shift``:
    ``(Σd, Σd²)``, or with ``gv`` given ``(Σg, Σg·d)``. One pass, one chunk-sized buffer."""
    rows, dims = _chunks(xv), _dims(xv)
    buf = _buffer(xv, rows)
    shift_b = _per_channel(xv, shift)
    firsts, seconds = [], []
    for i, xc in enumerate(_split(xv, rows)):
        d = torch.sub(xc, shift_b, out=buf[: xc.size(0)])
        if gv is None:
            firsts.append(d.sum(dims))  # (A, C, B) -> (C,)
            seconds.append(d.square_().sum(dims))
        else:
            gc = gv[i * rows : i * rows + xc.size(0)]
            firsts.append(gc.sum(dims))
            seconds.append(d.mul_(gc).sum(dims))
    if len(firsts) == 1:
        return firsts[0].double(), seconds[0].double()
    return torch.stack(firsts).double().sum(0), torch.stack(seconds).double().sum(0)


def _canonical(t: Tensor) -> tuple[Tensor, Tensor]:
    """``t`` (copied to contiguous only when it has no (A, C, B) view) and its view."""
    view = channel_view(t)
    if view is None:
        t = t.contiguous()
        view = channel_view(t)
    return t, view  # type: ignore[return-value]


def _like(t: Tensor, other: Tensor) -> Tensor:
    """``other`` with ``t``'s strides (a copy only when they differ), so their views align."""
    if other.stride() == t.stride():
        return other
    return torch.empty_like(t).copy_(other)


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
        x, xv = _canonical(cast(input, cdtype))
        n = xv.numel() // xv.size(1)
        if training:
            # A first estimate to shift by: the mean of the first chunk (exact enough to keep the
            # shifted sums free of cancellation, and a fraction of a pass to compute).
            head = xv[: _chunks(xv)]
            rough = head.sum(_dims(xv)).div_(head.numel() // head.size(1))  # (A, C, B) -> (C,)
            sum_d, sum_d2 = centred_sums(xv, rough)
            correction = sum_d.div_(n)
            mean64 = correction + rough
            var64 = sum_d2.div_(n).sub_(correction.square_())  # Σ (x − mean)² / n
            if running_mean is not None and running_var is not None:
                update_running_stats(running_mean, running_var, mean64, var64 * (n / (n - 1)), momentum)
            # torch keeps batch statistics in the parameters' dtype (float32 ones for a
            # float16/bfloat16 input, else the input's): round them the same way.
            params = [t for t in (weight, bias, running_mean, running_var) if t is not None]
            stats_dtype = params[0].dtype if params else cdtype
            mean = cast(cast(mean64, stats_dtype), cdtype)
            inv_std = cast(cast(var64.add_(eps).rsqrt_(), stats_dtype), cdtype)
        else:  # the caller has checked that both running statistics are given
            mean = cast(running_mean, cdtype)  # type: ignore[arg-type]
            inv_std = torch.rsqrt(cast(running_var, cdtype) + eps)  # type: ignore[arg-type]
        # y = x · scale + shift in one pass: torch's own form, scale = inv_std · weight rounded like
        # torch's, shift = bias − mean · scale rounded once from an exact float64 product.
        scale = inv_std if weight is None else inv_std * cast(weight, cdtype)
        shift = torch.mul(mean.double(), scale.double()).neg_()
        if bias is not None:
            shift = shift.add_(bias)
        out = torch.empty_like(x)
        # one fused multiply-add per value (torch's addcmul rounds once, like torch's kernel)
        torch.addcmul(_per_channel(xv, cast(shift, cdtype)), xv, _per_channel(xv, scale), out=channel_view(out))
        ctx.save_for_backward(input, weight, mean, inv_std)
        fmt = output_format(input)
        if not out.is_contiguous(memory_format=fmt):
            out = out.contiguous(memory_format=fmt)
        return cast(out, input.dtype)

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
        if torch.is_grad_enabled():  # create_graph: a differentiable closed form
            grads = _differentiable_backward(ctx, input, grad_output, weight, mean, inv_std)
            return *(t if need else None for t, need in zip(grads, (need_x, need_w, need_b), strict=True)), *nones
        x, xv = _canonical(cast(input, cdtype))
        g = _like(x, cast(grad_output, cdtype))
        gv = channel_view(g)
        n = xv.numel() // xv.size(1)
        if ctx.training or need_w:
            sum_g, sum_g_d = centred_sums(xv, mean, gv)  # Σg, Σg·(x − mean)
        else:
            sum_g, sum_g_d = gv.sum(_dims(gv)).double(), None
        w_inv_std = inv_std if weight is None else inv_std * cast(weight, cdtype)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = torch.empty_like(x)
            out = channel_view(grad_x)
            if ctx.training:
                # ∂L/∂x = w·inv_std·(g − Σg/n − x_hat·Σ(g·x_hat)/n) = c_g·g + c_d·(x − mean) + c_0
                w_inv_std64 = w_inv_std.double()
                c_d = _per_channel(xv, cast((sum_g_d * inv_std.double().square()).mul_(w_inv_std64).div_(-n), cdtype))
                c_0 = _per_channel(xv, cast((sum_g * w_inv_std64).div_(-n), cdtype))
                c_g = _per_channel(xv, w_inv_std)
                rows = _chunks(xv)
                buf = _buffer(xv, rows)
                mean_b = _per_channel(xv, mean)
                for xc, gc, oc in zip(_split(xv, rows), _split(gv, rows), _split(out, rows), strict=True):
                    d = torch.sub(xc, mean_b, out=buf[: xc.size(0)]).mul_(c_d).add_(c_0)
                    torch.addcmul(d, gc, c_g, out=oc)
            else:
                torch.mul(gv, _per_channel(gv, w_inv_std), out=out)
            fmt = output_format(input)
            if not grad_x.is_contiguous(memory_format=fmt):
                grad_x = grad_x.contiguous(memory_format=fmt)
            grad_x = cast(grad_x, input.dtype)
        if need_w:
            grad_w = cast(sum_g_d * inv_std.double(), ctx.weight_dtype)  # Σ g·x_hat
        if need_b:
            grad_b = cast(sum_g, ctx.bias_dtype)
        return grad_x, grad_w, grad_b, *nones


def _differentiable_backward(
    ctx: Any, input: Tensor, grad_output: Tensor, weight: Tensor | None, mean: Tensor, inv_std: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The same closed form with out-of-place ops, for double backward: in training the
    statistics are recomputed from ``input`` so that autograd sees them depend on it."""
    cdtype = compute_dtype(input.dtype)
    x, g = input.to(cdtype), grad_output.to(cdtype)
    dims, shape = reduce_dims(x), channel_shape(x)
    n = x.numel() // x.size(1)
    if ctx.training:
        mean64, m2 = centred_statistics(x)
        mean, inv_std = mean64.to(cdtype), (m2 / n + ctx.eps).rsqrt().to(cdtype)
    x_hat = (x - mean.view(shape)) * inv_std.view(shape)
    sum_g = g.sum(dims)  # (N, C, *) -> (C,)
    sum_g_xhat = (g * x_hat).sum(dims)  # (N, C, *) -> (C,)
    w_inv_std = inv_std if weight is None else inv_std * weight.to(cdtype)
    inner = g - (sum_g / n).view(shape) - x_hat * (sum_g_xhat / n).view(shape) if ctx.training else g
    grad_x = (inner * w_inv_std.view(shape)).to(input.dtype)
    grad_w = None if ctx.weight_dtype is None else sum_g_xhat.to(ctx.weight_dtype)
    grad_b = None if ctx.bias_dtype is None else sum_g.to(ctx.bias_dtype)
    return grad_x, grad_w, grad_b
