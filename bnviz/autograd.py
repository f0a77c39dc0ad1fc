r"""One normalization core for the whole family: statistics over a set of dims per group, with or
without centring, then an affine transform — the forward and its closed-form backward side by
side in one ``torch.autograd.Function``.

Every member sees its input as rows: a ``(A, R, B)`` view whose statistics are taken per group of
``k`` consecutive rows, over dims A and B (``Layout``):

=============  =================================  ===  ==========  ==========================
member         view (A, R, B)                     k    centred     affine
=============  =================================  ===  ==========  ==========================
BatchNorm      (N, C, L) — channels-last (N·L, C)  1    yes         per row (channel)
InstanceNorm   (1, N·C, L)                        1    yes         per row: weight[r mod C]
GroupNorm      (1, N·C, L)                        C/G  yes         per row: weight[r mod C]
LayerNorm      (1, M, K), K = prod(shape)         1    yes         along B: weight over K
RMSNorm        (1, M, K)                          1    no          along B: weight over K
=============  =================================  ===  ==========  ==========================

Per group, over its n values (centred; RMSNorm has ``mean = 0`` and ``var = Σx²/n``):

    mean    = Σ x / n
    var     = Σ (x − mean)² / n                 biased: this one normalizes
    inv_std = 1 / √(var + eps)
    x_hat   = (x − mean) · inv_std
    y       = x_hat · weight + bias

and with g = ∂L/∂y, gh = g · weight (the weight broadcast as the affine says),

    ∂L/∂bias   = Σ g                    (over everything the weight is shared by)
    ∂L/∂weight = Σ g · x_hat
    ∂L/∂x      = inv_std · (gh − Σgh / n − x_hat · Σ(gh · x_hat) / n)     batch statistics
    ∂L/∂x      = inv_std · gh                                             running statistics

(RMSNorm drops the ``Σgh / n`` term.) Row statistics come from shifted data — a rough mean
first, then sums of ``x − rough`` — in float64, so a group whose mean dwarfs its spread loses
nothing to cancellation, and the rows of a group (GroupNorm's C/G channels, or SyncBatchNorm's
ranks) are merged with Chan's formula (``merge_moments``). float16/bfloat16 inputs compute in
float32 and return their own dtype.

Speed: the passes that need ``x − mean`` walk the view in chunks of about a million values
through one reusable buffer, so a training forward plus backward allocates the output and ∂L/∂x
at full size and little else (an input of one chunk computes ∂L/∂x in the buffer of ``x − mean``).
The same maths in plain differentiable form is ``reference_norm``: autograd differentiates it for
double backward. Under ``torch.compile`` the forward and this closed-form backward run as plain
ops (``CompiledNormFunction``, ``closed_form_backward``) that inductor fuses: for batch norm one
reduction for Σg and Σg·x_hat and one elementwise pass for ∂L/∂x, no Python chunk loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bnviz._checks import REDUCED

CHUNK = 1 << 20  # values per chunk of the passes that need x − mean (4 MiB in float32)


def cast(t: Tensor, dtype: torch.dtype | None) -> Tensor:
    """``t.to(dtype)``, skipping the dispatcher when ``t`` already has that dtype (a no-op ``.to``
    costs a microsecond, and a normalization step has dozens of them)."""
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 compute in float32; float32 and float64 in themselves."""
    return torch.float32 if dtype in REDUCED else dtype


def reduce_dims(x: Tensor) -> list[int]:
    """Every dim but the channel dim 1: ``(N, C, *)`` reduces over ``[0, 2, 3, …]``."""
    return [0, *range(2, x.dim())]


def output_format(x: Tensor) -> torch.memory_format:
    """torch keeps channels_last (and channels_last_3d) inputs in that layout; else contiguous."""
    if not x.is_contiguous():
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
        if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
            return torch.channels_last_3d
    return torch.contiguous_format


@dataclass(frozen=True)
class Layout:
    """How one member sees its input (see the module docstring's table).

    ``kind``: "channels" (batch norm: rows are the channels, dim 1), "instances" (rows are
    (sample, channel) pairs; the weight repeats every C rows), or "trailing" (rows are the
    leading dims, B the last ``inner`` values; the weight runs along B). ``k`` rows share one
    statistic; ``centred=False`` is RMSNorm's root mean square.
    """

    kind: str = "channels"
    k: int = 1
    inner: int = 1
    centred: bool = True
    keep_format: bool = True  # channels_last in, channels_last out (batch, group, RMS norm); else contiguous

    @property
    def inner_affine(self) -> bool:
        return self.kind == "trailing"


BATCH = Layout()


def channel_view(t: Tensor) -> Tensor | None:
    """``t`` as an ``(A, C, B)`` view whose dims 0 and 2 hold everything but the channels — or
    ``(A, C)`` when B would be 1 — or None when its strides allow neither without a copy.

    Contiguous ``(N, C, *)`` → ``(N, C, L)``; channels-last (C the fastest dim) → ``(N·L, C)``.
    Two tensors with the same strides get the same view, element for element. (torch's
    elementwise kernels are twice as slow on a trailing size-1 dim, hence the 2-D form.)
    """
    c = t.size(1)
    if t.is_contiguous():
        if t.dim() == 2:
            return t
        view = t.view(t.size(0), c, -1)
        return view if view.size(2) != 1 else view.view(t.size(0), c)
    moved = t.movedim(1, -1)
    if moved.is_contiguous():
        return moved.view(-1, c)
    return None


