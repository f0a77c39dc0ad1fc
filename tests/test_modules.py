"""bnviz.BatchNorm* against torch.nn.BatchNorm*d over train → eval → train sequences."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import bnviz
from bnviz.explorer.layer.engine import TorchBatchNorm
from tests.conftest import DEVICES, assert_close, assert_same_error

TORCH_CLASS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
BNVIZ_CLASS = {1: bnviz.BatchNorm1d, 2: bnviz.BatchNorm2d, 3: bnviz.BatchNorm3d}
SHAPES = {2: (6, 3), 3: (4, 3, 5), 4: (2, 3, 4, 5), 5: (2, 3, 2, 3, 4), 6: (2, 3, 2, 2, 2, 3)}


def make_pair(rank: int, universal: bool, device="cpu", dtype=None, **kwargs):
    """(bnviz module, torch module) with the same initial state.

    The universal bnviz.BatchNorm is compared with torch's own _BatchNorm policy driving
    F.batch_norm for any rank (bnviz.explorer.layer.engine.TorchBatchNorm adds only the rank-≥-2 check).
    """
    c = SHAPES[rank][1]
    k = {2: 1, 3: 1, 4: 2, 5: 3}.get(rank)
    ours_cls, ref_cls = (bnviz.BatchNorm, TorchBatchNorm) if universal else (BNVIZ_CLASS[k], TORCH_CLASS[k])
    ours = ours_cls(c, device=device, dtype=dtype, **kwargs)
    ref = ref_cls(c, device=device, dtype=dtype, **kwargs)
    if ours.weight is not None:  # non-trivial γ, β so a swapped formula cannot pass
        with torch.no_grad():
            ours.weight.copy_(torch.linspace(0.5, 2.0, c))
            ref.weight.copy_(torch.linspace(0.5, 2.0, c))
            if ours.bias is not None:
                ours.bias.copy_(torch.linspace(-1.0, 1.0, c))
                ref.bias.copy_(torch.linspace(-1.0, 1.0, c))
    return ours, ref


AFFINE = {"affine": dict(affine=True), "affine-nobias": dict(affine=True, bias=False), "noaffine": dict(affine=False)}
SEQ_CASES = [
    pytest.param(
        rank,
        universal,
        aff,
        track,
        momentum,
        eps,
        id=f"{'BatchNorm' if universal else 'BatchNormXd'}-{rank}d-{aff}-"
        f"{'track' if track else 'notrack'}-m{momentum}-eps{eps}",
    )
    for rank, universal, aff, track, momentum, eps in itertools.product(
        SHAPES, [False, True], AFFINE, [True, False], [0.0, 0.1, 1.0, None, 0.37], [1e-5, 1e-3]
    )
    if universal or rank <= 5
]
SCHEDULE = ["train", "train", "train", "eval", "eval", "train"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rank, universal, aff, track, momentum, eps", SEQ_CASES)
def test_train_eval_train_sequence(device, rank, universal, aff, track, momentum, eps):
    """Outputs, all three gradients, running statistics and num_batches_tracked at every step."""
    ours, ref = make_pair(rank, universal, device, momentum=momentum, eps=eps, track_running_stats=track, **AFFINE[aff])
    g = torch.Generator().manual_seed(rank)
    for step, mode in enumerate(SCHEDULE):
        ours.train(mode == "train")
        ref.train(mode == "train")
        x = (torch.randn(SHAPES[rank], generator=g) * 2 + 1).to(device).requires_grad_()
        upstream = torch.randn(SHAPES[rank], generator=g).to(device)
        y, y_ref = ours(x), ref(x)
        at = f"step {step} ({mode})"
        assert_close(y, y_ref, f"{at} output")
        params = [p for p in (ours.weight, ours.bias) if p is not None]
        params_ref = [p for p in (ref.weight, ref.bias) if p is not None]
        grads = torch.autograd.grad(y, [x, *params], upstream)
        grads_ref = torch.autograd.grad(y_ref, [x, *params_ref], upstream)
        for name, a, b in zip(["grad input", "grad weight", "grad bias"], grads, grads_ref, strict=False):
            assert_close(a, b, f"{at} {name}", scale=math.sqrt(x.numel()))
        assert_close(ours.running_mean, ref.running_mean, f"{at} running_mean")
        assert_close(ours.running_var, ref.running_var, f"{at} running_var")
        assert_close(ours.num_batches_tracked, ref.num_batches_tracked, f"{at} num_batches_tracked")


@pytest.mark.parametrize("k, rank", [(k, r) for k in (1, 2, 3) for r in range(0, 7)], ids=lambda v: str(v))
def test_input_rank_errors_match_torch(k, rank):
    x = torch.randn((2, 3, 2, 2, 2, 2)[:rank])
    ours, ref = BNVIZ_CLASS[k](3), TORCH_CLASS[k](3)
    expected_ok = rank in {1: (2, 3), 2: (4,), 3: (5,)}[k]
    if expected_ok:
        assert_close(ours(x), ref(x), f"BatchNorm{k}d on {rank}D")
    else:
        assert_same_error(lambda: ours(x), lambda: ref(x), f"BatchNorm{k}d on {rank}D")


@pytest.mark.parametrize("rank", [0, 1])
def test_universal_batchnorm_rejects_rank_below_two(rank):
    x = torch.randn((3,)[:rank])
    with pytest.raises(ValueError, match=f"expected at least 2D input \\(got {rank}D input\\)"):
        bnviz.BatchNorm(3)(x)


MODULE_ERRORS = {
    "batch_of_one": (1, dict(), lambda: torch.randn(1, 3)),
    "batch_of_one_length_one": (1, dict(), lambda: torch.randn(1, 3, 1)),
    "batch_of_one_2d": (2, dict(), lambda: torch.randn(1, 3, 1, 1)),
    "eps_zero": (1, dict(eps=0.0), lambda: torch.randn(4, 3)),
    "eps_negative": (2, dict(eps=-1.0), lambda: torch.randn(2, 3, 2, 2)),
    "wrong_channels": (2, dict(), lambda: torch.randn(2, 4, 3, 3)),
    "wrong_channels_untracked": (1, dict(track_running_stats=False), lambda: torch.randn(4, 5)),
    "integer_input": (1, dict(), lambda: torch.ones(4, 3, dtype=torch.long)),
    "double_input_float_module": (1, dict(), lambda: torch.randn(4, 3, dtype=torch.float64)),
}


@pytest.mark.parametrize("case", MODULE_ERRORS)
def test_module_errors_and_state_after_them_match_torch(case):
    k, kwargs, make_x = MODULE_ERRORS[case]
    ours, ref = BNVIZ_CLASS[k](3, **kwargs), TORCH_CLASS[k](3, **kwargs)
    x = make_x()
    assert_same_error(lambda: ours(x), lambda: ref(x), case)
    # torch counts the batch before the functional call raises: so must bnviz
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert_close(getattr(ours, name), getattr(ref, name), f"{case}: {name} after the error")


def test_batch_of_one_is_fine_in_eval():
    ours, ref = bnviz.BatchNorm1d(3).eval(), nn.BatchNorm1d(3).eval()
    x = torch.randn(1, 3)
    assert_close(ours(x), ref(x), "eval with a batch of one")


@pytest.mark.parametrize("direction", ["torch_to_bnviz", "bnviz_to_torch"])
@pytest.mark.parametrize(
    "k, kwargs",
    [(1, {}), (2, {"affine": False}), (3, {"bias": False}), (2, {"track_running_stats": False})],
    ids=["1d", "2d-noaffine", "3d-nobias", "2d-notrack"],
)
def test_state_dict_round_trip(direction, k, kwargs):
    src_cls, dst_cls = (
        (TORCH_CLASS[k], BNVIZ_CLASS[k]) if direction == "torch_to_bnviz" else (BNVIZ_CLASS[k], TORCH_CLASS[k])
    )
    src = src_cls(3, **kwargs)
    x = torch.randn((4, 3, 2, 2, 2)[: 2 + k])
    for _ in range(3):
        src(x * 2 + 1)
    if src.weight is not None:
        with torch.no_grad():
            src.weight.mul_(1.5)
    state = src.state_dict()
    dst = dst_cls(3, **kwargs)
    dst.load_state_dict(state)  # strict: same keys both ways
    assert list(dst.state_dict()) == list(state)
    for key, value in state.items():
        assert_close(dst.state_dict()[key], value, key)
    src.eval()
    dst.eval()
    assert_close(dst(x), src(x), "eval output after loading")


def test_state_dict_before_version_2_loads_without_num_batches_tracked():
    state = nn.BatchNorm1d(3).state_dict()
    del state["num_batches_tracked"]
    state._metadata[""]["version"] = 1
    for cls in (bnviz.BatchNorm1d, nn.BatchNorm1d):
        m = cls(3)
        m.load_state_dict(state)
        assert m.num_batches_tracked.item() == 0


def test_momentum_none_is_the_cumulative_average():
    m = bnviz.BatchNorm1d(2, momentum=None)
    batches = [torch.randn(8, 2) * (i + 1) + i for i in range(5)]
    for b in batches:
        m(b)
    expected = torch.stack([b.mean(0) for b in batches]).mean(0)
    assert_close(m.running_mean, expected, "cumulative running_mean")
    assert m.num_batches_tracked.item() == 5


def test_no_grad_does_not_switch_to_running_statistics():
    """Only .eval() does: under no_grad a module in train mode still normalizes with the batch."""
    ours, ref = bnviz.BatchNorm1d(3), nn.BatchNorm1d(3)
    x = torch.randn(8, 3) * 4 + 2
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
    assert_close(y, y_ref, "output under no_grad")
    assert_close(ours.running_mean, ref.running_mean, "running_mean moved under no_grad")
    assert ours.num_batches_tracked.item() == 1


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"affine": False, "momentum": None}, {"bias": False, "track_running_stats": False}],
    ids=["default", "noaffine-cma", "nobias-notrack"],
)
def test_repr_parameters_and_buffers_match_torch(k, kwargs):
    ours, ref = BNVIZ_CLASS[k](5, **kwargs), TORCH_CLASS[k](5, **kwargs)
    assert ours.extra_repr() == ref.extra_repr()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_factory_dtype_and_device(device, dtype):
    ours, ref = bnviz.BatchNorm2d(3, device=device, dtype=dtype), nn.BatchNorm2d(3, device=device, dtype=dtype)
    for (name, a), (_, b) in zip(ours.state_dict().items(), ref.state_dict().items(), strict=True):
        assert (a.dtype, a.device) == (b.dtype, b.device), name
    x = torch.randn(4, 3, 5, 5, device=device).to(dtype)
    assert_close(ours(x), ref(x), "output")
    assert_close(ours.running_var, ref.running_var, "running_var")


def test_reset_parameters_restores_defaults():
    m = bnviz.BatchNorm1d(3)
    m(torch.randn(5, 3))
    with torch.no_grad():
        m.weight.mul_(3)
    m.reset_parameters()
    assert torch.equal(m.running_mean, torch.zeros(3)) and torch.equal(m.running_var, torch.ones(3))
    assert m.num_batches_tracked.item() == 0 and torch.equal(m.weight, torch.ones(3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("momentum", [0.1, None])
def test_no_host_synchronisation_on_cuda(momentum):
    """Forward and backward, train and eval, never wait for the GPU (no .item(), no value branches)."""
    m = bnviz.BatchNorm2d(8, momentum=momentum, device="cuda")
    x = torch.randn(4, 8, 16, 16, device="cuda", requires_grad=True)
    g = torch.randn_like(x)
    m(x)  # warm-up outside the guard
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for mode in (True, False):
            m.train(mode)
            torch.autograd.grad(m(x), [x, m.weight, m.bias], g)
    finally:
        torch.cuda.set_sync_debug_mode("default")
