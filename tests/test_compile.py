"""bnviz under ``torch.compile``: no graph breaks, the plain formula fused (no chunk loop), parity
with torch and with eager bnviz (forward, running statistics, gradients, mixed precision, large
means), and batch-size changes that do not recompile once the batch dim is dynamic."""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from torch import nn

import bnviz
from bnviz.autograd import Layout, closed_form_backward, plain_statistics, plain_view, reference_norm
from tests.conftest import assert_close


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _input(shape, seed=0, dtype=torch.float32, offset=1.0, spread=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * spread + offset).to(dtype)


class Model(nn.Module):
    """Every kind of bnviz layer in one network."""

    def __init__(self, momentum=0.1):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn2d = bnviz.BatchNorm2d(8, momentum=momentum)
        self.gn = bnviz.GroupNorm(2, 8)
        self.inorm = bnviz.InstanceNorm2d(8, affine=True, track_running_stats=True)
        self.ln = bnviz.LayerNorm((8, 6, 6))
        self.rms = bnviz.RMSNorm(6)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 6 * 6, 16)
        self.bn1d = bnviz.BatchNorm1d(16, momentum=momentum)
        self.any = bnviz.BatchNorm(16)

    def forward(self, x):
        x = self.rms(self.ln(self.inorm(self.gn(self.bn2d(self.conv(x))))))
        y = self.bn1d(self.fc(self.flat(x)))
        return self.any(y.view(y.size(0), 16, 1, 1)).flatten(1)


@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "cumulative"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_model_of_every_layer_compiles_with_no_graph_break(momentum, training):
    model = Model(momentum).train(training)
    x = _input((4, 3, 6, 6))
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    code = "\n".join(g.code for g in explanation.graphs)
    assert "split" not in code, "the chunk loop of the eager path is not traced"
    eager, compiled = Model(momentum).train(training), Model(momentum).train(training)
    compiled.load_state_dict(eager.state_dict())
    fused = torch.compile(compiled, fullgraph=True)
    for step in range(3):
        xs = _input((4, 3, 6, 6), seed=step).requires_grad_()
        y, y_eager = fused(xs), eager(xs)
        assert_close(y, y_eager, f"step {step} output", scale=10)
        gx, gx_eager = (torch.autograd.grad(t.square().sum(), xs)[0] for t in (y, y_eager))
        assert_close(gx, gx_eager, f"step {step} grad input", scale=100)
    for (name, a), b in zip(compiled.state_dict().items(), eager.state_dict().values(), strict=True):
        assert_close(a.float(), b.float(), name, scale=10)


PARITY = [
    pytest.param(cls, shape, affine, momentum, dtype, id=f"{cls.__name__}-{len(shape)}d-{affine}-m{momentum}-{dt}")
    for cls, shape in [(bnviz.BatchNorm1d, (16, 5)), (bnviz.BatchNorm1d, (8, 5, 7)), (bnviz.BatchNorm2d, (4, 5, 6, 7)),
                       (bnviz.BatchNorm3d, (2, 5, 3, 4, 5))]
    for affine, momentum, (dtype, dt) in [(True, 0.1, (torch.float32, "f32")), (False, None, (torch.float32, "f32")),
                                          (True, 0.1, (torch.bfloat16, "bf16")), (True, None, (torch.float16, "f16"))]
]  # fmt: skip
TORCH_OF = {bnviz.BatchNorm1d: nn.BatchNorm1d, bnviz.BatchNorm2d: nn.BatchNorm2d, bnviz.BatchNorm3d: nn.BatchNorm3d}


@pytest.mark.parametrize("cls, shape, affine, momentum, dtype", PARITY)
def test_compiled_batch_norm_equals_torch(cls, shape, affine, momentum, dtype):
    """Outputs, all gradients, running statistics and num_batches_tracked over train, train,
    eval, train — compiled bnviz against torch's eager layer (mixed precision: float32 params),
    and against eager bnviz. ∂L/∂γ and ∂L/∂β are sums over the n values of a channel, each
    term moved by the statistics' last bit: their tolerance grows by √n, as in
    tests/test_autograd.py."""
    ours, eager, ref = (m(shape[1], affine=affine, momentum=momentum) for m in (cls, cls, TORCH_OF[cls]))
    if affine:
        with torch.no_grad():
            for m in (ours, eager, ref):
                m.weight.copy_(torch.linspace(0.5, 2.0, shape[1]))
                m.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
    fused = torch.compile(ours, fullgraph=True)
    n_sqrt = math.sqrt(math.prod(shape) / shape[1])
    for step, mode in enumerate(["train", "train", "eval", "train"]):
        for m in (ours, eager, ref):
            m.train(mode == "train")
        x = _input(shape, seed=step, dtype=dtype).requires_grad_()
        upstream = _input(shape, seed=10 + step, dtype=dtype)
        y, y_eager, y_ref = fused(x), eager(x), ref(x)
        assert y.dtype == y_ref.dtype == dtype
        assert_close(y, y_ref, f"step {step} output")
        assert_close(y, y_eager, f"step {step} output against eager bnviz")
        grads = torch.autograd.grad(y, [x, *ours.parameters()], upstream)
        grads_eager = torch.autograd.grad(y_eager, [x, *eager.parameters()], upstream)
        grads_ref = torch.autograd.grad(y_ref, [x, *ref.parameters()], upstream)
        for what, a, b, e in zip(["grad input", "grad weight", "grad bias"], grads, grads_ref, grads_eager,
                                 strict=False):  # fmt: skip
            scale = 8 if dtype == torch.float32 else 1
            scale = scale if what == "grad input" else max(scale, n_sqrt)
            assert_close(a, b, f"step {step} {what}", scale=scale)
            assert_close(a, e, f"step {step} {what} against eager bnviz", scale=scale)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            assert_close(getattr(ours, name), getattr(ref, name), f"step {step} {name}")
            assert_close(getattr(ours, name), getattr(eager, name), f"step {step} {name} against eager bnviz")


