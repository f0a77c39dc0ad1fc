r"""``bnviz.batch_norm``: ``torch.nn.functional.batch_norm``'s signature, semantics and errors.

For each channel c (dim 1) of an input of shape ``(N, C, *)``:

.. math::
    y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \epsilon}} \cdot \gamma + \beta

In training ``E[x]`` and the *biased* ``Var[x]`` are the batch's, and when running statistics
are given they are updated in place with the *unbiased* variance (Bessel's n / (n − 1)):

.. math::
    \hat\mu \leftarrow (1 - m)\,\hat\mu + m\,\mu_B, \qquad
    \hat\sigma^2 \leftarrow (1 - m)\,\hat\sigma^2 + m\,\tfrac{n}{n-1}\,\sigma_B^2

Note that m weights the *new* batch (torch's convention; Keras' momentum weights the old value,
so torch 0.1 is Keras 0.9). In evaluation the running statistics normalize instead.
"""

from __future__ import annotations

from torch import Tensor

from bnviz._checks import verify_arguments, verify_batch_size, verify_empty_input_parameters, verify_eps
from bnviz.autograd import BatchNormFunction


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
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var, training, momentum, eps)
