"""bnviz.batch_norm against torch.nn.functional.batch_norm, case by case."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import bnviz
from tests.conftest import DEVICES, assert_close, assert_same_error

SHAPES = {  # rank -> a small shape with C = 3
    2: (6, 3),
    3: (4, 3, 5),
    4: (2, 3, 4, 5),
    5: (2, 3, 2, 3, 4),
    6: (2, 3, 2, 2, 2, 3),
}


def _params(c: int, affine: str, dtype=torch.float32, device="cpu"):
    """affine: "both" (γ and β), "weight" (γ only), "none"."""
    g = torch.Generator().manual_seed(1)
    w = (torch.rand(c, generator=g) + 0.5).to(device, dtype) if affine != "none" else None
    b = torch.randn(c, generator=g).to(device, dtype) if affine == "both" else None
    return w, b


def _input(shape, seed=0, dtype=torch.float32, device="cpu", offset=2.0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    per_channel = torch.linspace(-offset, offset, c).view(1, c, *([1] * (len(shape) - 2)))
    return (torch.randn(shape, generator=g, dtype=torch.float64) * spread + per_channel).to(device, dtype)


def _run_both(x, stats, w, b, training, momentum, eps):
    """One call on each side, each with its own copy of the running statistics."""
    out = []
    for fn in (bnviz.batch_norm, F.batch_norm):
        rm, rv = (None, None) if stats is None else (stats[0].clone(), stats[1].clone())
        out.append((fn(x, rm, rv, w, b, training, momentum, eps), rm, rv))
    return out


FORWARD_CASES = [
    pytest.param(
        rank,
        affine,
        tracked,
        training,
        momentum,
        eps,
        id=f"{rank}d-{affine}-{'stats' if tracked else 'nostats'}-"
        f"{'train' if training else 'eval'}-m{momentum}-eps{eps}",
    )
    for rank, affine, tracked, training, momentum, eps in itertools.product(
        SHAPES, ["both", "weight", "none"], [True, False], [True, False], [0.0, 0.1, 1.0, 0.37], [1e-5, 1e-3]
    )
    if tracked or training  # eval needs running statistics (that error is tested below)
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rank, affine, tracked, training, momentum, eps", FORWARD_CASES)
def test_forward_and_running_stats_match_torch(device, rank, affine, tracked, training, momentum, eps):
    shape = SHAPES[rank]
    x = _input(shape, device=device)
    w, b = _params(shape[1], affine, device=device)
    stats = (torch.randn(3, device=device), torch.rand(3, device=device) + 0.5) if tracked else None
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(x, stats, w, b, training, momentum, eps)
    assert_close(y, y_ref, "output")
    assert_close(rm, rm_ref, "running_mean")
    assert_close(rv, rv_ref, "running_var")


DTYPE_CASES = [
    # (input dtype, parameter/buffer dtype)
    (torch.float32, torch.float32),
    (torch.float64, torch.float64),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype, pdtype", DTYPE_CASES, ids=[f"{str(a)[6:]}-{str(b)[6:]}" for a, b in DTYPE_CASES])
def test_dtypes_follow_torch(device, dtype, pdtype, training):
    x = _input((4, 3, 6, 5), dtype=dtype, device=device)
    w, b = _params(3, "both", dtype=pdtype, device=device)
    stats = (torch.randn(3, device=device, dtype=pdtype), torch.rand(3, device=device, dtype=pdtype) + 0.5)
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(x, stats, w, b, training, 0.1, 1e-5)
    assert y.dtype == y_ref.dtype == dtype
    assert_close(y, y_ref, "output")
    assert_close(rm, rm_ref, "running_mean")
    assert_close(rv, rv_ref, "running_var")


LAYOUTS = {
    "channels_last": lambda: _input((3, 4, 5, 6)).to(memory_format=torch.channels_last),
    "channels_last_3d": lambda: _input((2, 4, 3, 5, 6)).to(memory_format=torch.channels_last_3d),
    "transposed_2d": lambda: _input((4, 7)).t(),
    "sliced": lambda: _input((6, 4, 8, 6))[::2, :, 1:7:2, :],
    "permuted_spatial": lambda: _input((3, 4, 5, 6)).permute(0, 1, 3, 2),
    "expanded": lambda: _input((1, 4, 5)).expand(3, 4, 5),
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_layouts_values_and_memory_format(layout, training):
    x = LAYOUTS[layout]()
    c = x.size(1)
    w, b = torch.rand(c) + 0.5, torch.randn(c)
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(x, (torch.zeros(c), torch.ones(c)), w, b, training, 0.1, 1e-5)
    assert_close(y, y_ref, "output")
    assert_close(rm, rm_ref, "running_mean")
    assert_close(rv, rv_ref, "running_var")
    for fmt in (torch.contiguous_format, torch.channels_last, torch.channels_last_3d):
        if (x.dim(), fmt) in ((4, torch.channels_last_3d), (5, torch.channels_last)) or (
            x.dim() < 4 and fmt != torch.contiguous_format
        ):
            continue
        assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), (
            f"{fmt}: bnviz strides {y.stride()} vs torch {y_ref.stride()}"
        )


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4, 4), (2, 3, 0), (2, 0, 4), (0, 5), (0, 0)], ids=str)
def test_zero_size_inputs(shape, training):
    x = torch.randn(shape)
    c = 3  # running statistics of 3 channels, whatever C is: torch does not check empty inputs
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(
        x, (torch.zeros(c), torch.ones(c)), None, None, training, 0.1, 1e-5
    )
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    assert_close(rm, rm_ref, "running_mean (unchanged)")
    assert_close(rv, rv_ref, "running_var (unchanged)")


@pytest.mark.parametrize(
    "eps, training", [(1e-5, True), (1e-5, False), (0.0, False)], ids=["eps1e-5-train", "eps1e-5-eval", "eps0-eval"]
)  # eps=0 in training is an error, in the errors table
def test_constant_channels(eps, training):
    x = torch.full((4, 3, 5), 2.5)
    w, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -1.0, 0.0])
    stats = (torch.full((3,), 2.5), torch.zeros(3))
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(x, stats, w, b, training, 0.1, eps)
    assert_close(y, y_ref, "output")
    assert_close(rm, rm_ref, "running_mean")
    assert_close(rv, rv_ref, "running_var")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "mean, spread, shape",
    [(1e4, 1e-2, (256, 4, 64)), (1e6, 1.0, (128, 3, 32, 32)), (-3e5, 0.5, (4096, 8)), (1e3, 1e-3, (64, 2, 16, 16))],
    ids=["1e4±1e-2", "1e6±1", "-3e5±0.5", "1e3±1e-3"],
)
def test_large_mean_statistics_as_accurate_as_torch(device, mean, spread, shape):
    """Against float64 truth, bnviz's statistics and output are no further off than torch's."""
    x = _input(shape, device=device, offset=0.0, spread=spread, dtype=torch.float64) + mean
    x32 = x.float()
    truth = x32.double()  # the float32 values, exactly
    dims = [0, *range(2, x.dim())]
    n = x.numel() // x.size(1)
    var_t, mean_t = torch.var_mean(truth, dims, correction=0)
    y_t = (truth - mean_t.view(1, -1, *[1] * (x.dim() - 2))) / (var_t + 1e-5).sqrt().view(1, -1, *[1] * (x.dim() - 2))
    zeros = torch.zeros(x.size(1), device=device)
    ones = torch.ones(x.size(1), device=device)
    (y, rm, rv), (y_ref, rm_ref, rv_ref) = _run_both(x32, (zeros, ones), None, None, True, 1.0, 1e-5)
    for what, got, ref, truth_v in [
        ("running_mean", rm, rm_ref, mean_t),
        ("running_var (unbiased)", rv, rv_ref, var_t * n / (n - 1)),
        ("output", y, y_ref, y_t),
    ]:
        err = (got.double() - truth_v).abs().max().item()
        err_torch = (ref.double() - truth_v).abs().max().item()
        ulp = torch.finfo(torch.float32).eps * truth_v.abs().max().item()
        assert err <= 2 * err_torch + 2 * ulp, f"{what}: bnviz error {err:.3e} vs torch error {err_torch:.3e}"


def _errors_table():
    z, o = torch.zeros, torch.ones
    x = torch.randn(4, 3)
    return {
        "batch_of_one": lambda f: f(torch.randn(1, 3), z(3), o(3), training=True),
        "batch_of_one_spatial_1": lambda f: f(torch.randn(1, 3, 1, 1), z(3), o(3), training=True),
        "eps_zero_training": lambda f: f(x, z(3), o(3), training=True, eps=0.0),
        "eps_negative_eval": lambda f: f(x, z(3), o(3), training=False, eps=-1e-3),
        "batch_of_one_before_eps": lambda f: f(torch.randn(1, 3), z(3), o(3), training=True, eps=0.0),
        "wrong_channels_running_mean": lambda f: f(torch.randn(4, 5), z(3), o(3), training=True),
        "wrong_channels_running_var": lambda f: f(x, z(3), o(5), training=True),
        "wrong_channels_weight": lambda f: f(x, z(3), o(3), o(5), training=True),
        "wrong_channels_bias": lambda f: f(x, z(3), o(3), None, o(2), training=False),
        "wrong_channels_no_stats": lambda f: f(x, None, None, o(4), training=True),
        "eval_without_stats": lambda f: f(x, None, None, training=False),
        "eval_without_running_var": lambda f: f(x, z(3), None, training=False),
        "train_mean_without_var": lambda f: f(x, z(3), None, training=True),
        "rank1_training": lambda f: f(torch.randn(3), None, None, training=True),
        "rank1_with_weight": lambda f: f(torch.randn(3), None, None, o(3), training=True),
        "rank1_eval": lambda f: f(torch.randn(3), z(3), o(3), training=False),
        "rank0_training": lambda f: f(torch.tensor(1.0), None, None, training=True),
        "rank0_eval": lambda f: f(torch.tensor(1.0), None, None, training=False),
        "long_input": lambda f: f(torch.ones(4, 3, dtype=torch.long), z(3), o(3), training=True),
        "int_input_no_stats": lambda f: f(torch.ones(4, 3, dtype=torch.int32), None, None, training=True),
        "bool_input": lambda f: f(torch.ones(4, 3, dtype=torch.bool), None, None, training=True),
        "complex_input": lambda f: f(torch.ones(4, 3, dtype=torch.complex64), None, None, training=True),
        "size_check_before_dtype": lambda f: f(torch.ones(4, 3, dtype=torch.long), z(5), o(5), training=True),
        "float_input_double_stats": lambda f: f(x, z(3).double(), o(3).double(), training=True),
        "double_input_float_stats": lambda f: f(x.double(), z(3), o(3), training=True),
        "float_input_half_stats": lambda f: f(x, z(3).half(), o(3).half(), training=True),
        "double_input_float_weight": lambda f: f(x.double(), z(3).double(), o(3).double(), o(3), training=True),
        "float_weight_double_bias": lambda f: f(x, None, None, o(3), z(3).double(), training=True),
        "half_input_mixed_params": lambda f: f(x.half(), z(3), o(3), o(3).half(), training=True),
        "bf16_input_half_stats": lambda f: f(x.bfloat16(), z(3).half(), o(3).half(), training=True),
        "eval_mixed_dtypes": lambda f: f(x, z(3).double(), o(3).double(), training=False),
        "integer_running_stats": lambda f: f(x, z(3, dtype=torch.long), o(3, dtype=torch.long), training=True),
        "running_mean_requires_grad": lambda f: f(x, z(3).requires_grad_(), o(3), training=True),
        "running_var_requires_grad_eval": lambda f: f(x, z(3), o(3).requires_grad_(), training=False),
        "requires_grad_after_size_check": lambda f: f(torch.randn(4, 5), z(3).requires_grad_(), o(3), training=True),
        "requires_grad_before_dtype_check": lambda f: f(x.long(), z(3).requires_grad_(), o(3), training=True),
        "zero_channels_weight_eval": lambda f: f(torch.randn(5, 0), z(0), o(0), o(0), training=False),
        "zero_channels_bias_train": lambda f: f(torch.randn(5, 0, 2), None, None, None, z(0), training=True),
        "empty_batch_zero_channels_weight": lambda f: f(torch.randn(0, 0, 2, 2), None, None, o(0), training=False),
    }


@pytest.mark.parametrize("case", list(_errors_table()))
def test_error_type_and_message_match_torch(case):
    call = _errors_table()[case]
    assert_same_error(lambda: call(bnviz.batch_norm), lambda: call(F.batch_norm), case)


def test_running_stats_with_requires_grad_are_fine_under_no_grad():
    x = _input((4, 3))
    with torch.no_grad():
        y = bnviz.batch_norm(x, torch.zeros(3, requires_grad=True), torch.ones(3, requires_grad=True))
        y_ref = F.batch_norm(x, torch.zeros(3, requires_grad=True), torch.ones(3, requires_grad=True))
    assert_close(y, y_ref, "output")


def test_momentum_as_tensor_equals_float():
    x = _input((8, 3, 4))
    rm1, rv1, rm2, rv2 = torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)
    bnviz.batch_norm(x, rm1, rv1, training=True, momentum=1 / 3)
    bnviz.batch_norm(x, rm2, rv2, training=True, momentum=torch.tensor(1 / 3, dtype=torch.float64))
    assert torch.equal(rm1, rm2) and torch.equal(rv1, rv2), f"{rm1} {rm2} {rv1} {rv2}"


def test_unbiased_variance_is_stored_and_biased_normalizes():
    """The Bessel factor n/(n−1): what the app's "which axes are reduced" panel explains."""
    x = _input((5, 2, 3))
    rm, rv = torch.zeros(2), torch.ones(2)
    y = bnviz.batch_norm(x, rm, rv, training=True, momentum=1.0, eps=0.0 + 1e-12)
    n = 15
    var_b = x.var(dim=(0, 2), correction=0)
    assert_close(rv, var_b * n / (n - 1), "running_var = unbiased")
    assert_close(y.var(dim=(0, 2), correction=0), torch.ones(2), "output variance = 1 (biased)")
    assert math.isclose(n / (n - 1), 15 / 14)


