"""bnviz's input checks for layer_norm, group_norm, instance_norm and rms_norm against torch 2.13 (CPU).

Every case calls a bnviz check and the torch function on the same arguments: both raise the same exception type
with the same message, or both go through; and both issue the same warnings (category and message). A case is a
function that builds fresh arguments, so in-place updates of running statistics cannot leak from one call into
the other.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnviz
from bnviz import _checks as C
from tests.conftest import assert_close, assert_same_error

f16, bf16, f32, f64 = torch.float16, torch.bfloat16, torch.float32, torch.float64
i64, c64 = torch.int64, torch.complex64

# Warnings torch issues while COMPUTING (a cast of complex data, a complex32 result), not while checking: they come
# from the same torch calls in bnviz's maths, so the checks do not repeat them.
COMPUTATION_WARNINGS = ("Casting complex values to real discards the imaginary part", "ComplexHalf support")


def t(*shape, dtype=f32, rg=False):
    """A tensor of ones (the checks look at shapes and dtypes only)."""
    x = torch.ones(shape, dtype=dtype)
    return x.requires_grad_() if rg else x


def case(id_, make, **marks):
    return pytest.param(make, id=id_, **marks)


@pytest.fixture(autouse=True)
def _torch_warns_every_time():
    """rms_norm's warning is a TORCH_WARN_ONCE: with warn-always on, torch (and bnviz) issue it on every call."""
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


