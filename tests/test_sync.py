"""bnviz.SyncBatchNorm with real processes and real gloo collectives, against torch's batch norm run
in one process on the whole (concatenated) batch.

A spawned world of 3 ranks runs the whole table of cases once (one spawn: starting processes is the
slow part); the tests then compare each case's per-rank results. Every world is bounded in time,
binds 127.0.0.1 only (file:// rendezvous, ``GLOO_SOCKET_IFNAME=lo``), destroys its process group
and leaves no child behind. Separate small worlds: DDP training, a rank dying mid-run, CUDA.
"""

from __future__ import annotations

import datetime
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils._python_dispatch import TorchDispatchMode

import bnviz
from bnviz.sync import SyncBatchNorm
from tests.conftest import assert_close

ROOT = Path(__file__).resolve().parent.parent
WORLD = 3
JOIN_S = 90.0  # a spawned world's bound, start to exit (it is killed after that)
GLOO_TIMEOUT = datetime.timedelta(seconds=10)  # a collective waiting on a dead rank fails after this
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(autouse=True)
def no_child_left():
    """Every test leaves no child process behind."""
    yield
    assert multiprocessing.active_children() == [], f"children left: {multiprocessing.active_children()}"


# --- the harness: spawn a world, bound it, collect what each rank returned --------------------------------------------


def _bootstrap(target: Callable[..., Any], rank: int, world: int, tmp: str, backend: str, args: tuple) -> None:
    """A rank's life: join the group, run ``target``, save its result (or the traceback), leave."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # gloo's pairs on the loopback interface only
    torch.set_num_threads(1)
    code = 0
    try:
        if backend == "nccl":
            torch.cuda.set_device(0)
        dist.init_process_group(
            backend, init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world, timeout=GLOO_TIMEOUT
        )
        torch.save(target(rank, world, *args), f"{tmp}/rank{rank}.pt")
    except BaseException:
        Path(f"{tmp}/rank{rank}.err").write_text(traceback.format_exc())
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    # Leave without interpreter finalization: the result is saved and the group destroyed, but
    # destroy_process_group does not always free gloo's worker threads (after a collective inside
    # torch.utils.checkpoint they outlive it, torch alone, no bnviz involved). One of them then
    # drops its last collective's thread-local state while Python is being finalized, needs the
    # GIL, and std::terminate aborts the rank (SIGABRT) after its work was done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class WorldResult:
    results: list[Any]  # what each rank's target returned (None where it did not return)
    exitcodes: list[int | None]
    errors: list[str]  # tracebacks of ranks that raised
    seconds: float

    def check(self) -> list[Any]:
        """The results, or a failure that shows every rank's traceback and exit code."""
        if any(code != 0 for code in self.exitcodes):
            report = "\n".join(
                f"rank {r}: exit {c}\n{e}" for r, (c, e) in enumerate(zip(self.exitcodes, self.errors, strict=True))
            )
            raise AssertionError(f"a rank failed after {self.seconds:.1f} s:\n{report}")
        return self.results


def run_world(
    target: Callable[..., Any], world: int, *args: Any, backend: str = "gloo", timeout: float = JOIN_S
) -> WorldResult:
    """``target(rank, world, *args)`` in ``world`` spawned processes; joined within ``timeout``
    seconds, then terminated and killed, so a dead or hung rank can never hang the suite."""
    ctx = mp.get_context("spawn")
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        procs = [
            ctx.Process(target=_bootstrap, args=(target, r, world, tmp, backend, args), daemon=True)
            for r in range(world)
        ]
        for p in procs:
            p.start()
        try:
            for p in procs:
                p.join(max(0.0, timeout - (time.monotonic() - start)))
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                    p.join(5)
                if p.is_alive():
                    p.kill()
                    p.join()
        results, errors = [], []
        for r in range(world):
            result, err = Path(f"{tmp}/rank{r}.pt"), Path(f"{tmp}/rank{r}.err")
            results.append(torch.load(result, weights_only=False) if result.exists() else None)
            errors.append(err.read_text() if err.exists() else "")
        seconds = time.monotonic() - start
        for r, p in enumerate(procs):
            if p.exitcode is not None and p.exitcode < 0:
                why = f"still running after {timeout:.0f} s" if seconds >= timeout else "it died by itself"
                errors[r] += f"(ended by signal {-p.exitcode} after {seconds:.1f} s: {why})"
        return WorldResult(results, [p.exitcode for p in procs], errors, seconds)