@pytest.mark.parametrize(
    "make", [lambda m: m.LayerNorm((5, 4)), lambda m: m.GroupNorm(3, 6), lambda m: m.RMSNorm(4),
             lambda m: m.InstanceNorm2d(6, affine=True, track_running_stats=True)],
    ids=["LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm2d"],
)  # fmt: skip
def test_compiled_family_equals_torch(make):
    ours, ref = make(bnviz), make(nn)
    fused = torch.compile(ours, fullgraph=True)
    for step, mode in enumerate(["train", "eval"]):
        ours.train(mode == "train")
        ref.train(mode == "train")
        x = _input((3, 6, 5, 4), seed=step).requires_grad_()
        y, y_ref = fused(x), ref(x)
        assert_close(y, y_ref, f"{mode} output")
        upstream = _input(y.shape, seed=10 + step)
        grads = torch.autograd.grad(y, [x, *ours.parameters()], upstream)
        grads_ref = torch.autograd.grad(y_ref, [x, *ref.parameters()], upstream)
        for what, a, b in zip(["grad input", "grad weight", "grad bias"], grads, grads_ref, strict=False):
            assert_close(a, b, f"{mode} {what}", scale=8)
        for name, buf in ours.named_buffers():
            assert_close(buf, dict(ref.named_buffers())[name], f"{mode} {name}")


@pytest.mark.parametrize("mean, spread", [(1e4, 1e-2), (1e6, 1.0)], ids=["1e4+-1e-2", "1e6+-1"])
def test_large_means_survive_compilation(mean, spread):
    """The compiled statistics survive a mean that dwarfs the spread (Welford's shifted updates):
    the running statistics (the batch's mean and unbiased variance, stored in float32) are as close
    to a float64 truth as torch's, or within one float32 ulp of it; the output as close as torch's
    within 25 % (both end in float32 arithmetic at the mean's magnitude)."""
    x = _input((16, 4, 8, 8), seed=2, offset=mean, spread=spread)
    ours, ref, truth = (cls(4, momentum=1.0) for cls in (bnviz.BatchNorm2d, nn.BatchNorm2d, nn.BatchNorm2d))
    with torch.no_grad():
        y, y_ref, y_truth = torch.compile(ours, fullgraph=True)(x), ref(x), truth.double()(x.double())
    for name in ("running_mean", "running_var"):
        t = getattr(truth, name)
        err, err_ref = (float((getattr(m, name).double() - t).abs().max()) for m in (ours, ref))
        ulp = float(torch.finfo(torch.float32).eps * t.abs().max())
        assert err <= max(err_ref, ulp), f"{name}: compiled bnviz {err:.3e} from float64, torch {err_ref:.3e}"
    err, err_ref = (float((v.double() - y_truth).abs().max()) for v in (y, y_ref))
    assert err <= 1.25 * err_ref + 2e-5, f"output: compiled bnviz {err:.3e} from float64, torch {err_ref:.3e}"


def test_batch_size_changes_do_not_recompile_once_dynamic():
    """With the batch dim dynamic (``dynamic=True``, or dynamo's automatic dynamic after the first
    change) one graph serves every batch size, forward and closed-form backward; bnviz adds no
    specialization of its own."""
    def graphs(layer, **options):
        torch._dynamo.reset()
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        fused = torch.compile(layer, **options)
        for n in (8, 16, 5, 32, 3):
            x = _input((n, 3, 4, 4)).requires_grad_()
            torch.autograd.grad(fused(x), [x, *layer.parameters()], torch.ones_like(x))
        return torch._dynamo.utils.counters["stats"]["unique_graphs"] - before

    counts = {name: graphs(layer, dynamic=True) for name, layer in (("bnviz", bnviz.BatchNorm2d(3)),
                                                                   ("torch", nn.BatchNorm2d(3)))}  # fmt: skip
    assert counts["bnviz"] == 1 and counts["bnviz"] <= counts["torch"], counts
    assert graphs(bnviz.BatchNorm2d(3)) <= 2, "one static graph, then one dynamic for every later batch size"
    for member in (bnviz.GroupNorm(3, 3), bnviz.LayerNorm((3, 4, 4)), bnviz.RMSNorm(4)):
        assert graphs(member, dynamic=True) == 1, type(member).__name__


