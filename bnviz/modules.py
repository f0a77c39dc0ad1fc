r"""Normalization modules: state in ``_NormBase``, policy in ``BatchNorm``, input checks in 1d/2d/3d;
then the family — ``InstanceNorm1d/2d/3d`` (on ``_NormBase``, as in torch), ``LayerNorm``,
``GroupNorm`` and ``RMSNorm`` — each a thin wrapper over its function in ``bnviz.functional``.

``BatchNorm`` is the universal layer — any input of rank ≥ 2, channels on dim 1 — and
``BatchNorm1d``, ``BatchNorm2d`` and ``BatchNorm3d`` extend it by one method each, the input
check. That is the whole difference between torch's three classes, made visible.

Parameter and buffer names, defaults, ``extra_repr`` and the state-dict version match torch's
classes, so state dicts load both ways.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bnviz._checks import normalized_shape_tuple, verify_group_norm_module, verify_instance_norm_input
from bnviz.functional import batch_norm, group_norm, instance_norm, layer_norm, rms_norm


def _register_affine(module: nn.Module, shape: Any, factory: dict, weight: bool, bias: bool | None) -> None:
    """γ (``weight``) and β (``bias``) of ``shape`` as parameters, each registered as None where
    left out (β also without γ); ``bias=None``: no β at all (RMSNorm). Values: ``_reset_affine``."""
    names = (("weight", weight),) if bias is None else (("weight", weight), ("bias", weight and bias))
    for name, wanted in names:
        module.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)) if wanted else None)


def _reset_affine(module: nn.Module) -> None:
    """γ ← 1, β ← 0, where they exist."""
    if module.weight is not None:
        nn.init.ones_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def in_recomputation() -> bool:
    """Whether the forward running now is a recomputation under activation checkpointing.

    ``torch.utils.checkpoint`` — reentrant (``CheckpointFunction.backward``) and non-reentrant
    (the saved-tensor unpack hook) alike — reruns the block's forward *inside the autograd
    engine's backward*, where ``torch._C._current_graph_task_id()`` is the running graph task's
    id; outside any backward it is −1. So a training forward that finds a graph task running is
    taken for a recomputation. Under ``torch.compile`` it is False, a constant (no check traced).
    Limit: a training forward that a user runs on purpose inside a backward (a backward hook, a
    custom Function's backward) is taken for a recomputation too, and does not update the buffers.
    """
    return not torch.compiler.is_compiling() and torch._C._current_graph_task_id() != -1


def _copy(t: Tensor | None) -> Tensor | None:
    """A throwaway copy of a buffer (None stays None)."""
    return None if t is None else t.clone()


class _NormBase(nn.Module):
    """State: affine parameters γ (``weight``) and β (``bias``) and the running statistics."""

    _version = 2
    __constants__: ClassVar[list[str]] = ["track_running_stats", "momentum", "eps", "num_features", "affine"]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            self.bias = nn.Parameter(torch.empty(num_features, **factory)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.running_mean: Tensor | None
        self.running_var: Tensor | None
        self.num_batches_tracked: Tensor | None
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean ← 0, running_var ← 1, num_batches_tracked ← 0."""
        if self.running_mean is not None and self.running_var is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1)
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; γ ← 1, β ← 0."""
        self.reset_running_stats()
        _reset_affine(self)

    def _check_input_dim(self, input: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}"
        )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        # State dicts saved before version 2 have no num_batches_tracked: it starts at 0.
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


class BatchNorm(_NormBase):
    r"""Batch normalization over any input of rank ≥ 2, channels on dim 1.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    Statistics are per channel over every other dim. In training mode the batch's mean and
    biased variance normalize, and the running statistics (if tracked) move towards the batch's
    mean and *unbiased* variance by ``momentum``; ``momentum=None`` makes them a cumulative
    average (factor ``1 / num_batches_tracked``). In eval mode the running statistics normalize —
    unless ``track_running_stats=False``, which uses batch statistics in both modes.

    Difference from torch 2.13 (deliberate): under activation checkpointing
    (``torch.utils.checkpoint``, reentrant or not) the block's forward runs again during backward;
    torch's layers then update the running statistics and ``num_batches_tracked`` twice per step
    (pytorch#96136), bnviz's once. A training forward running inside the autograd engine's
    backward (``torch._C._current_graph_task_id() != -1``; see ``in_recomputation``) is taken for
    the recomputation: it normalizes with the batch's statistics as before — the same output and
    gradients — and leaves the buffers alone. Not checked under ``torch.compile``. See
    ``docs/checkpointing.md``.

    Args:
        num_features: C, the size of dim 1.
        eps: added to the variance under the square root. Default: 1e-5
        momentum: weight of the new batch in the running update, or None. Default: 0.1
        affine: learn γ (``weight``) and β (``bias``). Default: True
        track_running_stats: keep ``running_mean``, ``running_var``, ``num_batches_tracked``.
            Default: True
        bias: learn β (only with ``affine``). Default: True

    Shape:
        Input ``(N, C, *)``; output the same shape.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def _count_batch(self) -> tuple[Tensor | None, Tensor | None, float | Tensor]:
        """The momentum policy: in training with running statistics, count the batch, and return
        the buffers to update with the running update's factor — ``momentum``, or
        ``1 / num_batches_tracked`` (a cumulative average) for ``momentum=None``, kept on the
        device: no host sync. Buffers are None where not passed (training without them).

        A recomputation (``in_recomputation``: activation checkpointing rerunning this forward
        during backward) counts nothing and gets throwaway copies of the buffers: the forward
        still normalizes with the batch's statistics, rounded through the same dtypes, and the
        buffers are updated once per step, not twice as torch's are (pytorch#96136).
        """
        factor: float | Tensor = 0.0 if self.momentum is None else self.momentum
        # Buffers are passed only where they are read (eval) or updated (training and tracked).
        if self.training and not self.track_running_stats:
            return None, None, factor
        running_mean, running_var = self.running_mean, self.running_var
        if self.training and in_recomputation():
            return _copy(running_mean), _copy(running_var), factor
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = self.num_batches_tracked.double().reciprocal()
        return running_mean, running_var, factor

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        running_mean, running_var, factor = self._count_batch()
        # Batch statistics in training, and in eval when there are no running statistics.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        return batch_norm(input, running_mean, running_var, self.weight, self.bias, use_batch_stats, factor, self.eps)


class BatchNorm1d(BatchNorm):
    """``BatchNorm`` for ``(N, C)`` or ``(N, C, L)`` inputs."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2 and input.dim() != 3:
            raise ValueError(f"expected 2D or 3D input (got {input.dim()}D input)")


class BatchNorm2d(BatchNorm):
    """``BatchNorm`` for ``(N, C, H, W)`` inputs."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected 4D input (got {input.dim()}D input)")