# --- the table --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One configuration run on every rank of the world: ``sizes[r]`` samples of shape ``sample``
    on rank r, ``steps`` training steps (forward and backward), optionally one eval step after."""

    id: str
    sample: tuple[int, ...]  # (C, *spatial) of one sample
    sizes: tuple[int, ...]  # samples per rank
    momentum: float | None = 0.1
    affine: bool = True
    bias: bool = True
    track: bool = True
    steps: int = 2
    dtype: torch.dtype = torch.float64
    groups: tuple[tuple[int, ...], ...] = ((0, 1, 2),)  # the process groups: a partition of the ranks
    build: str = "convert"  # "convert": torch's (or, for other ranks, bnviz's) layer converted; "direct"
    channels_last: bool = False
    offset: float = 1.0
    spread: float = 2.0
    eval_after: bool = False  # then rank 0 alone runs an eval step: eval must not communicate

    @property
    def param_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == torch.float64 else torch.float32


CASES = [
    Case("1d-even", (3,), (4, 4, 4)),
    Case("1d-NCL-uneven-empty-rank", (3, 5), (3, 0, 5)),
    Case("1d-rank-with-one-value", (3,), (1, 0, 2), build="direct"),
    Case("1d-all-ranks-empty", (3,), (0, 0, 0)),
    Case("2d-uneven-momentum-None", (4, 3, 3), (1, 2, 5), momentum=None, steps=3),
    Case("2d-empty-rank-no-affine-momentum-None", (2, 2, 3), (3, 0, 4), momentum=None, affine=False),
    Case("2d-bias-False", (3, 2, 2), (2, 2, 2), bias=False, build="direct"),
    Case("2d-not-tracking", (3, 2, 2), (2, 0, 3), track=False),
    Case("2d-channels-last-float32", (5, 3, 2), (2, 3, 1), dtype=torch.float32, channels_last=True),
    Case("2d-eval-after-training", (3, 2, 2), (2, 0, 3), eval_after=True),
    Case("2d-subgroup-of-ranks-0-1", (3, 2, 2), (2, 3, 4), groups=((0, 1), (2,))),
    Case("2d-world-size-1-groups", (3, 2, 2), (2, 3, 4), groups=((0,), (1,), (2,))),
    Case("3d-uneven-empty-rank", (2, 2, 3, 2), (2, 1, 0)),
    Case("3d-bfloat16", (3, 2, 2, 2), (1, 3, 2), dtype=torch.bfloat16),
    Case("any-rank-6d-bnviz-BatchNorm", (2, 2, 2, 2, 2), (1, 2, 0)),
    Case("large-mean-float64", (4, 8), (3, 5, 0), momentum=1.0, offset=1e4, spread=1e-2, steps=1),
    Case("large-mean-float32", (4, 8), (3, 5, 2), momentum=1.0, offset=1e4, spread=1e-2, steps=1, dtype=torch.float32),
]
CASE_BY_ID = {c.id: c for c in CASES}


def _batch(case: Case, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole batch of one step and the gradient arriving at the output, (ΣN, C, *)."""
    g = torch.Generator().manual_seed(zlib.crc32(case.id.encode()) + step)
    shape = (sum(case.sizes), *case.sample)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * case.spread + case.offset).to(case.dtype)
    grad = torch.randn(shape, generator=g, dtype=torch.float64).to(case.dtype)
    if case.channels_last:
        x, grad = x.contiguous(memory_format=torch.channels_last), grad.contiguous(memory_format=torch.channels_last)
    return x, grad


def _rows(case: Case, ranks: tuple[int, ...]) -> list[int]:
    """Indices of the whole batch held by ``ranks`` (their concatenated batch)."""
    starts = [sum(case.sizes[:r]) for r in range(len(case.sizes))]
    return [i for r in ranks for i in range(starts[r], starts[r] + case.sizes[r])]


def _take(t: torch.Tensor, case: Case, ranks: tuple[int, ...]) -> torch.Tensor:
    """The concatenated batch of ``ranks``: a slice, since the table's groups are runs of ranks."""
    rows = _rows(case, ranks)
    if not rows:
        return t[:0]
    assert rows == list(range(rows[0], rows[0] + len(rows))), f"ranks {ranks} are not consecutive"
    return t[rows[0] : rows[0] + len(rows)]


def _init(layer: nn.Module, case: Case) -> nn.Module:
    """Non-trivial γ, β and running statistics, the same for bnviz and torch."""
    c = case.sample[0]
    with torch.no_grad():
        if layer.weight is not None:
            layer.weight.copy_(torch.linspace(0.5, 1.5, c))
        if layer.bias is not None:
            layer.bias.copy_(torch.linspace(-0.3, 0.2, c))
        if layer.running_mean is not None:
            layer.running_mean.copy_(torch.linspace(-0.1, 0.1, c))
            layer.running_var.copy_(torch.linspace(0.5, 2.0, c))
    return layer


def _torch_class(case: Case) -> type[nn.Module]:
    """torch's layer for the input's rank; for other ranks torch's SyncBatchNorm, which — with no
    process group initialized, as in the pytest process — is torch's plain batch norm of any rank."""
    return {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d, 4: nn.BatchNorm3d}.get(
        len(case.sample), nn.SyncBatchNorm
    )


def _kwargs(case: Case) -> dict[str, Any]:
    return dict(
        momentum=case.momentum,
        affine=case.affine,
        track_running_stats=case.track,
        bias=case.bias,
        dtype=case.param_dtype,
    )


def _sync_layer(case: Case, group: Any) -> SyncBatchNorm:
    c = case.sample[0]
    if case.build == "direct":
        return _init(SyncBatchNorm(c, process_group=group, **_kwargs(case)), case)
    source = _torch_class(case) if len(case.sample) <= 4 else bnviz.BatchNorm
    return SyncBatchNorm.convert_sync_batchnorm(_init(source(c, **_kwargs(case)), case), group)


