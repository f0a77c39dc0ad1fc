"""bnviz's layers used the way real code uses a norm layer, each case against torch's layer.

A layer compared alone never has its output touched afterwards; real code does: an in-place
activation after it (conv → norm → ReLU(inplace=True), the block of nearly every CNN), a residual
``out += identity``, the caller writing into the output, channels_last tensors, autocast, no_grad
and inference_mode, ``torch.func.functional_call`` with replaced buffers, deepcopy and a
``weights_only`` state round trip, frozen parameters, eval mode, and ``torch.compile``. Each case
builds the same block twice — a channel-mixing op (Linear or Conv), the norm, then the pattern —
once with torch's norm and once with bnviz's (same state), and compares the output, ∂L/∂ of the
input and of every parameter, and every buffer, for a loss with a random weighting (a plain sum of
squares after a norm has a gradient of pure rounding noise). Every member, rank and layout.
"""

from __future__ import annotations

import copy
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch._dynamo
from torch import Tensor, nn

import bnviz
from bnviz.explorer.parity import tolerance
from tests.conftest import assert_close, assert_same_error

C = 4
SHAPES = {2: (6, C), 3: (3, C, 5), 4: (2, C, 3, 5), 5: (2, C, 2, 3, 3)}
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
TORCH_BN = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}


@dataclass(frozen=True)
class Member:
    """A norm layer of the family, built by ``make(lib, shape)`` for lib ``bnviz`` or ``torch.nn``
    on an input of ``shape``, for the ranks it takes."""

    name: str
    ranks: tuple[int, ...]
    make: Callable[[object, tuple[int, ...]], nn.Module]


MEMBERS = [
    Member("BatchNorm1d", (2, 3), lambda lib, s: lib.BatchNorm1d(C)),
    Member("BatchNorm2d", (4,), lambda lib, s: lib.BatchNorm2d(C)),
    Member("BatchNorm3d", (5,), lambda lib, s: lib.BatchNorm3d(C)),
    # bnviz's one layer for every rank, against torch's class for that rank
    Member("BatchNorm", (2, 3, 4, 5), lambda lib, s: (bnviz.BatchNorm if lib is bnviz else TORCH_BN[len(s)])(C)),
    Member("BatchNorm-momentum-None", (4,), lambda lib, s: lib.BatchNorm2d(C, momentum=None)),
    Member("BatchNorm-untracked", (4,), lambda lib, s: lib.BatchNorm2d(C, track_running_stats=False)),
    Member("InstanceNorm1d", (3,), lambda lib, s: lib.InstanceNorm1d(C, affine=True, track_running_stats=True)),
    Member("InstanceNorm2d", (4,), lambda lib, s: lib.InstanceNorm2d(C, affine=True, track_running_stats=True)),
    Member("InstanceNorm3d", (5,), lambda lib, s: lib.InstanceNorm3d(C, affine=True, track_running_stats=True)),
    Member("GroupNorm", (2, 3, 4, 5), lambda lib, s: lib.GroupNorm(2, C)),
    Member("LayerNorm", (2, 3, 4, 5), lambda lib, s: lib.LayerNorm(s[-1:])),
    Member("LayerNorm-CHW", (4,), lambda lib, s: lib.LayerNorm(s[1:])),
    Member("RMSNorm", (2, 3, 4, 5), lambda lib, s: lib.RMSNorm(s[-1:])),
]

# How the norm's input is laid out in memory, as real code produces it (from the mixing op's output h).
LAYOUTS: dict[str, Callable[[Tensor], Tensor]] = {
    "contiguous": lambda h: h,
    # an image model in channels_last: the conv's output keeps it
    "channels_last": lambda h: h.contiguous(memory_format=CHANNELS_LAST[h.dim()]),
    # features-last data transposed for a channels-first norm: bn(h.transpose(1, 2)) on (N, L, C)
    "features_last": lambda h: h.movedim(1, -1).contiguous().movedim(-1, 1),
    # strides that allow no view (every other position)
    "strided": lambda h: h[::2] if h.dim() == 2 else h[..., ::2],
}


def _layouts(rank: int) -> list[str]:
    minimum = {"channels_last": 4, "features_last": 3}
    return [name for name in LAYOUTS if rank >= minimum.get(name, 2)]