CHUNKED_LAYOUTS = {
    "contiguous-4d": lambda: _input((6, 3, 5, 4)),
    "channels_last": lambda: _input((5, 3, 4, 6)).to(memory_format=torch.channels_last),
    "2d": lambda: _input((37, 3)),
    "features-last-3d": lambda: _input((4, 9, 3)).transpose(1, 2),
    "sliced": lambda: _input((8, 3, 6, 6))[::2, :, ::2],
}


@pytest.mark.parametrize("chunk", [1, 7, 64], ids=lambda c: f"chunk{c}")
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", CHUNKED_LAYOUTS)
def test_chunked_passes_match_torch(monkeypatch, layout, training, chunk):
    """Big inputs are walked in chunks; force many (and ragged) chunks on small ones."""
    monkeypatch.setattr(bnviz.autograd, "CHUNK", chunk)
    results = []
    for fn in (bnviz.batch_norm, F.batch_norm):
        x = CHUNKED_LAYOUTS[layout]().detach().requires_grad_()
        w = torch.linspace(0.5, 1.5, 3, requires_grad=True)
        b = torch.linspace(-1, 1, 3, requires_grad=True)
        rm, rv = torch.zeros(3), torch.ones(3) * 2
        y = fn(x, rm, rv, w, b, training, 0.3, 1e-5)
        upstream = torch.linspace(-2, 2, y.numel()).view(y.shape)
        results.append((y, rm, rv, *torch.autograd.grad(y, (x, w, b), upstream)))
    names = ["output", "running_mean", "running_var", "grad input", "grad weight", "grad bias"]
    for name, a, e in zip(names, *results, strict=True):
        assert_close(a, e, f"{layout} {name}", scale=10.0 if name.startswith("grad ") else 1.0)
    assert results[0][0].stride() == results[1][0].stride(), "output layout"