def _step(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> dict[str, Any]:
    """One forward and backward; the output, ∂L/∂x and the parameters' gradients."""
    x = x.detach().requires_grad_()
    for p in layer.parameters():
        p.grad = None
    y = layer(x)
    y.backward(grad)
    return {
        "y": y.detach(),
        "gx": x.grad,
        "gw": None if layer.weight is None else layer.weight.grad,
        "gb": None if layer.bias is None else layer.bias.grad,
    }


def _state(layer: nn.Module) -> dict[str, torch.Tensor | None]:
    return {
        k: None if getattr(layer, k) is None else getattr(layer, k).detach().clone()
        for k in ("running_mean", "running_var", "num_batches_tracked")
    }


def _run_case(case: Case, rank: int, group: Any) -> dict[str, Any]:
    layer = _sync_layer(case, group)
    record: dict[str, Any] = {"steps": []}
    for step in range(case.steps):
        x, grad = _batch(case, step)
        record["steps"].append(_step(layer, _take(x, case, (rank,)), _take(grad, case, (rank,))))
    record["state"] = _state(layer)
    if case.eval_after:
        layer.eval()
        if rank == 0:  # alone: a collective here would wait for the others and time out
            x, grad = _batch(case, case.steps)
            record["eval"] = _step(layer, x, grad)
    return record


def _groups(rank: int, world: int) -> dict[tuple[tuple[int, ...], ...], Any]:
    """Every partition in the table: this rank's group in it (None: the default group). Every rank
    creates every group, in the same order, as torch.distributed requires."""
    mine: dict[tuple[tuple[int, ...], ...], Any] = {}
    for partition in dict.fromkeys(case.groups for case in CASES):
        for ranks in partition:
            group = None if len(ranks) == world else dist.new_group(list(ranks))
            if rank in ranks:
                mine[partition] = group
    return mine


@dataclass(frozen=True)
class ErrorCase:
    """Every rank runs ``layer(x)`` in training and every rank raises (before any collective, or
    after the forward's all_gather, which all of them join): compared with ``expected``."""

    id: str
    sizes: tuple[int, ...]
    sample: tuple[int, ...]
    kwargs: tuple[tuple[str, Any], ...] = ()
    dtype: torch.dtype = torch.float32
    # "torch-sync": torch.nn.SyncBatchNorm in the same rank (the check precedes torch's GPU check);
    # "torch-full": torch's BatchNorm in the pytest process on the concatenated batch.
    expected: str = "torch-full"


ERRORS = [
    ErrorCase("1d-input", (4, 4, 4), (), expected="torch-sync"),
    ErrorCase("zero-channels", (2, 3, 1), (0,), expected="torch-sync"),
    ErrorCase("one-value-in-the-whole-batch", (1, 0, 0), (3,)),
    ErrorCase("wrong-channel-count", (2, 2, 2), (4,)),
    ErrorCase("eps-zero", (2, 2, 2), (3,), kwargs=(("eps", 0.0),)),
    ErrorCase("integer-input", (2, 2, 2), (3,), dtype=torch.int64),
]


def _error_input(err: ErrorCase, ranks: tuple[int, ...]) -> torch.Tensor:
    n = sum(err.sizes[r] for r in ranks)
    return (
        torch.arange(n * math.prod(err.sample)).reshape(n, *err.sample).to(err.dtype)
        if err.sample
        else torch.arange(n, dtype=err.dtype)
    )


def _error_layer(cls: type[nn.Module], err: ErrorCase) -> nn.Module:
    return cls(3 if err.id != "zero-channels" else 0, **dict(err.kwargs))


def _layer_error(cls: type[nn.Module], err: ErrorCase, rank: int) -> tuple[str, str] | None:
    """What ``cls``'s layer raises in training on this rank's part of the error case's batch."""
    x = _error_input(err, (rank,))
    return _raised(lambda: _error_layer(cls, err)(x))


def _raised(fn: Callable[[], Any]) -> tuple[str, str] | None:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


class _OpRecorder(TorchDispatchMode):
    """The ATen ops dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _checks(rank: int, world: int) -> dict[str, Any]:
    """What is not a parity case: torch's CPU refusal, the ops dispatched, torch.compile."""
    out: dict[str, Any] = {}
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(rank))
    # torch refuses a CPU input whenever a group is initialized; bnviz runs it (the deliberate difference).
    out["torch-cpu"] = _raised(lambda: nn.SyncBatchNorm(3)(x))
    out["bnviz-cpu"] = _raised(lambda: SyncBatchNorm(3)(x))
    # Forward and backward of the synchronized path dispatch no normalization kernel.
    layer, xg = SyncBatchNorm(3), x.clone().requires_grad_()
    with _OpRecorder() as rec:
        layer(xg).backward(torch.ones_like(xg))
    out["ops"] = sorted(set(rec.ops))
    # torch.compile: with W > 1 the graph breaks at the synchronized normalization, which runs
    # eagerly; the result equals eager mode's.
    import torch._dynamo as dynamo  # here, not at the top: each spawned rank imports this file

    dynamo.reset()
    model = nn.Sequential(nn.Linear(5, 5), SyncBatchNorm(3), nn.ReLU())
    eager = model(x)
    explained = dynamo.explain(model)(x)
    compiled = torch.compile(model, backend="eager")(x)
    out["compile"] = {
        "graphs": explained.graph_count,
        "breaks": explained.graph_break_count,
        "reasons": [str(b.reason) for b in explained.break_reasons],
        "max_diff": (compiled - eager).abs().max().item(),
    }
    # World size 1 (a group of one rank): BatchNorm's path, one graph, no break.
    dynamo.reset()
    alone = [dist.new_group([r]) for r in range(world)][rank]
    single = SyncBatchNorm(3, process_group=alone)
    full = torch.compile(single, backend="eager", fullgraph=True)(x)
    out["compile-world-1"] = (full - bnviz.BatchNorm(3)(x)).abs().max().item()
    return out