def _mixer(rank: int, kernel: int = 3) -> nn.Module:
    """The op before the norm in real code: Linear for (N, C), else a 3-wide convolution — without
    a bias, as before a batch norm in real code (a bias the norm subtracts again has a gradient of
    pure rounding noise)."""
    if rank == 2:
        return nn.Linear(C, C, bias=False)
    conv = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}[rank]
    return conv(C, C, kernel, padding=kernel // 2, bias=False)


class Block(nn.Module):
    """mixer → layout → norm → the pattern (which may modify the norm's output in place)."""

    def __init__(self, mixer: nn.Module, norm: nn.Module, layout: str, pattern: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.mixer, self.norm, self.layout, self.pattern = mixer, norm, layout, pattern

    def forward(self, x: Tensor) -> Tensor:
        h = LAYOUTS[self.layout](self.mixer(x))
        return self.pattern(self.norm(h), h)


def _residual(y: Tensor, h: Tensor) -> Tensor:
    y += h
    return y


def _residual_relu(y: Tensor, h: Tensor) -> Tensor:
    y += h
    return y.relu_()


def _write_channel(y: Tensor, h: Tensor) -> Tensor:
    y[:, 0] = 0.5
    return y


PATTERNS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "plain": lambda y, h: y,
    "ReLU(inplace)": lambda y, h: nn.ReLU(inplace=True)(y),
    "ReLU6(inplace)": lambda y, h: nn.ReLU6(inplace=True)(y),
    "Hardswish(inplace)": lambda y, h: nn.Hardswish(inplace=True)(y),
    "SiLU(inplace)": lambda y, h: nn.SiLU(inplace=True)(y),
    "LeakyReLU(inplace)": lambda y, h: nn.LeakyReLU(0.1, inplace=True)(y),
    "y.mul_(2).add_(1)": lambda y, h: y.mul_(2).add_(1),
    "y[:, 0] = 0.5": _write_channel,
    "y += identity": _residual,
    "y += identity; relu_": _residual_relu,
}


def _init(norm: nn.Module, seed: int) -> None:
    """Non-trivial γ, β and running statistics, so that a swapped formula cannot pass."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*norm.named_parameters(), *norm.named_buffers()]:
            if name == "num_batches_tracked":
                t.fill_(3)
            elif name in ("weight", "running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g))


def make_blocks(
    member: Member, rank: int, layout: str, pattern: str, seed: int = 0, kernel: int = 3
) -> tuple[Block, Block]:
    """(bnviz's block, torch's block), in the same state."""
    torch.manual_seed(seed)
    mixer = _mixer(rank, kernel)
    shape = LAYOUTS[layout](torch.empty(SHAPES[rank])).shape
    ref = Block(mixer, member.make(nn, tuple(shape)), layout, PATTERNS[pattern])
    _init(ref.norm, seed)
    ours = Block(copy.deepcopy(mixer), member.make(bnviz, tuple(shape)), layout, PATTERNS[pattern])
    ours.norm.load_state_dict(ref.norm.state_dict())
    return ours, ref


def _input(rank: int, layout: str, seed: int, dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(100 + seed)
    x = (torch.randn(SHAPES[rank], generator=g, dtype=torch.float64) * 2 + 0.5).to(dtype)
    if layout == "channels_last":  # as an image model feeds it: the conv keeps the format
        x = LAYOUTS["channels_last"](x)
    return x


def _weighting(y: Tensor, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(200 + seed)
    return torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)


def step(block: Block, x: Tensor, seed: int = 0, run: Callable[[Tensor], Tensor] | None = None) -> tuple[
        Tensor, dict[str, Tensor]]:  # fmt: skip
    """One forward (``block``, or ``run`` — its compiled form) and backward of ``(y · w).sum()``:
    the output and ∂L/∂ of the input and of every parameter that takes a gradient."""
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_()
    y = (block if run is None else run)(x)
    wrt = {"input": x, **{n: p for n, p in block.named_parameters() if p.requires_grad}}
    grads = torch.autograd.grad((y * _weighting(y, seed)).sum(), list(wrt.values()))
    return y, dict(zip(wrt, grads, strict=True))


def assert_same_state(ours: nn.Module, ref: nn.Module, what: str) -> None:
    """Every parameter and buffer, by name (running statistics, num_batches_tracked)."""
    mine, theirs = ours.state_dict(), ref.state_dict()
    assert mine.keys() == theirs.keys(), f"{what}: state keys bnviz={list(mine)} torch={list(theirs)}"
    for name in theirs:
        assert_close(mine[name], theirs[name], f"{what} {name}", scale=4)


def assert_same_step(
    ours: Block, ref: Block, x: Tensor, what: str, seed: int = 0, run: Callable[[Tensor], Tensor] | None = None
) -> None:
    y, grads = step(ours, x, seed, run)
    y_ref, grads_ref = step(ref, x, seed)
    assert_close(y, y_ref, f"{what} output", scale=4)
    assert y.is_contiguous(memory_format=torch.channels_last) == y_ref.is_contiguous(
        memory_format=torch.channels_last
    ), f"{what}: output layout bnviz strides={y.stride()} torch={y_ref.stride()}"
    assert_same_grads(grads, grads_ref, x, what)
    assert_same_state(ours, ref, what)


def assert_same_grads(
    grads: dict[str, Tensor], grads_ref: dict[str, Tensor], x: Tensor, what: str, dtype: torch.dtype | None = None
) -> None:
    """Each gradient within the rounding of a sum over the batch: atol scaled by √n and by the
    gradient's own magnitude (the mixer's ∂L/∂W sums products of the norm's ∂L/∂x with x). With a
    ``dtype`` of 16 bits (autocast), atol is √n ulps of that dtype at the largest value: an output
    one ulp either side of 0 flips a ReLU's mask, and the gradients then differ by whole summands."""
    assert grads.keys() == grads_ref.keys(), f"{what}: gradients of bnviz={list(grads)} torch={list(grads_ref)}"
    rtol, atol = tolerance(dtype or torch.float32)
    ulps = rtol / atol if dtype in (torch.float16, torch.bfloat16) else 1.0
    for name, want in grads_ref.items():
        scale = ulps * math.sqrt(x.numel()) * max(1.0, want.abs().max().item())
        assert_close(grads[name], want, f"{what} ∂L/∂{name}", dtype, scale=scale)


def _cases(layouts: Callable[[int], list[str]] = _layouts):
    return [pytest.param(m, r, lay, id=f"{m.name}-{r}d-{lay}") for m in MEMBERS for r in m.ranks for lay in layouts(r)]


CASES = _cases()


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("member, rank, layout", CASES)
def test_patterns_after_the_norm_train_like_torch(member, rank, layout, pattern):
    """Two training steps with the pattern after the norm: outputs, all gradients, buffers."""
    ours, ref = make_blocks(member, rank, layout, pattern)
    for s in range(2):
        assert_same_step(ours, ref, _input(rank, layout, s), f"{pattern}, step {s}", seed=s)


MODES = ["eval", "frozen", "frozen-eval"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("member, rank, layout", CASES)
def test_eval_and_frozen_parameters_with_an_inplace_relu(member, rank, layout, mode):
    """Eval mode (running statistics, where the layer has them) and parameters with
    ``requires_grad=False`` (fine-tuning with a frozen norm), ReLU(inplace=True) after the norm."""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)")
    for block in (ours, ref):
        block.train(not mode.endswith("eval"))
        if mode.startswith("frozen"):
            block.norm.requires_grad_(False)
    assert_same_step(ours, ref, _input(rank, layout, 0), mode)


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("member, rank, layout", CASES)
def test_no_grad_and_inference_mode(member, rank, layout, context, training):
    """Outputs and running statistics under ``torch.no_grad()`` and ``torch.inference_mode()``
    (no_grad does not switch to running statistics: eval() does), the output then modified in place."""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)")
    x = _input(rank, layout, 0)
    outputs = []
    for block in (ours, ref):
        block.train(training)
        with torch.no_grad() if context == "no_grad" else torch.inference_mode():
            y = block(x)
            y += 1
        outputs.append(y)
    assert_close(outputs[0], outputs[1], f"{context} output", scale=4)
    assert_same_state(ours, ref, context)


