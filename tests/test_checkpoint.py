"""bnviz's batch norms under activation checkpointing (``torch.utils.checkpoint``): the running
statistics are updated once per step, as without checkpointing — against an unchecked copy of the
same model — where torch's own layer updates them twice (pytorch#96136, documented by a test).
Outputs and gradients do not change; ``torch.compile(fullgraph=True)`` of a model without
checkpointing still has no graph break; SyncBatchNorm's recomputation joins the same collectives.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import bnviz
from bnviz.modules import in_recomputation
from tests.test_sync import run_world


def assert_equal(actual: Tensor | None, expected: Tensor | None, what: str) -> None:
    """Bitwise equality (the same ops on the same values), failing with both values."""
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{what}: checkpointed={actual!r} plain={expected!r}"
        return
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (
        f"{what}: checkpointed {actual.shape} {actual.dtype}, plain {expected.shape} {expected.dtype}"
    )
    if not torch.equal(actual, expected):
        a, e = actual.detach().double().flatten(), expected.detach().double().flatten()
        worst = int((a - e).abs().nan_to_num(float("inf")).argmax())
        raise AssertionError(
            f"{what}: max|Δ|={float((a - e).abs().max()):.3e}; element {worst}: "
            f"checkpointed={a[worst].item()!r} plain={e[worst].item()!r}"
        )


@dataclass(frozen=True)
class Case:
    """A block of ``layers`` (1d: Linear→BN→ReLU→Linear→BN; 2d: Conv→BN→ReLU→Conv→BN) trained
    ``steps`` steps with the whole block checkpointed, against an unchecked copy."""

    id: str
    rank: int  # 1: BatchNorm1d on (N, C) or (N, C, L) inputs; 2: BatchNorm2d
    sample: tuple[int, ...]  # one sample's shape, (C_in, *spatial)
    momentum: float | None
    reentrant: bool
    steps: int
    bn: type[nn.Module] = bnviz.BatchNorm1d
    batch: int = 5


CASES = [
    Case(f"{bn.__name__}-{tag}-m{momentum}-{'reentrant' if reentrant else 'non-reentrant'}-{steps}-steps",
         rank, sample, momentum, reentrant, steps, bn)
    for bn, rank, sample, tag in [
        (bnviz.BatchNorm1d, 1, (4,), "NC"), (bnviz.BatchNorm1d, 1, (4, 3), "NCL"),
        (bnviz.BatchNorm2d, 2, (3, 4, 4), "NCHW"), (bnviz.BatchNorm, 2, (3, 4, 4), "any-rank"),
        (bnviz.SyncBatchNorm, 2, (3, 4, 4), "no-group"),
    ]
    for momentum, reentrant, steps in [(0.1, True, 1), (0.1, False, 3), (None, True, 3), (None, False, 2)]
]  # fmt: skip


def _block(case: Case, bn: type[nn.Module]) -> nn.Sequential:
    """Two batch norms inside one block, with non-trivial γ, β and running statistics."""
    torch.manual_seed(0)
    c_in, c = case.sample[0], 6
    if case.rank == 1:
        lin = nn.Conv1d if len(case.sample) == 2 else nn.Linear
        first, second = (lin(c_in, c, 1), lin(c, c, 1)) if lin is nn.Conv1d else (lin(c_in, c), lin(c, c))
    else:
        first, second = nn.Conv2d(c_in, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
    block = nn.Sequential(first, bn(c, momentum=case.momentum), nn.ReLU(), second, bn(c, momentum=case.momentum))
    with torch.no_grad():
        for m in block:
            if isinstance(m, bn):
                m.weight.copy_(torch.linspace(0.5, 1.5, c))
                m.bias.copy_(torch.linspace(-0.3, 0.2, c))
                m.running_mean.copy_(torch.linspace(-0.1, 0.1, c))
                m.running_var.copy_(torch.linspace(0.5, 2.0, c))
    return block


def _train(block: nn.Module, case: Case, checkpointed: bool, reentrant: bool | None = None) -> list[dict[str, Any]]:
    """``case.steps`` steps of forward and backward; per step the output, input and parameter
    gradients, and the buffers afterwards."""
    g = torch.Generator().manual_seed(1)
    reentrant = case.reentrant if reentrant is None else reentrant
    steps = []
    for _ in range(case.steps):
        x = (torch.randn((case.batch, *case.sample), generator=g) * 2 + 1).requires_grad_()
        upstream = torch.randn((case.batch, 6, *case.sample[1:]), generator=g)
        block.zero_grad()
        y = checkpoint(block, x, use_reentrant=reentrant) if checkpointed else block(x)
        y.backward(upstream)
        steps.append({
            "y": y.detach(), "grad x": x.grad,
            **{f"grad {n}": p.grad.clone() for n, p in block.named_parameters()},
            **{n: b.clone() for n, b in block.named_buffers()},
        })  # fmt: skip
    return steps


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_checkpointed_block_equals_unchecked_copy(case):
    """Buffers (running_mean, running_var, num_batches_tracked), outputs and every gradient after
    each step: bitwise those of the same block without checkpointing."""
    plain = _block(case, case.bn)
    checked = copy.deepcopy(plain)
    for step, (got, want) in enumerate(zip(_train(checked, case, True), _train(plain, case, False), strict=True)):
        assert list(got) == list(want), f"step {step}: keys {list(got)} vs {list(want)}"
        for what in want:
            assert_equal(got[what], want[what], f"step {step} {what}")
    tracked = [int(b) for n, b in checked.named_buffers() if n.endswith("num_batches_tracked")]
    assert tracked == [case.steps, case.steps], f"num_batches_tracked {tracked}, want {case.steps} per layer"


TORCH_CASES = [pytest.param(reentrant, momentum, id=f"{'reentrant' if reentrant else 'non-reentrant'}-m{momentum}")
               for reentrant in (True, False) for momentum in (0.1, None)]  # fmt: skip


@pytest.mark.parametrize("reentrant, momentum", TORCH_CASES)
def test_torch_counts_a_checkpointed_batch_twice(reentrant, momentum):
    """The documented difference: torch's BatchNorm1d in the same checkpointed block counts one
    step as two batches (pytorch#96136) and its running statistics move twice; bnviz's once."""
    case = Case("torch", 1, (4,), momentum, reentrant, 1)
    plain = _block(case, nn.BatchNorm1d)
    checked = copy.deepcopy(plain)
    (got,), (want,) = _train(checked, case, True), _train(plain, case, False)
    assert [int(got[n]) for n in ("1.num_batches_tracked", "4.num_batches_tracked")] == [2, 2], got
    assert [int(want[n]) for n in ("1.num_batches_tracked", "4.num_batches_tracked")] == [1, 1], want
    moved = (got["1.running_var"] - want["1.running_var"]).abs().max()
    if momentum is not None:  # (a cumulative average of the same batch twice is that batch: no visible move)
        assert moved > 1e-3, f"torch's running_var equals the unchecked one (max|Δ|={moved:.2e}): fixed upstream?"
    ours = _block(case, bnviz.BatchNorm1d)
    (mine,) = _train(ours, case, True)
    assert [int(mine[n]) for n in ("1.num_batches_tracked", "4.num_batches_tracked")] == [1, 1], mine


def test_recomputation_is_recognised_only_inside_backward():
    """``in_recomputation`` is False in a plain forward and True in checkpoint's recomputation,
    for both implementations."""
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            seen.append(in_recomputation())
            return x * x  # (saves x: the non-reentrant recomputation needs it)

    for reentrant in (True, False):
        seen.clear()
        x = torch.randn(3, requires_grad=True)
        checkpoint(Probe(), x, use_reentrant=reentrant).sum().backward()
        assert seen == [False, True], f"reentrant={reentrant}: {seen}"
    assert not in_recomputation()


def test_eval_mode_under_checkpointing_reads_the_buffers():
    """In eval mode nothing is counted either way; the recomputation reads the running statistics."""
    case = Case("eval", 2, (3, 4, 4), 0.1, False, 2, bnviz.BatchNorm2d)
    plain = _block(case, bnviz.BatchNorm2d).eval()
    checked = copy.deepcopy(plain)
    for step, (got, want) in enumerate(zip(_train(checked, case, True), _train(plain, case, False), strict=True)):
        for what in want:
            assert_equal(got[what], want[what], f"eval step {step} {what}")


def test_compile_fullgraph_without_checkpointing():
    """The check is skipped under ``torch.compile``: a model without checkpointing compiles with
    fullgraph=True and counts its batches like the eager model."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        case = Case("compile", 1, (4,), None, False, 2)
        eager = _block(case, bnviz.BatchNorm1d)
        compiled = copy.deepcopy(eager)
        fused = torch.compile(compiled, fullgraph=True)
        for step in range(2):
            x = torch.randn(5, 4) * 2 + 1
            y, y_eager = fused(x), eager(x)
            assert torch.allclose(y, y_eager, atol=1e-5), f"step {step}: max|Δ|={(y - y_eager).abs().max():.2e}"
        for (name, a), b in zip(compiled.state_dict().items(), eager.state_dict().values(), strict=True):
            assert torch.allclose(a.double(), b.double(), atol=1e-6), f"{name}: compiled {a} eager {b}"
    finally:
        torch._dynamo.reset()


# --- SyncBatchNorm over two gloo ranks: the recomputation joins the same collectives ----------------------------------


def _sync_worker(rank: int, world: int) -> dict[str, float]:
    """Each rank: a checkpointed and an unchecked copy of Linear→SyncBatchNorm→ReLU→Linear→SyncBatchNorm
    on its own batch (uneven sizes), two steps each, both implementations; the largest difference."""
    diffs: dict[str, float] = {}
    for reentrant in (True, False):
        case = Case("sync", 1, (4,), None, reentrant, 2, bnviz.SyncBatchNorm, batch=3 + 2 * rank)
        plain = _block(case, bnviz.SyncBatchNorm)
        checked = copy.deepcopy(plain)
        got, want = _train(checked, case, True), _train(plain, case, False)
        for step, (a, b) in enumerate(zip(got, want, strict=True)):
            for what in b:
                diffs[f"{'reentrant' if reentrant else 'non-reentrant'} step {step} {what}"] = float(
                    (a[what].double() - b[what].double()).abs().max()
                )
    return diffs


def test_sync_batch_norm_recomputation_over_gloo():
    """Two ranks: the checkpointed SyncBatchNorm model equals the unchecked one — buffers counted
    once, outputs and gradients the same — and nobody hangs (the recomputation's all_gather is
    joined by every rank alike)."""
    for rank, diffs in enumerate(run_world(_sync_worker, 2, timeout=60).check()):
        bad = {k: v for k, v in diffs.items() if v != 0.0}
        assert not bad, f"rank {rank}: checkpointed differs from plain: {bad}"
        assert any("num_batches_tracked" in k for k in diffs), diffs