def _table_worker(rank: int, world: int) -> dict[str, Any]:
    groups = _groups(rank, world)
    out: dict[str, Any] = {"cases": {}, "errors": {}}
    for case in CASES:
        out["cases"][case.id] = _run_case(case, rank, groups[case.groups])
        dist.barrier()
    for err in ERRORS:
        out["errors"][err.id] = {
            "bnviz": _layer_error(SyncBatchNorm, err, rank),
            "torch-sync": _layer_error(nn.SyncBatchNorm, err, rank),
        }
        dist.barrier()
    out["checks"] = _checks(rank, world)
    return out


@pytest.fixture(scope="module")
def table() -> list[dict[str, Any]]:
    """The table run once in a world of 3: each rank's results."""
    return run_world(_table_worker, WORLD).check()


def _reference(case: Case, ranks: tuple[int, ...]) -> dict[str, Any]:
    """torch in this process on the concatenated batch of ``ranks``, step for step."""
    layer = _init(_torch_class(case)(case.sample[0], **_kwargs(case)), case)
    record: dict[str, Any] = {"steps": []}
    for step in range(case.steps):
        x, grad = _batch(case, step)
        record["steps"].append(_step(layer, _take(x, case, ranks), _take(grad, case, ranks)))
    record["state"] = _state(layer)
    if case.eval_after:
        x, grad = _batch(case, case.steps)
        record["eval"] = _step(layer.eval(), x, grad)
    return record


def _tol_scale(case: Case, n: int) -> float:
    """Sums over n values (the parameters' gradients, summed again over ranks) get √n more atol."""
    return max(1.0, math.sqrt(n)) * (4.0 if case.dtype == torch.bfloat16 else 1.0)


PARITY = [c for c in CASES if c.id != "large-mean-float32"]  # that one: against the float64 truth, below


@pytest.mark.parametrize("case", PARITY, ids=[c.id for c in PARITY])
def test_every_rank_matches_the_concatenated_batch(table, case):
    """Per rank and step: output and ∂L/∂x equal torch's on the group's concatenated batch; the
    running statistics and num_batches_tracked on every rank equal torch's; the γ, β gradients
    summed over the group's ranks equal torch's."""
    for ranks in case.groups:
        ref = _reference(case, ranks)
        offset = 0
        for r in ranks:
            got = table[r]["cases"][case.id]
            n = case.sizes[r]
            for step, (mine, want) in enumerate(zip(got["steps"], ref["steps"], strict=True)):
                where = f"{case.id} rank {r} step {step}"
                assert_close(mine["y"], want["y"][offset : offset + n], f"{where} output")
                fmt = torch.channels_last if case.channels_last else torch.contiguous_format
                assert mine["y"].is_contiguous(memory_format=fmt), f"{where}: output not in {fmt}"
                assert_close(mine["gx"], want["gx"][offset : offset + n], f"{where} ∂L/∂x", scale=_tol_scale(case, 1))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                assert_close(got["state"][name], ref["state"][name], f"{case.id} rank {r} {name}")
            offset += n
        for step, want in enumerate(ref["steps"]):
            for key, name in (("gw", "∂L/∂γ"), ("gb", "∂L/∂β")):
                parts = [table[r]["cases"][case.id]["steps"][step][key] for r in ranks]
                summed = None if parts[0] is None else torch.stack(parts).sum(0)
                total = sum(case.sizes[r] for r in ranks) * math.prod(case.sample[1:])
                assert_close(
                    summed, want[key], f"{case.id} ranks {ranks} step {step} Σ {name}", scale=_tol_scale(case, total)
                )
    if case.eval_after:
        got, want = table[0]["cases"][case.id]["eval"], _reference(case, case.groups[0])["eval"]
        for key in ("y", "gx", "gw", "gb"):
            assert_close(got[key], want[key], f"{case.id} eval {key}")


