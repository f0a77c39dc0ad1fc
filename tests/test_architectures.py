"""Small real architectures train in lockstep with bnviz's batch norms and with torch's.

torchvision's builds for torch 2.13 need CUDA libraries, so the blocks are written here as
torchvision writes them: resnet's basic block (conv → BN → ReLU(inplace) → conv → BN,
``out += identity``, ReLU(inplace)) and mobilenet_v3's inverted residual (expand, depthwise,
squeeze-excitation, Hardswish(inplace), project, ``result += input``). A small network of each
takes three SGD steps (momentum, weight decay) in float64, once with torch's ``BatchNorm2d`` and
once with bnviz's in the same state; parameters, gradients, running statistics and
``num_batches_tracked`` agree to float64 rounding after every step, and so does the eval output.
One residual block also runs under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn

import bnviz
from tests.conftest import assert_close


class BasicBlock(nn.Module):
    """resnet's basic block (torchvision.models.resnet.BasicBlock)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


def small_resnet(classes: int = 5) -> nn.Module:
    """Stem (conv, BN, ReLU(inplace), max pool), two basic blocks (one downsampling), pool, fc."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        BasicBlock(8, 8), BasicBlock(8, 16, stride=2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )  # fmt: skip


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation as mobilenet_v3 uses it (Hardsigmoid gate)."""

    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


def conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.Hardswish):
    """torchvision's Conv2dNormActivation: conv (no bias), BatchNorm2d, an in-place activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act(inplace=True)] if act is not None else []))


class InvertedResidual(nn.Module):
    """mobilenet_v3's block: expand (1×1), depthwise (k×k), squeeze-excitation, project (1×1, no
    activation), and ``result += input`` when the shapes allow."""

    def __init__(self, cin: int, expanded: int, cout: int, k: int, stride: int, se: bool, act: type) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if expanded == cin else [conv_bn_act(cin, expanded, 1, act=act)]
        layers.append(conv_bn_act(expanded, expanded, k, stride, groups=expanded, act=act))
        if se:
            layers.append(SqueezeExcitation(expanded, max(8, expanded // 4)))
        layers.append(conv_bn_act(expanded, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, input: Tensor) -> Tensor:
        result = self.block(input)
        if self.use_res_connect:
            result += input
        return result


def small_mobilenet_v3(classes: int = 5) -> nn.Module:
    """Stem, four inverted residuals (with and without SE, ReLU and Hardswish, strides 1 and 2),
    the last conv, pool, and the classifier (Linear, Hardswish(inplace), Dropout(inplace), Linear)."""
    return nn.Sequential(
        conv_bn_act(3, 8, 3, stride=2),
        InvertedResidual(8, 8, 8, 3, 1, se=True, act=nn.ReLU),
        InvertedResidual(8, 24, 12, 3, 2, se=False, act=nn.ReLU),
        InvertedResidual(12, 36, 12, 5, 1, se=True, act=nn.Hardswish),
        InvertedResidual(12, 36, 16, 3, 1, se=True, act=nn.Hardswish),
        conv_bn_act(16, 48, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(48, 32), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True), nn.Linear(32, classes),
    )  # fmt: skip


def with_bnviz_norms(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.BatchNorm2d`` replaced by ``bnviz.BatchNorm2d`` with the
    same arguments and state (torch's state dict loads as it is)."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.BatchNorm2d:
                ours = bnviz.BatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                         child.track_running_stats, dtype=child.weight.dtype)  # fmt: skip
                ours.load_state_dict(child.state_dict())
                setattr(parent, name, ours)
    return model


def _vary_norms(model: nn.Module, seed: int) -> None:
    """γ, β and running statistics away from their defaults (a swapped formula cannot pass)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=torch.float64) + 0.5)


