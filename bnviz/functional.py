r"""bnviz's normalization functions, with torch's signatures, semantics and errors.

``batch_norm`` — for each channel c (dim 1) of an input of shape ``(N, C, *)``:

.. math::
    y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

In training ``E[x]`` and the *biased* ``Var[x]`` are the batch's, and when running statistics
are given they are updated in place with the *unbiased* variance (Bessel's n / (n − 1)):

.. math::
    \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu_B, \qquad
    \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\tfrac{n}{n-1}\,\sigma_B^2

Note that m weights the *new* batch (torch's convention; Keras' momentum weights the old value,
so torch 0.1 is Keras 0.9). In evaluation the running statistics normalize instead.

The family is the same formula over other sets of values — one core (``bnviz.autograd``):

- ``instance_norm``: per sample and channel, over the spatial dims (batch norm of a
  ``(1, N·C, *)`` view; running statistics averaged over the samples);
- ``group_norm``: per sample and group of C/G channels, over those channels and the spatial dims;
- ``layer_norm``: per sample (every leading index), over the trailing ``normalized_shape``,
  with γ and β shaped like it;
- ``rms_norm``: as layer norm without centring: ``y = x / √(E[x²] + ε) · γ``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from bnviz._checks import (
    empty_instance_norm_dtype,
    rms_norm_dtypes,
    rms_norm_eps,
    verify_arguments,
    verify_batch_size,
    verify_empty_input_parameters,
    verify_eps,
    verify_group_norm,
    verify_instance_norm,
    verify_layer_norm,
    verify_rms_norm,
)
from bnviz.autograd import BATCH, Layout, normalize


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float | Tensor = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch-normalize ``input`` over every dim but dim 1, like ``F.batch_norm``.

    Args:
        input: ``(N, C, *)`` tensor, any rank ≥ 2.
        running_mean, running_var: ``(C,)`` buffers, updated in place in training; both or
            neither. Required in evaluation.
        weight, bias: optional ``(C,)`` affine parameters γ and β.
        training: use the batch's statistics (and update the running ones). Default: False.
        momentum: weight of the new batch in the running update. Default: 0.1. A 0-d tensor
            is accepted too (the modules pass ``1 / num_batches_tracked`` that way).
        eps: added to the variance under the square root. Default: 1e-5.

    Returns:
        A tensor of ``input``'s shape and dtype (channels_last stays channels_last).

    Raises the same exception types with the same messages as torch, in the same order.
    """
    if training:
        verify_batch_size(input.size())
    verify_eps(eps, training)
    if input.numel() != 0:
        verify_arguments(input, running_mean, running_var, weight, bias, training)
    else:
        verify_empty_input_parameters(weight, bias)
    return normalize(input, weight, bias, running_mean, running_var, BATCH, training, momentum, eps)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize each sample's channel over its spatial dims, like ``F.instance_norm``.

    Args:
        input: ``(N, C, *)``, rank ≥ 3 (at least 2 spatial values when using input statistics).
        running_mean, running_var: optional ``(C,)`` buffers; with ``use_input_stats`` they are
            updated in place with each sample's statistics, averaged over the samples.
        weight, bias: optional ``(C,)`` γ and β.
        use_input_stats: normalize with the input's own statistics (else the running ones).
        momentum, eps: as in ``batch_norm``.
    """
    verify_instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
    layout = Layout("instances", keep_format=False)
    y = normalize(input, weight, bias, running_mean, running_var, layout, use_input_stats, momentum, eps)
    return y if input.numel() else y.to(empty_instance_norm_dtype(input, weight, bias))  # torch's input · γ[0] + β[0]


def group_norm(
    input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """Normalize each sample over groups of ``C / num_groups`` channels (and the spatial dims),
    like ``F.group_norm``; γ and β are per channel ``(C,)``."""
    verify_group_norm(input, num_groups, weight, bias, eps)
    layout = Layout("instances", k=input.size(1) // num_groups)
    return normalize(input, weight, bias, None, None, layout, True, 0.0, eps)


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize over the trailing ``normalized_shape`` dims, like ``F.layer_norm``; γ and β
    have ``normalized_shape``."""
    shape = verify_layer_norm(input, normalized_shape, weight, bias, eps)
    layout = Layout("trailing", inner=math.prod(shape), keep_format=False)
    return normalize(input, weight, bias, None, None, layout, True, 0.0, eps)


def rms_norm(
    input: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None, eps: float | None = None
) -> Tensor:
    """Divide by the root mean square over the trailing ``normalized_shape`` dims, like
    ``F.rms_norm``: ``y = x / √(mean(x²) + eps) · γ``; ``eps=None`` is the dtype's machine epsilon."""
    shape = verify_rms_norm(input, normalized_shape, weight, eps)
    layout = Layout("trailing", inner=math.prod(shape), centred=False)
    y = normalize(input, weight, None, None, None, layout, True, 0.0, rms_norm_eps(input, eps))
    return y.to(rms_norm_dtypes(input, weight)[1])  # always the input's dtype, whatever the weight's