class BatchNorm3d(BatchNorm):
    """``BatchNorm`` for ``(N, C, D, H, W)`` inputs."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 5:
            raise ValueError(f"expected 5D input (got {input.dim()}D input)")


# --- the family: the same core over other sets of values ---------------------------------------


class _InstanceNorm(_NormBase):
    r"""Instance normalization: each sample's channel over its spatial dims.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    with E and the biased Var per (sample, channel). ``affine`` and ``track_running_stats``
    default to False, as in torch; with running statistics, training updates them with the
    samples' statistics averaged, and eval normalizes with them. Unbatched input (no N) works.
    1d/2d/3d differ in the ranks they accept.
    """

    _no_batch_dim = 2  # the rank of an unbatched input

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    def _check_input_dim(self, input: Tensor) -> None:
        """torch's checks: the rank, then the channel count (an error with affine, else a warning)."""
        verify_instance_norm_input(input, self.num_features, self.affine, self._no_batch_dim)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        # State dicts from before torch 0.4 carried running statistics that are no longer tracked.
        error_msgs = args[-1]
        if local_metadata.get("version", None) is None and not self.track_running_stats:
            keys = [prefix + name for name in ("running_mean", "running_var") if prefix + name in state_dict]
            if keys:
                klass = type(self).__name__
                error_msgs.append(
                    "Unexpected running stats buffer(s) {names} for {klass} with track_running_stats=False. If "
                    "state_dict is a checkpoint saved before 0.4.0, this may be expected because {klass} does not "
                    "track running stats by default since 0.4.0. Please remove these keys from state_dict. If the "
                    "running stats are actually needed, instead set track_running_stats=True in {klass} to enable "
                    "them. See the documentation of {klass} for details.".format(
                        names=" and ".join(f'"{k}"' for k in keys), klass=klass
                    )
                )
                for key in keys:
                    state_dict.pop(key)
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, *args)

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        batched = input if input.dim() > self._no_batch_dim else input.unsqueeze(0)
        y = instance_norm(
            batched,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )
        return y if input.dim() > self._no_batch_dim else y.squeeze(0)


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of ``(N, C, L)`` or unbatched ``(C, L)`` inputs."""

    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of ``(N, C, H, W)`` or unbatched ``(C, H, W)`` inputs."""

    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization of ``(N, C, D, H, W)`` or unbatched ``(C, D, H, W)`` inputs."""

    _no_batch_dim = 4


class LayerNorm(nn.Module):
    r"""Layer normalization over the trailing ``normalized_shape`` dims of each sample.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    with E and the biased Var over the last ``len(normalized_shape)`` dims, and γ, β of that
    shape. No batch statistics: the same in train and eval, whatever the batch size.

    Args:
        normalized_shape: the trailing shape (an int for one dim).
        eps: added to the variance. Default: 1e-5
        elementwise_affine: learn γ (``weight``) and β (``bias``). Default: True
        bias: learn β (with ``elementwise_affine``). Default: True
    """

    __constants__: ClassVar[list[str]] = ["normalized_shape", "eps", "elementwise_affine"]

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        _register_affine(self, self.normalized_shape, factory, elementwise_affine, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ ← 1, β ← 0."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class GroupNorm(nn.Module):
    r"""Group normalization: each sample's channels in ``num_groups`` groups, each group over its
    channels and the spatial dims; γ and β per channel.

    .. math::
        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

    ``num_groups=1`` is a layer norm over (C, *) with per-channel γ, β; ``num_groups=C`` an
    instance norm without running statistics.
    """

    __constants__: ClassVar[list[str]] = ["num_groups", "num_channels", "eps", "affine"]

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        device: Any = None,
        dtype: Any = None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        verify_group_norm_module(num_groups, num_channels)  # (a ZeroDivisionError for 0 groups, as in torch)
        factory = {"device": device, "dtype": dtype}
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.weight: nn.Parameter | None
        self.bias: nn.Parameter | None
        _register_affine(self, num_channels, factory, affine, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ ← 1, β ← 0."""
        _reset_affine(self)

    def forward(self, input: Tensor) -> Tensor:
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={bias}"


class RMSNorm(nn.Module):
    r"""Root-mean-square normalization over the trailing ``normalized_shape`` dims: no centring.

    .. math::
        y = \frac{x}{\sqrt{\mathrm{E}[x^2] + \epsilon}} \cdot \gamma

    ``eps=None`` uses the machine epsilon of the input's dtype (``torch.finfo``), as torch does.
    """

    __constants__: ClassVar[list[str]] = ["normalized_shape", "eps", "elementwise_affine"]

    def __init__(
        self,
        normalized_shape: int | Sequence[int],
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.normalized_shape = normalized_shape_tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight: nn.Parameter | None
        _register_affine(self, self.normalized_shape, {"device": device, "dtype": dtype}, elementwise_affine, None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """γ ← 1."""
        _reset_affine(self)

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
