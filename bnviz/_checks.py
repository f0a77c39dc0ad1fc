"""Input checks of ``torch.nn.functional.batch_norm``, reproduced message for message.

torch validates in this order (measured on torch 2.13, CPU): batch size and eps in Python;
then, for an empty input, only that weight and bias have an element 0; else the per-channel
sizes of running_mean, running_var, weight and bias, the both-or-neither rule for the running
statistics, the input's dtype, and finally the CPU rules for mixed dtypes. bnviz raises the same exception type with the
same message at the same point, so a user's error handling behaves the same with either.
"""

from __future__ import annotations

import numbers
import operator
import warnings
from typing import Any

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


# ---------------------------------------------------------------------------------------------------------------------
# LayerNorm, GroupNorm, InstanceNorm1d/2d/3d and RMSNorm: the same contract as batch norm above. Each verify_* raises
# torch's exception (type and message) at the first check torch fails, in torch's order, measured on torch 2.13, CPU.
# torch's C++ checks are not readable from the wheel: the rules below are read off its messages on tables of inputs.
# ---------------------------------------------------------------------------------------------------------------------


# ATen's names for the dtypes the table at the top leaves out (they appear in "not implemented for '...'").
_MORE_ATEN_NAMES = {
    "uint16": "UInt16",
    "uint32": "UInt32",
    "uint64": "UInt64",
    "complex32": "ComplexHalf",
    "float8_e4m3fn": "Float8_e4m3fn",
    "float8_e4m3fnuz": "Float8_e4m3fnuz",
    "float8_e5m2": "Float8_e5m2",
    "float8_e5m2fnuz": "Float8_e5m2fnuz",
    "float8_e8m0fnu": "Float8_e8m0fnu",
    "float4_e2m1fn_x2": "Float4_e2m1fn_x2",
    "bits8": "Bits8",
    "bits16": "Bits16",
    "bits1x8": "Bits1x8",
    "bits2x4": "Bits2x4",
    "bits4x2": "Bits4x2",
    **{f"int{k}": f"Int{k}" for k in range(1, 8)},
    **{f"uint{k}": f"UInt{k}" for k in range(1, 8)},
}

# The C++ type names torch prints in rms_norm's dtype-mismatch warning (typeid names, not ATen's).
_CXX_NAMES = {
    "float16": "c10::Half",
    "bfloat16": "c10::BFloat16",
    "float32": "float",
    "float64": "double",
    "complex32": "c10::complex<c10::Half>",
    "complex64": "c10::complex<float>",
    "complex128": "c10::complex<double>",
    "bool": "bool",
    "uint8": "unsigned char",
    "int8": "signed char",
    "int16": "short int",
    "int32": "int",
    "int64": "long int",
    "uint16": "short unsigned int",
    "uint32": "unsigned int",
    "uint64": "long unsigned int",
    **{f"int{k}": f"c10::dummy_int1_7_t<{k}>" for k in range(1, 8)},
    **{f"uint{k}": f"c10::dummy_uint1_7_t<{k}>" for k in range(1, 8)},
}

RMS_NORM_DTYPES = (*FLOATING, torch.complex64, torch.complex128)  # what rms_norm's kernel is compiled for
_IS_INTEGRAL_MESSAGE = (
    "Expected scalar.isIntegral( false) to be true, but got false.  "
    "(Could this error message be improved?  If so, please report an enhancement request to PyTorch.)"
)
_RMS_MISMATCH_WARNED = [False]  # torch's TORCH_WARN_ONCE latch, mirrored


