"""The normalization family against torch, case by case: LayerNorm, GroupNorm, InstanceNorm and
RMSNorm — functions and modules, forward and all gradients, dtypes, layouts, edge cases, large
means against a float64 truth, gradcheck and gradgradcheck, state dicts, running statistics."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import bnviz
from bnviz.autograd import Layout, _batch_statistics, reference_norm, row_view
from tests.conftest import assert_close, assert_same_error


def _input(shape, seed=0, dtype=torch.float32, offset=1.0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * spread + offset).to(dtype)


def _param(shape, seed, kind="weight", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed + (0 if kind == "weight" else 100))
    t = torch.rand(shape, generator=g, dtype=torch.float64) + 0.5 if kind == "weight" else torch.randn(
        shape, generator=g, dtype=torch.float64
    )
    return t.to(dtype)


def _grads(fn, x, params, upstream):
    x = x.clone().requires_grad_()
    ps = [p.clone().requires_grad_() if p is not None else None for p in params]
    y = fn(x, *ps)
    wrt = [x, *(p for p in ps if p is not None)]
    return y, torch.autograd.grad(y, wrt, upstream.to(y.dtype)) if y.numel() else [torch.zeros_like(t) for t in wrt]


def _both(name, ours, ref, x, params, dtype=None, scale=1.0, truth_fn="ref"):
    """Output and every gradient of bnviz's ``ours`` against torch's ``ref``: within the dtype's
    tolerance, or at least as close as torch to a float64 run of torch on the same values (torch's
    float32 kernels cancel where bnviz does not, e.g. in a group of one value). ``truth_fn``: the
    float64 reference (torch's ``ref`` by default; None for modules, whose parameters are float32)."""
    upstream = _input(x.shape, seed=99, dtype=x.dtype, offset=0.0, spread=1.0)
    y, grads = _grads(ours, x, params, upstream)
    y_ref, grads_ref = _grads(ref, x, params, upstream)
    truth = None
    truth_fn = ref if truth_fn == "ref" else truth_fn
    if x.dtype != torch.float64 and truth_fn is not None:
        doubles = [None if p is None else p.double() for p in params]
        y64, grads64 = _grads(truth_fn, x.double(), doubles, upstream.double())
        truth = [y64, *grads64]
    names = ["output", "grad input", "grad weight", "grad bias"]
    for i, (what, a, b) in enumerate(zip(names, [y, *grads], [y_ref, *grads_ref], strict=False)):
        n = max(1, x.numel() // max(1, a.numel()))
        widen = 1.0 if what == "output" else (4.0 if what == "grad input" else n**0.5)
        try:
            assert_close(a, b, f"{name} {what}", dtype, scale * widen)
        except AssertionError:
            if truth is None:
                raise
            err, err_ref = (float((v.detach().double() - truth[i].detach()).abs().max()) for v in (a, b))
            assert err <= err_ref, f"{name} {what}: bnviz {err:.3e} from float64, torch {err_ref:.3e}"


# --- LayerNorm ----------------------------------------------------------------------------------

LN_CASES = [
    pytest.param(shape, k, aff, eps, id=f"{'x'.join(map(str, shape))}-last{k}-{aff}-eps{eps}")
    for shape, k, aff, eps in itertools.product(
        [(4, 6), (3, 5, 7), (2, 3, 4, 5), (2, 2, 3, 2, 4)], [1, 2, 3], ["both", "weight", "none"], [1e-5, 1e-2]
    )
    if k <= len(shape)
]


@pytest.mark.parametrize("shape, k, aff, eps", LN_CASES)
def test_layer_norm_matches_torch(shape, k, aff, eps):
    ns = shape[-k:]
    w = _param(ns, 1) if aff != "none" else None
    b = _param(ns, 1, "bias") if aff == "both" else None
    x = _input(shape)
    _both("layer_norm", lambda x, *p: bnviz.layer_norm(x, ns, *p, eps=eps),
          lambda x, *p: F.layer_norm(x, ns, *p, eps=eps), x, [w, b])  # fmt: skip


# --- GroupNorm ----------------------------------------------------------------------------------

GN_CASES = [
    pytest.param(shape, g, aff, id=f"{'x'.join(map(str, shape))}-G{g}-{aff}")
    for shape, g, aff in itertools.product(
        [(4, 6), (3, 6, 5), (2, 6, 4, 3), (2, 6, 2, 3, 2)], [1, 2, 3, 6], ["both", "weight", "none"]
    )
]


@pytest.mark.parametrize("shape, groups, aff", GN_CASES)
def test_group_norm_matches_torch(shape, groups, aff):
    c = shape[1]
    w = _param(c, 2) if aff != "none" else None
    b = _param(c, 2, "bias") if aff == "both" else None
    _both("group_norm", lambda x, *p: bnviz.group_norm(x, groups, *p), lambda x, *p: F.group_norm(x, groups, *p),
          _input(shape), [w, b])  # fmt: skip


# --- InstanceNorm -------------------------------------------------------------------------------

IN_CASES = [
    pytest.param(shape, aff, tracked, use_input, m, id=f"{'x'.join(map(str, shape))}-{aff}-"
                 f"{'track' if tracked else 'notrack'}-{'input' if use_input else 'running'}-m{m}")
    for shape, aff, tracked, use_input, m in itertools.product(
        [(4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4)], ["both", "none"], [True, False], [True, False], [0.1, 1.0]
    )
    if tracked or use_input
]  # fmt: skip


@pytest.mark.parametrize("shape, aff, tracked, use_input, momentum", IN_CASES)
def test_instance_norm_matches_torch_with_running_stats(shape, aff, tracked, use_input, momentum):
    c = shape[1]
    w = _param(c, 3) if aff != "none" else None
    b = _param(c, 3, "bias") if aff == "both" else None
    x = _input(shape)
    stats = [(torch.randn(c), torch.rand(c) + 0.5) if tracked else (None, None) for _ in range(2)]
    stats[1] = tuple(None if t is None else t.clone() for t in stats[0])
    ours, ref = stats

    def run(fn, st):
        return lambda x, *p: fn(x, *st, *p, use_input_stats=use_input, momentum=momentum)

    fresh = tuple(None if t is None else t.double() for t in ref)  # the float64 run has stats of its own
    _both("instance_norm", run(bnviz.instance_norm, ours), run(F.instance_norm, ref), x, [w, b],
          truth_fn=run(F.instance_norm, fresh))  # fmt: skip
    for a, r, what in zip(ours, ref, ("running_mean", "running_var"), strict=True):
        assert_close(a, r, what)


# --- RMSNorm ------------------------------------------------------------------------------------

RMS_CASES = [
    pytest.param(shape, k, aff, eps, id=f"{'x'.join(map(str, shape))}-last{k}-{aff}-eps{eps}")
    for shape, k, aff, eps in itertools.product(
        [(4, 6), (3, 5, 7), (2, 3, 4, 5)], [1, 2, 3], ["weight", "none"], [None, 1e-5, 1e-2]
    )
    if k <= len(shape)
]


@pytest.mark.parametrize("shape, k, aff, eps", RMS_CASES)
def test_rms_norm_matches_torch(shape, k, aff, eps):
    ns = shape[-k:]
    w = _param(ns, 4) if aff != "none" else None
    _both("rms_norm", lambda x, *p: bnviz.rms_norm(x, ns, *p, eps=eps), lambda x, *p: F.rms_norm(x, ns, *p, eps=eps),
          _input(shape), [w])  # fmt: skip


# --- dtypes, layouts, edge cases, for every member ------------------------------------------------

MEMBERS = {  # bnviz's function, torch's, and the size of γ and β, for an (N, C, *) input
    "layer": (lambda x, w, b: bnviz.layer_norm(x, x.shape[-1:], w, b),
              lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b), lambda x: x.shape[-1]),
    "group": (lambda x, w, b: bnviz.group_norm(x, 2, w, b), lambda x, w, b: F.group_norm(x, 2, w, b),
              lambda x: x.shape[1]),
    "instance": (lambda x, w, b: bnviz.instance_norm(x, weight=w, bias=b),
                 lambda x, w, b: F.instance_norm(x, weight=w, bias=b), lambda x: x.shape[1]),
    "rms": (lambda x, w, b=None: bnviz.rms_norm(x, x.shape[-1:], w),
            lambda x, w, b=None: F.rms_norm(x, x.shape[-1:], w), lambda x: x.shape[-1]),
}  # fmt: skip


def _member_params(member, x, seed):
    """γ and β for ``member`` on ``x`` (RMSNorm has no β)."""
    size = MEMBERS[member][2](x)
    return [_param(size, seed), _param(size, seed, "bias")][: 1 if member == "rms" else 2]


DTYPE_CASES = [
    (torch.float32, torch.float32),
    (torch.float64, torch.float64),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.bfloat16),
    (torch.float16, torch.float16),
]