def _truth(case: Case, ranks: tuple[int, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """torch in float64 on the case's batch (its values exactly, cast up): the truth; and torch in
    the case's own dtype on the same batch, for comparison."""
    x, grad = _batch(case, 0)
    x, grad = _take(x, case, ranks), _take(grad, case, ranks)
    truth = _init(nn.BatchNorm1d(case.sample[0], **{**_kwargs(case), "dtype": torch.float64}), case)
    theirs = _init(nn.BatchNorm1d(case.sample[0], **_kwargs(case)), case)
    return {**_step(truth, x.double(), grad.double()), **_state(truth)}, {**_step(theirs, x, grad), **_state(theirs)}


def _rel(actual: torch.Tensor, truth: torch.Tensor) -> float:
    return ((actual.double() - truth).abs() / truth.abs()).max().item()


def _grad_given_mean(case: Case, ranks: tuple[int, ...], mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """∂L/∂x in float64 for a given (stored) mean and the true biased variance, per channel over
    (N, L): ``inv_std · (gh − mean(gh) − x_hat · mean(gh · x_hat))``, ``gh = γ · g``."""
    x, grad = (_take(t, case, ranks).double() for t in _batch(case, 0))
    weight = torch.linspace(0.5, 1.5, case.sample[0]).double().view(1, -1, 1)  # as _init sets it
    inv_std = (var + 1e-5).rsqrt().view(1, -1, 1)
    x_hat, gh = (x - mean.view(1, -1, 1)) * inv_std, grad * weight
    return inv_std * (gh - gh.mean((0, 2), keepdim=True) - x_hat * (gh * x_hat).mean((0, 2), keepdim=True))


@pytest.mark.parametrize("case", [c for c in CASES if c.offset > 1], ids=lambda c: c.id)
def test_large_mean_against_float64_truth(table, case):
    """1e4 ± 1e-2, spread over the ranks, against torch in float64 on the concatenated batch.

    Statistics: with momentum 1 the running statistics are the whole batch's mean and unbiased
    variance; Chan's merge keeps them within 1e-10 (float64: the per-rank means, rounded at 1e4,
    carry 1e-12 into the spread term) or 1e-6 (float32) relative, where a naive merge of per-rank
    Σx and Σx² fails the same bound (printed, and asserted: the case has teeth).

    Output: within 2 ulps of |x · scale| ≈ 1.7e6, the rounding of torch's (and the core's)
    ``x · scale + shift`` form: about 0.1 in float32, where torch's own output is as far off.

    ∂L/∂x: the mean is stored in the parameters' dtype (torch's convention, kept by the core); in
    float32 at 1e4 that rounding alone (5e-4, 5 % of σ) moves ∂L/∂x by ~2.6, for torch as for
    bnviz (printed). Given that stored mean, bnviz's ∂L/∂x is exact to 16 ulps plus the
    variance's relative error.
    """
    eps = torch.finfo(case.dtype).eps
    rtol = 1e-10 if case.dtype == torch.float64 else 1e-6
    ranks = case.groups[0]
    truth, theirs = _truth(case, ranks)
    x, _ = _batch(case, 0)
    parts = [_take(x, case, (r,)).transpose(0, 1).reshape(case.sample[0], -1) for r in range(WORLD)]  # (C, n_r)
    n = sum(p.size(1) for p in parts)
    s1, s2 = sum(p.sum(1) for p in parts), sum((p * p).sum(1) for p in parts)
    naive_err = _rel((s2 - s1 * s1 / n) / (n - 1), truth["running_var"])
    torch_var_err = _rel(theirs["running_var"], truth["running_var"])
    print(
        f"\n{case.id}: relative error of the variance: naive Σx, Σx² merge {naive_err:.1e}, torch {torch_var_err:.1e}"
    )
    assert naive_err > 10 * rtol, f"the naive merge passes too ({naive_err:.2e}): the case has no teeth"
    var = truth["running_var"] * (n - 1) / n  # biased: the one that normalizes
    y_bound = 2 * eps * 1e4 * 1.5 * (var + 1e-5).rsqrt().max().item() + rtol * truth["y"].abs().max().item()
    mean_used = table[0]["cases"][case.id]["state"]["running_mean"].double()  # momentum 1: the mean normalized with
    given = _grad_given_mean(case, ranks, mean_used, var)
    gx_bound = (16 * eps + rtol) * given.abs().max().item()  # rounding, and the variance's own error
    worst = lambda a, b: (a.double() - b).abs().max().item() if a.numel() else 0.0  # noqa: E731
    print(f"torch: |Δy| {worst(theirs['y'], truth['y']):.1e}, |Δ∂L/∂x| {worst(theirs['gx'], truth['gx']):.1e}")
    offset = 0
    for r in range(WORLD):
        got, k = table[r]["cases"][case.id], case.sizes[r]
        rows = slice(offset, offset + k)
        mean_err = _rel(got["state"]["running_mean"], truth["running_mean"])
        var_err = _rel(got["state"]["running_var"], truth["running_var"])
        dy, dgx = worst(got["steps"][0]["y"], truth["y"][rows]), worst(got["steps"][0]["gx"], truth["gx"][rows])
        dgx_given = worst(got["steps"][0]["gx"], given[rows])
        print(
            f"rank {r}: relative error of the mean {mean_err:.1e}, of the variance {var_err:.1e}; |Δy| {dy:.1e} "
            f"(bound {y_bound:.1e}); |Δ∂L/∂x| {dgx:.1e}, given the stored mean {dgx_given:.1e} (bound {gx_bound:.1e})"
        )
        assert mean_err <= rtol and var_err <= rtol, f"rank {r}: mean {mean_err:.2e}, var {var_err:.2e} > {rtol:.0e}"
        assert dy <= y_bound, f"rank {r}: |Δy| {dy:.2e} > {y_bound:.2e}"
        assert dgx_given <= gx_bound, f"rank {r}: |Δ∂L/∂x| {dgx_given:.2e} > {gx_bound:.2e} given the stored mean"
        offset += k


@pytest.mark.parametrize("err", ERRORS, ids=lambda e: e.id)
def test_errors_are_torchs(table, err):
    """Every rank raises torch's exception type and message: torch.nn.SyncBatchNorm's own (its
    checks before the GPU check) or, past those, plain batch norm's on the concatenated batch."""
    if err.expected == "torch-full":
        x = _error_input(err, tuple(range(WORLD)))
        want = _raised(lambda: _error_layer(nn.BatchNorm1d, err)(x))
    for r in range(WORLD):
        got = table[r]["errors"][err.id]
        if err.expected == "torch-sync":
            want = got["torch-sync"]
        assert want is not None, f"{err.id}: torch raised nothing"
        assert got["bnviz"] == want, f"{err.id} rank {r}:\n  bnviz: {got['bnviz']}\n  torch: {want}"


def test_cpu_is_the_one_deliberate_difference(table):
    """With a process group initialized, torch's SyncBatchNorm refuses a CPU input in training;
    bnviz's runs it."""
    for r in range(WORLD):
        got = table[r]["checks"]
        assert got["torch-cpu"] == (
            "ValueError",
            f"SyncBatchNorm expected input tensor to be on GPU or XPU or {torch._C._get_privateuse1_backend_name()}",
        ), got["torch-cpu"]
        assert got["bnviz-cpu"] is None, got["bnviz-cpu"]


def test_no_normalization_kernel_is_dispatched(table):
    """The synchronized forward and backward: core ops and c10d collectives, no torch norm kernel."""
    for r in range(WORLD):
        ops = table[r]["checks"]["ops"]
        assert any("allgather" in op for op in ops) and any("allreduce" in op for op in ops), ops
        assert not [op for op in ops if "norm" in op.lower()], ops


def test_compile(table):
    """World size 3: eager and compiled agree, the graph breaks at the synchronized normalization
    (printed); world size 1: fullgraph compiles (no break) and equals BatchNorm."""
    for r in range(WORLD):
        got = table[r]["checks"]
        print(f"\nrank {r}: {got['compile']}")
        assert got["compile"]["max_diff"] <= 1e-6, got["compile"]
        assert len(got["compile"]["reasons"]) == 1, got["compile"]  # one break: the collectives'
        assert "skipped" in got["compile"]["reasons"][0] and "_sync_norm" in got["compile"]["reasons"][0], got
        assert got["compile-world-1"] <= 1e-6, got["compile-world-1"]


# --- in one process: no group, state, conversion ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5), (2, 3, 2, 3, 4), (2, 3, 2, 2, 2, 3)], ids=lambda s: f"{len(s)}d"
)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["m0.1", "mNone"])
def test_without_process_group_it_is_batch_norm(shape, momentum):
    """No process group: train, train, eval, train like torch's (Sync)BatchNorm, any rank."""
    ours = _init(SyncBatchNorm(3, momentum=momentum), CASES[0])
    ref = _init(nn.SyncBatchNorm(3, momentum=momentum), CASES[0])  # no group: torch's plain batch norm
    g = torch.Generator().manual_seed(0)
    for step, mode in enumerate(["train", "train", "eval", "train"]):
        x = torch.randn(shape, generator=g) * 2 + 1
        grad = torch.randn(shape, generator=g)
        got, want = _step(ours.train(mode == "train"), x, grad), _step(ref.train(mode == "train"), x, grad)
        for key in ("y", "gx", "gw", "gb"):
            assert_close(got[key], want[key], f"step {step} ({mode}) {key}", scale=math.sqrt(x.numel()))
    for name, want in _state(ref).items():
        assert_close(_state(ours)[name], want, name)


def test_state_dicts_load_both_ways_and_repr():
    """torch's parameter and buffer names and extra_repr: strict loads to and from torch's
    SyncBatchNorm and BatchNorm2d."""
    ours = _init(SyncBatchNorm(4, momentum=None), replace(CASES[0], sample=(4,)))
    for cls in (nn.SyncBatchNorm, nn.BatchNorm2d):
        theirs = cls(4)
        theirs.load_state_dict(ours.state_dict())
        back = SyncBatchNorm(4)
        back.load_state_dict(theirs.state_dict())
        for k, v in ours.state_dict().items():
            assert torch.equal(back.state_dict()[k], v), k
    assert list(ours.state_dict()) == list(nn.SyncBatchNorm(4).state_dict())
    assert ours.extra_repr() == nn.SyncBatchNorm(4, momentum=None).extra_repr()
    assert repr(SyncBatchNorm(4, bias=False)).removeprefix("SyncBatchNorm") == repr(
        nn.SyncBatchNorm(4, bias=False)
    ).removeprefix("SyncBatchNorm")


def _model() -> nn.Module:
    """Every kind of batch norm (and two instance norms), nested; some state off its defaults."""
    model = nn.Sequential(
        nn.Conv1d(3, 3, 1),
        nn.BatchNorm1d(3),
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, affine=False), nn.InstanceNorm2d(4)),
        nn.BatchNorm3d(2, momentum=None, track_running_stats=False),
        bnviz.BatchNorm2d(4, bias=False),
        bnviz.BatchNorm(5),
        bnviz.InstanceNorm2d(4),
        nn.SyncBatchNorm(6, eps=1e-3),
    )
    model[1].weight.requires_grad_(False)
    model[2].eval()
    model[4].qconfig = "qconfig"
    return model