def _dtype_key(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def scalar_type_name(dtype: torch.dtype) -> str:
    """ATen's name for any dtype (``aten_name`` plus UInt16, ComplexHalf, Float8_*, Bits*, ...)."""
    return _ATEN_NAMES.get(dtype) or _MORE_ATEN_NAMES.get(_dtype_key(dtype)) or aten_name(dtype)


def cxx_type_name(dtype: torch.dtype) -> str:
    """The C++ name torch prints for ``dtype`` in rms_norm's warning (``torch.float32`` -> ``"float"``)."""
    key = _dtype_key(dtype)
    return _CXX_NAMES.get(key) or f"c10::{scalar_type_name(dtype) if key.startswith('float') else key}"


def _shape(seq) -> str:
    """How c10 prints an IntArrayRef: ``[2, 3, 4]``."""
    return "[" + ", ".join(str(int(v)) for v in seq) + "]"


# --- torch's Python argument parser (torch/csrc/utils/python_arg_parser.cpp), as far as these signatures need it ---


def _tp_name(obj) -> str:
    """CPython's ``tp_name`` of ``type(obj)``, which torch's TypeErrors print (``numpy.int64``, ``Tensor``, ``int``)."""
    cls = type(obj)
    if cls.__flags__ & (1 << 9) or cls.__module__ == "builtins":  # heap type, or a builtin: the bare name
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_numpy_scalar(obj, kinds: tuple[str, ...]) -> bool:
    if not type(obj).__module__.startswith("numpy"):
        return False
    import numpy as np

    return isinstance(obj, tuple(getattr(np, k) for k in kinds))


def _is_long(obj) -> bool:
    """``THPUtils_checkLong``: a Python int that is not a bool, or a numpy integer."""
    return (isinstance(obj, int) and not isinstance(obj, bool)) or _is_numpy_scalar(obj, ("integer",))


def _integral(dtype: torch.dtype, include_bool: bool) -> bool:
    return (not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool) or (
        include_bool and dtype == torch.bool
    )


def _first_int_ok(obj) -> bool:
    """The type check torch applies to the FIRST element of an int list (the others are checked on unpacking)."""
    if isinstance(obj, Tensor):
        return obj.numel() == 1 and _integral(obj.dtype, include_bool=True)
    if isinstance(obj, bool):
        return False
    if _is_long(obj):
        return True
    try:
        operator.index(obj)
    except TypeError:
        return False
    return True


def _check_tensor_arg(fn: str, name: str, pos: int, value, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}(): argument '{name}' (position {pos}) must be Tensor, not {_tp_name(value)}")


def _check_float_arg(fn: str, name: str, pos: int, value, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, (int, float)) or _is_numpy_scalar(value, ("bool_", "number")):
        return
    if isinstance(value, Tensor) and value.dim() == 0 and not value.requires_grad:
        return
    raise TypeError(f"{fn}(): argument '{name}' (position {pos}) must be float, not {_tp_name(value)}")


def _check_int_arg(fn: str, name: str, pos: int, value) -> None:
    if _is_long(value):
        return
    if (
        isinstance(value, Tensor)
        and value.dim() == 0
        and _integral(value.dtype, include_bool=False)
        and not value.requires_grad
    ):
        return
    raise TypeError(f"{fn}(): argument '{name}' (position {pos}) must be int, not {_tp_name(value)}")


def _check_bool_arg(fn: str, name: str, pos: int, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{fn}(): argument '{name}' (position {pos}) must be bool, not {_tp_name(value)}")


def _check_int_list_arg(fn: str, name: str, pos: int, value) -> None:
    """Parse-time check of a ``SymInt[]`` argument: a tuple or list (torch.Size included, an int NOT), and only its
    first element's type."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{fn}(): argument '{name}' (position {pos}) must be tuple of ints, not {_tp_name(value)}")
    if len(value) and not _first_int_ok(value[0]):
        raise TypeError(
            f"{fn}(): argument '{name}' (position {pos}) must be tuple of ints, "
            f"but found element of type {_tp_name(value[0])} at pos 0"
        )


def _unpack_int_list(fn: str, name: str, value) -> tuple[int, ...]:
    """Unpacking, after every argument passed its type check: later elements may be bools (they count as 0/1),
    a float or a str there gives a different message, with a 1-based position."""
    out = []
    for i, item in enumerate(value):
        if isinstance(item, Tensor) and item.numel() == 1 and _integral(item.dtype, include_bool=True):
            if item.dtype == torch.bool:
                raise RuntimeError(_IS_INTEGRAL_MESSAGE)
            out.append(int(item.item()))
            continue
        try:
            if isinstance(item, Tensor):
                raise TypeError
            out.append(operator.index(item))
        except TypeError:
            raise TypeError(
                f"{fn}(): argument '{name}' failed to unpack the object at pos {i + 1} with error "
                f'"type must be tuple of ints,but got {_tp_name(item)}"'
            ) from None
    return tuple(out)


# --- the CPU dtype rules shared by layer_norm, group_norm and (through batch_norm) instance_norm ---


def _verify_cpu_mixed(input: Tensor, params: list[torch.dtype]) -> None:
    """Mixed dtype, torch's name for a first defined parameter whose dtype differs from the input's: then every
    parameter must be float32 and the input float16 or bfloat16. ``params``: the defined parameters' dtypes."""
    if params and params[0] != input.dtype:
        if any(p != torch.float32 for p in params):
            raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
        if input.dtype not in REDUCED:
            raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")


def _verify_cpu_same_dtype(input: Tensor, params: list[torch.dtype], first: torch.dtype | None) -> None:
    """Not mixed (``first``, the first defined parameter's dtype, is the input's): the kernel reads every parameter
    as the input's scalar type, in the order of ``params``."""
    if first is not None and first != input.dtype:
        return  # mixed, already vetted
    for p in params:
        if p != input.dtype:
            raise RuntimeError(f"expected scalar type {scalar_type_name(input.dtype)} but found {scalar_type_name(p)}")


def _verify_kernel_dtype(kernel: str, dtype: torch.dtype, allowed) -> None:
    if dtype not in allowed:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{scalar_type_name(dtype)}'")


def _verify_normalized_shape(
    input: Tensor, shape: tuple[int, ...], params: tuple[tuple[str, Tensor | None], ...], rms: bool
) -> None:
    if not shape:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one element, "
            f"but got normalized_shape = {_shape(shape)}"
        )
    for name, p in params:
        if p is not None and tuple(p.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                f"{_shape(p.shape)} and normalized_shape = {_shape(shape)}"
            )
    if rms and input.dim() < len(shape):
        raise ValueError(f"Input tensor must have at least {len(shape)} dimensions, but got {input.dim()}")
    if input.dim() < len(shape) or tuple(input.shape[input.dim() - len(shape) :]) != shape:
        star = "[*" + ", ".join(str(v) for v in shape) + "]" if rms else "[*, " + ", ".join(str(v) for v in shape) + "]"
        raise RuntimeError(
            f"Given normalized_shape={_shape(shape)}, expected input with shape {star}, "
            f"but got input of size{_shape(input.shape)}"
        )


# --- layer_norm ---


def verify_layer_norm(input: Any, normalized_shape: Any, weight: Any, bias: Any, eps: Any) -> tuple[int, ...]:
    """Checks of ``F.layer_norm(input, normalized_shape, weight, bias, eps)``; returns the normalized shape.

    Measured on torch 2.13, CPU, in this order:

    1. argument types (TypeError): input a Tensor; normalized_shape a tuple or list (torch.Size too) — a bare int
       is refused ("must be tuple of ints, not int": only ``nn.LayerNorm`` wraps an int), its first element an
       integer (not a bool, not a float); weight and bias Tensors or None; eps a float (int, 0-dim tensor; not None).
       Then the later elements are unpacked ("failed to unpack the object at pos 2 ...", bools there count as 0/1).
    2. CPU mixed dtypes, before any shape check: if the first of weight/bias has another dtype than the input, all
       of them must be float32 ("mixed dtype (CPU): expect parameter to have scalar type of Float") and the input
       float16/bfloat16 ("mixed dtype (CPU): all inputs must share same datatype.").
    3. normalized_shape not empty; weight's then bias's shape equal to it; the input ends with it.
    4. the input's dtype: "LayerNormKernelImpl" not implemented for 'Long' (bool, ints, complex: all refused).
    5. not mixed: bias has the input's dtype ("expected scalar type Float but found BFloat16").

    eps is not checked (0, negative and NaN run), and zero-size inputs pass every shape rule (the dtype ones too).
    """
    fn = "layer_norm"
    _check_tensor_arg(fn, "input", 1, input, optional=False)
    _check_int_list_arg(fn, "normalized_shape", 2, normalized_shape)
    _check_tensor_arg(fn, "weight", 3, weight)
    _check_tensor_arg(fn, "bias", 4, bias)
    _check_float_arg(fn, "eps", 5, eps)
    shape = _unpack_int_list(fn, "normalized_shape", normalized_shape)
    params = [p.dtype for p in (weight, bias) if p is not None]
    on_cpu = input.device.type == "cpu"
    if on_cpu:
        _verify_cpu_mixed(input, params)
    _verify_normalized_shape(input, shape, (("weight", weight), ("bias", bias)), rms=False)
    _verify_kernel_dtype("LayerNormKernelImpl", input.dtype, FLOATING)
    if on_cpu:
        _verify_cpu_same_dtype(input, params, params[0] if params else None)
    return shape


# --- group_norm ---


def verify_group_norm(input: Any, num_groups: Any, weight: Any, bias: Any, eps: Any) -> None:
    """Checks of ``F.group_norm(input, num_groups, weight, bias, eps)``.

    Measured on torch 2.13, CPU, in this order:

    1. Python: ``input.dim() < 2`` -> RuntimeError "Expected at least 2 dimensions for input tensor but received 1".
    2. Python: ``N * C // num_groups`` — so num_groups=0 is Python's ZeroDivisionError "integer division or modulo
       by zero" (a tensor 0 gives RuntimeError "ZeroDivisionError"), None a TypeError of ``//``.
    3. Python: ``_verify_batch_size([N*C//G, G, *spatial])`` -> ValueError "Expected more than 1 value per channel
       when training, got input size [1, 6]" — the list printed is that constructed list, not the input's size.
    4. argument types: num_groups an int (not bool/float: "must be int, not float"), eps a float.
    5. C++: num_groups > 0 ("Expected num groups to be greater than 0, got -1"); C divisible by it; weight and
       bias 1-D with C elements. torch's bias message prints the WEIGHT's shape ([0] when weight is None).
    6. CPU mixed dtypes (as layer_norm), then "GroupNormKernelImpl" not implemented for non-floating inputs, then
       bias's dtype. Rank-2 inputs and zero-size N, C or spatial dims run; eps is not checked.
    """
    if input.dim() < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.dim()}")
    size = [input.size(0) * input.size(1) // num_groups, num_groups, *list(input.size()[2:])]
    size_prods = size[0]
    for i in range(len(size) - 2):
        size_prods *= size[i + 2]
    if size_prods == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    fn = "group_norm"
    _check_tensor_arg(fn, "input", 1, input, optional=False)
    _check_int_arg(fn, "num_groups", 2, num_groups)
    _check_tensor_arg(fn, "weight", 3, weight)
    _check_tensor_arg(fn, "bias", 4, bias)
    _check_float_arg(fn, "eps", 5, eps)
    groups, channels = int(num_groups), input.size(1)
    if groups <= 0:
        raise RuntimeError(f"Expected num groups to be greater than 0, got {groups}")
    if channels % groups != 0:
        raise RuntimeError(
            "Expected number of channels in input to be divisible by num_groups, "
            f"but got input of shape {_shape(input.shape)} and num_groups={groups}"
        )
    weight_shape = _shape(weight.shape) if weight is not None else "[0]"
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and not (p.dim() == 1 and p.numel() == channels):
            raise RuntimeError(
                f"Expected {name} to be a vector of size equal to the number of channels in input, "
                f"but got {name} of shape {weight_shape} and input of shape {_shape(input.shape)}"
            )
    params = [p.dtype for p in (weight, bias) if p is not None]
    on_cpu = input.device.type == "cpu"
    if on_cpu:
        _verify_cpu_mixed(input, params)
    _verify_kernel_dtype("GroupNormKernelImpl", input.dtype, FLOATING)
    if on_cpu:
        _verify_cpu_same_dtype(input, params, params[0] if params else None)


# --- instance_norm ---


def _broadcast_copy_error(dst: tuple[int, ...], src: tuple[int, ...]) -> str | None:
    """The message of ``torch.empty(dst).copy_(torch.empty(src))`` for shapes of rank <= 1, or None."""
    result = []
    for i in range(1, max(len(dst), len(src)) + 1):
        a = dst[-i] if i <= len(dst) else 1
        b = src[-i] if i <= len(src) else 1
        if a != b and a != 1 and b != 1:
            return (
                f"The size of tensor a ({a}) must match the size of tensor b ({b}) "
                f"at non-singleton dimension {max(len(dst), len(src)) - i}"
            )
        result.insert(0, b if a == 1 else a)
    if tuple(result) != dst:
        return f"output with shape {_shape(dst)} doesn't match the broadcast shape {_shape(result)}"
    return None


def verify_instance_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any,
    bias: Any,
    use_input_stats: Any,
    momentum: Any,
    eps: Any,
) -> None:
    """Checks of ``F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)``.

    Measured on torch 2.13, CPU, in this order:

    1. Python, only when ``use_input_stats``: more than one spatial element (rank <= 2 always fails) -> ValueError
       "Expected more than 1 spatial element when training, got input size torch.Size([2, 3, 1])".
    2. argument types; use_input_stats must be a real bool, momentum and eps floats (None refused).
    3. C++ ``torch.instance_norm``: without input stats both running stats must be given ("Expected running_mean and
       running_var to be defined when use_input_stats is false"); then ``input.size(0)``, ``input.size(1)``
       (IndexError for rank 0 and 1).
    4. weight, bias, running_mean, running_var are each ``repeat(N)``-ed, in this order: a tensor of rank > 1 fails
       ("Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor"); a 0-dim one
       becomes N elements. Just before their repeat, running stats are cast, BOTH, to the weight's dtype (the
       input's without weight) when running_mean's dtype differs from it — running_mean alone decides, and a
       missing running_var then fails: "Expected a proper Tensor but got None (or an undefined Tensor in C++) for
       argument #0 'self'". The cast is the computation's: torch's "Casting complex values to real discards the
       imaginary part" warning comes from ``Tensor.to`` on non-empty complex stats and is not issued here.
    5. ``batch_norm`` on the input seen as (1, N·C, *spatial): for an empty input only weight[0] and bias[0] are
       read (IndexError when weight/bias end up empty); otherwise sizes N·C ("running_mean should contain 6
       elements not 4", running_mean, running_var, weight, bias), running stats not requiring grad (once cast),
       both-or-neither (ValueError), "batch_norm" not implemented for non-floating inputs, the CPU mixed-dtype rules,
       and the scalar types (bias before running_var in eval, running_var before bias when using input stats).
    6. only when ``use_input_stats``: the running stats are written back, running_mean first, as the mean over N of
       the (N, C) view: view errors ("shape '[2, 3]' is invalid for input of size 10") and broadcast errors of the
       copy (a 0-dim running_mean with C == 1, sizes that only an empty input lets through) surface here, as does
       ``mean()`` on an integral dtype. An empty batch (N == 0) writes NaN into the running stats.

    eps and momentum are not checked (0 and negative values run).
    """
    if use_input_stats:
        size = input.size()
        size_prods = 1
        for i in range(2, len(size)):
            size_prods *= size[i]
        if size_prods == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {size}")
    fn = "instance_norm"
    _check_tensor_arg(fn, "input", 1, input, optional=False)
    tensors = (
        (2, "weight", weight),
        (3, "bias", bias),
        (4, "running_mean", running_mean),
        (5, "running_var", running_var),
    )
    for pos, name, value in tensors:
        _check_tensor_arg(fn, name, pos, value)
    _check_bool_arg(fn, "use_input_stats", 6, use_input_stats)
    _check_float_arg(fn, "momentum", 7, momentum)
    _check_float_arg(fn, "eps", 8, eps)

    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError("Expected running_mean and running_var to be defined when use_input_stats is false")
    if input.dim() == 0:
        raise IndexError("Dimension specified as 0 but tensor has no dimensions")
    if input.dim() == 1:
        raise IndexError("Dimension out of range (expected to be in range of [-1, 0], but got 1)")
    n, c = input.size(0), input.size(1)
    # weight, bias, running_mean, running_var are repeat(N)-ed in this order; running stats whose dtype is not the
    # target's are cast to it first (both of them, decided by running_mean alone: a missing running_var fails here).
    target = weight.dtype if weight is not None else input.dtype
    cast = running_mean is not None and running_mean.dtype != target
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if cast and name.startswith("running") and t is None:
            raise RuntimeError(
                "Expected a proper Tensor but got None (or an undefined Tensor in C++) for argument #0 'self'"
            )
        if t is not None and t.dim() > 1:
            raise RuntimeError(
                "Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor"
            )
    mean_dtype = None if running_mean is None else (target if cast else running_mean.dtype)
    var_dtype = None if running_var is None else (target if cast else running_var.dtype)

    def repeated(t: Tensor | None) -> int:
        return t.numel() * n if t is not None else 0

    if input.numel() == 0:
        for t in (weight, bias):
            if t is not None and repeated(t) == 0:
                raise IndexError("select(): index 0 out of range for tensor of size [0] at dimension 0")
    else:
        features = n * c
        for name, t in (
            ("running_mean", running_mean),
            ("running_var", running_var),
            ("weight", weight),
            ("bias", bias),
        ):
            if t is not None and repeated(t) != features:
                raise RuntimeError(f"{name} should contain {features} elements not {repeated(t)}")
        if torch.is_grad_enabled():  # a cast to an integral dtype drops requires_grad
            for name, t, dtype in (("running_mean", running_mean, mean_dtype), ("running_var", running_var, var_dtype)):
                if t is not None and t.requires_grad and (dtype.is_floating_point or dtype.is_complex):
                    raise RuntimeError(
                        f"The function 'native_batch_norm' is not differentiable with respect to argument '{name}'. "
                        "This input cannot have requires_grad True."
                    )
        if (running_mean is None) != (running_var is None):
            raise ValueError("running_mean and running_var must either both be None or neither be None")
        _verify_kernel_dtype("batch_norm", input.dtype, FLOATING)
        if input.device.type == "cpu":
            w_, b_ = (None if p is None else p.dtype for p in (weight, bias))
            params = [d for d in (w_, b_, mean_dtype, var_dtype) if d is not None]
            order = (w_, mean_dtype, var_dtype, b_) if use_input_stats else (w_, b_, mean_dtype, var_dtype)
            _verify_cpu_mixed(input, params)
            _verify_cpu_same_dtype(input, [d for d in order if d is not None], params[0] if params else None)

    if use_input_stats:
        for t, dtype in ((running_mean, mean_dtype), (running_var, var_dtype)):
            if t is None:
                continue
            if repeated(t) != n * c:
                raise RuntimeError(f"shape '{_shape((n, c))}' is invalid for input of size {repeated(t)}")
            if not (dtype.is_floating_point or dtype.is_complex):
                raise RuntimeError(
                    "mean(): could not infer output dtype. Input dtype must be either a floating point or complex "
                    f"dtype. Got: {scalar_type_name(dtype)}"
                )
            if torch.is_grad_enabled() and t.requires_grad and t.is_leaf:
                raise RuntimeError(
                    "a view of a leaf Variable that requires grad is being used in an in-place operation."
                )
            message = _broadcast_copy_error(tuple(t.shape), (c,))
            if message is not None:
                raise RuntimeError(message)


