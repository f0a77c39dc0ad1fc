"""Folding (fuse_conv_bn_eval, fuse_linear_bn_eval, fold_batch_norms) against torch's helpers and the
unfolded pair; freezing (FrozenBatchNorm, freeze_batch_norm) through a fine-tuning loop."""

from __future__ import annotations

import ast
import copy
import itertools
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn.utils import fusion

import bnviz
from bnviz.fold import FrozenBatchNorm
from tests.conftest import assert_close, assert_same_error
from tests.test_no_torch_norm import OpRecorder, _norm_ops

with warnings.catch_warnings():  # its mkldnn helpers use the deprecated torch.jit.script_method
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch.fx.experimental.optimization import fuse as torch_fx_fuse

CONVS = {
    "Conv1d": (nn.Conv1d, 1, False),
    "Conv2d": (nn.Conv2d, 2, False),
    "Conv3d": (nn.Conv3d, 3, False),
    "ConvTranspose1d": (nn.ConvTranspose1d, 1, True),
    "ConvTranspose2d": (nn.ConvTranspose2d, 2, True),
    "ConvTranspose3d": (nn.ConvTranspose3d, 3, True),
}
SPATIAL = {1: (9,), 2: (6, 5), 3: (4, 5, 3)}
TORCH_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
BNVIZ_BN = {1: bnviz.BatchNorm1d, 2: bnviz.BatchNorm2d, 3: bnviz.BatchNorm3d}
BN_SOURCES = {"torch": TORCH_BN, "bnviz": BNVIZ_BN}
VARIANTS = {
    "plain": dict(kernel_size=3),
    "stride2-pad1": dict(kernel_size=3, stride=2, padding=1),
    "dilation2-pad2": dict(kernel_size=2, dilation=2, padding=2),
}
DTYPES = {"float32": torch.float32, "float64": torch.float64}
C_IN, C_OUT = 4, 6


