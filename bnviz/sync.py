r"""``SyncBatchNorm``: batch normalization whose statistics span every rank of a process group.

In training with a process group of world size W > 1, rank r holds ``n_r`` values per channel
(possibly none) and every rank normalizes with the statistics of the whole, concatenated batch:

    rank r:   n_r, mean_r, M2_r = Σ (x − mean_r)²          per channel, float64 (core: row_moments)
    gather:   (n_r, mean_r, M2_r) of every rank            ONE all_gather of a packed (2C + 1,) tensor
    merge:    n = Σ n_r,  mean = Σ n_r · mean_r / n,        Chan's formula (core: merge_moments): no
              M2 = Σ M2_r + Σ n_r · (mean_r − mean)²        Σx² − (Σx)²/n to cancel at a large mean
    running ← (1 − m) · running + m · (mean, M2 / (n − 1))  n the GLOBAL count (m = 1/t for momentum=None)
    y       = (x − mean) · inv_std · γ + β,  inv_std = 1 / √(M2 / n + eps)      (core: _apply_rows)

and the backward, with ``g = ∂L/∂y`` on each rank:

    rank r:   Σ_r g,  Σ_r g · (x − mean)                   per channel (core: row_grad_sums)
    reduce:   Σ g, Σ g · (x − mean) over the ranks         ONE all_reduce of both, packed (2C,)
    ∂L/∂x   = inv_std · (gh − Σgh / n − x_hat · Σ(gh · x_hat) / n),  gh = γ · g   (core: batch_grad_input)
    ∂L/∂γ   = Σ_r g · x_hat,   ∂L/∂β = Σ_r g               the LOCAL sums: DDP sums them over ranks

so each rank's output, ∂L/∂x and running statistics equal those of plain batch norm on the
concatenated batch, and the per-rank ∂L/∂γ, ∂L/∂β add up to the full batch's (as torch's
``SyncBatchNorm`` leaves them for ``DistributedDataParallel`` to reduce). In eval mode, without an
initialized process group, or with world size 1, it *is* ``BatchNorm``: no communication.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from bnviz._checks import verify_arguments, verify_empty_input_parameters, verify_eps
from bnviz.autograd import (
    BATCH,
    _apply_rows,
    _like,
    batch_grad_input,
    cast,
    channel_view,
    compute_dtype,
    merge_moments,
    output_format,
    row_grad_sums,
    row_moments,
    row_view,
    update_running_stats,
)
from bnviz.modules import BatchNorm


def _all_gather(t: Tensor, group: Any, world_size: int) -> Tensor:
    """``t`` (K,) of every rank stacked, (W, K): one collective (the list form on gloo, as torch's
    ``SyncBatchNorm`` does; a single output tensor on NCCL and the others)."""
    if dist.get_backend(group) == "gloo":
        parts = [torch.empty_like(t) for _ in range(world_size)]
        dist.all_gather(parts, t, group)
        return torch.stack(parts)  # W × (K,) -> (W, K)
    out = t.new_empty(world_size, t.numel())
    dist.all_gather_single(out, t, group)
    return out


def gather_moments(
    count: float, mean: Tensor, m2: Tensor, group: Any, world_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Every rank's ``(count, mean, M2)`` per channel, gathered and merged: the whole group's
    ``(n, mean, M2)`` — ``n`` a 0-d float64 tensor kept on the device, ``mean`` and ``M2`` (C,)
    float64. ONE all_gather of a packed ``(1 + C + C,)`` tensor, then Chan's formula
    (``merge_moments``); a rank with ``count = 0`` contributes nothing. Every rank calls it."""
    channels = mean.numel()
    packed = torch.cat([mean.new_full((1,), count), mean, m2])  # (1 + C + C,)
    gathered = _all_gather(packed, group, world_size)  # (W, 2C + 1)
    counts, means, m2s = gathered[:, 0], gathered[:, 1 : channels + 1], gathered[:, channels + 1 :]
    # Chan's merge of the W ranks, per channel: (C·W,) channel-major -> (C,)
    merged_mean, merged_m2 = merge_moments(means.t().reshape(-1), m2s.t().reshape(-1), counts.repeat(channels),
                                           world_size)  # fmt: skip
    return counts.sum(), merged_mean, merged_m2