# --- rms_norm ---


def rms_norm_dtypes(input: Tensor, weight: Tensor | None) -> tuple[torch.dtype, torch.dtype]:
    """(compute dtype, output dtype) of ``F.rms_norm``, measured on torch 2.13, CPU.

    The mean of squares, rsqrt and normalization run in the input's "opmath" dtype (float32 for float16 and
    bfloat16, the input's own dtype otherwise, complex included); the output always has the input's dtype, whatever
    the weight's. (torch multiplies by the weight in the compute dtype promoted with the weight's — a float32 input
    with a float64 weight in float64, rounded once to float32; bnviz multiplies in the compute dtype: a difference
    within an ulp.)
    """
    del weight  # the weight never changes either dtype
    compute = torch.float32 if input.dtype in REDUCED else input.dtype
    return compute, input.dtype


def rms_norm_eps(input: Tensor, eps) -> float:
    """The eps rms_norm adds to the mean of squares, as a value of the compute dtype.

    ``eps=None`` means ``torch.finfo(compute dtype).eps`` — float32's 1.19e-07 for float16, bfloat16 and float32
    (NOT float16's 9.8e-04), float64's 2.2e-16 for float64. A given eps is rounded to the compute dtype (not to the
    input's: 1e-8 stays 1e-8 for a float16 input, 1e-46 becomes 0 for float32 and bfloat16 inputs).
    """
    compute = rms_norm_dtypes(input, None)[0]
    real = compute.to_real() if compute.is_complex else compute
    if eps is None:
        return torch.finfo(real).eps
    return torch.tensor(float(eps), dtype=real).item()