def _run(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
            error = None
        except Exception as exc:
            result, error = None, exc
    issued = [(w.category, str(w.message)) for w in caught if not str(w.message).startswith(COMPUTATION_WARNINGS)]
    return result, error, issued


def assert_same_outcome(fn_bnviz, fn_torch, what: str):
    """Same exception (type, message) or none on both sides, and the same warnings. Returns bnviz's result."""
    result, got, got_warnings = _run(fn_bnviz)
    _, want, want_warnings = _run(fn_torch)
    if want is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert_same_error(fn_bnviz, fn_torch, what)
    else:
        assert got is None, f"{what}: torch went through, bnviz raised {type(got).__name__}: {got}"
    assert got_warnings == want_warnings, f"{what}: warnings\n  bnviz: {got_warnings}\n  torch: {want_warnings}"
    return result


# ---------------------------------------------------------------------------------------------------------------------
# layer_norm(input, normalized_shape, weight, bias, eps)
# ---------------------------------------------------------------------------------------------------------------------

LAYER_NORM_CASES = [
    # normalized_shape: what the argument parser takes
    case("ok-list", lambda: (t(2, 3, 4), [4], None, None, 1e-5)),
    case("ok-tuple-two-dims", lambda: (t(2, 3, 4), (3, 4), t(3, 4), t(3, 4), 1e-5)),
    case("ok-torch.Size", lambda: (t(2, 3, 4), torch.Size([3, 4]), None, None, 1e-5)),
    case("ok-every-dim", lambda: (t(2, 3, 4), (2, 3, 4), None, None, 1e-5)),
    case("ok-numpy-int-elements", lambda: (t(2, 3, 4), (np.int64(3), np.int32(4)), None, None, 1e-5)),
    case("ok-int-tensor-element", lambda: (t(2, 3, 4), (torch.tensor(4),), None, None, 1e-5)),
    case("ok-1d-input", lambda: (t(4), [4], t(4), t(4), 1e-5)),
    case("int-refused", lambda: (t(2, 3, 4), 4, None, None, 1e-5)),
    case("float-refused", lambda: (t(2, 3, 4), 4.0, None, None, 1e-5)),
    case("None-refused", lambda: (t(2, 3, 4), None, None, None, 1e-5)),
    case("str-refused", lambda: (t(2, 3, 4), "4", None, None, 1e-5)),
    case("range-refused", lambda: (t(2, 3, 4), range(4, 5), None, None, 1e-5)),
    case("ndarray-refused", lambda: (t(2, 3, 4), np.array([4]), None, None, 1e-5)),
    case("tensor-refused", lambda: (t(2, 3, 4), torch.tensor([4]), None, None, 1e-5)),
    case("float-first-element", lambda: (t(2, 3, 4), (4.0,), None, None, 1e-5)),
    case("bool-first-element", lambda: (t(2, 3, 4), [True], None, None, 1e-5)),
    case("float-tensor-first-element", lambda: (t(2, 3, 4), (torch.tensor(4.0),), None, None, 1e-5)),
    case("float-second-element", lambda: (t(2, 3, 4), [3, 4.0], None, None, 1e-5)),
    case("None-third-element", lambda: (t(2, 3, 4), [2, 3, None], None, None, 1e-5)),
    case("bool-second-element-is-1", lambda: (t(2, 3, 4), [3, True], None, None, 1e-5)),
    case("bool-tensor-element", lambda: (t(2, 3, 4), (torch.tensor(True),), None, None, 1e-5)),
    # shapes
    case("empty-tuple", lambda: (t(2, 3, 4), (), None, None, 1e-5)),
    case("empty-list-scalar-input", lambda: (torch.tensor(1.0), [], None, None, 1e-5)),
    case("trailing-mismatch", lambda: (t(2, 3, 4), (5,), None, None, 1e-5)),
    case("trailing-mismatch-two", lambda: (t(2, 3, 4), (2, 4), None, None, 1e-5)),
    case("longer-than-input", lambda: (t(2, 3, 4), (1, 2, 3, 4), None, None, 1e-5)),
    case("negative", lambda: (t(2, 3, 4), (3, -4), None, None, 1e-5)),
    case("zero-vs-4", lambda: (t(2, 3, 4), (0,), None, None, 1e-5)),
    case("scalar-input", lambda: (torch.tensor(1.0), (1,), None, None, 1e-5)),
    case("weight-short", lambda: (t(2, 3, 4), (4,), t(3), None, 1e-5)),
    case("weight-extra-dim", lambda: (t(2, 3, 4), (4,), t(1, 4), None, 1e-5)),
    case("weight-0-dim", lambda: (t(2, 3, 4), (4,), torch.tensor(1.0), None, 1e-5)),
    case("weight-flat-for-2-dims", lambda: (t(2, 3, 4), (3, 4), t(12), None, 1e-5)),
    case("bias-short", lambda: (t(2, 3, 4), (4,), t(4), t(3), 1e-5)),
    case("bias-short-no-weight", lambda: (t(2, 3, 4), (4,), None, t(3), 1e-5)),
    case("params-match-ns-not-input", lambda: (t(2, 3, 4), (5,), t(5), t(5), 1e-5)),
    case("weight-before-input", lambda: (t(2, 3, 4), (5,), t(3), None, 1e-5)),
    case("empty-ns-before-weight", lambda: (t(2, 3, 4), (), t(4), t(4, dtype=bf16), 1e-5)),
    # zero-size inputs, eps: no error
    case("zero-batch", lambda: (t(0, 3, 4), (4,), t(4), t(4), 1e-5)),
    case("zero-middle", lambda: (t(2, 0, 4), (4,), None, None, 1e-5)),
    case("zero-normalized", lambda: (t(2, 3, 0), (3, 0), t(3, 0), t(3, 0), 1e-5)),
    case("zero-size-shape-still-checked", lambda: (t(0, 3, 4), (5,), None, None, 1e-5)),
    case("eps-0", lambda: (t(2, 3, 4), (4,), None, None, 0.0)),
    case("eps-negative", lambda: (t(2, 3, 4), (4,), None, None, -1.0)),
    case("eps-nan", lambda: (t(2, 3, 4), (4,), None, None, float("nan"))),
    case("eps-int", lambda: (t(2, 3, 4), (4,), None, None, 1)),
    case("eps-0-dim-tensor", lambda: (t(2, 3, 4), (4,), None, None, torch.tensor(1e-5))),
    case("eps-1-dim-tensor", lambda: (t(2, 3, 4), (4,), None, None, torch.tensor([1e-5]))),
    case("eps-None", lambda: (t(2, 3, 4), (4,), None, None, None)),
    case("eps-str", lambda: (t(2, 3, 4), (4,), None, None, "1e-5")),
    case("input-list", lambda: ([1.0, 2.0], (2,), None, None, 1e-5)),
    case("weight-list", lambda: (t(2, 3, 4), (4,), [1.0] * 4, None, 1e-5)),
    case("bias-tuple", lambda: (t(2, 3, 4), (4,), None, (0.0,) * 4, 1e-5)),
    # dtypes
    case("long", lambda: (t(2, 3, 4, dtype=i64), (4,), None, None, 1e-5)),
    case("int8", lambda: (t(2, 3, 4, dtype=torch.int8), (4,), None, None, 1e-5)),
    case("bool", lambda: (t(2, 3, 4, dtype=torch.bool), (4,), None, None, 1e-5)),
    case("complex64", lambda: (t(2, 3, 4, dtype=c64), (4,), None, None, 1e-5)),
    case("uint16", lambda: (t(2, 3, 4, dtype=torch.uint16), (4,), None, None, 1e-5)),
    case("long-zero-size", lambda: (t(0, 3, 4, dtype=i64), (4,), None, None, 1e-5)),
    case("long-same-params", lambda: (t(2, 3, 4, dtype=i64), (4,), t(4, dtype=i64), t(4, dtype=i64), 1e-5)),
    case("long-float-weight", lambda: (t(2, 3, 4, dtype=i64), (4,), t(4), None, 1e-5)),
    case("long-shape-before-dtype", lambda: (t(2, 3, 4, dtype=i64), (5,), None, None, 1e-5)),
    case("f64-f32-weight", lambda: (t(2, 3, 4, dtype=f64), (4,), t(4), None, 1e-5)),
    case("f64-f32-weight-zero-size", lambda: (t(0, 3, 4, dtype=f64), (4,), t(4), None, 1e-5)),
    case("mixed-before-shapes", lambda: (t(2, 3, 4, dtype=f64), (5,), t(3), None, 1e-5)),
    case("mixed-before-empty-ns", lambda: (t(2, 3, 4, dtype=f64), (), t(4), None, 1e-5)),
    case("f32-bf16-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=bf16), None, 1e-5)),
    case("f32-f64-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=f64), None, 1e-5)),
    case("f32-bf16-bias-only", lambda: (t(2, 3, 4), (4,), None, t(4, dtype=bf16), 1e-5)),
    case("f32-f32-weight-bf16-bias", lambda: (t(2, 3, 4), (4,), t(4), t(4, dtype=bf16), 1e-5)),
    case("f32-f32-weight-bf16-bias-zero-size", lambda: (t(0, 3, 4), (4,), t(4), t(4, dtype=bf16), 1e-5)),
    case("f64-f64-weight-f32-bias", lambda: (t(2, 3, 4, dtype=f64), (4,), t(4, dtype=f64), t(4), 1e-5)),
    case("bf16-f32-params", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4), t(4), 1e-5)),
    case("f16-f32-params", lambda: (t(2, 3, 4, dtype=f16), (4,), t(4), t(4), 1e-5)),
    case("bf16-f32-bias-only", lambda: (t(2, 3, 4, dtype=bf16), (4,), None, t(4), 1e-5)),
    case("bf16-f32-weight-bf16-bias", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4), t(4, dtype=bf16), 1e-5)),
    case("bf16-bf16-weight-f32-bias", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4, dtype=bf16), t(4), 1e-5)),
    case("bf16-f16-weight", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4, dtype=f16), None, 1e-5)),
    case("bf16-f32-weight-wrong-shape", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(3), None, 1e-5)),
    case("f16-f16-weight-bf16-bias", lambda: (t(2, 3, 4, dtype=f16), (4,), t(4, dtype=f16), t(4, dtype=bf16), 1e-5)),
    case("f64-same", lambda: (t(2, 3, 4, dtype=f64), (4,), t(4, dtype=f64), t(4, dtype=f64), 1e-5)),
]


@pytest.mark.parametrize("make", LAYER_NORM_CASES)
def test_layer_norm_checks(make):
    shape = assert_same_outcome(lambda: C.verify_layer_norm(*make()), lambda: F.layer_norm(*make()), "layer_norm")
    if shape is not None:
        args = make()
        assert shape == tuple(int(v) for v in args[1])


# ---------------------------------------------------------------------------------------------------------------------
# group_norm(input, num_groups, weight, bias, eps)
# ---------------------------------------------------------------------------------------------------------------------