class SyncNormFunction(torch.autograd.Function):
    """``y = (x − mean) · inv_std · γ + β`` with the statistics of the whole group's batch (see the
    module docstring); forward and the closed-form backward side by side."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        momentum: float | Tensor,
        eps: float,
        group: Any,
        world_size: int,
    ) -> Tensor:
        ctx.group = group
        ctx.bias_dtype = None if bias is None else bias.dtype
        channels = input.size(1)
        local = input.numel() // channels  # values per channel on this rank: a shape, no sync
        cdtype = compute_dtype(input.dtype)
        x = xv = None
        if local > 0:
            x, xv = row_view(cast(input, cdtype), BATCH)
            mean_r, m2_r = row_moments(xv)  # (N, C, L) -> (C,), float64
        else:  # an empty batch contributes a zero count — and still joins the collective
            mean_r = m2_r = torch.zeros(channels, dtype=torch.float64, device=input.device)
        n, mean64, m2 = gather_moments(local, mean_r, m2_r, group, world_size)  # the whole group's, per channel
        if local <= 1:  # only then can the whole batch hold ≤ 1 value per channel: every such rank looks
            total = int(n.item())  # (a host sync on this rare path alone; all ranks decide alike)
            if total == 1:  # plain batch norm's refusal, with the concatenated batch's size
                raise ValueError(
                    "Expected more than 1 value per channel when training, got input size "
                    f"{torch.Size([1, *input.shape[1:]])}"
                )
            if total == 0:  # every rank empty: an empty batch, running statistics untouched
                ctx.save_for_backward(input, weight, None, None, n)
                return torch.empty_like(input)
        if running_mean is not None and running_var is not None:
            update_running_stats(running_mean, running_var, mean64, m2 / (n - 1), momentum)
        # Batch statistics rounded through the parameters' dtype, as torch (and NormFunction) do.
        params = [t for t in (weight, bias, running_mean, running_var) if t is not None]
        stats_dtype = params[0].dtype if params else cdtype
        mean = cast(cast(mean64, stats_dtype), cdtype)
        inv_std = cast(cast((m2 / n).add_(eps).rsqrt_(), stats_dtype), cdtype)
        ctx.save_for_backward(input, weight, mean, inv_std, n)
        if local == 0:
            return torch.empty_like(input)
        out = torch.empty_like(x)
        _apply_rows(xv, channel_view(out), mean, inv_std, weight, bias, cdtype)  # type: ignore[arg-type]
        fmt = output_format(input)
        if not out.is_contiguous(memory_format=fmt):
            out = out.contiguous(memory_format=fmt)
        return cast(out, input.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        input, weight, mean, inv_std, n = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        channels = input.size(1)
        cdtype = compute_dtype(input.dtype)
        x = xv = gv = None
        if input.numel() > 0:
            x, xv = row_view(cast(input, cdtype), BATCH)
            gv = channel_view(_like(x, cast(grad_output, cdtype)))
            sum_g, sum_gd = row_grad_sums(xv, mean, gv)  # (N, C, L) -> (C,), float64, this rank's
        else:
            sum_g = sum_gd = torch.zeros(channels, dtype=torch.float64, device=input.device)
        grad_x = grad_w = grad_b = None
        if need_x:  # (every rank needs it alike, so every rank joins the all_reduce)
            totals = torch.cat([sum_g, sum_gd])  # (2C,)
            dist.all_reduce(totals, dist.ReduceOp.SUM, ctx.group)
            if input.numel() == 0:
                grad_x = torch.zeros_like(input)
            else:
                grad_x = torch.empty_like(x)
                w_rows = None if weight is None else cast(weight, cdtype)
                sums = (totals[:channels], totals[channels:], n)  # Σg, Σg·(x − mean) and n of the whole group
                batch_grad_input(xv, gv, channel_view(grad_x), w_rows, mean, inv_std, *sums)  # type: ignore[arg-type]
                fmt = output_format(input)
                if not grad_x.is_contiguous(memory_format=fmt):
                    grad_x = grad_x.contiguous(memory_format=fmt)
                grad_x = cast(grad_x, input.dtype)
        if need_w:  # Σ g·x_hat over this rank's values; zero for an empty rank
            grad_w = cast(sum_gd * inv_std.double() if inv_std is not None else sum_gd, weight.dtype)
        if need_b:
            grad_b = cast(sum_g, ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


def _sync_norm(
    input: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    momentum: float | Tensor,
    eps: float,
    group: Any,
    world_size: int,
) -> Tensor:
    """``SyncNormFunction`` applied."""
    return SyncNormFunction.apply(input, weight, bias, running_mean, running_var, momentum, eps, group, world_size)


# Under torch.compile the synchronized normalization runs eagerly, outside any graph (one graph break,
# where the collectives are). ``torch._disable_dynamo`` is torch's own lazy ``torch.compiler.disable``:
# dynamo skips the wrapper, which imports dynamo on first use — so ``import bnviz`` does not pay the
# second that importing dynamo costs, and eager training never imports it.
_sync_norm_outside_graph = torch._disable_dynamo(_sync_norm)


def sync_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    momentum: float | Tensor,
    eps: float,
    group: Any,
    world_size: int,
) -> Tensor:
    """Batch norm in training mode with the statistics of the whole ``group`` (``world_size`` > 1
    ranks); every rank calls it, an empty batch included. The checks are ``batch_norm``'s, except
    the one-value rule, which applies to the concatenated batch (a rank may hold one value)."""
    if input.dim() >= 2 and input.size(1) == 0:
        raise ValueError("SyncBatchNorm number of input channels should be non-zero")
    verify_eps(eps, True)
    if input.numel() != 0:
        verify_arguments(input, running_mean, running_var, weight, bias, True)
    else:
        verify_empty_input_parameters(weight, bias)
    run = _sync_norm_outside_graph if torch.compiler.is_compiling() else _sync_norm
    return run(input, weight, bias, running_mean, running_var, momentum, eps, group, world_size)


class SyncBatchNorm(BatchNorm):
    r"""``BatchNorm`` whose training statistics span a process group, like ``torch.nn.SyncBatchNorm``.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    with E and the biased Var per channel over the whole batch of every rank of ``process_group``
    (the default group if None), merged with Chan's formula from each rank's (count, mean, M2):
    one all_gather in the forward, one all_reduce in the backward (see ``bnviz.sync``). Each rank's
    output, input gradient and running statistics (unbiased variance with the global count) equal
    plain batch norm's on the concatenated batch, uneven and empty per-rank batches included; the
    γ, β gradients are each rank's share, summed by ``DistributedDataParallel``. In eval mode, with
    no process group initialized or a world size of 1, it is ``BatchNorm`` (no communication).

    Everything else — parameters, buffers, state dict, ``extra_repr``, the momentum policy
    (``momentum=None``: cumulative average) and eval behaviour — is ``BatchNorm``'s, so state
    dicts load both ways with ``torch.nn.SyncBatchNorm`` and ``torch.nn.BatchNorm1d/2d/3d``.

    Differences from torch 2.13:
        - It runs on CPU (gloo) as well as on GPUs: torch raises ``ValueError("SyncBatchNorm
          expected input tensor to be on GPU or XPU or privateuseone")`` for a CPU input in
          training whenever a process group is initialized, even of world size 1.
        - A whole batch of one value per channel raises plain batch norm's ``ValueError`` on every
          rank ("Expected more than 1 value per channel when training, got input size ..." with
          the concatenated batch's size), after the all_gather that all of them join. torch checks
          only the local size, and only for W < 2; with W > 1 its CUDA kernel
          (``batch_norm_reduce_statistics_kernel``) divides by n − 1 = 0: inf or NaN in
          ``running_var``. A whole batch of no values returns empty outputs and leaves the running
          statistics alone, as plain batch norm does; torch's kernel merges zero ranks into a
          "batch" of mean 0 and variance 0, so its running statistics shrink by 1 − momentum.
        - No double backward (``once_differentiable``); torch has none either.

    Under ``torch.compile``: with world size 1 (or no group) the forward is ``BatchNorm``'s, one
    graph without breaks; with W > 1 the graph breaks once, where the collectives are: the
    synchronized normalization runs eagerly, outside any graph (dynamo skips it, as it skips a
    ``torch.compiler.disable``'d function), and dynamo compiles what it can around it
    (``fullgraph=True`` refuses that break).

    Host synchronisation: none beyond the two collectives, except on a rank whose own batch holds
    at most one value per channel, which reads the global count to apply the rule above.

    Args:
        num_features: C, the size of dim 1.
        eps: added to the variance under the square root. Default: 1e-5
        momentum: weight of the new batch in the running update, or None. Default: 0.1
        affine: learn γ (``weight``) and β (``bias``). Default: True
        track_running_stats: keep ``running_mean``, ``running_var``, ``num_batches_tracked``.
            Default: True
        process_group: the ranks whose batches are normalized together; None for the default
            group. Default: None
        bias: learn β (only with ``affine``). Default: True

    Shape:
        Input ``(N, C, *)``, any rank ≥ 2, C > 0; output the same shape.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def _check_non_zero_input_channels(self, input: Tensor) -> None:
        if input.size(1) == 0:
            raise ValueError("SyncBatchNorm number of input channels should be non-zero")

    def _sync_group(self) -> tuple[Any, int] | None:
        """(group, world size) when this forward synchronizes: training, a process group
        initialized, more than one rank in it. Else None: plain ``BatchNorm``."""
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD if self.process_group is None else self.process_group
        world_size = dist.get_world_size(group)
        return (group, world_size) if world_size > 1 else None

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        sync = self._sync_group()
        if sync is None:
            return super().forward(input)
        # BatchNorm's momentum policy (synchronized only in training); a recomputation under
        # checkpointing gets copies of the buffers and joins the same collectives.
        running_mean, running_var, factor = self._count_batch()
        return sync_batch_norm(input, running_mean, running_var, self.weight, self.bias, factor, self.eps, *sync)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group: Any = None) -> nn.Module:
        """Every batch-norm layer in ``module`` — torch's ``BatchNorm1d/2d/3d`` (any ``_BatchNorm``,
        ``SyncBatchNorm`` included) and bnviz's ``BatchNorm`` family — replaced by a ``SyncBatchNorm``
        that shares its parameters and buffers (the same tensor objects, so ``requires_grad`` and
        the optimizer's references carry over) and its training flag, as torch's does. Instance
        norms are left alone. A batch-norm ``module`` itself is returned converted.
        """
        module_output = module
        if isinstance(module, _BatchNorm | BatchNorm):
            module_output = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
                bias=module.bias is not None,
            )
            if module.affine:
                with torch.no_grad():
                    module_output.weight = module.weight
                    module_output.bias = module.bias
            module_output.running_mean = module.running_mean
            module_output.running_var = module.running_var
            module_output.num_batches_tracked = module.num_batches_tracked
            module_output.training = module.training
            if hasattr(module, "qconfig"):
                module_output.qconfig = module.qconfig
        for name, child in module.named_children():
            module_output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return module_output