def row_view(t: Tensor, layout: Layout) -> tuple[Tensor, Tensor]:
    """``t`` (copied to contiguous only when its strides allow no view) and its rows view."""
    if layout.kind == "channels":
        view = channel_view(t)
        if view is None:
            t = t.contiguous()
            view = channel_view(t)
        return t, view  # type: ignore[return-value]
    t = t.contiguous()
    b = layout.inner if layout.kind == "trailing" else math.prod(t.shape[2:])
    return t, t.view(1, t.numel() // b if b else 0, b)


def _dims(view: Tensor) -> tuple[int, ...]:
    """The reduced dims of a rows view: (A, R, B) -> (0, 2); (A, R) -> (0,)."""
    return (0, 2) if view.dim() == 3 else (0,)


def _per_row(view: Tensor, t: Tensor) -> Tensor:
    """A (R,) vector shaped to broadcast along dim 1 of a rows view: (1, R, 1), or itself for an
    (A, R) view (broadcasting puts it there already, without a view op)."""
    return t.view(1, -1, 1) if view.dim() == 3 else t


def _per_channel(x: Tensor, t: Tensor) -> Tensor:
    """A (C,) vector shaped to broadcast along dim 1 of any ``(N, C, *)`` tensor: ``(C, 1, …, 1)``,
    or itself for a 2-D one. On a rows view it is ``_per_row``'s broadcast, for any rank."""
    return t if x.dim() == 2 else t.view(-1, *(1,) * (x.dim() - 2))


def _split_dim(view: Tensor) -> int:
    """Chunks run along dim 0 (sums accumulate over chunks) unless it has one entry; then along
    the rows (each chunk holds whole rows) — for (1, R, B) views only: an (A, R) view always
    splits along dim 0, so its per-row vectors are never sliced."""
    return 0 if view.size(0) > 1 or view.dim() == 2 else 1


def _chunks(view: Tensor) -> int:
    """Entries of the split dim per chunk."""
    d = _split_dim(view)
    per_entry = view.numel() // max(1, view.size(d))
    return max(1, CHUNK // max(1, per_entry))


def _split(view: Tensor, size: int, dim: int) -> tuple[Tensor, ...]:
    """``view`` in chunks of ``size`` along ``dim`` (itself alone when it fits in one)."""
    return (view,) if size >= view.size(dim) else view.split(size, dim)


def _buffer(view: Tensor, size: int, dim: int) -> Tensor:
    """The one reusable chunk buffer for a pass over ``view``."""
    shape = list(view.shape)
    shape[dim] = min(size, shape[dim])
    return torch.empty(shape, dtype=view.dtype, device=view.device)


def _rows_count(view: Tensor) -> int:
    """Values per row (A·B)."""
    return view.numel() // max(1, view.size(1))


def row_moments(xv: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of a rows view, in float64: ``(mean, m2)`` with ``m2 = Σ (x − mean)²``, from
    shifted data (a rough mean first, then ``Σd`` and ``Σd²`` of ``d = x − rough``), one pass
    over the input and one chunk-sized buffer."""
    dims, d = _dims(xv), _split_dim(xv)
    size = _chunks(xv)
    n = _rows_count(xv)
    if size >= xv.size(d):  # one chunk: the common small case, with as few dispatched ops as it takes
        rough = xv.mean(dims)  # (A, R, B) -> (R,)
        dc = xv - _per_row(xv, rough)
        sum_d, sum_d2 = dc.sum(dims).double(), dc.square_().sum(dims).double()  # (A, R, B) -> (R,)
        rough64 = rough.double()
    elif d == 0:  # partial sums over chunks of dim 0; the rough mean from the first chunk
        buf = _buffer(xv, size, d)
        rough = xv[:size].mean(dims)  # (a, R, B) -> (R,)
        firsts, seconds = [], []
        for xc in _split(xv, size, 0):
            dc = torch.sub(xc, _per_row(xv, rough), out=buf[: xc.size(0)])
            firsts.append(dc.sum(dims))  # (A, R, B) -> (R,)
            seconds.append(dc.square_().sum(dims))
        sum_d, sum_d2 = torch.stack(firsts).double().sum(0), torch.stack(seconds).double().sum(0)
        rough64 = rough.double()
    else:  # whole rows per chunk: each chunk's own rough mean, then its shifted sums
        buf = _buffer(xv, size, d)
        parts = []
        for xc in _split(xv, size, 1):
            rough_c = xc.mean(dims)  # (1, r, B) -> (r,)
            dc = torch.sub(xc, _per_row(xc, rough_c), out=buf[:, : xc.size(1)])
            parts.append((rough_c.double(), dc.sum(dims).double(), dc.square_().sum(dims).double()))
        rough64, sum_d, sum_d2 = (torch.cat(p) for p in zip(*parts, strict=True))
    return torch.add(rough64, sum_d, alpha=1 / n), torch.addcmul(sum_d2, sum_d, sum_d, value=-1 / n)  # Σd² − (Σd)²/n


def row_squares(xv: Tensor) -> Tensor:
    """Per row, in float64: ``Σ x²`` (RMSNorm's statistic: no centring, no cancellation)."""
    dims, d = _dims(xv), _split_dim(xv)
    size = _chunks(xv)
    buf = _buffer(xv, size, d)
    parts = [torch.mul(xc, xc, out=buf[: xc.size(0)] if d == 0 else buf[:, : xc.size(1)]).sum(dims).double()
             for xc in _split(xv, size, d)]  # fmt: skip
    return torch.stack(parts).sum(0) if d == 0 else torch.cat(parts)


def merge_moments(mean: Tensor, m2: Tensor, count: Tensor | float, k: int) -> tuple[Tensor, Tensor]:
    """Chan's parallel formula: ``(mean, m2)`` of consecutive blocks of ``k`` entries (each with
    ``count`` values) merged into one per block — exact, and free of cancellation:

        mean = Σ n_i · mean_i / Σ n_i,   m2 = Σ m2_i + Σ n_i · (mean_i − mean)²

    ``mean``, ``m2`` (and a tensor ``count``) have shape ``(…, G·k)``; the result ``(…, G)``.
    GroupNorm merges its C/G channel rows this way; SyncBatchNorm its ranks.
    """
    if k == 1 and not isinstance(count, Tensor):
        return mean, m2
    shape = (*mean.shape[:-1], -1, k)
    mean_k, m2_k = mean.reshape(shape), m2.reshape(shape)
    counts = count.reshape(shape).to(mean.dtype) if isinstance(count, Tensor) else torch.full_like(mean_k, count)
    total = counts.sum(-1)
    merged = (counts * mean_k).sum(-1) / total.clamp_min(1)
    spread = (counts * (mean_k - merged.unsqueeze(-1)).square()).sum(-1)
    return merged, m2_k.sum(-1) + spread


def expand_rows(v: Tensor, rows: int) -> Tensor:
    """A per-channel (P,) vector for every one of ``rows`` rows: ``v[r mod P]``."""
    return v if v.numel() == rows else v.repeat(rows // max(1, v.numel()))


def norm_forward(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    layout: Layout,
    use_batch_stats: bool,
    momentum: float | Tensor,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The forward of ``NormFunction`` as a plain function: ``(y, mean, inv_std)`` per row, the
    running statistics updated in place. Without autograd (no_grad, or nothing requires a
    gradient) ``normalize`` calls it directly: a Function's own overhead is most of a small call."""
    if input.numel() == 0:
        return torch.empty_like(input), None, None
    cdtype = compute_dtype(input.dtype)
    x, xv = row_view(cast(input, cdtype), layout)
    rows = xv.size(1)
    if use_batch_stats:
        mean64, var64, n = _batch_statistics(xv, layout)
        # torch keeps batch statistics in the parameters' dtype (float32 ones for a
        # float16/bfloat16 input, else the input's): round them the same way.
        stats_dtype = _stats_dtype(layout, cdtype, weight, bias, running_mean, running_var)
        mean_s = cast(mean64, stats_dtype)
        if running_mean is not None and running_var is not None:
            update_running_stats(running_mean, running_var, mean_s if mean_s.dtype == running_mean.dtype else mean64,
                                 var64 * (n / max(n - 1, 1)) if n > 1 else var64 * math.nan, momentum,
                                 rows // layout.k)  # fmt: skip
        group_mean = cast(mean_s, cdtype)
        group_inv = cast(cast(var64.add_(eps).rsqrt_(), stats_dtype), cdtype)
    else:  # running statistics (the caller has checked that both are given)
        group_mean = cast(running_mean, cdtype)  # type: ignore[arg-type]
        group_inv = torch.rsqrt(cast(running_var, cdtype) + eps)  # type: ignore[arg-type]
    mean = group_mean.repeat_interleave(layout.k) if layout.k > 1 else group_mean
    inv_std = group_inv.repeat_interleave(layout.k) if layout.k > 1 else group_inv
    mean, inv_std = expand_rows(mean, rows), expand_rows(inv_std, rows)  # running stats per channel
    if layout.kind == "channels" and x.is_contiguous() and (x.dim() == 2 or xv.dim() == 3):
        # A new tensor of x's own shape, computed on x itself — never a view of one: autograd forbids
        # in-place ops (ReLU(inplace=True), a residual +=) on a view made inside a Function.
        out = _apply_rows(x, None, mean, inv_std, weight, bias, cdtype)
    else:
        out = torch.empty_like(x)
        if layout.inner_affine:
            _apply_inner(xv, out.view(xv.shape), mean, inv_std, weight, bias, cdtype)
        elif layout.kind == "channels":
            _apply_rows(xv, channel_view(out), mean, inv_std, weight, bias, cdtype)
        else:
            _apply_centred(xv, out.view(xv.shape), mean, inv_std, weight, bias, cdtype)
    fmt = output_format(input) if layout.keep_format else torch.contiguous_format
    if not out.is_contiguous(memory_format=fmt):
        out = out.contiguous(memory_format=fmt)
    return cast(out, input.dtype), mean, inv_std


class NormFunction(torch.autograd.Function):
    """``y = (x − mean) · inv_std · weight + bias`` with batch (or instance, group, layer) or
    running statistics, for any ``Layout``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        layout: Layout,
        use_batch_stats: bool,
        momentum: float | Tensor,
        eps: float,
    ) -> Tensor:
        ctx.layout, ctx.batch_stats, ctx.eps = layout, use_batch_stats, eps
        ctx.weight_dtype = None if weight is None else weight.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.bias_shape = None if bias is None else bias.shape
        out, mean, inv_std = norm_forward(input, weight, bias, running_mean, running_var, layout, use_batch_stats,
                                          momentum, eps)  # fmt: skip
        ctx.save_for_backward(input, weight, mean, inv_std)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        input, weight, mean, inv_std = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        nones = (None,) * 6
        if input.numel() == 0:
            grad_w = torch.zeros_like(weight) if need_w else None
            grad_b = torch.zeros(ctx.bias_shape, dtype=ctx.bias_dtype, device=input.device) if need_b else None
            return torch.zeros_like(input), grad_w, grad_b, *nones
        if torch.is_grad_enabled():  # create_graph: differentiate the plain formula itself
            grads = _reference_backward(ctx, input, grad_output, weight, mean, inv_std)
            return *(t if need else None for t, need in zip(grads, (need_x, need_w, need_b), strict=True)), *nones
        cdtype = compute_dtype(input.dtype)
        layout = ctx.layout
        x, xv = row_view(cast(input, cdtype), layout)
        g = _like(x, cast(grad_output, cdtype))
        gv = g.view(xv.shape) if layout.kind != "channels" else channel_view(g)
        if layout.inner_affine:
            grad_x, grad_w, grad_b = _backward_inner(ctx, x, xv, gv, weight, mean, inv_std, need_x, need_w, need_b)
        else:
            grad_x, grad_w, grad_b = _backward_rows(ctx, x, xv, gv, weight, mean, inv_std, need_x, need_w, need_b)
        if grad_x is not None:
            fmt = output_format(input) if layout.keep_format else torch.contiguous_format
            if not grad_x.is_contiguous(memory_format=fmt):
                grad_x = grad_x.contiguous(memory_format=fmt)
            grad_x = cast(grad_x.view(input.shape) if grad_x.shape != input.shape else grad_x, input.dtype)
        grad_w = None if grad_w is None else _shaped(cast(grad_w, ctx.weight_dtype), weight.shape)
        grad_b = None if grad_b is None else _shaped(cast(grad_b, ctx.bias_dtype), ctx.bias_shape)
        return grad_x, grad_w, grad_b, *nones


def _shaped(t: Tensor, shape: torch.Size) -> Tensor:
    """``t.view(shape)``, skipping the dispatcher when it has that shape already."""
    return t if t.shape == shape else t.view(shape)


def _batch_statistics(xv: Tensor, layout: Layout) -> tuple[Tensor, Tensor, int]:
    """Per statistics group, float64: the mean (0 for RMSNorm), the biased variance (the mean
    square for RMSNorm), and n, the values per group."""
    n = _rows_count(xv) * layout.k
    if not layout.centred:
        ms = row_squares(xv) / n
        return torch.zeros_like(ms), ms, n
    mean, m2 = row_moments(xv)
    mean, m2 = merge_moments(mean, m2, float(n // layout.k), layout.k)
    return mean, m2.div_(n), n


def update_running_stats(
    running_mean: Tensor,
    running_var: Tensor,
    mean: Tensor,
    unbiased_var: Tensor,
    momentum: float | Tensor,
    groups: int | None = None,
) -> None:
    """``running ← (1 − momentum) · running + momentum · batch``, in place.

    ``lerp`` is exact at momentum 0 and 1 and within an ulp elsewhere. ``momentum`` may be a
    0-d tensor (``1 / num_batches_tracked`` for a cumulative average), which keeps the update
    free of host synchronisation. When the batch holds more groups than the buffers (instance
    norm: one statistic per sample and channel, running statistics per channel), each sample's
    update is averaged over the samples, as torch does.
    """
    with torch.no_grad():
        for running, batch in ((running_mean, mean), (running_var, unbiased_var)):
            weight = cast(momentum, running.dtype) if isinstance(momentum, Tensor) else momentum
            if groups is not None and groups != running.numel():
                copies = running.repeat(groups // running.numel()).lerp_(cast(batch, running.dtype), weight)
                running.copy_(copies.view(-1, running.numel()).mean(0))
            else:
                running.lerp_(cast(batch, running.dtype), weight)


def _apply_rows(
    xv: Tensor, out: Tensor | None, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None,
    cdtype: torch.dtype,
) -> Tensor:  # fmt: skip
    """``y = x · scale + shift`` per row, torch's own form: ``scale = inv_std · weight`` rounded
    like torch's, ``shift = bias − mean · scale`` rounded once from an exact float64 product, one
    fused multiply-add per value (addcmul rounds once, as torch's kernel does). Into ``out`` (a
    rows view), or a new tensor shaped like ``xv`` — a rows view, or the ``(N, C, *)`` input itself
    (``_per_channel`` broadcasts along dim 1 of either); returned."""
    rows = xv.size(1)
    scale = inv_std if weight is None else inv_std * expand_rows(cast(weight, cdtype), rows)
    mean64, scale64 = mean.double(), scale.double()  # their product is exact in float64
    shift = torch.mul(mean64, scale64).neg_() if bias is None else torch.addcmul(expand_rows(bias, rows), mean64,
                                                                                  scale64, value=-1)  # fmt: skip
    shift, scale = _per_channel(xv, cast(shift, cdtype)), _per_channel(xv, scale)
    return torch.addcmul(shift, xv, scale) if out is None else torch.addcmul(shift, xv, scale, out=out)


def _apply_centred(
    xv: Tensor, out: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None,
    cdtype: torch.dtype,
) -> None:  # fmt: skip
    """``y = (x − mean) · scale + bias`` per row, ``scale = inv_std · weight``: centred first, so a
    constant group gives exactly β (instance and group norm; a group of one value is common there)."""
    rows = xv.size(1)
    scale = inv_std if weight is None else inv_std * expand_rows(cast(weight, cdtype), rows)
    torch.sub(xv, _per_row(xv, mean), out=out)
    if bias is None:
        out.mul_(_per_row(xv, scale))
    else:
        torch.addcmul(_per_row(xv, expand_rows(cast(bias, cdtype), rows)), out, _per_row(xv, scale), out=out)


def _apply_inner(
    xv: Tensor, out: Tensor, mean: Tensor, inv_std: Tensor, weight: Tensor | None, bias: Tensor | None,
    cdtype: torch.dtype,
) -> None:  # fmt: skip
    """``y = (x − mean) · inv_std · weight + bias`` with the weight along B (layer and RMS norm),
    in place in ``out``; centred first, so a constant row gives exactly β."""
    torch.sub(xv, _per_row(xv, mean), out=out).mul_(_per_row(xv, inv_std))
    if weight is not None and bias is not None:
        torch.addcmul(cast(bias, cdtype).view(1, 1, -1), out, cast(weight, cdtype).view(1, 1, -1), out=out)
    elif weight is not None:
        out.mul_(cast(weight, cdtype).view(1, 1, -1))
    elif bias is not None:
        out.add_(cast(bias, cdtype).view(1, 1, -1))


def _like(t: Tensor, other: Tensor) -> Tensor:
    """``other`` with ``t``'s strides (a copy only when they differ), so their views align."""
    if other.stride() == t.stride():
        return other
    return torch.empty_like(t).copy_(other)


def row_grad_sums(xv: Tensor, mean: Tensor, gv: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of a rows view, float64: ``(Σg, Σg·(x − mean))``; one pass, one chunk buffer."""
    dims, d = _dims(xv), _split_dim(xv)
    size = _chunks(xv)
    buf = _buffer(xv, size, d)
    mean_r = _per_row(xv, mean)
    firsts, seconds = [], []
    for xc, gc in zip(_split(xv, size, d), _split(gv, size, d), strict=True):
        out = buf[: xc.size(0)] if d == 0 else buf[:, : xc.size(1)]
        mc = mean_r if d == 0 else mean_r[:, len(firsts) * size : len(firsts) * size + xc.size(1)]
        dc = torch.sub(xc, mc, out=out)
        firsts.append(gc.sum(dims))  # (A, R, B) -> (R,)
        seconds.append(dc.mul_(gc).sum(dims))
    if len(firsts) == 1:
        return firsts[0].double(), seconds[0].double()
    join = (lambda p: torch.stack(p).double().sum(0)) if d == 0 else (lambda p: torch.cat(p).double())
    return join(firsts), join(seconds)


def _backward_rows(
    ctx: Any, x: Tensor, xv: Tensor, gv: Tensor, weight: Tensor | None, mean: Tensor, inv_std: Tensor,
    need_x: bool, need_w: bool, need_b: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    """The closed form for a per-row affine (batch, instance and group norm): with per-row sums
    ``Σg``, ``Σg·d`` (d = x − mean) weighted by each row's γ and summed over a group's k rows,
    ``∂L/∂x = c_g·g + c_d·d + c_0`` per row."""
    layout, cdtype = ctx.layout, x.dtype
    rows, k = xv.size(1), layout.k
    n = _rows_count(xv) * k
    w_rows = None if weight is None else expand_rows(cast(weight, cdtype), rows)
    need_sums = ctx.batch_stats or need_w or need_b
    sum_g = sum_gd = grad_x = grad_w = grad_b = inv64 = None

    def new_grad_x() -> tuple[Tensor, Tensor]:  # ∂L/∂x in x's layout, and its rows view
        t = torch.empty_like(x)
        return t, channel_view(t) if layout.kind == "channels" else t.view(xv.shape)  # type: ignore[return-value]

    if need_x and ctx.batch_stats and _chunks(xv) >= xv.size(_split_dim(xv)):
        # One chunk: d = x − mean once, in ∂L/∂x's own storage, then ∂L/∂x = c_g·g + c_d·d + c_0 in place.
        if x.is_contiguous():  # d in a new rows view, which is ∂L/∂x's storage
            dc = xv - _per_row(xv, mean)
            grad_x = _shaped(dc, x.shape)
        else:
            grad_x, out = new_grad_x()
            dc = torch.sub(xv, _per_row(xv, mean), out=out)
        sum_g, sum_gd = gv.sum(_dims(xv)).double(), (dc * gv).sum(_dims(xv)).double()  # (A, R, B) -> (R,)
        inv64 = inv_std.double()
        c_g, c_d, c_0 = grad_coefficients(xv, w_rows, inv_std, sum_g, sum_gd, n, k, inv64)
        dc.mul_(c_d).add_(c_0).addcmul_(gv, c_g)
    else:
        if need_sums:
            sum_g, sum_gd = row_grad_sums(xv, mean, gv) if ctx.batch_stats or need_w else (gv.sum(_dims(gv)).double(),
                                                                                            None)  # fmt: skip
        if need_x:
            grad_x, out = new_grad_x()
            if ctx.batch_stats:
                batch_grad_input(xv, gv, out, w_rows, mean, inv_std, sum_g, sum_gd, n, k)  # type: ignore[arg-type]
            else:
                w_inv = inv_std if w_rows is None else inv_std * w_rows
                torch.mul(gv, _per_row(gv, w_inv), out=out)
    period = weight.numel() if weight is not None else (x.size(1) if x.dim() > 1 else rows)
    if need_w:
        grad_w = _fold_period(sum_gd * (inv_std.double() if inv64 is None else inv64), period)  # Σ g·x_hat per channel
    if need_b:
        grad_b = _fold_period(sum_g, period)
    return grad_x, grad_w, grad_b


def batch_grad_input(
    xv: Tensor, gv: Tensor, out: Tensor, w_rows: Tensor | None, mean: Tensor, inv_std: Tensor,
    sum_g: Tensor, sum_gd: Tensor, n: int, k: int = 1,
) -> None:  # fmt: skip
    """∂L/∂x with batch statistics, into ``out`` (a rows view like ``xv``), from the per-row sums
    ``Σg`` and ``Σg·(x − mean)`` over all n values of each group — local ones, or summed over a
    process group (SyncBatchNorm):

        ∂L/∂x = inv_std·(gh − Σgh/n − x_hat·Σ(gh·x_hat)/n) = c_g·g + c_d·(x − mean) + c_0,  gh = γ·g
    """
    c_g, c_d, c_0 = grad_coefficients(xv, w_rows, inv_std, sum_g, sum_gd, n, k)
    d = _split_dim(xv)
    size = _chunks(xv)
    buf = _buffer(xv, size, d)
    mean_r = _per_row(xv, mean)
    for i, (xc, gc, oc) in enumerate(zip(_split(xv, size, d), _split(gv, size, d), _split(out, size, d),
                                         strict=True)):  # fmt: skip
        if d == 0:
            tmp = torch.sub(xc, mean_r, out=buf[: xc.size(0)]).mul_(c_d).add_(c_0)
            torch.addcmul(tmp, gc, c_g, out=oc)
        else:
            sl = slice(i * size, i * size + xc.size(1))
            tmp = torch.sub(xc, mean_r[:, sl], out=buf[:, : xc.size(1)]).mul_(c_d[:, sl]).add_(c_0[:, sl])
            torch.addcmul(tmp, gc, c_g[:, sl], out=oc)


def grad_coefficients(
    xv: Tensor, w_rows: Tensor | None, inv_std: Tensor, sum_g: Tensor, sum_gd: Tensor, n: int, k: int,
    inv64: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Per row of a rows view, shaped to broadcast there: ``(c_g, c_d, c_0)`` of
    ``∂L/∂x = c_g·g + c_d·(x − mean) + c_0`` with batch statistics — from the float64 per-row sums
    ``Σg``, ``Σg·(x − mean)`` weighted by γ and summed over each group's k rows:

        c_g = inv_std·γ,   c_d = −inv_std³·Σ(gh·(x − mean))/n,   c_0 = −inv_std·Σgh/n,   gh = γ·g

    (``inv64``: ``inv_std`` in float64, when the caller has it already.)
    """
    cdtype = xv.dtype
    w64 = None if w_rows is None else w_rows.double()
    s1, s2 = (sum_g, sum_gd) if w64 is None else (sum_g * w64, sum_gd * w64)
    s1, s2 = _group_sum(s1, k), _group_sum(s2, k)  # (R,) -> (G,) -> (R,)
    inv64 = inv_std.double() if inv64 is None else inv64
    c_d = _per_row(xv, cast(s2.mul(inv64.pow(3)).div_(-n), cdtype))  # (mul: s2 may be the caller's Σ)
    c_0 = _per_row(xv, cast(s1.mul(inv64).div_(-n), cdtype))
    c_g = _per_row(xv, inv_std if w_rows is None else inv_std * w_rows)
    return c_g, c_d, c_0


def _group_sum(v: Tensor, k: int) -> Tensor:
    """Sum over each group of k consecutive rows, repeated back to every row."""
    return v if k == 1 else v.view(-1, k).sum(1).repeat_interleave(k)


def _fold_period(v: Tensor, period: int) -> Tensor:
    """A per-row (R,) sum folded onto the (P,) parameters it came from (rows r, r+P, … share)."""
    return v if v.numel() == period else v.view(-1, period).sum(0)


def _backward_inner(
    ctx: Any, x: Tensor, xv: Tensor, gv: Tensor, weight: Tensor | None, mean: Tensor, inv_std: Tensor,
    need_x: bool, need_w: bool, need_b: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    """The closed form for an affine along B (layer and RMS norm): per row ``Σgh`` and
    ``Σgh·d`` with ``gh = γ·g``; per column ``Σ g·x_hat`` and ``Σ g`` for γ and β."""
    layout, cdtype = ctx.layout, x.dtype
    n = xv.size(2)
    d = 1  # rows views of these members are (1, R, B): chunks of whole rows
    size = _chunks(xv)
    buf = _buffer(xv, size, d)
    w = None if weight is None else cast(weight, cdtype).view(1, 1, -1)
    s1_parts, s2_parts, gw_parts, gb_parts = [], [], [], []
    for i, (xc, gc) in enumerate(zip(_split(xv, size, d), _split(gv, size, d), strict=True)):
        sl = slice(i * size, i * size + xc.size(1))
        dc = torch.sub(xc, _per_row(xc, mean[sl]), out=buf[:, : xc.size(1)])  # x − mean
        gh = gc if w is None else gc * w
        s1_parts.append(gh.sum(2).double().view(-1))
        if need_w:
            gw_parts.append((gc * dc * _per_row(xc, inv_std[sl])).sum((0, 1)).double())
        if need_b:
            gb_parts.append(gc.sum((0, 1)).double())
        s2_parts.append(dc.mul_(gh).sum(2).double().view(-1))
    grad_x = None
    if need_x:
        inv64 = inv_std.double()
        s2 = torch.cat(s2_parts)
        c_d = cast(s2.mul_(inv64.pow(3)).div_(-n), cdtype)
        c_0 = cast(torch.cat(s1_parts).mul_(inv64).div_(-n), cdtype) if layout.centred else None
        grad_x = torch.empty_like(x)
        out = grad_x.view(xv.shape)
        for i, (xc, gc, oc) in enumerate(zip(_split(xv, size, d), _split(gv, size, d), _split(out, size, d),
                                             strict=True)):  # fmt: skip
            sl = slice(i * size, i * size + xc.size(1))
            tmp = torch.sub(xc, _per_row(xc, mean[sl]), out=buf[:, : xc.size(1)]).mul_(_per_row(xc, c_d[sl]))
            if c_0 is not None:
                tmp.add_(_per_row(xc, c_0[sl]))
            gh = gc if w is None else gc * w
            torch.addcmul(tmp, gh, _per_row(xc, inv_std[sl]), out=oc)
    grad_w = torch.stack(gw_parts).sum(0) if need_w else None
    grad_b = torch.stack(gb_parts).sum(0) if need_b else None
    return grad_x, grad_w, grad_b


# --- the plain formula: the reference, and what torch.compile fuses ----------------------------


def plain_view(x: Tensor, layout: Layout) -> tuple[Tensor, tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``x`` as the plain formula sees it, with the dims one statistic reduces, the dims ∂L/∂γ and
    ∂L/∂β reduce, and the shape γ, β (and running statistics) broadcast as:

    =========  ====================  ===============  ===============  ==============
    kind       view                  statistic over   ∂L/∂γ over       γ, β shaped
    =========  ====================  ===============  ===============  ==============
    channels   x itself, (N, C, *)   all but dim 1    all but dim 1    (1, C, 1, …)
    instances  (N, G, k, L), C = G·k  (2, 3)           (0, 3)           (1, G, k, 1)
    trailing   (M, K)                (1,)             (0,)             (1, K)
    =========  ====================  ===============  ===============  ==============
    """
    if layout.kind == "channels":  # no reshape: a channels-last input stays a view
        dims = tuple(reduce_dims(x))
        return x, dims, dims, (1, x.size(1), *(1,) * (x.dim() - 2))
    if layout.kind == "instances":
        groups = x.size(1) // layout.k
        return x.reshape(x.size(0), groups, layout.k, -1), (2, 3), (0, 3), (1, groups, layout.k, 1)
    return x.reshape(-1, layout.inner), (1,), (0,), (1, layout.inner)


def _sum(t: Tensor, dims: tuple[int, ...], keepdim: bool = True, dtype: torch.dtype | None = None) -> Tensor:
    """``t.sum(dims)``, accumulated in ``dtype``, and ``t`` itself for no dims (where torch would
    sum over all of them)."""
    return t.sum(dims, keepdim=keepdim, dtype=dtype) if dims else t


def plain_statistics(xv: Tensor, dims: tuple[int, ...], centred: bool) -> tuple[Tensor, Tensor]:
    """Per statistic group, keeping the reduced dims: ``(mean, var)``, var biased — from
    ``torch.var_mean`` of the data shifted by each group's first value: Welford's updates on values
    of the spread's size, so a mean that dwarfs the spread costs nothing, in one pass that inductor
    fuses with the shift. RMSNorm: ``(0, Σx²/n)``."""
    if not centred:
        mean_square = (xv * xv).mean(dims, keepdim=True)
        return torch.zeros_like(mean_square), mean_square
    first = xv[tuple(slice(0, 1) if d in dims else slice(None) for d in range(xv.dim()))].detach()
    var, mean = torch.var_mean(xv - first, dims, correction=0, keepdim=True)
    return mean + first, var


def _stats_dtype(layout: Layout, cdtype: torch.dtype, *params: Tensor | None) -> torch.dtype:
    """torch keeps batch statistics in the parameters' dtype (float32 ones for a float16/bfloat16
    input, else the input's); layer and RMS norm in the compute dtype."""
    given = [t for t in params if t is not None]
    return given[0].dtype if given and not layout.inner_affine else cdtype


def _rounded_stats(
    mean: Tensor, var: Tensor, eps: float, sdtype: torch.dtype, cdtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The batch's ``(mean, inv_std)`` as torch rounds them: ``inv_std = 1 / √(var + eps)``, both
    through the statistics dtype (``_stats_dtype``), then in the compute dtype."""
    return mean.to(sdtype).to(cdtype), (var + eps).rsqrt().to(sdtype).to(cdtype)


def _affine(x_hat: Tensor, weight: Tensor | None, bias: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    """``x_hat · γ + β``, γ and β broadcast as ``shape``."""
    y = x_hat if weight is None else x_hat * weight.to(x_hat.dtype).reshape(shape)
    return y if bias is None else y + bias.to(x_hat.dtype).reshape(shape)


def reference_norm(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    layout: Layout,
    eps: float,
    mean: Tensor | None = None,
    inv_std: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The module docstring's forward in plain differentiable ops, no chunk loop — the reference a
    reader checks, and what autograd differentiates for double backward:

        mean, var = statistics of x (plain_statistics);  inv_std = 1 / √(var + eps)
        x_hat     = (x − mean) · inv_std;                 y = x_hat · γ + β

    with the batch's statistics, or the given per-channel ``mean`` and ``inv_std`` (running
    statistics). Returns ``(y, mean, var)``: the batch's mean and biased variance per statistic
    group in float64 (for the running statistics), None with given ones."""
    cdtype = compute_dtype(input.dtype)
    xv, dims, _, shape = plain_view(input.to(cdtype), layout)
    mean64 = var64 = None
    if inv_std is None:
        mean, var = plain_statistics(xv, dims, layout.centred)
        mean64, var64 = mean.double().flatten(), var.double().flatten()
        mean, inv_std = _rounded_stats(mean, var, eps, _stats_dtype(layout, cdtype, weight, bias), cdtype)
    else:
        mean, inv_std = mean.to(cdtype).reshape(shape), inv_std.to(cdtype).reshape(shape)  # type: ignore[union-attr]
    x_hat = (xv - mean) * inv_std
    return _affine(x_hat, weight, bias, shape).reshape(input.shape).to(input.dtype), mean64, var64


def closed_form_backward(
    x: Tensor, g: Tensor, weight: Tensor | None, mean: Tensor, inv_std: Tensor, layout: Layout, batch_stats: bool,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    """The module docstring's closed form in plain ops, on ``plain_view`` of ``x`` and of its
    gradient ``g`` (both in the compute dtype), with the statistics shaped to broadcast there —
    what inductor fuses under compile:

        ∂L/∂β = Σ g,   ∂L/∂γ = Σ g · x_hat                       over the dims γ is shared by
        ∂L/∂x = inv_std · (gh − Σgh / n − x_hat · Σ(gh · x_hat) / n),   gh = γ · g,  Σ per statistic

    The sums that both need are taken once, over the dims both reduce: for batch norm all of
    them — Σg and Σg·x_hat are ∂L/∂β and ∂L/∂γ, one fused reduction over g and x —, for group and
    instance norm the spatial dims (then small sums over the rest); layer and RMS norm share none
    (γ runs along the statistic's dims), so ∂L/∂γ, ∂L/∂β are a second reduction. Then ∂L/∂x is
    one elementwise pass, ``c_g·g − c_x·x_hat − c_1`` with per-statistic coefficients rounded once
    to the compute dtype. The sums accumulate as torch's CPU kernels do: in float64 for batch and
    instance norm (torch's batch-norm kernel), in the compute dtype for group, layer and RMS norm."""
    need_x, need_w, need_b = needs
    xv, dims, param_dims, shape = plain_view(x, layout)
    g = plain_view(g, layout)[0]
    x_hat = (xv - mean) * inv_std
    acc = torch.float64 if layout.k == 1 and not layout.inner_affine else None
    shared = tuple(d for d in dims if d in param_dims)
    sum_g = _sum(g, shared, dtype=acc)  # (N, C, *) -> (1, C, 1, …) for batch norm; g itself for layer norm
    sum_gx = _sum(g * x_hat, shared, dtype=acc)
    only_params = tuple(d for d in param_dims if d not in shared)
    grad_w = _sum(sum_gx, only_params, False, acc).flatten() if need_w else None  # flat, as γ's values
    grad_b = _sum(sum_g, only_params, False, acc).flatten() if need_b else None
    if not need_x:
        return None, grad_w, grad_b
    w = None if weight is None else weight.to(g.dtype).reshape(shape)
    gh_scale = inv_std if w is None else inv_std * w
    if not batch_stats:  # running statistics: constants
        return (g * gh_scale).reshape(x.shape), grad_w, grad_b
    only_stats = tuple(d for d in dims if d not in shared)
    n = math.prod([xv.size(d) for d in dims])  # values per statistic

    def coefficient(s: Tensor) -> Tensor:  # inv_std / n · Σ over a statistic's values of γ · s
        return (_sum(s if w is None else s * w, only_stats, dtype=acc) * (inv_std / n)).to(x.dtype)

    grad_x = g * gh_scale - x_hat * coefficient(sum_gx)
    if layout.centred:
        grad_x = grad_x - coefficient(sum_g)
    return grad_x.reshape(x.shape), grad_w, grad_b


def _reference_backward(
    ctx: Any, input: Tensor, grad_output: Tensor, weight: Tensor | None, mean: Tensor, inv_std: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """First derivatives as a differentiable graph (for double backward): autograd through
    ``reference_norm``, with the batch statistics recomputed from ``input`` so that they depend
    on it, or the saved running statistics."""
    layout = ctx.layout
    bias = None
    if ctx.bias_dtype is not None:  # ∂L/∂β = Σg whatever β is: a stand-in with its shape
        bias = torch.zeros(ctx.bias_shape, dtype=ctx.bias_dtype, device=input.device, requires_grad=True)
    with torch.enable_grad():
        x = input if input.requires_grad else input.detach().requires_grad_()
        w = weight if weight is None or weight.requires_grad else weight.detach().requires_grad_()
        if ctx.batch_stats:
            y, _, _ = reference_norm(x, w, bias, layout, ctx.eps)
        else:  # the saved running statistics, one per channel
            channels = mean.numel() if layout.kind == "channels" else input.size(1)
            y, _, _ = reference_norm(x, w, bias, layout, ctx.eps, mean[:channels], inv_std[:channels])
        inputs = [t for t in (x, w, bias) if t is not None]
        grads = torch.autograd.grad(y, inputs, grad_output, create_graph=True)
    grad_x = grads[0]
    grad_w = grads[1] if w is not None else None
    grad_b = grads[-1] if bias is not None else None
    return grad_x, grad_w, grad_b


class CompiledNormFunction(torch.autograd.Function):
    """What ``torch.compile`` traces: ``y = x_hat · γ + β`` from given statistics, and the
    closed-form backward (``closed_form_backward``), both in plain ops that dynamo traces and
    inductor fuses — a ``torch.library.custom_op`` would be opaque to inductor. The statistics
    are inputs, computed outside from the detached input; the closed form accounts for their
    dependence on it (``batch_stats``). No double backward under compile, as for torch's own
    compiled layers; eager double backward differentiates ``reference_norm``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        inv_std: Tensor,
        layout: Layout,
        batch_stats: bool,
    ) -> Tensor:
        ctx.layout, ctx.batch_stats = layout, batch_stats
        ctx.bias_dtype, ctx.bias_shape = (None, None) if bias is None else (bias.dtype, bias.shape)
        ctx.save_for_backward(input, weight, mean, inv_std)
        xv, _, _, shape = plain_view(input.to(mean.dtype), layout)
        x_hat = (xv - mean) * inv_std
        y = _affine(x_hat, weight, bias, shape)
        # A new tensor, never a view of one: autograd forbids in-place ops (ReLU(inplace=True), a
        # residual +=) on a view made inside a Function. Batch norm's view is the input itself; the
        # others' are reshaped back and copied (inductor fuses the copy into the pass that writes y).
        return (y if layout.kind == "channels" else y.reshape(input.shape).clone()).to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        input, weight, mean, inv_std = ctx.saved_tensors
        x, g = input.to(mean.dtype), grad_output.to(mean.dtype)
        needs = ctx.needs_input_grad[:3]
        grad_x, grad_w, grad_b = closed_form_backward(x, g, weight, mean, inv_std, ctx.layout, ctx.batch_stats, needs)
        grad_x = None if grad_x is None else grad_x.to(input.dtype)
        grad_w = None if grad_w is None else grad_w.to(weight.dtype).reshape(weight.shape)
        grad_b = None if grad_b is None else grad_b.to(ctx.bias_dtype).reshape(ctx.bias_shape)
        return grad_x, grad_w, grad_b, None, None, None, None


def compiled_norm(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    layout: Layout,
    use_batch_stats: bool,
    momentum: float | Tensor,
    eps: float,
) -> Tensor:
    """What ``normalize`` runs under ``torch.compile``: the statistics in plain ops (one fused
    reduction over the input), the running-statistics update (``update_running_stats``, as the
    eager path), then ``CompiledNormFunction``: the forward and the closed-form backward that
    inductor fuses. No Python chunk loop."""
    cdtype = compute_dtype(input.dtype)
    xv, dims, _, shape = plain_view(input.detach().to(cdtype), layout)
    if use_batch_stats:
        mean, var = plain_statistics(xv, dims, layout.centred)
        if running_mean is not None and running_var is not None:
            n = xv.numel() // mean.numel()
            update_running_stats(running_mean, running_var, mean.double().flatten(),
                                 var.double().flatten() * (n / (n - 1)), momentum, mean.numel())  # fmt: skip
        sdtype = _stats_dtype(layout, cdtype, weight, bias, running_mean, running_var)
        mean, inv_std = _rounded_stats(mean, var, eps, sdtype, cdtype)
    else:  # running statistics, one per channel (the caller has checked that both are given)
        mean = running_mean.to(cdtype).reshape(shape)  # type: ignore[union-attr]
        inv_std = torch.rsqrt(running_var.to(cdtype) + eps).reshape(shape)  # type: ignore[union-attr]
    y = CompiledNormFunction.apply(input, weight, bias, mean, inv_std, layout, use_batch_stats)
    fmt = output_format(input) if layout.keep_format else torch.contiguous_format
    return y if y.is_contiguous(memory_format=fmt) else y.contiguous(memory_format=fmt)


def normalize(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    layout: Layout,
    use_batch_stats: bool,
    momentum: float | Tensor,
    eps: float,
) -> Tensor:
    """The one entry to the core for every member: the chunked eager ``NormFunction``, or under
    ``torch.compile`` the plain formula that inductor fuses (``compiled_norm``)."""
    if torch.compiler.is_compiling() and input.numel() != 0:
        return compiled_norm(input, weight, bias, running_mean, running_var, layout, use_batch_stats, momentum, eps)
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (input, weight, bias)):
        return norm_forward(input, weight, bias, running_mean, running_var, layout, use_batch_stats, momentum, eps)[0]
    return NormFunction.apply(input, weight, bias, running_mean, running_var, layout, use_batch_stats, momentum, eps)