def rms_norm_dtype_mismatch_message(input_dtype: torch.dtype, weight_dtype: torch.dtype) -> str:
    """torch's warning text for an rms_norm weight whose dtype differs from the input's."""
    return (
        f"Mismatch dtype between input and weight: input dtype = {cxx_type_name(input_dtype)}, "
        f"weight dtype = {cxx_type_name(weight_dtype)}, Cannot dispatch to fused implementation. "
        "(Triggered internally at /__w/pytorch/pytorch/aten/src/ATen/native/layer_norm.cpp:346.)"
    )


def warn_rms_norm_dtype_mismatch(input: Tensor, weight: Tensor) -> None:
    """Issue torch's UserWarning for mismatched rms_norm dtypes, as torch does: a TORCH_WARN_ONCE, so once per
    process — every time while ``torch.is_warn_always_enabled()``."""
    if torch.is_warn_always_enabled() or not _RMS_MISMATCH_WARNED[0]:
        if not torch.is_warn_always_enabled():
            _RMS_MISMATCH_WARNED[0] = True
        warnings.warn(rms_norm_dtype_mismatch_message(input.dtype, weight.dtype), UserWarning, stacklevel=3)


def verify_rms_norm(input: Any, normalized_shape: Any, weight: Any, eps: Any) -> tuple[int, ...]:
    """Checks of ``F.rms_norm(input, normalized_shape, weight, eps)``; returns the normalized shape.

    Measured on torch 2.13, CPU, in this order:

    1. argument types, as layer_norm's (a bare int is refused), eps a float or None.
    2. normalized_shape not empty; weight's shape equal to it (before the input's rank!).
    3. ValueError "Input tensor must have at least 4 dimensions, but got 3" when normalized_shape is longer than the
       input's rank; then the trailing dims: "... expected input with shape [*5], but got input of size[2, 3, 4]"
       (no ", " after the star, unlike layer_norm).
    4. a weight of another dtype than a non-complex input: UserWarning "Mismatch dtype between input and weight: ..."
       (once per process, see ``warn_rms_norm_dtype_mismatch``) — also for zero-size and integer inputs.
    5. the input's dtype: "rms_norm" not implemented for 'Long' (complex inputs ARE supported).
    6. the weight must promote with the compute dtype (float8 weights: "Promotion for Float8 Types is not ...").

    Any weight dtype is accepted otherwise, with no mixed-dtype error; eps is not checked (0, negative run).
    """
    fn = "rms_norm"
    _check_tensor_arg(fn, "input", 1, input, optional=False)
    _check_int_list_arg(fn, "normalized_shape", 2, normalized_shape)
    _check_tensor_arg(fn, "weight", 3, weight)
    _check_float_arg(fn, "eps", 4, eps, optional=True)
    shape = _unpack_int_list(fn, "normalized_shape", normalized_shape)
    _verify_normalized_shape(input, shape, (("weight", weight),), rms=True)
    if weight is not None and weight.dtype != input.dtype and not input.dtype.is_complex:
        warn_rms_norm_dtype_mismatch(input, weight)
    _verify_kernel_dtype("rms_norm", input.dtype, RMS_NORM_DTYPES)
    if weight is not None:
        torch.promote_types(rms_norm_dtypes(input, weight)[0], weight.dtype)
    return shape


