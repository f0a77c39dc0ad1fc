"""Gradients: closed-form backward and double backward, against torch and finite differences."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck, gradgradcheck

import bnviz
from tests.conftest import DEVICES, assert_close

GRAD_SHAPES = [(5, 3), (3, 2, 4), (2, 3, 2, 3), (2, 2, 2, 2, 3)]


def _args(shape, affine, training, tracked, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(len(shape))
    c = shape[1]
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).to(device, dtype).requires_grad_()
    w = (
        (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(device, dtype).requires_grad_()
        if affine != "none"
        else None
    )
    b = (
        torch.randn(c, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()
        if affine == "both"
        else None
    )
    stats = None
    if tracked or not training:
        stats = (
            torch.randn(c, generator=g, dtype=torch.float64).to(device, dtype),
            (torch.rand(c, generator=g, dtype=torch.float64) + 0.5).to(device, dtype),
        )
    return x, w, b, stats


CHECK_CASES = [
    pytest.param(
        shape,
        affine,
        training,
        tracked,
        id=f"{len(shape)}d-{affine}-{'train' if training else 'eval'}-{'stats' if tracked else 'nostats'}",
    )
    for shape in GRAD_SHAPES
    for affine in ("both", "weight", "none")
    for training in (True, False)
    for tracked in (True, False)
    if tracked or training
]


@pytest.mark.parametrize("shape, affine, training, tracked", CHECK_CASES)
def test_gradcheck_and_gradgradcheck(shape, affine, training, tracked):
    x, w, b, stats = _args(shape, affine, training, tracked)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def f(*ts):
        it = iter(ts)
        xx = next(it)
        ww = next(it) if w is not None else None
        bb = next(it) if b is not None else None
        rm, rv = (None, None) if stats is None else (stats[0].clone(), stats[1].clone())
        return bnviz.batch_norm(xx, rm, rv, ww, bb, training, 0.1, 1e-5)

    assert gradcheck(f, inputs)
    assert gradgradcheck(f, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", GRAD_SHAPES, ids=lambda s: f"{len(s)}d")
def test_double_backward_values_match_torch(device, shape, training):
    """Second derivatives: grad of ‖∂L/∂x‖² with respect to x, γ and β, compared with torch's."""
    results = []
    for fn in (bnviz.batch_norm, F.batch_norm):
        x, w, b, stats = _args(shape, "both", training, True, device=device)
        rm, rv = stats[0].clone(), stats[1].clone()
        y = fn(x, rm, rv, w, b, training, 0.1, 1e-5)
        upstream = torch.linspace(-1, 1, y.numel(), dtype=y.dtype, device=device).view_as(y)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), upstream, create_graph=True)
        loss = gx.square().sum() + (gw * gw).sum() + gb.sum()
        results.append(torch.autograd.grad(loss, (x, w, b), allow_unused=True, materialize_grads=True))
    for name, a, e in zip(("d2/dx", "d2/dweight", "d2/dbias"), *results, strict=True):
        assert_close(a, e, name, scale=10.0)


DTYPES = [
    (torch.float32, torch.float32),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.float16, torch.float16),
    (torch.float64, torch.float64),
]


def _grads(fn, device, dtype, pdtype, training, layout, upcast=False):
    """Gradients of x, γ, β for one set-up; ``upcast`` reruns the same rounded values in float64."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 3, 5, 6, generator=g) * 2 + 1
    if layout == "channels_last":
        base = base.to(memory_format=torch.channels_last)
    elif layout == "transposed":
        base = base.flatten(2).transpose(0, 2).contiguous().transpose(0, 2)  # (4, 3, 30), non-contiguous
    cast = (lambda t, dt: t.to(device, dt).double()) if upcast else (lambda t, dt: t.to(device, dt))
    x = cast(base, dtype).requires_grad_()
    w = cast(torch.rand(3, generator=g) + 0.5, pdtype).requires_grad_()
    b = cast(torch.randn(3, generator=g), pdtype).requires_grad_()
    rm, rv = cast(torch.randn(3, generator=g), pdtype), cast(torch.rand(3, generator=g) + 0.5, pdtype)
    y = fn(x, rm, rv, w, b, training, 0.1, 1e-5)
    upstream = cast(torch.randn(y.shape, generator=g), dtype)
    return torch.autograd.grad(y, (x, w, b), upstream)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype, pdtype", DTYPES, ids=[f"{str(a)[6:]}-{str(b)[6:]}" for a, b in DTYPES])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_gradients_match_torch(device, dtype, pdtype, training, layout):
    """Within tolerance of torch, or — where torch accumulates in float16 — closer to the truth."""
    ours = _grads(bnviz.batch_norm, device, dtype, pdtype, training, layout)
    ref = _grads(F.batch_norm, device, dtype, pdtype, training, layout)
    truth = _grads(F.batch_norm, device, dtype, pdtype, training, layout, upcast=True)
    n = ours[0].numel() / 3
    for name, a, e, t in zip(("grad input", "grad weight", "grad bias"), ours, ref, truth, strict=True):
        assert a.dtype == e.dtype, f"{name}: {a.dtype} vs {e.dtype}"
        try:
            assert_close(a, e, name, dtype=dtype, scale=1.0 if name == "grad input" else math.sqrt(n))
        except AssertionError as far_from_torch:
            err, err_ref = (a.double() - t).abs().max().item(), (e.double() - t).abs().max().item()
            assert err <= err_ref, (
                f"{far_from_torch}\n  and less accurate: bnviz error {err:.3e}, torch error {err_ref:.3e}"
            )


@pytest.mark.parametrize("shape", [(0, 3), (0, 3, 4), (2, 3, 0)], ids=str)
def test_zero_size_gradients(shape):
    grads = []
    for fn in (bnviz.batch_norm, F.batch_norm):
        x = torch.randn(shape, requires_grad=True)
        w, b = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
        y = fn(x, None, None, w, b, True)
        grads.append(torch.autograd.grad(y, (x, w, b), torch.ones_like(y)))
    for name, a, e in zip(("grad input", "grad weight", "grad bias"), *grads, strict=True):
        assert_close(a, e, name)


def test_only_requested_gradients_are_computed():
    x = torch.randn(4, 3)
    w = torch.ones(3, requires_grad=True)
    y = bnviz.batch_norm(x, None, None, w, None, True)
    (gw,) = torch.autograd.grad(y.square().sum(), (w,))
    assert gw.shape == (3,) and x.grad is None
