"""bnviz never dispatches a torch normalization kernel, in forward, backward or double backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import bnviz


class OpRecorder(TorchDispatchMode):
    """Records the name of every ATen op dispatched while active."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _norm_ops(ops):
    return sorted({op for op in ops if "norm" in op.lower()})


def test_recorder_sees_torch_own_kernel():
    """The guard below can fail: torch's own layer trips it."""
    x = torch.randn(4, 3, requires_grad=True)
    with OpRecorder() as rec:
        F.batch_norm(x, torch.zeros(3), torch.ones(3), training=True).sum().backward()
    assert _norm_ops(rec.ops), f"no norm op recorded for torch itself: {rec.ops}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(
    "cls, shape",
    [
        (bnviz.BatchNorm1d, (4, 3)),
        (bnviz.BatchNorm2d, (2, 3, 4, 4)),
        (bnviz.BatchNorm3d, (2, 3, 2, 2, 2)),
        (bnviz.BatchNorm, (2, 3, 2, 2, 2, 2)),
    ],
    ids=["1d", "2d", "3d", "any-rank"],
)
def test_no_normalization_op_is_dispatched(cls, shape, training, dtype):
    m = cls(3, momentum=None, dtype=torch.float64 if dtype == torch.float64 else None).train(training)
    x = (torch.randn(shape) * 3 + 1).to(dtype).requires_grad_()
    with OpRecorder() as rec:
        y = m(x)
        gx, gw, gb = torch.autograd.grad(y, (x, m.weight, m.bias), torch.randn_like(y), create_graph=True)
        torch.autograd.grad((gx.float().square().sum() + gw.sum() + gb.sum()), (x, m.weight))
    assert rec.ops, "the recorder saw nothing"
    assert not _norm_ops(rec.ops), f"normalization kernels dispatched: {_norm_ops(rec.ops)}"


FAMILY = {  # each member's module and function on the same input; pd: the parameters' dtype
    "LayerNorm": lambda x, w, b, pd: bnviz.LayerNorm(x.shape[-2:], dtype=pd)(x)
    + bnviz.layer_norm(x, x.shape[-1:], torch.ones(5, dtype=pd), torch.zeros(5, dtype=pd)),
    "GroupNorm": lambda x, w, b, pd: bnviz.GroupNorm(1, 3, dtype=pd)(x) + bnviz.group_norm(x, 3, w, b),
    "InstanceNorm": lambda x, w, b, pd: bnviz.InstanceNorm2d(3, affine=True, track_running_stats=True, dtype=pd)(x)
    + bnviz.instance_norm(x, weight=w, bias=b),
    "RMSNorm": lambda x, w, b, pd: bnviz.RMSNorm(x.shape[-1:], dtype=pd)(x) + bnviz.rms_norm(x, x.shape[-2:]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("member", FAMILY)
def test_no_normalization_op_is_dispatched_by_the_family(member, dtype):
    """Every member, forward, backward and double backward: no torch normalization kernel."""
    x = (torch.randn(2, 3, 4, 5) * 3 + 1).to(dtype).requires_grad_()
    w = torch.rand(3, dtype=torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    b = torch.randn(3, dtype=w.dtype).requires_grad_()
    with OpRecorder() as rec:
        y = FAMILY[member](x, w, b, w.dtype)
        (gx,) = torch.autograd.grad(y, (x,), torch.randn_like(y), create_graph=True)
        torch.autograd.grad(gx.float().square().sum(), (x,))
    assert rec.ops, "the recorder saw nothing"
    assert not _norm_ops(rec.ops), f"normalization kernels dispatched: {_norm_ops(rec.ops)}"