# --- instance_norm of an empty input ---


_TO_COMPLEX = {
    torch.float16: torch.complex32,
    torch.bfloat16: torch.complex64,
    torch.float32: torch.complex64,
    torch.float64: torch.complex128,
}


def _promote_with_zero_dim(tensor_dtype: torch.dtype, zero_dim_dtype: torch.dtype) -> torch.dtype:
    """torch's type promotion of a tensor with dimensions and a 0-dim tensor (``combine_categories``): the 0-dim
    operand only counts when its category (bool < integral < floating < complex) is higher."""
    higher, lower = tensor_dtype, zero_dim_dtype
    if higher.is_complex:
        return higher
    if lower.is_complex:
        return _TO_COMPLEX.get(higher, lower)
    if higher.is_floating_point:
        return higher
    if higher == torch.bool or lower.is_floating_point:
        return torch.promote_types(higher, lower)
    return higher


def empty_instance_norm_dtype(input: Tensor, weight: Tensor | None, bias: Tensor | None) -> torch.dtype:
    """The output dtype of ``F.instance_norm`` for an EMPTY input, which never reaches the kernel (torch 2.13, CPU):
    torch returns ``input.clone() * weight[0] + bias[0]``, whose dtype follows type promotion with 0-dim tensors — a
    zero-size int64 input with a float32 weight gives float32, float16 with a complex64 weight complex32. (Non-empty
    inputs: the input's dtype, as for every member.)"""
    output = input.dtype
    for p in (weight, bias):
        if p is not None:
            output = _promote_with_zero_dim(output, p.dtype)
    return output