GROUP_NORM_CASES = [
    case("ok", lambda: (t(2, 6, 4), 3, t(6), t(6), 1e-5)),
    case("ok-rank-2", lambda: (t(2, 6), 3, None, None, 1e-5)),
    case("ok-rank-6", lambda: (t(2, 6, 2, 2, 2, 2), 2, None, None, 1e-5)),
    case("ok-one-group", lambda: (t(2, 6, 4), 1, None, None, 1e-5)),
    case("ok-group-per-channel", lambda: (t(2, 6, 4), 6, None, None, 1e-5)),
    case("ok-zero-batch", lambda: (t(0, 6, 4), 3, t(6), t(6), 1e-5)),
    case("ok-zero-batch-rank-2", lambda: (t(0, 6), 3, None, None, 1e-5)),
    case("ok-zero-channels", lambda: (t(2, 0, 4), 3, None, None, 1e-5)),
    case("ok-zero-channels-empty-params", lambda: (t(2, 0, 4), 3, t(0), t(0), 1e-5)),
    case("ok-zero-spatial", lambda: (t(2, 6, 0), 3, t(6), t(6), 1e-5)),
    case("ok-eps-0", lambda: (t(2, 6, 4), 3, None, None, 0.0)),
    case("ok-eps-negative", lambda: (t(2, 6, 4), 3, None, None, -1.0)),
    case("ok-groups-int-tensor", lambda: (t(2, 6, 4), torch.tensor(3), None, None, 1e-5)),
    case("ok-groups-numpy", lambda: (t(2, 6, 4), np.int32(3), None, None, 1e-5)),
    case("rank-1", lambda: (t(6), 3, None, None, 1e-5)),
    case("rank-0", lambda: (torch.tensor(1.0), 1, None, None, 1e-5)),
    case("rank-1-before-groups", lambda: (t(6), -1, None, None, 1e-5)),
    case("groups-0", lambda: (t(2, 6, 4), 0, None, None, 1e-5)),
    case("groups-0-zero-channels", lambda: (t(2, 0, 4), 0, None, None, 1e-5)),
    case("groups-0-tensor", lambda: (t(2, 6, 4), torch.tensor(0), None, None, 1e-5)),
    case("groups-None", lambda: (t(2, 6, 4), None, None, None, 1e-5)),
    case("groups-str", lambda: (t(2, 6, 4), "3", None, None, 1e-5)),
    case("groups-float", lambda: (t(2, 6, 4), 3.0, None, None, 1e-5)),
    case("groups-float-1-value", lambda: (t(1, 6, 1), 6.0, None, None, 1e-5)),
    case("groups-bool", lambda: (t(2, 6, 4), True, None, None, 1e-5)),
    case("groups-float-tensor", lambda: (t(2, 6, 4), torch.tensor(3.0), None, None, 1e-5)),
    case("groups-1-dim-tensor", lambda: (t(2, 6, 4), torch.tensor([3]), None, None, 1e-5)),
    case("groups-negative", lambda: (t(2, 6, 4), -1, None, None, 1e-5)),
    case("groups-negative-dividing", lambda: (t(2, 6, 4), -6, None, None, 1e-5)),
    case("groups-negative-zero-batch", lambda: (t(0, 6), -1, None, None, 1e-5)),
    case("groups-not-dividing", lambda: (t(2, 6, 4), 4, None, None, 1e-5)),
    case("groups-more-than-channels", lambda: (t(2, 6, 4), 12, None, None, 1e-5)),
    case("groups-not-dividing-zero-batch", lambda: (t(0, 6, 4), 4, None, None, 1e-5)),
    case("one-value-per-group", lambda: (t(1, 6), 6, None, None, 1e-5)),
    case("one-value-per-group-spatial-1", lambda: (t(1, 6, 1), 6, None, None, 1e-5)),
    case("python-check-sees-N*C//G", lambda: (t(2, 3), 6, None, None, 1e-5)),
    case("weight-short", lambda: (t(2, 6, 4), 3, t(3), None, 1e-5)),
    case("weight-2-dims", lambda: (t(2, 6, 4), 3, t(6, 1), None, 1e-5)),
    case("weight-0-dim", lambda: (t(2, 6, 4), 3, torch.tensor(1.0), None, 1e-5)),
    case("weight-short-zero-batch", lambda: (t(0, 6, 4), 3, t(3), None, 1e-5)),
    case("groups-before-weight", lambda: (t(2, 6, 4), 4, t(3), None, 1e-5)),
    case("bias-short-prints-[0]", lambda: (t(2, 6, 4), 3, None, t(3), 1e-5)),
    case("bias-short-prints-weight-shape", lambda: (t(2, 6, 4), 3, t(6), t(3), 1e-5)),
    case("eps-None", lambda: (t(2, 6, 4), 3, None, None, None)),
    case("weight-list", lambda: (t(2, 6, 4), 3, [1.0] * 6, None, 1e-5)),
    case("input-list", lambda: ([1.0, 2.0], 1, None, None, 1e-5)),
    case("long", lambda: (t(2, 6, 4, dtype=i64), 3, None, None, 1e-5)),
    case("long-zero-size", lambda: (t(0, 6, 4, dtype=i64), 3, None, None, 1e-5)),
    case("long-groups-first", lambda: (t(2, 6, 4, dtype=i64), 4, None, None, 1e-5)),
    case("long-weight-shape-before-mixed", lambda: (t(2, 6, 4, dtype=i64), 3, t(3), None, 1e-5)),
    case("long-f32-weight", lambda: (t(2, 6, 4, dtype=i64), 3, t(6), None, 1e-5)),
    case("long-same-weight-f32-bias", lambda: (t(2, 6, 4, dtype=i64), 3, t(6, dtype=i64), t(6), 1e-5)),
    case("bool", lambda: (t(2, 6, 4, dtype=torch.bool), 3, None, None, 1e-5)),
    case("complex64", lambda: (t(2, 6, 4, dtype=c64), 3, None, None, 1e-5)),
    case("f64-f32-weight", lambda: (t(2, 6, 4, dtype=f64), 3, t(6), None, 1e-5)),
    case("f64-f32-weight-zero-size", lambda: (t(0, 6, 4, dtype=f64), 3, t(6), None, 1e-5)),
    case("f32-bf16-weight", lambda: (t(2, 6, 4), 3, t(6, dtype=bf16), None, 1e-5)),
    case("f32-bf16-bias-only", lambda: (t(2, 6, 4), 3, None, t(6, dtype=bf16), 1e-5)),
    case("f32-f32-weight-bf16-bias", lambda: (t(2, 6, 4), 3, t(6), t(6, dtype=bf16), 1e-5)),
    case("f32-f32-weight-bf16-bias-zero-channels", lambda: (t(2, 0, 4), 3, t(0), t(0, dtype=bf16), 1e-5)),
    case("bf16-f32-params", lambda: (t(2, 6, 4, dtype=bf16), 3, t(6), t(6), 1e-5)),
    case("f16-f32-params", lambda: (t(2, 6, 4, dtype=f16), 3, t(6), t(6), 1e-5)),
    case("bf16-f32-bias-only", lambda: (t(2, 6, 4, dtype=bf16), 3, None, t(6), 1e-5)),
    case("bf16-bf16-weight-f32-bias", lambda: (t(2, 6, 4, dtype=bf16), 3, t(6, dtype=bf16), t(6), 1e-5)),
    case("bf16-f16-weight", lambda: (t(2, 6, 4, dtype=bf16), 3, t(6, dtype=f16), None, 1e-5)),
]