def trained_bn(bn: nn.Module, shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """``bn`` with non-trivial γ, β and running statistics (three training batches), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    dtype = bn.running_mean.dtype if bn.running_mean is not None else torch.float32
    with torch.no_grad():
        if bn.weight is not None:
            bn.weight.copy_(torch.linspace(0.5, 2.0, c))
        if bn.bias is not None:
            bn.bias.copy_(torch.linspace(-1.0, 1.0, c))
        bn.train()
        offsets = torch.linspace(-3.0, 3.0, c, dtype=dtype).view(1, c, *([1] * (len(shape) - 2)))
        scales = torch.linspace(0.2, 4.0, c, dtype=dtype).view(1, c, *([1] * (len(shape) - 2)))
        for _ in range(3):
            bn(torch.randn(shape, generator=g, dtype=dtype) * scales + offsets)
    return bn.eval()


def snapshot(*modules: nn.Module) -> list:
    """Every parameter and buffer (cloned) and every training flag, to check nothing changed."""
    return [({k: v.clone() for k, v in m.state_dict().items()}, [s.training for s in m.modules()]) for m in modules]


def assert_untouched(before: list, *modules: nn.Module) -> None:
    for (state, flags), m in zip(before, modules, strict=True):
        now = m.state_dict()
        assert state.keys() == now.keys(), f"state-dict keys changed: {sorted(state)} → {sorted(now)}"
        for k, v in state.items():
            assert torch.equal(v, now[k]), f"{k} changed: before={v} after={now[k]}"
        assert flags == [s.training for s in m.modules()], "training flags changed"


def assert_equal(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Bit for bit, with both values on failure."""
    assert actual.dtype == expected.dtype, f"{what}: dtype bnviz={actual.dtype} torch={expected.dtype}"
    assert torch.equal(actual, expected), (
        f"{what}: max|Δ|={(actual.double() - expected.double()).abs().max().item():.3e}\n"
        f"  bnviz={actual.flatten()[:6].tolist()}\n  torch={expected.flatten()[:6].tolist()}"
    )


# ---------------------------------------------------------------------------------------------
# fuse_conv_bn_eval
# ---------------------------------------------------------------------------------------------


def make_conv_pair(kind, bias, affine, groups, variant, dtype, source, seed=0):
    conv_cls, rank, transposed = CONVS[kind]
    torch.manual_seed(seed)
    conv = conv_cls(C_IN, C_OUT, groups=groups, bias=bias, dtype=dtype, **VARIANTS[variant]).eval()
    x = torch.randn(3, C_IN, *SPATIAL[rank], dtype=dtype)
    with torch.no_grad():
        out_shape = conv(x).shape
    bn = trained_bn(BN_SOURCES[source][rank](C_OUT, affine=affine, dtype=dtype), out_shape, seed)
    return conv, bn, x, transposed


CONV_CASES = [
    pytest.param(
        *case,
        id="-".join(
            [case[0], "bias" if case[1] else "nobias", "affine" if case[2] else "noaffine", f"g{case[3]}", *case[4:]]
        ),
    )
    for case in itertools.product(CONVS, [True, False], [True, False], [1, 2], VARIANTS, DTYPES, BN_SOURCES)
]


@pytest.mark.parametrize("kind, bias, affine, groups, variant, dtype, source", CONV_CASES)
def test_fuse_conv_bn_eval_matches_torch_and_the_unfused_pair(kind, bias, affine, groups, variant, dtype, source):
    conv, bn, x, transposed = make_conv_pair(kind, bias, affine, groups, variant, DTYPES[dtype], source)
    before = snapshot(conv, bn)
    fused = bnviz.fuse_conv_bn_eval(conv, bn, transpose=transposed)
    assert_untouched(before, conv, bn)
    assert type(fused) is type(conv) and fused is not conv and fused.weight is not conv.weight
    with torch.no_grad():
        y, unfused = fused(x), bn(conv(x))
    fan_in = conv.weight[0].numel()
    assert_close(y, unfused, "fused conv vs bn(conv(x))", scale=math.sqrt(fan_in))
    if transposed and groups > 1:
        return  # torch cannot fold a grouped transposed conv: see the test below
    ref = fusion.fuse_conv_bn_eval(conv, bn, transpose=transposed)
    assert_equal(fused.weight, ref.weight, "fused weight")
    assert_equal(fused.bias, ref.bias, "fused bias")
    assert (fused.weight.requires_grad, fused.bias.requires_grad) == (ref.weight.requires_grad, ref.bias.requires_grad)
    with torch.no_grad():
        assert_equal(y, ref(x), "fused output")


@pytest.mark.parametrize("c_in, c_out, groups", [(4, 6, 2), (4, 2, 2), (4, 4, 4)], ids=["4-6-g2", "4-2-g2", "4-4-g4"])
def test_grouped_transposed_conv_folds_where_torch_fails(c_in, c_out, groups):
    """torch scales dim 1 of a transposed weight (C_in, C_out/g, *k) by all C_out channels: it raises,
    or — when C_out/g = 1 — broadcasts the weight into a wrong shape that fails later. bnviz folds it."""
    torch.manual_seed(0)
    conv = nn.ConvTranspose2d(c_in, c_out, 3, groups=groups).eval()
    x = torch.randn(2, c_in, 5, 5)
    bn = trained_bn(nn.BatchNorm2d(c_out), conv(x).shape)
    with torch.no_grad():
        fused = bnviz.fuse_conv_bn_eval(conv, bn, transpose=True)
        assert fused.weight.shape == conv.weight.shape
        assert_close(fused(x), bn(conv(x)), "grouped transposed conv, fused vs unfused", scale=3.0)
        with pytest.raises(RuntimeError, match="size"):
            fusion.fuse_conv_bn_eval(conv, bn, transpose=True)(x)


MIXED_DTYPES = [
    pytest.param(torch.float64, torch.float32, True, id="conv64-bn32-bias"),
    pytest.param(torch.float64, torch.float32, False, id="conv64-bn32-nobias"),
    pytest.param(torch.float32, torch.float64, True, id="conv32-bn64-bias"),
    pytest.param(torch.float32, torch.float64, False, id="conv32-bn64-nobias"),
]


@pytest.mark.parametrize("conv_dtype, bn_dtype, bias", MIXED_DTYPES)
def test_fuse_conv_mixed_dtypes_follow_torch(conv_dtype, bn_dtype, bias):
    """The weight keeps the conv's dtype; the bias the conv bias's (the weight's when there is none)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, bias=bias, dtype=conv_dtype).eval()
    bn = trained_bn(nn.BatchNorm2d(4, dtype=bn_dtype), (4, 4, 5, 5))
    ours, ref = bnviz.fuse_conv_bn_eval(conv, bn), fusion.fuse_conv_bn_eval(conv, bn)
    assert_equal(ours.weight, ref.weight, "weight")
    assert_equal(ours.bias, ref.bias, "bias")
    assert ours.weight.dtype == ours.bias.dtype == conv_dtype


@pytest.mark.parametrize("source", BN_SOURCES)
def test_fuse_conv_with_the_universal_and_bias_free_bnviz_layers(source):
    """bnviz.BatchNorm (any rank) and affine with bias=False (γ without β) fold like torch's."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3).eval()
    x = torch.randn(4, 3, 6, 6)
    for bn in (bnviz.BatchNorm(4), bnviz.BatchNorm2d(4, bias=False)):
        trained_bn(bn, (4, 4, 4, 4))
        ours, ref = bnviz.fuse_conv_bn_eval(conv, bn), fusion.fuse_conv_bn_eval(conv, bn)
        assert_equal(ours.weight, ref.weight, f"{bn}: weight")
        assert_equal(ours.bias, ref.bias, f"{bn}: bias")
        with torch.no_grad():
            assert_close(ours(x), bn(conv(x)), f"{bn}: output", scale=3.0)


def conv_error_cases():
    def pair(conv_train=False, bn_train=False, track=True, c_bn=4, source="torch"):
        conv = nn.Conv2d(3, 4, 3).train(conv_train)
        bn = BN_SOURCES[source][2](c_bn, track_running_stats=track).train(bn_train)
        return conv, bn

    return {
        "conv-training": pair(conv_train=True),
        "bn-training": pair(bn_train=True),
        "bn-training-bnviz": pair(bn_train=True, source="bnviz"),
        "untracked": pair(track=False),
        "untracked-bnviz": pair(track=False, source="bnviz"),
        "channels-mismatch": pair(c_bn=5),
        "channels-mismatch-bnviz": pair(c_bn=5, source="bnviz"),
    }


@pytest.mark.parametrize("case", list(conv_error_cases()))
def test_fuse_conv_errors_match_torch(case):
    conv, bn = conv_error_cases()[case]
    assert_same_error(
        lambda: bnviz.fuse_conv_bn_eval(conv, bn), lambda: fusion.fuse_conv_bn_eval(conv, bn), f"conv: {case}"
    )


def test_no_bare_assert_in_fold():
    """Checks are explicit raises, not asserts: they survive ``python -O``."""
    tree = ast.parse(Path(bnviz.fold.__file__).read_text())
    asserts = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert not asserts, f"bare assert on lines {asserts} of bnviz/fold.py"


# ---------------------------------------------------------------------------------------------
# fuse_linear_bn_eval
# ---------------------------------------------------------------------------------------------

LINEAR_CASES = [
    pytest.param(bias, bn_kind, dtype, source, id=f"{'bias' if bias else 'nobias'}-{bn_kind}-{dtype}-{source}")
    for bias, bn_kind, dtype, source in itertools.product(
        [True, False], ["affine", "noaffine", "gamma-only"], DTYPES, ["torch", "bnviz", "bnviz-universal"]
    )
    if not (bn_kind == "gamma-only" and source == "torch")  # torch's layer has no bias=False
]


def make_bn1d(source: str, c: int, bn_kind: str, dtype: torch.dtype) -> nn.Module:
    kwargs = {"affine": bn_kind != "noaffine", "dtype": dtype}
    if bn_kind == "gamma-only":
        kwargs["bias"] = False
    cls = {"torch": nn.BatchNorm1d, "bnviz": bnviz.BatchNorm1d, "bnviz-universal": bnviz.BatchNorm}[source]
    return cls(c, **kwargs)


@pytest.mark.parametrize("bias, bn_kind, dtype, source", LINEAR_CASES)
def test_fuse_linear_bn_eval_matches_torch_and_the_unfused_pair(bias, bn_kind, dtype, source):
    dt = DTYPES[dtype]
    torch.manual_seed(1)
    linear = nn.Linear(7, 5, bias=bias, dtype=dt).eval()
    bn = trained_bn(make_bn1d(source, 5, bn_kind, dt), (16, 5))
    x = torch.randn(8, 7, dtype=dt)
    before = snapshot(linear, bn)
    fused = bnviz.fuse_linear_bn_eval(linear, bn)
    assert_untouched(before, linear, bn)
    assert type(fused) is nn.Linear and fused is not linear
    with torch.no_grad():
        y = fused(x)
        assert_close(y, bn(linear(x)), "fused linear vs bn(linear(x))", scale=3.0)
    if bn_kind != "affine":
        # torch multiplies bn.weight (None) by the scale, or adds bn.bias (None): a TypeError
        with pytest.raises(TypeError, match="unsupported operand type"):
            fusion.fuse_linear_bn_eval(linear, bn)
        return
    ref = fusion.fuse_linear_bn_eval(linear, bn)
    assert_equal(fused.weight, ref.weight, "fused weight")
    assert_equal(fused.bias, ref.bias, "fused bias")
    assert (fused.weight.requires_grad, fused.bias.requires_grad) == (ref.weight.requires_grad, ref.bias.requires_grad)
    with torch.no_grad():
        assert_equal(y, ref(x), "fused output")


def test_fuse_linear_with_a_one_feature_batch_norm():
    """bn.num_features == 1 is torch's other accepted case: one scale for every output feature."""
    torch.manual_seed(0)
    linear = nn.Linear(5, 3).eval()
    bn = trained_bn(nn.BatchNorm1d(1), (8, 1, 3))
    x = torch.randn(4, 1, 5)
    ours, ref = bnviz.fuse_linear_bn_eval(linear, bn), fusion.fuse_linear_bn_eval(linear, bn)
    assert_equal(ours.weight, ref.weight, "weight")
    assert_equal(ours.bias, ref.bias, "bias")
    with torch.no_grad():
        assert_close(ours(x), bn(linear(x)), "output")


def linear_error_cases():
    def pair(lin_train=False, bn_train=False, track=True, c_bn=4, source="torch"):
        linear = nn.Linear(3, 4).train(lin_train)
        cls = {"torch": nn.BatchNorm1d, "bnviz": bnviz.BatchNorm1d}[source]
        return linear, cls(c_bn, track_running_stats=track).train(bn_train)

    return {
        "linear-training": pair(lin_train=True),
        "bn-training": pair(bn_train=True),
        "both-training-bnviz": pair(lin_train=True, bn_train=True, source="bnviz"),
        "features-mismatch": pair(c_bn=5),
        "features-mismatch-bnviz": pair(c_bn=3, source="bnviz"),
        "features-mismatch-and-training": pair(c_bn=5, bn_train=True),
        "untracked": pair(track=False),
        "untracked-bnviz": pair(track=False, source="bnviz"),
    }


@pytest.mark.parametrize("case", list(linear_error_cases()))
def test_fuse_linear_errors_match_torch(case):
    linear, bn = linear_error_cases()[case]
    assert_same_error(
        lambda: bnviz.fuse_linear_bn_eval(linear, bn), lambda: fusion.fuse_linear_bn_eval(linear, bn), f"linear: {case}"
    )


# ---------------------------------------------------------------------------------------------
# fold_batch_norms
# ---------------------------------------------------------------------------------------------


def warm_up(model: nn.Module, shape: tuple[int, ...], steps: int = 3, seed: int = 0) -> nn.Module:
    """Non-trivial γ, β (random) and running statistics (a few training batches), then eval."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, bnviz.fold.BATCH_NORMS) and m.weight is not None:
                m.weight.uniform_(0.5, 2.0, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-1.0, 1.0, generator=g)
        model.train()
        for _ in range(steps):
            model(torch.randn(shape, generator=g) * 2 + 0.5)
    return model.eval()


def cnn(bn2d=nn.BatchNorm2d, bn1d=nn.BatchNorm1d) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        bn2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 6, 3, bias=False),
        bn2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 10),
        bn1d(10),
        nn.ReLU(),
        nn.Linear(10, 3),
    )


class Custom(nn.Module):
    """A custom forward that fx traces: self.bn(self.conv(x)), pooling, a functional call."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.bn = nn.BatchNorm2d(5)
        self.conv2 = nn.Conv2d(5, 4, 1)
        self.norm2 = bnviz.BatchNorm(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.norm2(self.conv2(x)).mean((2, 3))
        return self.head(x)


class Residual(nn.Module):
    """The conv's output goes to the batch norm and to the residual add: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class Shared(nn.Module):
    """One conv called twice, once followed by the batch norm and once not: not foldable."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.conv(torch.relu(self.bn(self.conv(x))))


class SharedNorm(nn.Module):
    """One batch norm after two convs: folding either would break the other."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.a(x)) + self.bn(self.b(x))


class ReadsWeight(nn.Module):
    """The forward also reads the conv's weight directly: folding would change that reading."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)) * self.conv.weight.sum()


class Aliased(nn.Module):
    """The same conv registered under two names, called through the second one."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(4, 4, 3, padding=1)
        self.second = self.first
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.second(x))


FOLD_CASES = {
    # name: (model factory, input shape, BNs folded into Identity, BNs left)
    "sequential-cnn": (cnn, (4, 3, 8, 8), 3, 0),
    "sequential-cnn-bnviz": (lambda: cnn(bnviz.BatchNorm2d, bnviz.BatchNorm1d), (4, 3, 8, 8), 3, 0),
    "sequential-cnn-bnviz-universal": (lambda: cnn(bnviz.BatchNorm, bnviz.BatchNorm), (4, 3, 8, 8), 3, 0),
    "nested-sequentials": (
        lambda: nn.Sequential(
            nn.Sequential(nn.Conv1d(2, 4, 3), nn.Sequential(nn.BatchNorm1d(4))),
            nn.Sequential(nn.Sequential(nn.Conv1d(4, 4, 3, groups=2)), bnviz.BatchNorm1d(4), nn.Tanh()),
        ),
        (3, 2, 12),
        2,
        0,
    ),
    "fx-custom": (Custom, (3, 3, 6, 6), 2, 0),
    "transposed": (
        lambda: nn.Sequential(
            nn.ConvTranspose2d(3, 6, 3, stride=2, groups=3), nn.BatchNorm2d(6), nn.ReLU(),
            nn.ConvTranspose2d(6, 2, 2, bias=False), bnviz.BatchNorm2d(2),
        ),
        (2, 3, 4, 4),
        2,
        0,
    ),
    "transposed-1d": (
        lambda: nn.Sequential(nn.ConvTranspose1d(2, 4, 3, dilation=2), bnviz.BatchNorm(4)), (3, 2, 5), 1, 0,
    ),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 3, 2), bnviz.BatchNorm3d(3)), (2, 2, 4, 4, 4), 1, 0),
    "residual": (Residual, (2, 4, 5, 5), 0, 1),
    "shared-conv": (Shared, (2, 4, 5, 5), 0, 1),
    "shared-norm": (SharedNorm, (2, 4, 5, 5), 0, 1),
    "reads-weight": (ReadsWeight, (2, 4, 5, 5), 0, 1),
    "aliased-conv": (Aliased, (2, 4, 5, 5), 1, 0),
    "untracked": (
        lambda: nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)), (2, 3, 3, 3), 0, 1,
    ),
    "bn-first": (lambda: nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)), (4, 3), 0, 1),
    "linear-then-bn2d-on-4d": (lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm2d(4)), (2, 4, 3, 4), 0, 1),
}  # fmt: skip


def count(model: nn.Module) -> tuple[int, int]:
    """(Identity layers, batch norms) in ``model``."""
    mods = list(model.modules())
    return (
        sum(type(m) is nn.Identity for m in mods),
        sum(isinstance(m, (*bnviz.fold.BATCH_NORMS, FrozenBatchNorm)) for m in mods),
    )


@pytest.mark.parametrize("case", list(FOLD_CASES))
def test_fold_batch_norms(case):
    make, shape, folded_count, left_count = FOLD_CASES[case]
    torch.manual_seed(0)
    model = warm_up(make(), shape)
    before = snapshot(model)
    identities_before, _ = count(model)
    folded = bnviz.fold_batch_norms(model)
    assert_untouched(before, model)
    assert folded is not model and type(folded) is type(model)
    assert not any(m.training for m in folded.modules()), "the folded model is not in eval mode"
    identities, norms = count(folded)
    assert (identities - identities_before, norms) == (folded_count, left_count), f"{folded}"
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    with torch.no_grad():
        assert_close(folded(x), model(x), f"{case}: folded vs unfolded output", scale=10.0)


def test_fold_matches_torch_fx_fuse_on_a_plain_cnn():
    model = warm_up(cnn(), (4, 3, 8, 8))
    ours, ref = bnviz.fold_batch_norms(model), torch_fx_fuse(model)
    x = torch.randn(4, 3, 8, 8)
    for i in (0, 3, 7):
        assert_equal(ours[i].weight, getattr(ref, str(i)).weight, f"layer {i} weight")
        assert_equal(ours[i].bias, getattr(ref, str(i)).bias, f"layer {i} bias")
    with torch.no_grad():
        assert_equal(ours(x), ref(x), "output")


def test_torch_fx_fuse_corrupts_a_shared_conv_where_bnviz_does_not():
    """torch's fx fuser checks only that the conv's output has one user, not that the conv module is
    called once: it folds the batch norm into the second call too."""
    model = warm_up(Shared(), (2, 4, 5, 5))
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        expected = model(x)
        assert_close(bnviz.fold_batch_norms(model)(x), expected, "bnviz")
        assert (torch_fx_fuse(model)(x) - expected).abs().max() > 1e-2


def test_fold_a_frozen_model():
    """Freeze for fine-tuning, then fold for deployment: FrozenBatchNorm folds too (in any mode)."""
    model = bnviz.freeze_batch_norm(warm_up(cnn(), (4, 3, 8, 8)))
    folded = bnviz.fold_batch_norms(model.eval())
    assert count(folded) == (3, 0)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert_close(folded(x), model(x), "folded frozen model", scale=10.0)


@pytest.mark.parametrize(
    "make_training",
    [
        pytest.param(lambda m: m.train(), id="model.train()"),
        pytest.param(lambda m: m[4].train(), id="one-bn-in-train"),
        pytest.param(lambda m: m[8].train(), id="one-bnviz-bn-in-train"),
    ],
)
def test_fold_refuses_training_mode(make_training):
    model = warm_up(cnn(nn.BatchNorm2d, bnviz.BatchNorm1d), (4, 3, 8, 8))
    make_training(model)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"call model\.eval\(\) first") as info:
        bnviz.fold_batch_norms(model)
    assert "running statistics" in str(info.value)
    assert_untouched(before, model)


def test_fold_a_model_fx_cannot_trace():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(ValueError, match=r"torch\.fx"):
        bnviz.fold_batch_norms(DataDependent().eval())


def test_fold_without_batch_norms_is_an_eval_copy():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).eval()
    folded = bnviz.fold_batch_norms(model)
    assert folded is not model and not folded.training and count(folded) == (0, 0)


# ---------------------------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------------------------


def tuned_model(bn2d=nn.BatchNorm2d, bn1d=nn.BatchNorm1d) -> nn.Sequential:
    torch.manual_seed(0)
    return warm_up(cnn(bn2d, bn1d), (4, 3, 8, 8))


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{k}": v.clone()
        for name, m in model.named_modules()
        if isinstance(m, (*bnviz.fold.BATCH_NORMS, FrozenBatchNorm))
        for k, v in m.state_dict().items()
    }


def fine_tune(model: nn.Module, steps: int = 4, seed: int = 5) -> None:
    """SGD steps in training mode on shifted data (mean 3, std 4: the statistics would move)."""
    g = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 8, 8, generator=g) * 4 + 3
        target = torch.randn(8, 3, generator=g)
        loss = (model(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("source", ["torch", "bnviz", "bnviz-universal"])
def test_freeze_survives_fine_tuning(source):
    bns = {"torch": (nn.BatchNorm2d, nn.BatchNorm1d), "bnviz": (bnviz.BatchNorm2d, bnviz.BatchNorm1d)}
    model = tuned_model(*bns.get(source, (bnviz.BatchNorm, bnviz.BatchNorm)))
    reference = copy.deepcopy(model).eval()
    norms_before = bn_state(model)
    conv_before = model[0].weight.clone()
    frozen = bnviz.freeze_batch_norm(model)
    assert frozen is model, "freeze_batch_norm works in place and returns the model"
    assert [type(model[i]) for i in (1, 4, 8)] == [FrozenBatchNorm] * 3
    assert bn_state(model).keys() == norms_before.keys(), "state-dict names changed"
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        model.train()  # frozen layers ignore the mode
        assert_close(model(x), reference(x), "frozen (train mode) vs original in eval")
    fine_tune(model)
    model.train()
    assert all(m.training for m in model.modules()), "model.train() reaches every layer"
    for name, value in bn_state(model).items():
        assert_equal(value, norms_before[name], f"{name} after fine-tuning")
    assert not torch.equal(model[0].weight, conv_before), "the conv did not train: the test proves nothing"
    assert not any(isinstance(p, nn.Parameter) for m in model.modules() if isinstance(m, FrozenBatchNorm)
                   for p in m.parameters())  # fmt: skip


FREEZE_LAYERS = {
    "torch-1d": (nn.BatchNorm1d, {}, (8, 4, 3)),
    "torch-2d": (nn.BatchNorm2d, {}, (4, 4, 3, 3)),
    "torch-3d": (nn.BatchNorm3d, {}, (2, 4, 2, 3, 3)),
    "torch-2d-noaffine": (nn.BatchNorm2d, {"affine": False}, (4, 4, 3, 3)),
    "torch-1d-eps": (nn.BatchNorm1d, {"eps": 1e-2}, (8, 4)),
    "bnviz-1d": (bnviz.BatchNorm1d, {}, (8, 4)),
    "bnviz-2d": (bnviz.BatchNorm2d, {}, (4, 4, 3, 3)),
    "bnviz-3d": (bnviz.BatchNorm3d, {"affine": False}, (2, 4, 2, 3, 3)),
    "bnviz-universal-rank6": (bnviz.BatchNorm, {}, (2, 4, 2, 2, 2, 2)),
    "bnviz-gamma-only": (bnviz.BatchNorm2d, {"bias": False}, (4, 4, 3, 3)),
    "bnviz-float64": (bnviz.BatchNorm2d, {"dtype": torch.float64}, (4, 4, 3, 3)),
}


@pytest.mark.parametrize("case", list(FREEZE_LAYERS))
def test_frozen_layer_equals_the_eval_layer(case):
    cls, kwargs, shape = FREEZE_LAYERS[case]
    bn = trained_bn(cls(4, **kwargs), shape)
    before = snapshot(bn)
    frozen = bnviz.freeze_batch_norm(bn)
    assert isinstance(frozen, FrozenBatchNorm) and frozen is not bn, "a batch norm itself: a new frozen layer"
    assert_untouched(before, bn)
    assert list(frozen.parameters()) == []
    assert frozen.eps == bn.eps and frozen.num_features == 4
    assert frozen.running_mean.dtype == bn.running_mean.dtype
    x = torch.randn(shape, dtype=bn.running_mean.dtype) * 3 + 1
    with torch.no_grad():
        expected = bn(x)
        assert_close(frozen.train()(x), expected, f"{case}: frozen in train mode vs batch norm in eval")
        assert_close(frozen.eval()(x), expected, f"{case}: frozen in eval mode vs batch norm in eval")


def test_frozen_state_dict_has_torch_names_and_loads_both_ways():
    torch_bn = trained_bn(nn.BatchNorm2d(4), (4, 4, 3, 3))
    frozen = FrozenBatchNorm(4)
    assert list(frozen.state_dict()) == list(torch_bn.state_dict())
    assert sorted(name for name, _ in frozen.named_buffers()) == sorted(
        ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    )
    frozen.load_state_dict(torch_bn.state_dict())  # strict
    for k, v in torch_bn.state_dict().items():
        assert_equal(frozen.state_dict()[k], v, f"loaded {k}")
    other = nn.BatchNorm2d(4)
    other.load_state_dict(frozen.state_dict())
    for k, v in frozen.state_dict().items():
        assert_equal(other.state_dict()[k], v, f"loaded back {k}")
    torchvision_style = {k: v for k, v in torch_bn.state_dict().items() if k != "num_batches_tracked"}
    FrozenBatchNorm(4).load_state_dict(torchvision_style)
    assert repr(frozen) == "FrozenBatchNorm(4, eps=1e-05)"


def test_freeze_an_aliased_batch_norm_once():
    bn = nn.BatchNorm2d(3)
    model = nn.Sequential(nn.Conv2d(3, 3, 1), bn, nn.Conv2d(3, 3, 1), bn)
    bnviz.freeze_batch_norm(model)
    assert isinstance(model[1], FrozenBatchNorm) and model[1] is model[3]


def test_freeze_refuses_a_batch_norm_without_running_statistics():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), bnviz.BatchNorm2d(3, track_running_stats=False))
    with pytest.raises(ValueError, match="track_running_stats=False"):
        bnviz.freeze_batch_norm(model)


def test_surprise_requires_grad_false_does_not_stop_running_statistics():
    """Turning off γ, β's gradients freezes γ, β — and nothing else: in training mode the running
    statistics still move, and batch statistics still normalize."""
    model = tuned_model()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.weight.requires_grad_(False)
            m.bias.requires_grad_(False)
    before = bn_state(model)
    fine_tune(model)
    after = bn_state(model)
    assert torch.equal(after["1.weight"], before["1.weight"]) and torch.equal(after["1.bias"], before["1.bias"])
    assert not torch.equal(after["1.running_mean"], before["1.running_mean"]), "running_mean did not move"
    assert not torch.equal(after["1.running_var"], before["1.running_var"]), "running_var did not move"
    assert after["1.num_batches_tracked"] > before["1.num_batches_tracked"]


def test_surprise_model_train_undoes_bn_eval():
    """``bn.eval()`` freezes the statistics until the next ``model.train()``, which every training
    loop calls (often once per epoch), and which silently flips the batch norms back."""
    model = tuned_model()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            m.eval()
    before = bn_state(model)
    fine_tune(model)  # calls model.train() first, like a training loop
    assert model[1].training, "model.train() set the batch norm back to training"
    assert not torch.equal(bn_state(model)["1.running_mean"], before["1.running_mean"])


def test_frozen_layer_dispatches_no_normalization_kernel():
    frozen = FrozenBatchNorm.from_batch_norm(trained_bn(nn.BatchNorm2d(3), (4, 3, 2, 2)))
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    with OpRecorder() as rec:
        frozen.train()(x).square().sum().backward()
    assert rec.ops, "the recorder saw nothing"
    assert x.grad is not None
    assert not _norm_ops(rec.ops), f"normalization kernels dispatched: {_norm_ops(rec.ops)}"
    with OpRecorder() as rec:  # the same check trips on torch's own layer in eval
        trained_bn(nn.BatchNorm2d(3), (4, 3, 2, 2))(x)
    assert _norm_ops(rec.ops)


def test_frozen_gradient_reaches_the_input_only():
    """∂L/∂x = γ / √(σ̂² + ε) · ∂L/∂y: the running statistics are constants."""
    bn = trained_bn(nn.BatchNorm2d(3), (4, 3, 2, 2))
    frozen = FrozenBatchNorm.from_batch_norm(bn)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    g = torch.randn(2, 3, 4, 4)
    (gx,) = torch.autograd.grad(frozen(x), x, g)
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().view(1, 3, 1, 1)
    assert_close(gx, g * scale, "∂L/∂x")