# --- module constructors and InstanceNorm's forward ---


def verify_group_norm_module(num_groups, num_channels) -> None:
    """``nn.GroupNorm.__init__``'s own check (torch 2.13): ``num_channels % num_groups`` in Python — num_groups=0 is
    Python's ZeroDivisionError "integer modulo by zero", a remainder is ValueError "num_channels (6) must be
    divisible by num_groups (4)"; NEGATIVE num_groups dividing C are accepted here (forward refuses them). The
    parameters' ``torch.empty(num_channels, device=…, dtype=…)`` then refuses floats and negative counts, in
    bnviz's module exactly as in torch's."""
    if num_channels % num_groups != 0:
        raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")


def normalized_shape_tuple(normalized_shape) -> tuple:
    """``nn.LayerNorm`` and ``nn.RMSNorm``'s ``normalized_shape`` (torch 2.13): an Integral becomes ``(n,)`` (a bool
    too: ``(True,)``), anything else goes through ``tuple(...)`` — a range works; "'float' object is not iterable",
    "iteration over a 0-d tensor"; an empty shape is accepted here and refused by forward. With an elementwise
    affine, the weight's ``torch.empty(shape, device=…, dtype=…)`` then refuses floats and negative sizes."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    return tuple(normalized_shape)


def verify_instance_norm_input(input: Tensor, num_features: int, affine: bool, no_batch_dim: int) -> None:
    """InstanceNorm1d/2d/3d.forward's checks before ``F.instance_norm`` (torch 2.13); ``no_batch_dim`` is the rank of
    an unbatched input: 2 for 1d, 3 for 2d, 4 for 3d.

    The rank must be the unbatched or the batched one — (C, L) or (N, C, L) for 1d, one more per dimension for 2d
    and 3d: ValueError "expected 2D or 3D input (got 4D input)". The channel dim is ``dim() - no_batch_dim`` (0 for
    unbatched, 1 for batched). A channel count other than num_features is, with affine, ValueError "expected input's
    size at dim=1 to match num_features (3), but got: 4."; without affine a UserWarning "input's size at dim=1 does
    not match num_features. You can silence this warning by not passing in num_features, which is not used because
    affine=False" and the forward goes on (running stats then fail on size in batch_norm). The warning points at the
    caller of the module's forward, as torch's ``stacklevel=2`` from forward does: this check runs two frames deeper
    (forward → ``_check_input_dim`` → here). An unbatched
    input is normalized as ``unsqueeze(0)`` (so its errors show N = 1) and squeezed back.
    """
    if input.dim() not in (no_batch_dim, no_batch_dim + 1):
        raise ValueError(f"expected {no_batch_dim}D or {no_batch_dim + 1}D input (got {input.dim()}D input)")
    feature_dim = input.dim() - no_batch_dim
    if input.size(feature_dim) != num_features:
        if affine:
            raise ValueError(
                f"expected input's size at dim={feature_dim} to match num_features"
                f" ({num_features}), but got: {input.size(feature_dim)}."
            )
        warnings.warn(
            f"input's size at dim={feature_dim} does not match num_features. "
            "You can silence this warning by not passing in num_features, "
            "which is not used because affine=False",
            stacklevel=4,
        )
