"""Input checks of ``torch.nn.functional.batch_norm``, reproduced message for message.

torch validates in this order (measured on torch 2.13, CPU): batch size and eps in Python;
then, for an empty input, only that weight and bias have an element 0; else the per-channel
sizes of running_mean, running_var, weight and bias, the both-or-neither rule for the running
statistics, the input's dtype, and finally the CPU rules for mixed dtypes. bnviz raises the same exception type with the
same message at the same point, so a user's error handling behaves the same with either.
"""

from __future__ import annotations

import torch
from torch import Tensor

# ATen's names for scalar types, as they appear in torch's error messages.
_ATEN_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.bool: "Bool",
    torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}
FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCED = (torch.float16, torch.bfloat16)


def aten_name(dtype: torch.dtype) -> str:
    """ATen's name for ``dtype`` (``torch.float32`` -> ``"Float"``)."""
    return _ATEN_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def verify_batch_size(size: torch.Size) -> None:
    """Training needs more than one value per channel: ``N * prod(size[2:]) > 1``."""
    size_prods = size[0]
    for extent in size[2:]:
        size_prods *= extent
    if size_prods == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def verify_eps(eps: float, training: bool) -> None:
    """eps must be positive in training (it guards a zero variance) and non-negative otherwise."""
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")


def verify_empty_input_parameters(weight: Tensor | None, bias: Tensor | None) -> None:
    """torch's path for an empty input reads ``weight[0]`` and ``bias[0]`` (to keep the graph
    connected), so an empty weight or bias — zero channels with affine — raises there."""
    for t in (weight, bias):
        if t is not None and t.numel() == 0:
            raise IndexError(f"select(): index 0 out of range for tensor of size {list(t.shape)} at dimension 0")


def verify_arguments(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
) -> None:
    """Size, definedness and dtype checks, in torch's order; call only for a non-empty input."""
    num_features = input.size(1) if input.dim() >= 2 else 0
    for name, tensor in (("running_mean", running_mean), ("running_var", running_var)):
        if tensor is not None:
            _check_features(name, num_features, tensor)
        elif not training:
            raise RuntimeError(f"{name} must be defined in evaluation mode")
    for name, tensor in (("weight", weight), ("bias", bias)):
        if tensor is not None:
            _check_features(name, num_features, tensor)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if input.dim() < 2:
        rank = max(input.dim(), 1)
        raise IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got 1)")
    if torch.is_grad_enabled():  # running statistics are buffers: torch refuses to track them
        for name, tensor in (("running_mean", running_mean), ("running_var", running_var)):
            if tensor is not None and tensor.requires_grad:
                raise RuntimeError(
                    f"The function 'native_batch_norm' is not differentiable with respect to argument '{name}'. "
                    "This input cannot have requires_grad True."
                )
    if input.dtype not in FLOATING:
        raise NotImplementedError(f"\"batch_norm\" not implemented for '{aten_name(input.dtype)}'")
    if input.device.type == "cpu":
        _verify_cpu_dtypes(input, [t for t in (weight, bias, running_mean, running_var) if t is not None])


def _check_features(name: str, expected: int, tensor: Tensor) -> None:
    if tensor.numel() != expected:
        raise RuntimeError(f"{name} should contain {expected} elements not {tensor.numel()}")


def _verify_cpu_dtypes(input: Tensor, params: list[Tensor]) -> None:
    """torch's CPU kernel: parameters share the input's dtype, or are all float32 for a
    float16/bfloat16 input ("mixed" precision)."""
    if not params:
        return
    if params[0].dtype != input.dtype:  # torch calls this set-up "mixed dtype"
        if any(p.dtype != torch.float32 for p in params):
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        if input.dtype not in REDUCED:
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
        return
    for p in params:
        if p.dtype != input.dtype:
            raise RuntimeError(f"expected scalar type {aten_name(input.dtype)} but found {aten_name(p.dtype)}")