MEMBERS = {  # name: (layout, input shape, γ's shape)
    "BatchNorm2d": (Layout(), (4, 5, 3, 2), (5,)),
    "BatchNorm1d": (Layout(), (7, 5), (5,)),
    "GroupNorm": (Layout("instances", k=3), (3, 6, 4, 2), (6,)),
    "InstanceNorm": (Layout("instances"), (3, 6, 4), (6,)),
    "LayerNorm": (Layout("trailing", inner=20), (3, 4, 5), (4, 5)),
    "RMSNorm": (Layout("trailing", inner=5, centred=False), (3, 4, 5), (5,)),
}


@pytest.mark.parametrize("batch_stats", [True, False], ids=["batch", "running"])
@pytest.mark.parametrize("member", MEMBERS)
def test_closed_form_equals_autograd_of_the_reference(member, batch_stats):
    """The backward that compiles (``closed_form_backward``, run eagerly here, float64) equals
    autograd through the plain forward formula (``reference_norm``), for every member."""
    layout, shape, wshape = MEMBERS[member]
    if not batch_stats and (layout.inner_affine or layout.k > 1):
        pytest.skip("running statistics belong to batch and instance norm")
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1).requires_grad_()
    w = (torch.rand(wshape, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(wshape, generator=g, dtype=torch.float64).requires_grad_() if layout.centred else None
    upstream = torch.randn(shape, generator=g, dtype=torch.float64)
    xv, dims, _, bshape = plain_view(x.detach(), layout)
    if batch_stats:
        mean, var = plain_statistics(xv, dims, layout.centred)
        y, _, _ = reference_norm(x, w, b, layout, 1e-5)
    else:
        mean, var = torch.randn(wshape, generator=g, dtype=torch.float64), torch.rand(wshape, dtype=torch.float64) + 0.5
        y, _, _ = reference_norm(x, w, b, layout, 1e-5, mean, (var + 1e-5).rsqrt())
        mean, var = mean.reshape(bshape), var.reshape(bshape)
    expected = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], upstream)
    needs = (True, True, b is not None)
    got = closed_form_backward(x.detach(), upstream, w.detach(), mean, (var + 1e-5).rsqrt(), layout, batch_stats, needs)
    for what, a, e in zip(["grad input", "grad weight", "grad bias"], got, expected, strict=False):
        assert_close(a.reshape(e.shape), e, f"{member} {what}")


def _backward_graphs(layer, x):
    """The ATen graphs AOT autograd hands to the backward compiler for one compiled step."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    def forward(gm, _):
        return make_boxed_func(gm.forward)

    fused = torch.compile(layer, backend=aot_autograd(fw_compiler=forward, bw_compiler=keep), fullgraph=True)
    torch.autograd.grad(fused(x), [x, *layer.parameters()], torch.ones_like(x))
    return graphs


def test_compiled_backward_is_the_closed_form():
    """Under compile, batch norm's backward is the closed form: two sums over the input's size (Σg
    and Σg·x_hat, one fused reduction for inductor) and one elementwise pass — not autograd's
    derivative of the forward formula, and no torch normalization kernel."""
    x = _input((4, 3, 5, 6)).requires_grad_()
    (graph,) = _backward_graphs(bnviz.BatchNorm2d(3), x)
    ops = [n for n in graph.graph.nodes if n.op == "call_function"]
    big_sums = [n for n in ops if "sum" in str(n.target) and n.args[0].meta["val"].numel() == x.numel()]
    assert len(big_sums) == 2, graph.code
    assert not [n for n in ops if "norm" in str(n.target) or "var_mean" in str(n.target)], graph.code


def test_double_backward_stays_eager():
    """Under compile the closed-form backward is not differentiable again — AOT autograd refuses
    create_graph for bnviz's layer exactly as for torch's own compiled layer; eager bnviz
    differentiates its plain formula (tests/test_autograd.py)."""
    messages = []
    for layer in (nn.BatchNorm2d(3), bnviz.BatchNorm2d(3)):
        x = _input((4, 3, 5, 5)).requires_grad_()
        (gx,) = torch.autograd.grad(torch.compile(layer)(x).square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError) as refused:
            gx.sum().backward()
        messages.append(str(refused.value))
    assert messages[0] == messages[1], messages
    x = _input((4, 3, 5, 5)).requires_grad_()
    (gx,) = torch.autograd.grad(bnviz.BatchNorm2d(3)(x).square().sum(), x, create_graph=True)
    (ggx,) = torch.autograd.grad(gx.square().sum(), x)
    assert ggx.shape == x.shape and bool(torch.isfinite(ggx).all())