def test_convert_sync_batchnorm_keeps_state_like_torch():
    """torch's and bnviz's batch norms become bnviz.SyncBatchNorm sharing the very tensors (so
    requires_grad, values and optimizer references carry over), the training flag and qconfig;
    instance norms stay; where torch converts too, its layer's repr and flag are the same."""
    model = _model()
    before = dict(model.named_modules())
    group = object()  # any process-group handle is stored as given
    converted = SyncBatchNorm.convert_sync_batchnorm(model, group)
    theirs = dict(nn.SyncBatchNorm.convert_sync_batchnorm(_model()).named_modules())
    assert [n for n, _ in converted.named_modules()] == list(theirs)
    for name, new in converted.named_modules():
        old = before[name]
        if not isinstance(old, nn.modules.batchnorm._BatchNorm | bnviz.BatchNorm):
            assert new is old, name
            continue
        assert type(new) is SyncBatchNorm and new.process_group is group, name
        assert new.training == old.training and new.extra_repr() == old.extra_repr(), name
        for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert getattr(new, attr) is getattr(old, attr), f"{name}.{attr}"
        assert getattr(new, "qconfig", None) == getattr(old, "qconfig", None), name
        if isinstance(theirs[name], nn.SyncBatchNorm):  # torch converted it as well
            assert (new.extra_repr(), new.training) == (theirs[name].extra_repr(), theirs[name].training), name
    assert converted[1].weight.requires_grad is False and converted[2][1].training is False
    assert type(SyncBatchNorm.convert_sync_batchnorm(bnviz.BatchNorm1d(3))) is SyncBatchNorm