@pytest.mark.parametrize("member, rank, layout", _cases(lambda r: ["contiguous", "channels_last"] if r >= 4 else
                                                        ["contiguous"]))  # fmt: skip
def test_autocast_bfloat16(member, rank, layout):
    """``torch.autocast("cpu", dtype=torch.bfloat16)``: the mixing op runs in bfloat16, so the norm
    gets a bfloat16 input with float32 parameters, and returns bfloat16, as torch's does.

    (Rank 5 mixes with a 1×1×1 convolution: torch 2.13's own bfloat16 3×3×3 Conv3d on the CPU
    returns a different ∂L/∂W on each call for the same inputs — values up to 1e38 — measured.)"""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)", kernel=1 if rank == 5 else 3)
    x = _input(rank, layout, 0)
    with torch.autocast("cpu", dtype=torch.bfloat16), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RMSNorm: torch's "Mismatch dtype between input and weight", both
        y, grads = step(ours, x)
        y_ref, grads_ref = step(ref, x)
    assert y.dtype == y_ref.dtype == torch.bfloat16, f"output dtype bnviz={y.dtype} torch={y_ref.dtype}"
    assert_close(y, y_ref, "autocast output", scale=4)
    assert_same_grads(grads, grads_ref, x, "autocast", torch.bfloat16)  # computed in bfloat16
    assert_same_state(ours, ref, "autocast")