@pytest.mark.parametrize("dtype, pdtype", DTYPE_CASES, ids=[f"{str(a)[6:]}-{str(b)[6:]}" for a, b in DTYPE_CASES])
@pytest.mark.parametrize("member", MEMBERS)
def test_dtypes_follow_torch(member, dtype, pdtype):
    """Output dtypes, values and warnings. rms_norm's dtype-mismatch warning is once per process
    (torch's TORCH_WARN_ONCE, mirrored by bnviz) unless warn_always is on: on here, so that an
    earlier test that warned on one side only does not decide the comparison."""
    ours, ref, size = MEMBERS[member]
    x = _input((4, 6, 5, 4), dtype=dtype)
    w, b = _param(size(x), 5, dtype=pdtype), _param(size(x), 5, "bias", dtype=pdtype)
    warn_always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as seen_ours:
            warnings.simplefilter("always")
            y = ours(x, w, b)
        with warnings.catch_warnings(record=True) as seen_ref:
            warnings.simplefilter("always")
            y_ref = ref(x, w, b)
    finally:
        torch.set_warn_always(warn_always)
    assert y.dtype == y_ref.dtype, f"{member}: dtype bnviz={y.dtype} torch={y_ref.dtype}"
    assert [str(m.message) for m in seen_ours] == [str(m.message) for m in seen_ref]
    assert_close(y, y_ref, f"{member} output {dtype}")