def test_compile_without_process_group_has_no_graph_break():
    """No group: BatchNorm's path, compiled in one graph (fullgraph) and equal to eager."""
    import torch._dynamo as dynamo

    dynamo.reset()
    layer = SyncBatchNorm(3)
    x = torch.randn(4, 3, 5)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)(x)
    assert_close(compiled, bnviz.BatchNorm(3)(x), "compiled")
    dynamo.reset()


# --- DDP: 5 SGD steps on 2 ranks against the full batch in one process ------------------------------------------------


def _ddp_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


def _ddp_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 3, 6, 6, generator=g) * torch.linspace(0.5, 3, 8).view(8, 1, 1, 1)  # ranks see different stats
    return x, torch.randn(8, 2, generator=g)


DDP_STEPS = 5


def _train(model: nn.Module, batches: Callable[[int], tuple[torch.Tensor, torch.Tensor]]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(DDP_STEPS):
        x, t = batches(step)
        opt.zero_grad()
        F.mse_loss(model(x), t).backward()
        opt.step()


def _ddp_worker(rank: int, world: int) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for name, convert in (("sync", True), ("plain", False)):
        model = _ddp_model()
        model = SyncBatchNorm.convert_sync_batchnorm(model) if convert else model
        ddp = DistributedDataParallel(model)
        _train(ddp, lambda step: tuple(t.chunk(world)[rank] for t in _ddp_batch(step)))
        out[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def test_ddp_training_equals_full_batch_training():
    """5 SGD steps of a converted conv model under DistributedDataParallel on 2 gloo ranks equal
    the same steps on the full batch in one process; without SyncBatchNorm they diverge (printed)."""
    ranks = run_world(_ddp_worker, 2).check()
    reference = _ddp_model()
    _train(reference, _ddp_batch)
    want = reference.state_dict()
    worst = {}
    for variant in ("sync", "plain"):
        worst[variant] = max(
            (ranks[r][variant][k].double() - v.double()).abs().max().item()
            for r in range(2)
            for k, v in want.items()
            if v.is_floating_point()
        )
    print(
        f"\nmax |Δ| of parameters and running stats after {DDP_STEPS} steps vs the full batch: "
        f"with SyncBatchNorm {worst['sync']:.2e}, without {worst['plain']:.2e} "
        f"({worst['plain'] / max(worst['sync'], 1e-12):.0f}×)"
    )
    assert worst["sync"] <= 1e-5, worst
    assert worst["plain"] > 100 * max(worst["sync"], 1e-9), worst


# --- a rank dies mid-run: the others fail within a bound --------------------------------------------------------------


def _dying_worker(rank: int, world: int, how: str) -> dict[str, Any]:
    layer = SyncBatchNorm(3)
    x = torch.randn(4, 3, 5, requires_grad=True)
    start = time.monotonic()
    try:
        if rank == 1 and how == "raises-before-forward":
            raise RuntimeError("rank 1 fails on purpose")
        y = layer(x)
        if rank == 1 and how == "exits-before-backward":
            os._exit(17)  # no clean-up at all: the backward's all_reduce has one rank fewer
        y.sum().backward()
    except Exception as exc:
        if rank == 1:
            raise
        return {"error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - start}
    return {"error": None, "seconds": time.monotonic() - start}


@pytest.mark.parametrize("how", ["exits-before-backward", "raises-before-forward"])
def test_a_dead_rank_fails_the_others_quickly(how):
    """The survivor's collective fails with an error (peer closed the connection, or gloo's
    timeout of 10 s), no hang: the world ends well within its bound."""
    world = run_world(_dying_worker, 2, how, timeout=45)
    assert world.exitcodes[1] == (17 if how == "exits-before-backward" else 1), world.errors
    assert world.exitcodes[0] == 0, world.errors[0]
    survivor = world.results[0]
    print(f"\n{how}: survivor failed after {survivor['seconds']:.2f} s with {survivor['error'][:200]!r}")
    assert survivor["error"] is not None and survivor["seconds"] < GLOO_TIMEOUT.total_seconds() + 5, survivor
    assert world.seconds < 40, world.seconds


def _hanging_worker(rank: int, world: int) -> str:
    if rank == 1:
        time.sleep(600)  # never joins the collective
    dist.all_reduce(torch.ones(1))  # rank 0 waits for rank 1 (gloo would give up after 10 s)
    return "unreachable"


def test_a_hung_world_is_killed_at_its_bound():
    """The harness itself: ranks still running at the bound are terminated (SIGTERM) — the suite
    cannot hang on a rank that neither dies nor times out."""
    world = run_world(_hanging_worker, 2, timeout=8)
    assert world.exitcodes == [-signal.SIGTERM, -signal.SIGTERM], (world.exitcodes, world.errors)
    assert all("still running after 8 s" in e for e in world.errors), world.errors
    assert world.results == [None, None] and world.seconds < 8 + 5, world.seconds


# --- torchrun ---------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_example():
    """``torchrun --standalone --nproc-per-node 2 examples/sync_batchnorm_torchrun.py``, with the
    rendezvous pinned to 127.0.0.1 (``--standalone`` is c10d on ``localhost:0``; it ignores an
    endpoint given beside it, so the equivalent flags are spelled out)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{_free_port()}",
        "--max-restarts",
        "0",
        str(ROOT / "examples" / "sync_batchnorm_torchrun.py"),
    ]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=90)
    finally:  # the launcher and its workers are one process group: none survives the test
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    print(out)
    assert proc.returncode == 0, out
    for rank in range(2):
        assert f"rank {rank}/2: matches the full batch: True" in out, out
        assert f"rank {rank}/2: local batch" in out and f"rank {rank}/2: synced" in out, out


# --- CUDA: torch's own SyncBatchNorm ----------------------------------------------------------------------------------


def _torch_vs_bnviz(rank: int, sizes: tuple[int, ...], device: str) -> dict[str, float]:
    """torch.nn.SyncBatchNorm and bnviz's on the same rank-local batches; the largest differences."""
    g = torch.Generator().manual_seed(7)
    full = torch.randn(sum(sizes), 4, 3, 3, generator=g) * 3 + 2
    grad = torch.randn(full.shape, generator=g)
    start = sum(sizes[:rank])
    x, gy = full[start : start + sizes[rank]].to(device), grad[start : start + sizes[rank]].to(device)
    got, want = {}, {}
    for layer, into in ((SyncBatchNorm(4, momentum=None), got), (nn.SyncBatchNorm(4, momentum=None), want)):
        layer = _init(layer.to(device), replace(CASES[0], sample=(4,)))
        for _ in range(2):
            into.update(_step(layer, x, gy))
        into.update(_state(layer))
    return {k: _max_diff(got[k], want[k]) for k in got}


def _max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """Largest |a − b|; a missing gradient (torch's None on an empty rank) counts as zeros."""
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        a, b = (torch.zeros_like(b if a is None else a) if t is None else t for t in (a, b))
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def _nccl_worker(rank: int, world: int) -> dict[str, float]:
    return _torch_vs_bnviz(rank, (6,), "cuda")


def _gloo_cuda_worker(rank: int, world: int, sizes: tuple[int, ...]) -> dict[str, float]:
    return _torch_vs_bnviz(rank, sizes, "cuda")


@pytest.mark.cuda
@CUDA
def test_cuda_against_torch_sync_batchnorm_nccl_world_size_1():
    """nccl, one rank on the one GPU: torch's SyncBatchNorm takes its plain path; bnviz's equals it."""
    (diffs,) = run_world(_nccl_worker, 1, backend="nccl").check()
    assert max(diffs.values()) <= 1e-4, diffs


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("sizes", [(3, 5), (0, 4)], ids=["uneven", "empty-rank"])
def test_cuda_against_torch_sync_batchnorm_two_ranks_one_gpu(sizes):
    """Two gloo ranks sharing one GPU: torch's real synchronized kernels against bnviz, per rank."""
    for diffs in run_world(_gloo_cuda_worker, 2, sizes).check():
        assert max(diffs.values()) <= 1e-4, diffs