def _compare(ours: nn.Module, ref: nn.Module, what: str, grads: bool = True) -> None:
    """Every parameter (and its gradient) and buffer by name, to float64 rounding: atol scaled by
    the tensor's magnitude and √(its size), the rounding of the sums that made it."""
    mine = dict(ours.named_parameters()) | dict(ours.named_buffers())
    theirs = dict(ref.named_parameters()) | dict(ref.named_buffers())
    assert mine.keys() == theirs.keys(), f"{what}: names differ: {sorted(set(mine) ^ set(theirs))}"
    n_bnviz = sum(isinstance(m, bnviz.BatchNorm) for m in ours.modules())
    assert n_bnviz == sum(isinstance(m, nn.BatchNorm2d) for m in ref.modules()) > 0, f"{what}: norms not swapped"
    for name, want in theirs.items():
        got = mine[name]
        scale = 100 * math.sqrt(want.numel()) * max(1.0, want.abs().max().item()) if want.is_floating_point() else 1
        assert_close(got, want, f"{what}: {name}", scale=scale)
        if grads and isinstance(want, nn.Parameter):
            g, w = got.grad, want.grad
            scale = 100 * math.sqrt(want.numel()) * max(1.0, w.abs().max().item())
            assert_close(g, w, f"{what}: ∂L/∂{name}", scale=scale)


def _batches(shape: tuple[int, ...], classes: int, steps: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(11)
    return [(torch.randn(shape, generator=g, dtype=torch.float64) * 1.5 + 0.3,
             torch.randint(0, classes, (shape[0],), generator=g)) for _ in range(steps)]  # fmt: skip


NETWORKS = {"resnet": small_resnet, "mobilenet_v3": small_mobilenet_v3}


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("network", NETWORKS)
def test_three_sgd_steps_in_lockstep(network, channels_last):
    torch.manual_seed(0)
    ref = NETWORKS[network]().double()
    _vary_norms(ref, 1)
    ours = with_bnviz_norms(ref)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    ref, ours = ref.to(memory_format=fmt), ours.to(memory_format=fmt)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4) for m in (ours, ref)]
    for step, (x, target) in enumerate(_batches((6, 3, 12, 12), 5, 3)):
        x = x.contiguous(memory_format=fmt)
        for model, opt in zip((ours, ref), optimizers, strict=True):
            opt.zero_grad()
            torch.manual_seed(100 + step)  # the same dropout mask for both
            nn.functional.cross_entropy(model(x), target).backward()
            opt.step()
        _compare(ours, ref, f"{network} after step {step}")
    ours.eval(), ref.eval()
    x = _batches((4, 3, 12, 12), 5, 1)[0][0].contiguous(memory_format=fmt)
    with torch.no_grad():
        y, y_ref = ours(x), ref(x)
        assert_close(y, y_ref, f"{network} eval output", scale=100 * max(1.0, y_ref.abs().max().item()))


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("block", ["BasicBlock-downsample", "InvertedResidual"])
def test_compiled_residual_block_steps_like_torch(block):
    """``torch.compile(fullgraph=True)`` of a residual block with bnviz's norms against the same
    block with torch's norms, compiled too: three SGD steps, then eval. (Compiled against eager,
    the squeeze-excitation's Hardsigmoid alone puts 3e-8 into ∂L/∂fc in float64: inductor's
    backward of it rounds 1/6 to float32, torch's layers and bnviz's alike — measured.)"""
    torch.manual_seed(0)
    make = {"BasicBlock-downsample": lambda: BasicBlock(6, 8, stride=2),
            "InvertedResidual": lambda: InvertedResidual(8, 24, 8, 3, 1, se=True, act=nn.Hardswish)}[block]  # fmt: skip
    ref = make().double()
    _vary_norms(ref, 2)
    ours = with_bnviz_norms(ref)
    compiled, compiled_ref = torch.compile(ours, fullgraph=True), torch.compile(ref, fullgraph=True)
    cin = 6 if block.startswith("Basic") else 8
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9) for m in (ours, ref)]
    for step, (x, _) in enumerate(_batches((4, cin, 8, 8), 2, 3)):
        for run, opt in zip((compiled, compiled_ref), optimizers, strict=True):
            opt.zero_grad()
            y = run(x)
            w = torch.randn(y.shape, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
            (y * w).sum().backward()  # a random weighting: a loss whose gradient is not rounding noise
            opt.step()
        _compare(ours, ref, f"compiled {block} after step {step}")
    ours.eval(), ref.eval()
    x = _batches((4, cin, 8, 8), 2, 1)[0][0]
    with torch.no_grad():
        y, y_ref = compiled(x), compiled_ref(x)
        assert_close(y, y_ref, f"compiled {block} eval output", scale=100 * max(1.0, y_ref.abs().max().item()))