LAYOUTS = {
    "channels_last": lambda: _input((3, 6, 5, 4)).to(memory_format=torch.channels_last),
    "channels_last_3d": lambda: _input((2, 6, 3, 5, 4)).to(memory_format=torch.channels_last_3d),
    "sliced": lambda: _input((6, 6, 8, 8))[::2, :, 1:7:2, :],
    "permuted": lambda: _input((3, 6, 5, 4)).permute(0, 1, 3, 2),
    "expanded": lambda: _input((1, 6, 5)).expand(3, 6, 5),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("member", MEMBERS)
def test_layouts_values_and_memory_format(member, layout):
    ours, ref, size = MEMBERS[member]
    x = LAYOUTS[layout]()
    w, b = _param(size(x), 6), _param(size(x), 6, "bias")
    y, y_ref = ours(x, w, b), ref(x, w, b)
    assert_close(y, y_ref, f"{member} {layout}")
    for fmt in (torch.contiguous_format, torch.channels_last, torch.channels_last_3d):
        if y.dim() == {torch.channels_last: 4, torch.channels_last_3d: 5}.get(fmt, y.dim()):
            assert y.is_contiguous(memory_format=fmt) == y_ref.is_contiguous(memory_format=fmt), (layout, fmt)


EDGE = {
    "zero-batch": (0, 6, 4),
    "zero-spatial": (3, 6, 0),
    "one-sample": (1, 6, 5),
    "rank2": (5, 6),
}


@pytest.mark.parametrize("shape", EDGE.values(), ids=EDGE)
@pytest.mark.parametrize("member", MEMBERS)
def test_edge_shapes_match_or_raise_alike(member, shape):
    ours, ref, _ = MEMBERS[member]
    x = _input(shape)
    params = _member_params(member, x, 7)
    try:
        y_ref = ref(x, *params)
    except Exception:
        assert_same_error(lambda: ours(x, *params), lambda: ref(x, *params), f"{member} {shape}")
        return
    _both(member, ours, ref, x, params)
    assert ours(x, *params).shape == y_ref.shape


@pytest.mark.parametrize("member", MEMBERS)
def test_constant_input_normalizes_to_beta(member):
    ours, ref, _ = MEMBERS[member]
    x = torch.full((3, 6, 4), 2.5)
    params = _member_params(member, x, 8)
    _both(member, ours, ref, x, params)
    if member != "rms":  # (x − mean) is exactly 0: the output is exactly β
        beta = params[1] if member == "layer" else params[1].view(-1, 1)
        assert torch.equal(ours(x, *params), beta.expand_as(x)), member


LARGE_MEANS = [(1e4, 1e-2), (1e6, 1.0), (-3e5, 0.5), (1e3, 1e-3)]


def _torch_statistics(member, x):
    """torch's own float32 statistics (mean, 1/√(var + eps)) from its kernels, per group."""
    if member == "layer":
        _, mean, rstd = torch.native_layer_norm(x, x.shape[-1:], None, None, 1e-5)
    elif member == "group":
        _, mean, rstd = torch.native_group_norm(x, None, None, x.size(0), x.size(1), x.size(2), 2, 1e-5)
    else:  # instance norm is batch norm on (1, N·C, L)
        _, mean, rstd = torch.native_batch_norm(x.reshape(1, -1, x.size(2)), None, None, None, None, True, 0.1, 1e-5)
    return mean.flatten().double(), rstd.flatten().double()


LAYOUT_OF = {"layer": Layout("trailing", inner=32), "group": Layout("instances", k=3), "instance": Layout("instances")}


@pytest.mark.parametrize("mean, spread", LARGE_MEANS, ids=[f"{m:g}+-{s:g}" for m, s in LARGE_MEANS])
@pytest.mark.parametrize("member", ["layer", "group", "instance"])
def test_large_means_statistics_as_accurate_as_torch(member, mean, spread):
    """A mean that dwarfs the spread: bnviz's statistics are no further from a float64 truth than
    torch's own kernels' statistics, and its output no further than torch's (within 25 %: both
    end in float32 arithmetic at the mean's magnitude)."""
    ours, ref, _ = MEMBERS[member]
    x = _input((4, 6, 32), seed=3, offset=mean, spread=spread)
    layout = LAYOUT_OF[member]
    m64, v64, _ = _batch_statistics(row_view(x, layout)[1], layout)
    truth_y, truth_m, truth_v = reference_norm(x.double(), None, None, layout, 1e-5)
    t_mean, t_rstd = _torch_statistics(member, x)
    truth_rstd = (truth_v + 1e-5).rsqrt()
    for what, a, b, t in (("mean", m64, t_mean, truth_m), ("rstd", (v64 + 1e-5).rsqrt(), t_rstd, truth_rstd)):
        err, err_ref = float((a - t).abs().max()), float((b - t).abs().max())
        assert err <= err_ref, f"{member} {what}: bnviz {err:.3e} from float64, torch {err_ref:.3e}"
    y, y_ref = ours(x, None, None), ref(x, None, None)
    err, err_ref = (float((v.double() - truth_y).abs().max()) for v in (y, y_ref))
    assert err <= 1.25 * err_ref + 2e-5, f"{member} output: bnviz {err:.3e} from float64, torch {err_ref:.3e}"


@pytest.mark.parametrize(
    "member, fn",
    [("layer", lambda x, w, b: bnviz.layer_norm(x, (3, 2), w, b)),
     ("group", lambda x, w, b: bnviz.group_norm(x, 2, w, b)),
     ("instance", lambda x, w, b: bnviz.instance_norm(x, weight=w, bias=b)),
     ("rms", lambda x, w, b: bnviz.rms_norm(x, (3, 2), w) + b.sum() * 0)],
)  # fmt: skip
def test_gradcheck_and_gradgradcheck(member, fn):
    x = _input((2, 4, 3, 2), dtype=torch.float64).requires_grad_()
    shape = (3, 2) if member in ("layer", "rms") else (4,)
    w = _param(shape, 9, dtype=torch.float64).requires_grad_()
    b = _param(shape, 9, "bias", dtype=torch.float64).requires_grad_()
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b))