@pytest.mark.parametrize("member, rank, layout", _cases(lambda r: ["contiguous"]))
def test_functional_call_with_replaced_buffers(member, rank, layout):
    """``torch.func.functional_call`` with the norm's buffers (or, for members without any, its
    parameters) replaced: the replacements are read and, in training, updated in place; the
    module's own state is untouched."""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)")
    x = _input(rank, layout, 0)
    results = []
    for block in (ours, ref):
        before = copy.deepcopy(block.state_dict())
        names = [n for n, _ in block.norm.named_buffers()] or [n for n, _ in block.norm.named_parameters()]
        g = torch.Generator().manual_seed(7)
        replaced = {f"norm.{n}": (torch.rand(getattr(block.norm, n).shape, generator=g) + 0.5).to(
            getattr(block.norm, n).dtype) for n in names}  # fmt: skip
        y = torch.func.functional_call(block, replaced, (x,))
        results.append((y, replaced))
        assert_same_state(block, _Frozen(before), "the module itself after functional_call")
    (y, replaced), (y_ref, replaced_ref) = results
    assert_close(y, y_ref, "functional_call output", scale=4)
    for name in replaced_ref:
        assert_close(replaced[name], replaced_ref[name], f"replaced {name} after the call", scale=4)


class _Frozen(nn.Module):
    """A state dict seen as a module (for ``assert_same_state``)."""

    def __init__(self, state: dict[str, Tensor]):
        super().__init__()
        self._state = state

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        return self._state


@pytest.mark.parametrize("member, rank, layout", _cases(lambda r: ["contiguous"]))
def test_deepcopy_and_weights_only_round_trip(member, rank, layout):
    """After a training step: a deepcopy, and a state saved with ``torch.save`` and loaded with
    ``torch.load(weights_only=True)`` into a fresh bnviz block and into torch's block, each train
    on and evaluate like torch's."""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)")
    assert_same_step(ours, ref, _input(rank, layout, 0), "first step")
    buffer = io.BytesIO()
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_ours, fresh_ref = make_blocks(member, rank, layout, "ReLU(inplace)", seed=5)
    fresh_ours.load_state_dict(state)
    fresh_ref.load_state_dict(state)  # bnviz's state dict loads into torch's layer
    copies = [(copy.deepcopy(ours), copy.deepcopy(ref), "deepcopy"), (fresh_ours, fresh_ref, "weights_only load")]
    for mine, theirs, what in copies:
        assert_same_step(mine, theirs, _input(rank, layout, 1), f"{what}, train step", seed=1)
        mine.eval(), theirs.eval()
        assert_same_step(mine, theirs, _input(rank, layout, 2), f"{what}, eval step", seed=2)
    assert_same_state(ours, ref, "the originals, untouched by their copies")


def test_inplace_relu_then_add_raises_like_torch():
    """ReLU(inplace=True) saves its output for its backward; modifying that output again breaks the
    backward — torch's layer and bnviz's raise the same error, at the same point."""
    ours, ref = make_blocks(MEMBERS[1], 4, "contiguous", "ReLU(inplace)")
    x = _input(4, "contiguous", 0)

    def run(block: Block) -> None:
        y = block(x)
        y += 1
        y.sum().backward()

    assert_same_error(lambda: run(ours), lambda: run(ref), "ReLU(inplace) then += then backward")


# --- torch.compile(fullgraph=True) of conv → norm → ReLU(inplace=True) ----------------------------


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


COMPILE_CASES = [pytest.param(m, m.ranks[-1], lay, id=f"{m.name}-{m.ranks[-1]}d-{lay}")
                 for m in MEMBERS for lay in (["contiguous", "channels_last"] if m.ranks[-1] >= 4 else ["contiguous"])
                 if m.name not in ("BatchNorm-untracked", "LayerNorm-CHW")]  # fmt: skip


@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("member, rank, layout", COMPILE_CASES)
def test_compiled_conv_norm_inplace_relu(member, rank, layout):
    """``torch.compile(fullgraph=True)`` of the block: two training steps and an eval step, against
    torch's block run eagerly."""
    ours, ref = make_blocks(member, rank, layout, "ReLU(inplace)")
    compiled = torch.compile(ours, fullgraph=True)
    for s in range(2):
        assert_same_step(ours, ref, _input(rank, layout, s), f"compiled, step {s}", seed=s, run=compiled)
    ours.eval(), ref.eval()
    assert_same_step(ours, ref, _input(rank, layout, 2), "compiled, eval step", seed=2, run=compiled)