@pytest.mark.parametrize("make", GROUP_NORM_CASES)
def test_group_norm_checks(make):
    assert_same_outcome(lambda: C.verify_group_norm(*make()), lambda: F.group_norm(*make()), "group_norm")


# ---------------------------------------------------------------------------------------------------------------------
# instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)
# ---------------------------------------------------------------------------------------------------------------------


def inorm(x, rm=None, rv=None, w=None, b=None, use_input_stats=True, momentum=0.1, eps=1e-5):
    return (x, rm, rv, w, b, use_input_stats, momentum, eps)


INSTANCE_NORM_CASES = [
    case("ok", lambda: inorm(t(2, 3, 4), t(3), t(3), t(3), t(3))),
    case("ok-no-params", lambda: inorm(t(2, 3, 4))),
    case("ok-eval", lambda: inorm(t(2, 3, 4), t(3), t(3), use_input_stats=False)),
    case("ok-eval-rank-2", lambda: inorm(t(2, 3), t(3), t(3), use_input_stats=False)),
    case("ok-eval-one-spatial", lambda: inorm(t(2, 3, 1), t(3), t(3), use_input_stats=False)),
    case("ok-eps-momentum-negative", lambda: inorm(t(2, 3, 4), momentum=-1.0, eps=-1.0)),
    case("ok-eps-0", lambda: inorm(t(2, 3, 4), eps=0.0)),
    case("ok-0-dim-weight-one-channel", lambda: inorm(t(3, 1, 4), w=torch.tensor(2.0))),
    case("spatial-rank-2", lambda: inorm(t(2, 3))),
    case("spatial-rank-1", lambda: inorm(t(3))),
    case("spatial-rank-0", lambda: inorm(torch.tensor(1.0))),
    case("spatial-1", lambda: inorm(t(2, 3, 1))),
    case("spatial-1x1", lambda: inorm(t(1, 3, 1, 1))),
    case("spatial-1-zero-channels", lambda: inorm(t(2, 0, 1))),
    case("eval-no-stats", lambda: inorm(t(2, 3, 4), use_input_stats=False)),
    case("eval-mean-only", lambda: inorm(t(2, 3, 4), t(3), None, use_input_stats=False)),
    case("eval-var-only-before-sizes", lambda: inorm(t(2, 3, 4), None, t(3), t(2), use_input_stats=False)),
    case("eval-rank-1", lambda: inorm(t(3), t(3), t(3), use_input_stats=False)),
    case("eval-rank-0", lambda: inorm(torch.tensor(1.0), t(1), t(1), use_input_stats=False)),
    case("weight-counts-N*C", lambda: inorm(t(2, 3, 4), w=t(2))),
    case("weight-of-N*C", lambda: inorm(t(2, 3, 4), w=t(6))),
    case("weight-0-dim", lambda: inorm(t(2, 3, 4), w=torch.tensor(1.0))),
    case("weight-2-dims", lambda: inorm(t(2, 3, 4), w=t(1, 3))),
    case("bias-short", lambda: inorm(t(2, 3, 4), b=t(2))),
    case("mean-short", lambda: inorm(t(2, 3, 4), t(2), t(3))),
    case("var-short", lambda: inorm(t(2, 3, 4), t(3), t(2))),
    case("mean-before-weight", lambda: inorm(t(2, 3, 4), t(2), t(2), t(2))),
    case("mean-2-dims", lambda: inorm(t(2, 3, 4), t(2, 3), t(2, 3))),
    case("mean-0-dim", lambda: inorm(t(2, 3, 4), torch.tensor(0.0), torch.tensor(1.0))),
    case("mean-only", lambda: inorm(t(2, 3, 4), t(3), None)),
    case("var-only", lambda: inorm(t(2, 3, 4), None, t(3))),
    case("mean-only-weight-first", lambda: inorm(t(2, 3, 4), t(3), None, t(2))),
    case("rank-2-eval-wrong-stats", lambda: inorm(t(2, 3), t(6), t(6), use_input_stats=False)),
    # empty inputs: batch_norm only reads weight[0] and bias[0]; the write-back of the running stats follows
    case("ok-zero-batch", lambda: inorm(t(0, 3, 4), t(3), t(3))),
    case("ok-zero-channels-weight-3", lambda: inorm(t(2, 0, 4), w=t(3))),
    case("ok-zero-spatial-weight-5", lambda: inorm(t(2, 3, 0), w=t(5))),
    case("ok-zero-batch-eval-stats-5", lambda: inorm(t(0, 3, 4), t(5), t(5), use_input_stats=False)),
    case("ok-zero-batch-mean-only", lambda: inorm(t(0, 3, 4), t(3), None)),
    case("ok-long-zero-batch", lambda: inorm(t(0, 3, 4, dtype=i64))),
    case("zero-batch-weight", lambda: inorm(t(0, 3, 4), w=t(3))),
    case("zero-channels-empty-weight", lambda: inorm(t(2, 0, 4), w=t(0), b=t(0))),
    case("zero-batch-mean-5", lambda: inorm(t(0, 3, 4), t(5), t(5))),
    case("zero-batch-mean-1", lambda: inorm(t(0, 3, 4), t(1), t(1))),
    case("zero-batch-mean-0-dim", lambda: inorm(t(0, 3, 4), torch.tensor(0.0), torch.tensor(1.0))),
    case("zero-batch-var-5", lambda: inorm(t(0, 3, 4), t(3), t(5))),
    case("zero-channels-mean-3", lambda: inorm(t(2, 0, 4), t(3), t(3))),
    case("zero-spatial-mean-5", lambda: inorm(t(2, 3, 0), t(5), t(5))),
    case("zero-spatial-mean-2-dims", lambda: inorm(t(2, 3, 0), t(1, 3), t(1, 3))),
    case("long-zero-batch-mean", lambda: inorm(t(0, 1, 3, dtype=i64), t(1), t(1))),
    case("mean-0-dim-one-channel", lambda: inorm(t(3, 1, 4), torch.tensor(0.0), torch.tensor(1.0))),
    case("ok-mean-0-dim-one-channel-eval", lambda: inorm(t(3, 1, 4), torch.tensor(0.0), t(1), use_input_stats=False)),
    # argument types
    case("use-input-stats-int", lambda: inorm(t(2, 3, 4), use_input_stats=1)),
    case("use-input-stats-None-eval-path", lambda: inorm(t(2, 3), use_input_stats=None)),
    case("momentum-None", lambda: inorm(t(2, 3, 4), momentum=None)),
    case("eps-None", lambda: inorm(t(2, 3, 4), eps=None)),
    case("weight-tuple", lambda: inorm(t(2, 3, 4), w=(1.0, 1.0, 1.0))),
    case("input-list-eval", lambda: inorm([1.0], t(1), t(1), use_input_stats=False)),
    case("input-list-train", lambda: inorm([1.0])),
    # dtypes
    case("long", lambda: inorm(t(2, 3, 4, dtype=i64))),
    case("long-eval-no-stats", lambda: inorm(t(2, 3, 4, dtype=i64), use_input_stats=False)),
    case("long-float-weight", lambda: inorm(t(2, 3, 4, dtype=i64), w=t(3))),
    case("bool", lambda: inorm(t(2, 3, 4, dtype=torch.bool))),
    case("complex64", lambda: inorm(t(2, 3, 4, dtype=c64))),
    case("f64-f32-weight", lambda: inorm(t(2, 3, 4, dtype=f64), w=t(3))),
    case("f32-bf16-weight", lambda: inorm(t(2, 3, 4), w=t(3, dtype=bf16))),
    case("f32-bf16-bias-only", lambda: inorm(t(2, 3, 4), b=t(3, dtype=bf16))),
    case("f32-f32-weight-bf16-bias", lambda: inorm(t(2, 3, 4), w=t(3), b=t(3, dtype=bf16))),
    case("bf16-f32-params", lambda: inorm(t(2, 3, 4, dtype=bf16), t(3), t(3), t(3), t(3))),
    case("bf16-bf16-weight-f32-bias", lambda: inorm(t(2, 3, 4, dtype=bf16), w=t(3, dtype=bf16), b=t(3))),
    case("ok-f64-f32-stats-cast", lambda: inorm(t(2, 3, 4, dtype=f64), t(3), t(3))),
    case("ok-f32-long-stats-cast", lambda: inorm(t(2, 3, 4), t(3, dtype=i64), t(3, dtype=i64), use_input_stats=False)),
    case("ok-f32-f64-mean-any-var", lambda: inorm(t(2, 3, 4), t(3, dtype=f64), t(3, dtype=bf16))),
    case("ok-f16-stats-cast-to-f32-weight", lambda: inorm(t(2, 3, 4, dtype=f16), t(3, dtype=f16), t(3), t(3))),
    case("ok-f16-stats-cast-to-f16-weight", lambda: inorm(t(2, 3, 4, dtype=f16), t(3), t(3), t(3, dtype=f16))),
    case("f32-mean-matches-var-long", lambda: inorm(t(2, 3, 4), t(3), t(3, dtype=i64))),
    case("bf16-mean-matches-var-f32", lambda: inorm(t(2, 3, 4, dtype=bf16), t(3, dtype=bf16), t(3))),
    case("f64-stats-cast-to-f32-weight", lambda: inorm(t(2, 3, 4, dtype=f64), t(3, dtype=f64), t(3, dtype=f64), t(3))),
    case("cast-of-missing-var", lambda: inorm(t(2, 3, 4), t(3, dtype=bf16), None, t(2))),
    case("repeat-before-cast-of-missing-var", lambda: inorm(t(2, 3, 4), t(3, dtype=bf16), None, t(1, 3))),
    case("train-var-before-bias", lambda: inorm(t(2, 3, 4), t(3), t(3, dtype=bf16), t(3), t(3, dtype=f64))),
    case(
        "eval-bias-before-var",
        lambda: inorm(t(2, 3, 4), t(3), t(3, dtype=bf16), t(3), t(3, dtype=f64), use_input_stats=False),
    ),
    # running stats that require grad
    case("mean-requires-grad", lambda: inorm(t(2, 3, 4), t(3, rg=True), t(3))),
    case("var-requires-grad-eval", lambda: inorm(t(2, 3, 4), t(3), t(3, rg=True), use_input_stats=False)),
    case("grad-before-both-or-neither", lambda: inorm(t(2, 3, 4), t(3, rg=True), None)),
    case("cast-to-long-drops-grad", lambda: inorm(t(2, 3, 4, dtype=i64), t(3, rg=True), t(3))),
    case("zero-batch-leaf-mean-requires-grad", lambda: inorm(t(0, 3, 4), t(3, rg=True), t(3))),
]