# --- modules ------------------------------------------------------------------------------------

MODULES = [
    pytest.param(lambda m: m.LayerNorm((5, 4)), (3, 6, 5, 4), id="LayerNorm"),
    pytest.param(lambda m: m.LayerNorm(4, bias=False), (3, 6, 4), id="LayerNorm-nobias"),
    pytest.param(lambda m: m.LayerNorm(4, elementwise_affine=False), (3, 4), id="LayerNorm-noaffine"),
    pytest.param(lambda m: m.GroupNorm(3, 6), (3, 6, 5, 4), id="GroupNorm"),
    pytest.param(lambda m: m.GroupNorm(2, 6, affine=False), (3, 6, 5), id="GroupNorm-noaffine"),
    pytest.param(lambda m: m.GroupNorm(6, 6, bias=False), (3, 6, 5), id="GroupNorm-nobias"),
    pytest.param(lambda m: m.InstanceNorm1d(6), (3, 6, 5), id="InstanceNorm1d"),
    pytest.param(lambda m: m.InstanceNorm1d(6, affine=True), (6, 5), id="InstanceNorm1d-unbatched"),
    pytest.param(lambda m: m.InstanceNorm2d(6, affine=True, track_running_stats=True), (3, 6, 5, 4), id="IN2d-track"),
    pytest.param(lambda m: m.InstanceNorm3d(6, track_running_stats=True, momentum=None), (2, 6, 3, 2, 4),
                 id="IN3d-cumulative"),
    pytest.param(lambda m: m.RMSNorm((5, 4)), (3, 6, 5, 4), id="RMSNorm"),
    pytest.param(lambda m: m.RMSNorm(4, eps=1e-3, elementwise_affine=False), (3, 4), id="RMSNorm-noaffine"),
]  # fmt: skip


