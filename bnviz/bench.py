"""``python -m bnviz.bench``: bnviz against torch's native kernels — eager and under ``torch.compile``.

Every implementation runs interleaved in one process (A B C D … A B C D …) so that machine noise
hits them alike; the first rounds are warm-up and excluded; the table shows medians in ms and
ratios to torch's eager kernel (and compiled bnviz to compiled torch). ``--csv FILE`` writes the
same rows, ``--device cuda`` runs on a GPU.

- torch:    ``torch.nn.BatchNorm*d`` (its native kernel), or the family member's torch layer
- bnviz:    ``bnviz.BatchNorm*d`` (eager: the chunked closed form), or bnviz's member
- bnviz-c:  ``torch.compile(bnviz layer)`` — the plain formula, fused by inductor
- torch-c:  ``torch.compile(torch layer)``
- textbook: ``(x − x.mean()) / sqrt(x.var(unbiased=False) + eps) · γ + β`` with autograd — what
  most people write (batch norm rows only)
- floor:    the memory traffic alone: one copy of the input into a preallocated tensor per pass
  over the data (1 for a forward, 2 for a forward + backward)

Compile time: each compiled layer's first call minus its steady-state time, per case; inductor's
own start-up (the process's first compile) is measured once, apart, and printed first.

Peak memory: the largest amount of memory allocated during one training forward + backward
beyond what existed before it (inputs, upstream gradient and parameters excluded), measured by
torch's profiler on CPU and ``max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

import bnviz

SHAPES = {
    "small": (8, 3, 32, 32),
    "medium": (32, 64, 56, 56),
    "large": (64, 256, 28, 28),
    "2d": (4096, 1024),
    "5d": (8, 32, 16, 32, 32),
    "mlp": (60, 100),  # the /training page's batch norm: batch 60, width 100
}
TINY_SHAPES = {"tiny-4d": (4, 3, 8, 8), "tiny-2d": (64, 16)}
FAMILY_SHAPE = (32, 64, 28, 28)
TINY_FAMILY_SHAPE = (4, 4, 6, 6)
MODES = ("train fwd", "train fwd+bwd", "eval fwd")
IMPLS = ("torch", "bnviz", "bnviz-c", "torch-c", "textbook", "floor")
_CLASSES = {2: (nn.BatchNorm1d, bnviz.BatchNorm1d), 3: (nn.BatchNorm1d, bnviz.BatchNorm1d),
            4: (nn.BatchNorm2d, bnviz.BatchNorm2d), 5: (nn.BatchNorm3d, bnviz.BatchNorm3d)}  # fmt: skip
# The family's members on an (N, C, H, W) input: (torch layer, bnviz layer) for C channels.
FAMILY: dict[str, Callable[[Any, tuple[int, ...]], nn.Module]] = {
    "LayerNorm": lambda m, s: m.LayerNorm(s[1:]),
    "GroupNorm": lambda m, s: m.GroupNorm(math.gcd(8, s[1]), s[1]),  # GroupNorm(8) where C allows
    "InstanceNorm2d": lambda m, s: m.InstanceNorm2d(s[1], affine=True),
    "RMSNorm": lambda m, s: m.RMSNorm(s[1:]),
}


class Textbook(nn.Module):
    """What most people write: batch statistics with torch's reductions, autograd for the backward."""

    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1, device: str = "cpu") -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(c, device=device))
        self.bias = nn.Parameter(torch.zeros(c, device=device))
        self.register_buffer("running_mean", torch.zeros(c, device=device))
        self.register_buffer("running_var", torch.ones(c, device=device))

    def forward(self, x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1, *([1] * (x.dim() - 2))]
        if self.training:
            mean = x.mean(dims, keepdim=True)
            var = x.var(dims, unbiased=False, keepdim=True)
            n = x.numel() / x.size(1)
            with torch.no_grad():
                self.running_mean.lerp_(mean.flatten(), self.momentum)
                self.running_var.lerp_(var.flatten() * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


@dataclass
class Case:
    name: str
    shape: tuple[int, ...]
    mode: str
    calls: dict[str, Callable[[], object]]
    compiled: tuple[str, ...] = field(default=())


def step_call(m: nn.Module, x: Tensor, upstream: Tensor, mode: str) -> Callable[[], object]:
    """One step of ``m`` in ``mode``: a forward under no_grad, or a forward + backward."""
    if mode == "train fwd+bwd":
        xr = x.clone().requires_grad_()
        params = [p for p in m.parameters()]
        return lambda: torch.autograd.grad(m(xr), [xr, *params], upstream)
    return lambda: _no_grad_call(m, x)


def _no_grad_call(m: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return m(x)


def make_case(name: str, shape: tuple[int, ...], mode: str, device: str, compiled: bool,
              layers: tuple[nn.Module, nn.Module] | None = None) -> Case:  # fmt: skip
    """Every implementation's step for one shape and mode. ``layers`` (torch's, bnviz's) defaults
    to batch norm for the shape's rank; the textbook version joins batch norm only."""
    x = torch.randn(shape, device=device) * 2 + 1
    upstream = torch.randn(shape, device=device)
    floor_out = torch.empty_like(x)
    if layers is None:
        torch_cls, bnviz_cls = _CLASSES[len(shape)]
        layers = (torch_cls(shape[1], device=device), bnviz_cls(shape[1], device=device))
        extra: dict[str, nn.Module] = {"textbook": Textbook(shape[1], device=device)}
    else:
        extra = {}
    modules: dict[str, nn.Module] = {"torch": layers[0].to(device), "bnviz": layers[1].to(device), **extra}
    if compiled:
        fresh_compiles()
        modules["bnviz-c"] = torch.compile(_copy_of(layers[1], device))
        modules["torch-c"] = torch.compile(_copy_of(layers[0], device))
    for m in modules.values():
        m.train(mode != "eval fwd")
    calls = {impl: step_call(m, x, upstream, mode) for impl, m in modules.items()}
    passes = 2 if mode == "train fwd+bwd" else 1
    calls["floor"] = lambda: [floor_out.copy_(x) for _ in range(passes)]
    return Case(name, shape, mode, calls, ("bnviz-c", "torch-c") if compiled else ())


def fresh_compiles() -> None:
    """Forget every compiled graph (``torch._dynamo.reset``), so that the next compiled layer
    compiles for itself, and fail rather than fall back to eager: dynamo compiles one function's
    code at most ``recompile_limit`` (8) times — every new layer instance, mode and shape counts —
    then runs it uncompiled, which a benchmark would time as "compiled"."""
    torch._dynamo.reset()
    torch._dynamo.config.fail_on_recompile_limit_hit = True


def _copy_of(m: nn.Module, device: str) -> nn.Module:
    import copy

    return copy.deepcopy(m).to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_samples(case: Case, device: str, rounds: int, warmup: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Every round's ms per implementation, interleaved round by round (round ``r`` of each is
    ``samples[impl][r]``), and each compiled implementation's first call in seconds."""
    first: dict[str, float] = {}
    for impl in case.compiled:  # compile first, timed on its own
        _sync(device)
        t = time.perf_counter()
        case.calls[impl]()
        _sync(device)
        first[impl] = time.perf_counter() - t
    samples: dict[str, list[float]] = {k: [] for k in case.calls}
    for r in range(warmup + rounds):
        for impl, call in case.calls.items():
            _sync(device)
            t = time.perf_counter()
            call()
            _sync(device)
            if r >= warmup:
                samples[impl].append((time.perf_counter() - t) * 1e3)
    return samples, first


def time_case(case: Case, device: str, rounds: int, warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median ms per implementation, interleaved round by round, and each compiled
    implementation's compile time in seconds (its first call, less its median)."""
    samples, first = time_samples(case, device, rounds, warmup)
    medians = {impl: statistics.median(v) for impl, v in samples.items()}
    return medians, {impl: first[impl] - medians[impl] / 1e3 for impl in case.compiled}


def inductor_startup(device: str) -> float:
    """Seconds of the process's first ``torch.compile`` (inductor's own start-up), on a trivial
    function: reported apart from the per-layer compile times."""
    fn = torch.compile(lambda t: (t * 2).sum())
    t = time.perf_counter()
    fn(torch.ones(4, device=device))
    _sync(device)
    return time.perf_counter() - t


def peak_extra_bytes(impl: str, shape: tuple[int, ...], device: str) -> int:
    """Peak memory allocated during one training forward + backward, beyond what existed before
    (for "bnviz-c", ``torch.compile(bnviz layer)``: compiled by a first step, then measured)."""
    torch_cls, bnviz_cls = _CLASSES[len(shape)]
    layer = {"torch": torch_cls, "bnviz": bnviz_cls, "bnviz-c": bnviz_cls, "textbook": Textbook}[impl]
    m = layer(shape[1], device=device)
    x = (torch.randn(shape, device=device) * 2 + 1).requires_grad_()
    upstream = torch.randn(shape, device=device)
    call = m
    if impl == "bnviz-c":
        fresh_compiles()
        call = torch.compile(m)

    def step() -> None:
        grads = torch.autograd.grad(call(x), [x, m.weight, m.bias], upstream)
        del grads

    if impl == "bnviz-c":
        step()

    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # Each op's own allocations (+) happen at its start, its own frees (−) at the latest at its end.
    changes = []
    for e in prof.events():
        own = e.self_cpu_memory_usage
        if own:
            changes.append((e.time_range.start if own > 0 else e.time_range.end, own))
    live = peak = 0
    for _, own in sorted(changes):
        live += own
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the profiler's own lines, which it prints straight to file descriptors 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _row(case: Case, medians: dict[str, float], compile_s: dict[str, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"shape": case.name, "dims": "x".join(map(str, case.shape)), "mode": case.mode}
    for impl in IMPLS:
        row[f"{impl} ms"] = round(medians[impl], 4) if impl in medians else ""
    for impl in ("bnviz", "bnviz-c", "torch-c", "textbook", "floor"):
        row[f"{impl}/torch"] = round(medians[impl] / medians["torch"], 3) if impl in medians else ""
    both = "bnviz-c" in medians and "torch-c" in medians
    row["bnviz-c/torch-c"] = round(medians["bnviz-c"] / medians["torch-c"], 3) if both else ""
    for impl in ("bnviz-c", "torch-c"):
        row[f"{impl} compile s"] = round(compile_s[impl], 2) if impl in compile_s else ""
    return row


def run(
    shapes: dict[str, tuple[int, ...]],
    device: str,
    rounds: int,
    warmup: int,
    memory: bool,
    compiled: bool = True,
    family_shape: tuple[int, ...] | None = None,
) -> list[dict]:
    """Batch norm on every shape and mode, then (with ``family_shape``) each family member's
    training forward + backward; plus, with ``memory``, batch norm's peak memory per shape."""
    rows = []
    for name, shape in shapes.items():
        for mode in MODES:
            case = make_case(name, shape, mode, device, compiled)
            rows.append(_row(case, *time_case(case, device, rounds, warmup)))
        if memory:
            size = torch.Size(shape).numel() * 4
            impls = ("torch", "bnviz", "textbook", *(("bnviz-c",) if compiled else ()))
            peaks = {impl: peak_extra_bytes(impl, shape, device) for impl in impls}
            rows.append(
                {"shape": name, "dims": "x".join(map(str, shape)), "mode": "peak MiB fwd+bwd",
                 **{f"{k} ms": round(v / 2**20, 2) for k, v in peaks.items()}, "floor ms": round(size / 2**20, 2),
                 **{f"{k}/torch": round(peaks[k] / max(peaks["torch"], 1), 3) for k in peaks if k != "torch"}}
            )  # fmt: skip
    for member, make in FAMILY.items() if family_shape else ():
        layers = (make(nn, family_shape), make(bnviz, family_shape))
        case = make_case(member, family_shape, "train fwd+bwd", device, compiled, layers)
        rows.append(_row(case, *time_case(case, device, rounds, warmup)))
    return rows


COLUMNS = [("shape", 14), ("mode", 17), ("torch ms", 9), ("bnviz ms", 9), ("bnviz-c ms", 10), ("torch-c ms", 10),
           ("bnviz/torch", 11), ("bnviz-c/torch", 13), ("bnviz-c/torch-c", 15), ("textbook/torch", 14),
           ("floor/torch", 11), ("bnviz-c compile s", 17), ("torch-c compile s", 17)]  # fmt: skip


def print_table(rows: list[dict], device: str, startup: float | None = None) -> None:
    print(f"bnviz benchmark on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("medians in ms (peak rows: MiB; floor column there = one input's size); ratios are to torch's eager kernel")
    if startup is not None:
        print(f"inductor start-up (the process's first torch.compile, not counted below): {startup:.1f} s")
    print()
    print(" ".join(f"{c:>{w}s}" for c, w in COLUMNS))
    for row in rows:
        print(" ".join(f"{row.get(c, '')!s:>{w}s}" for c, w in COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnviz.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per case (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--shapes", nargs="*", choices=[*SHAPES, *TINY_SHAPES], help="a subset of shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes only (a smoke run)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    parser.add_argument("--no-family", action="store_true", help="skip the family's rows")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    every = {**SHAPES, **TINY_SHAPES}
    shapes = TINY_SHAPES if args.tiny else ({k: every[k] for k in args.shapes} if args.shapes else SHAPES)
    family = None if args.no_family else (TINY_FAMILY_SHAPE if args.tiny else FAMILY_SHAPE)
    with contextlib.ExitStack() as stack:
        if not args.no_compile and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # compile times from cold
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = stack.enter_context(tempfile.TemporaryDirectory(prefix="bnviz-"))
        startup = None if args.no_compile else inductor_startup(args.device)
        rows = run(shapes, args.device, args.rounds, args.warmup, not args.no_memory, not args.no_compile, family)
    print_table(rows, args.device, startup)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