@pytest.mark.parametrize("make", INSTANCE_NORM_CASES)
def test_instance_norm_checks(make):
    assert_same_outcome(lambda: C.verify_instance_norm(*make()), lambda: F.instance_norm(*make()), "instance_norm")


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_instance_norm_running_stats_requiring_grad_pass_without_grad_mode(train):
    def make():
        return inorm(t(2, 3, 4), t(3, rg=True), t(3, rg=True), use_input_stats=train)

    with torch.no_grad():
        assert_same_outcome(lambda: C.verify_instance_norm(*make()), lambda: F.instance_norm(*make()), "no_grad")


# ---------------------------------------------------------------------------------------------------------------------
# rms_norm(input, normalized_shape, weight, eps)
# ---------------------------------------------------------------------------------------------------------------------

RMS_NORM_CASES = [
    case("ok", lambda: (t(2, 3, 4), [4], t(4), None)),
    case("ok-two-dims", lambda: (t(2, 3, 4), (3, 4), t(3, 4), 1e-6)),
    case("ok-eps-0", lambda: (t(2, 3, 4), (4,), None, 0.0)),
    case("ok-eps-negative", lambda: (t(2, 3, 4), (4,), None, -1.0)),
    case("ok-eps-0-dim-tensor", lambda: (t(2, 3, 4), (4,), None, torch.tensor(1e-5))),
    case("ok-zero-batch", lambda: (t(0, 3, 4), (4,), t(4), None)),
    case("ok-zero-normalized", lambda: (t(2, 3, 0), (0,), t(0), None)),
    case("ok-complex", lambda: (t(2, 3, 4, dtype=c64), (4,), None, None)),
    case("ok-complex-f32-weight-no-warning", lambda: (t(2, 3, 4, dtype=c64), (4,), t(4), None)),
    case("int-refused", lambda: (t(2, 3, 4), 4, None, None)),
    case("float-second-element", lambda: (t(2, 3, 4), (3, 4.0), None, None)),
    case("empty", lambda: (t(2, 3, 4), (), None, None)),
    case("empty-before-weight", lambda: (t(2, 3, 4), (), t(4), None)),
    case("trailing-mismatch-[*5]", lambda: (t(2, 3, 4), (5,), None, None)),
    case("trailing-mismatch-[*2, 4]", lambda: (t(2, 3, 4), (2, 4), None, None)),
    case("negative", lambda: (t(2, 3, 4), (-4,), None, None)),
    case("longer-than-input-ValueError", lambda: (t(2, 3, 4), (1, 2, 3, 4), None, None)),
    case("scalar-input-ValueError", lambda: (torch.tensor(1.0), (1,), None, None)),
    case("weight-before-rank", lambda: (t(2, 3, 4), (1, 2, 3, 4), t(3), None)),
    case("weight-short", lambda: (t(2, 3, 4), (4,), t(3), None)),
    case("weight-0-dim", lambda: (t(2, 3, 4), (4,), torch.tensor(1.0), None)),
    case("weight-flat-for-2-dims", lambda: (t(2, 3, 4), (3, 4), t(12), None)),
    case("eps-str", lambda: (t(2, 3, 4), (4,), None, "a")),
    case("eps-1-dim-tensor", lambda: (t(2, 3, 4), (4,), None, torch.tensor([1e-5]))),
    case("weight-list", lambda: (t(2, 3, 4), (4,), [1.0] * 4, None)),
    case("input-list", lambda: ([1.0], (1,), None, None)),
    case("long", lambda: (t(2, 3, 4, dtype=i64), (4,), None, None)),
    case("long-shape-first", lambda: (t(2, 3, 4, dtype=i64), (5,), None, None)),
    case("bool-same-weight", lambda: (t(2, 3, 4, dtype=torch.bool), (4,), t(4, dtype=torch.bool), None)),
    case("uint16", lambda: (t(2, 3, 4, dtype=torch.uint16), (4,), None, None)),
    # the dtype-mismatch warning: after the shape checks, before the dtype dispatch
    case("warn-bf16-f32-weight", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4), None)),
    case("warn-f16-f32-weight", lambda: (t(2, 3, 4, dtype=f16), (4,), t(4), None)),
    case("warn-f32-bf16-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=bf16), None)),
    case("warn-f32-f64-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=f64), None)),
    case("warn-f64-f16-weight", lambda: (t(2, 3, 4, dtype=f64), (4,), t(4, dtype=f16), None)),
    case("warn-f32-long-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=i64), None)),
    case("warn-f32-int8-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=torch.int8), None)),
    case("warn-f32-uint16-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=torch.uint16), None)),
    case("warn-f32-bool-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=torch.bool), None)),
    case("warn-f32-complex-weight", lambda: (t(2, 3, 4), (4,), t(4, dtype=c64), None)),
    case("warn-zero-size", lambda: (t(0, 3, 4, dtype=bf16), (4,), t(4), None)),
    case("warn-then-long-not-implemented", lambda: (t(2, 3, 4, dtype=i64), (4,), t(4), None)),
    case("warn-then-float8-promotion", lambda: (t(2, 3, 4), (4,), torch.zeros(4, dtype=torch.float8_e4m3fn), None)),
    case("no-warning-on-shape-error", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(3), None)),
    case("no-warning-same-dtype", lambda: (t(2, 3, 4, dtype=bf16), (4,), t(4, dtype=bf16), None)),
]


@pytest.mark.parametrize("make", RMS_NORM_CASES)
def test_rms_norm_checks(make):
    shape = assert_same_outcome(lambda: C.verify_rms_norm(*make()), lambda: F.rms_norm(*make()), "rms_norm")
    if shape is not None:
        assert shape == tuple(make()[1])


def test_rms_norm_warning_is_once_per_process_like_torch():
    """Without warn-always, torch issues the mismatch warning once (TORCH_WARN_ONCE); so does bnviz."""
    latch = C._RMS_MISMATCH_WARNED[0]
    torch.set_warn_always(False)
    C._RMS_MISMATCH_WARNED[0] = False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                C.verify_rms_norm(t(2, 4, dtype=bf16), (4,), t(4), None)
        assert [(w.category, str(w.message)) for w in caught] == [
            (UserWarning, C.rms_norm_dtype_mismatch_message(bf16, f32))
        ]
    finally:
        C._RMS_MISMATCH_WARNED[0] = latch


# ---------------------------------------------------------------------------------------------------------------------
# module constructors and InstanceNorm's forward
# ---------------------------------------------------------------------------------------------------------------------

GROUP_NORM_MODULE_CASES = [
    case("ok", lambda: (3, 6, True)),
    case("ok-zero-channels", lambda: (6, 0, True)),
    case("ok-negative-groups-dividing", lambda: (-3, 6, True)),
    case("ok-float-groups-dividing", lambda: (2.0, 6, True)),
    case("ok-bool-groups", lambda: (True, 6, True)),
    case("ok-negative-channels-without-affine", lambda: (1, -1, False)),
    case("groups-0", lambda: (0, 6, True)),
    case("groups-0-no-channels", lambda: (0, 0, True)),
    case("not-dividing", lambda: (4, 6, True)),
    case("negative-not-dividing", lambda: (-4, 6, True)),
    case("more-groups-than-channels", lambda: (12, 6, True)),
    case("fractional-groups", lambda: (2.5, 6, True)),
    case("channels-True", lambda: (3, True, True)),
    case("groups-None", lambda: (None, 6, True)),
    case("channels-float", lambda: (3, 6.0, True)),
    case("channels-negative", lambda: (1, -1, True)),
    case("groups-tensor-not-dividing", lambda: (torch.tensor(4), 6, True)),
]


@pytest.mark.parametrize("make", GROUP_NORM_MODULE_CASES)
def test_group_norm_module_checks(make):
    """bnviz.GroupNorm's constructor against nn.GroupNorm's: the same errors, or both built."""

    def build(lib):
        g, c, affine = make()
        return lib.GroupNorm(g, c, affine=affine)

    assert_same_outcome(lambda: build(bnviz), lambda: build(nn), "GroupNorm")


SHAPE_MODULE_CASES = [
    case("int", lambda: (4, True)),
    case("list", lambda: ([3, 4], True)),
    case("torch.Size", lambda: (torch.Size([3, 4]), True)),
    case("range", lambda: (range(2, 4), True)),
    case("numpy-int", lambda: (np.int64(4), True)),
    case("empty-accepted-here", lambda: ((), True)),
    case("zero", lambda: (0, True)),
    case("negative", lambda: (-1, True)),
    case("negative-without-affine", lambda: (-1, False)),
    case("float", lambda: (4.0, True)),
    case("float-element", lambda: ((4.0,), True)),
    case("None", lambda: (None, True)),
    case("bool", lambda: (True, True)),
    case("str", lambda: ("ab", True)),
    case("0-dim-tensor", lambda: (torch.tensor(4), True)),
]


@pytest.mark.parametrize("make", SHAPE_MODULE_CASES)
@pytest.mark.parametrize("name", ["LayerNorm", "RMSNorm"])
def test_normalized_shape_module_checks(name, make):
    """bnviz's LayerNorm and RMSNorm constructors against torch's: the same errors, or the same
    stored normalized_shape and parameter shapes."""

    def build(lib):
        shape, affine = make()
        return getattr(lib, name)(shape, elementwise_affine=affine)

    ours = assert_same_outcome(lambda: build(bnviz), lambda: build(nn), name)
    if ours is not None:
        ref = build(nn)
        assert ours.normalized_shape == ref.normalized_shape, f"{ours.normalized_shape} vs {ref.normalized_shape}"
        assert [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in ref.parameters()]


@pytest.mark.parametrize("lib", [nn, bnviz], ids=["torch", "bnviz"])
def test_what_the_modules_store(lib):
    """What the modules store, bnviz's as torch 2.13's."""
    ln = lib.LayerNorm(4, bias=False)
    assert ln.normalized_shape == (4,) and ln.weight.shape == (4,) and ln.bias is None
    ln = lib.LayerNorm([3, 4], elementwise_affine=False, bias=True)
    assert ln.weight is None and ln.bias is None
    rms = lib.RMSNorm(4, elementwise_affine=False)
    assert rms.weight is None and rms.eps is None and rms.normalized_shape == (4,)
    assert lib.RMSNorm([3, 4]).weight.shape == (3, 4)
    gn = lib.GroupNorm(3, 6, bias=False)
    assert gn.weight.shape == (6,) and gn.bias is None
    gn = lib.GroupNorm(-3, 6, affine=False)  # accepted by the constructor, refused by forward
    assert gn.weight is None and gn.bias is None
    inst = lib.InstanceNorm2d(3)
    assert not inst.affine and not inst.track_running_stats and inst.weight is None and inst.running_mean is None


INSTANCE_MODULE_CASES = [
    ("InstanceNorm1d", (3, 5)),
    ("InstanceNorm1d", (2, 3, 5)),
    ("InstanceNorm1d", (3,)),
    ("InstanceNorm1d", (2, 3, 5, 5)),
    ("InstanceNorm1d", (4, 5)),
    ("InstanceNorm1d", (2, 4, 5)),
    ("InstanceNorm1d", (3, 1)),
    ("InstanceNorm2d", (3, 5, 5)),
    ("InstanceNorm2d", (2, 3, 5, 5)),
    ("InstanceNorm2d", (3, 5)),
    ("InstanceNorm2d", (2, 3, 5, 5, 5)),
    ("InstanceNorm2d", (2, 4, 5, 5)),
    ("InstanceNorm2d", (0, 3, 5, 5)),
    ("InstanceNorm3d", (3, 2, 2, 2)),
    ("InstanceNorm3d", (2, 3, 2, 2, 2)),
    ("InstanceNorm3d", (2, 3, 2, 2)),
    ("InstanceNorm3d", (4, 2, 2, 2)),
]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine, track", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize(
    "name, shape", INSTANCE_MODULE_CASES, ids=[f"{n[-2:]}-{'x'.join(map(str, s))}" for n, s in INSTANCE_MODULE_CASES]
)
def test_instance_norm_module_forward_checks(name, shape, affine, track, training):
    """bnviz's InstanceNorm1d/2d/3d forward against torch's: errors, and the num_features warning when
    affine=False — the same text, pointing at the same line of the caller."""

    def forward(lib):
        m = getattr(lib, name)(3, affine=affine, track_running_stats=track).train(training)
        return m(t(*shape))

    assert_same_outcome(lambda: forward(bnviz), lambda: forward(nn), name)
    places = []
    for lib in (bnviz, nn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                forward(lib)
            except (ValueError, RuntimeError, IndexError):
                pass
        places.append([(w.filename, w.lineno) for w in caught if "num_features" in str(w.message)])
    assert places[0] == places[1], f"{name}: warning issued at bnviz {places[0]}, torch {places[1]}"


# ---------------------------------------------------------------------------------------------------------------------
# dtype rules
# ---------------------------------------------------------------------------------------------------------------------

FAMILY_DTYPE_CASES = [
    pytest.param(op, x_dtype, p_dtype, id=f"{op}-{x_dtype}-{p_dtype}".replace("torch.", ""))
    for op in ("layer_norm", "group_norm", "instance_norm")
    for x_dtype in (f16, bf16, f32, f64)
    for p_dtype in (None, x_dtype, f32)
    if not (x_dtype == f64 and p_dtype == f32)  # refused: mixed dtype (CPU)
]


def _family_call(lib, op, x, w, b):
    """``lib`` (torch.nn.functional or bnviz)'s ``op`` on x with γ = w, β = b."""
    if op == "layer_norm":
        return lib.layer_norm(x, (x.shape[-1],), w, b)
    if op == "group_norm":
        return lib.group_norm(x, 1, w, b)
    return lib.instance_norm(x, weight=w, bias=b)


@pytest.mark.parametrize("op, x_dtype, p_dtype", FAMILY_DTYPE_CASES)
def test_family_output_dtype(op, x_dtype, p_dtype):
    """bnviz's layer_norm, group_norm and instance_norm return torch's dtype: the input's."""
    x = torch.randn(2, 3, 3).to(x_dtype)
    w = b = None if p_dtype is None else torch.ones(3, dtype=p_dtype)
    ours, ref = _family_call(bnviz, op, x, w, b), _family_call(F, op, x, w, b)
    assert ours.dtype == ref.dtype == x_dtype, f"bnviz {ours.dtype}, torch {ref.dtype}"


@pytest.mark.parametrize(
    "x_dtype, w_dtype, b_dtype",
    [
        (i64, f32, None),
        (i64, f64, None),
        (torch.bool, torch.int8, f16),
        (bf16, c64, None),
        (f32, i64, None),
        (torch.uint8, i64, None),
    ],
    ids=str,
)
def test_instance_norm_empty_input_output_dtype(x_dtype, w_dtype, b_dtype):
    """An empty input never reaches the kernel: torch returns input * weight[0] + bias[0], promoted as with 0-dim
    tensors — even for integer inputs; bnviz's instance_norm returns the same dtype and shape."""
    x = torch.zeros(2, 0, 4, dtype=x_dtype)
    w = torch.ones(3, dtype=w_dtype)
    b = None if b_dtype is None else torch.ones(3, dtype=b_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "ComplexHalf support is experimental"
        ours, ref = bnviz.instance_norm(x, weight=w, bias=b), F.instance_norm(x, weight=w, bias=b)
    assert (ours.dtype, ours.shape) == (ref.dtype, ref.shape), f"bnviz {ours.dtype}, torch {ref.dtype}"


RMS_DTYPE_CASES = [
    pytest.param(x_dtype, w_dtype, id=f"{x_dtype}-{w_dtype}".replace("torch.", ""))
    for x_dtype in (f16, bf16, f32, f64, c64)
    for w_dtype in (None, x_dtype, f16, bf16, f32, f64)
]


@pytest.mark.parametrize("x_dtype, w_dtype", RMS_DTYPE_CASES)
def test_rms_norm_dtypes_and_warning(x_dtype, w_dtype):
    """bnviz's rms_norm against torch's for every input and weight dtype: the output dtype (always the
    input's: ``rms_norm_dtypes``), the mismatch warning, and the values (bnviz's mean of squares is
    accumulated in float64: within the dtype's tolerance of torch's)."""
    torch.manual_seed(0)
    x = (torch.randn(16, 33) * 3).to(x_dtype)
    w = None if w_dtype is None else (torch.randn(33, dtype=f64) * 2 + 1 / 3).to(w_dtype)
    outcome = []
    for fn in (bnviz.rms_norm, F.rms_norm):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = fn(x, (33,), w)
        issued = [(c.category, str(c.message)) for c in caught if not str(c.message).startswith(COMPUTATION_WARNINGS)]
        outcome.append((y, issued))
    (y, issued), (y_ref, issued_ref) = outcome
    compute, output = C.rms_norm_dtypes(x, w)
    assert y.dtype == y_ref.dtype == output == x_dtype, f"bnviz {y.dtype}, torch {y_ref.dtype}"
    assert compute == (f32 if x_dtype in (f16, bf16) else x_dtype)
    mismatch = w is not None and w_dtype != x_dtype and not x_dtype.is_complex
    expected = [(UserWarning, C.rms_norm_dtype_mismatch_message(x_dtype, w_dtype))] if mismatch else []
    assert issued == issued_ref == expected, f"warnings bnviz {issued}, torch {issued_ref}"
    if x_dtype.is_complex:
        torch.testing.assert_close(y, y_ref)
    else:
        assert_close(y, y_ref, f"rms_norm {x_dtype} weight {w_dtype}")


@pytest.mark.parametrize("x_dtype", [f16, bf16, f32, f64], ids=str)
def test_rms_norm_default_eps_is_the_compute_dtypes(x_dtype):
    """eps=None: finfo(float32).eps for float16/bfloat16/float32 (not finfo(float16)), finfo(float64).eps for
    float64; inputs of 1e-4 make the difference visible."""
    x = torch.full((2, 4), 1e-4).to(x_dtype)
    compute = C.rms_norm_dtypes(x, None)[0]
    eps = C.rms_norm_eps(x, None)
    assert eps == torch.finfo(f64 if x_dtype == f64 else f32).eps
    xc = x.to(compute)
    assert torch.equal((xc * torch.rsqrt(xc.pow(2).mean(-1, keepdim=True) + eps)).to(x_dtype), F.rms_norm(x, (4,)))


@pytest.mark.parametrize(
    "x_dtype, eps, nan",
    [(f16, 1e-8, False), (bf16, 1e-8, False), (f16, 1e-46, True), (f32, 1e-46, True), (f64, 1e-46, False)],
    ids=str,
)
def test_rms_norm_eps_is_rounded_to_the_compute_dtype(x_dtype, eps, nan):
    """On zeros, eps decides between 0 and 0·∞ = NaN: a float16 input keeps eps=1e-8 (float32 arithmetic), a
    float32 one loses 1e-46."""
    x = torch.zeros(2, 4, dtype=x_dtype)
    assert (C.rms_norm_eps(x, eps) == 0.0) == nan
    assert bool(F.rms_norm(x, (4,), eps=eps).isnan().any()) == nan