@pytest.mark.parametrize("make, shape", MODULES)
def test_modules_match_torch_over_train_eval_sequences(make, shape):
    ours, ref = make(bnviz), make(nn)
    assert ours.extra_repr() == ref.extra_repr()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.load_state_dict(ours.state_dict())
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
            p.copy_(_param(p.shape, 11))
            q.copy_(p)
    for step, mode in enumerate(["train", "train", "eval", "train", "eval"]):
        ours.train(mode == "train")
        ref.train(mode == "train")
        x = _input(shape, seed=step)
        params = [p for p in ours.parameters()]
        _both(f"step {step}", lambda x, *p: ours(x), lambda x, *p: ref(x), x, [], truth_fn=None)
        for name, buf in ours.named_buffers():
            assert_close(buf, dict(ref.named_buffers())[name], f"step {step} {name}")
        assert len(params) == len(list(ref.parameters()))


@pytest.mark.parametrize(
    "make, x, what",
    [(lambda m: m.InstanceNorm1d(6), torch.randn(2, 6, 5, 4), "rank"),
     (lambda m: m.InstanceNorm2d(6, affine=True), torch.randn(2, 5, 4, 4), "affine-mismatch"),
     (lambda m: m.InstanceNorm3d(6), torch.randn(2, 6, 3), "rank-3d"),
     (lambda m: m.InstanceNorm1d(6), torch.randn(2, 6, 1), "one-spatial"),
     (lambda m: m.GroupNorm(4, 8), torch.randn(2, 6, 3), "channels"),
     (lambda m: m.LayerNorm(5), torch.randn(2, 6), "shape"),
     (lambda m: m.RMSNorm(5), torch.randn(2, 6), "shape")],
    ids=["in1d-rank", "in2d-affine-mismatch", "in3d-rank", "in1d-one-value", "gn-channels", "ln-shape", "rms-shape"],
)  # fmt: skip
def test_module_errors_match_torch(make, x, what):
    assert_same_error(lambda: make(bnviz)(x), lambda: make(nn)(x), what)


@pytest.mark.parametrize(
    "args", [(4, 6), (0, 6), (-2, 6), (3, 0)], ids=["not-divisible", "zero-groups", "negative", "zero-channels"]
)
def test_group_norm_constructor_errors(args):
    try:
        nn.GroupNorm(*args)
    except Exception:
        assert_same_error(lambda: bnviz.GroupNorm(*args), lambda: nn.GroupNorm(*args), f"GroupNorm{args}")
    else:
        assert bnviz.GroupNorm(*args).extra_repr() == nn.GroupNorm(*args).extra_repr()


def test_instance_norm_warns_like_torch_when_channels_do_not_match():
    x = torch.randn(2, 5, 4)
    messages = []
    for m in (bnviz.InstanceNorm1d(6), nn.InstanceNorm1d(6)):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            m(x)
        messages.append([(w.category, str(w.message)) for w in seen])
    assert messages[0] == messages[1] and messages[0], messages


def test_batch_size_matters_to_batch_norm_only():
    """Sample 0's output changes with the other samples under batch norm, not under the others."""
    x = _input((4, 6, 5, 4))
    other = x.clone()
    other[1:] = _input((3, 6, 5, 4), seed=5) * 3
    for name, fn in [("layer", lambda t: bnviz.layer_norm(t, t.shape[1:])), ("group", lambda t: bnviz.group_norm(t, 3)),
                     ("instance", lambda t: bnviz.instance_norm(t)), ("rms", lambda t: bnviz.rms_norm(t, t.shape[1:]))]:
        assert torch.equal(fn(x)[0], fn(other)[0]), name  # fmt: skip
    bn = lambda t: bnviz.batch_norm(t, None, None, training=True)  # noqa: E731
    assert (bn(x)[0] - bn(other)[0]).abs().max() > 0.1
