"""``python -m bnviz.bench``: bnviz against torch's native kernel, a textbook version and a memory floor.

Every implementation runs interleaved in one process (A B C D A B C D …) so that machine noise
hits them alike; the first rounds are warm-up and excluded; the table shows medians in ms and
ratios to torch. ``--csv FILE`` writes the same rows, ``--device cuda`` runs on a GPU.

- torch:    ``torch.nn.BatchNorm*d`` (its native kernel)
- bnviz:    ``bnviz.BatchNorm*d``
- textbook: ``(x − x.mean()) / sqrt(x.var(unbiased=False) + eps) · γ + β`` with autograd — what
  most people write
- floor:    the memory traffic alone: one copy of the input into a preallocated tensor per pass
  over the data (1 for a forward, 2 for a forward + backward)

Peak memory: the largest amount of memory allocated during one training forward + backward
beyond what existed before it (inputs, upstream gradient and parameters excluded), measured by
torch's profiler on CPU and ``max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
}
TINY_SHAPES = {"tiny-4d": (4, 3, 8, 8), "tiny-2d": (64, 16)}
MODES = ("train fwd", "train fwd+bwd", "eval fwd")
IMPLS = ("torch", "bnviz", "textbook", "floor")
_CLASSES = {2: (nn.BatchNorm1d, bnviz.BatchNorm1d), 3: (nn.BatchNorm1d, bnviz.BatchNorm1d),
            4: (nn.BatchNorm2d, bnviz.BatchNorm2d), 5: (nn.BatchNorm3d, bnviz.BatchNorm3d)}  # fmt: skip


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


def _make_case(name: str, shape: tuple[int, ...], mode: str, device: str) -> Case:
    torch_cls, bnviz_cls = _CLASSES[len(shape)]
    c = shape[1]
    x = torch.randn(shape, device=device) * 2 + 1
    upstream = torch.randn(shape, device=device)
    floor_out = torch.empty_like(x)
    modules = {"torch": torch_cls(c, device=device), "bnviz": bnviz_cls(c, device=device),
               "textbook": Textbook(c, device=device)}  # fmt: skip
    for m in modules.values():
        m.train(mode != "eval fwd")
    calls: dict[str, Callable[[], object]] = {}
    for impl, m in modules.items():
        if mode == "train fwd+bwd":
            xr = x.clone().requires_grad_()
            params = [m.weight, m.bias]
            calls[impl] = lambda m=m, xr=xr, params=params: torch.autograd.grad(m(xr), [xr, *params], upstream)
        else:
            calls[impl] = lambda m=m: _no_grad_call(m, x)
    passes = 2 if mode == "train fwd+bwd" else 1
    calls["floor"] = lambda: [floor_out.copy_(x) for _ in range(passes)]
    return Case(name, shape, mode, calls)


def _no_grad_call(m: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return m(x)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_case(case: Case, device: str, rounds: int, warmup: int) -> dict[str, float]:
    """Median ms per implementation, the implementations interleaved round by round."""
    samples: dict[str, list[float]] = {k: [] for k in case.calls}
    for r in range(warmup + rounds):
        for impl, call in case.calls.items():
            _sync(device)
            t = time.perf_counter()
            call()
            _sync(device)
            if r >= warmup:
                samples[impl].append((time.perf_counter() - t) * 1e3)
    return {impl: statistics.median(v) for impl, v in samples.items()}


def peak_extra_bytes(impl: str, shape: tuple[int, ...], device: str) -> int:
    """Peak memory allocated during one training forward + backward, beyond what existed before."""
    torch_cls, bnviz_cls = _CLASSES[len(shape)]
    m = {"torch": torch_cls, "bnviz": bnviz_cls, "textbook": Textbook}[impl](shape[1], device=device)
    x = (torch.randn(shape, device=device) * 2 + 1).requires_grad_()
    upstream = torch.randn(shape, device=device)

    def step() -> None:
        grads = torch.autograd.grad(m(x), [x, m.weight, m.bias], upstream)
        del grads

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


def run(shapes: dict[str, tuple[int, ...]], device: str, rounds: int, warmup: int, memory: bool) -> list[dict]:
    rows = []
    for name, shape in shapes.items():
        for mode in MODES:
            medians = time_case(_make_case(name, shape, mode, device), device, rounds, warmup)
            row = {"shape": name, "dims": "x".join(map(str, shape)), "mode": mode}
            for impl in IMPLS:
                row[f"{impl} ms"] = round(medians[impl], 4)
            for impl in ("bnviz", "textbook", "floor"):
                row[f"{impl}/torch"] = round(medians[impl] / medians["torch"], 3)
            rows.append(row)
        if memory:
            size = torch.Size(shape).numel() * 4
            peaks = {impl: peak_extra_bytes(impl, shape, device) for impl in ("torch", "bnviz", "textbook")}
            rows.append(
                {"shape": name, "dims": "x".join(map(str, shape)), "mode": "peak MiB fwd+bwd",
                 **{f"{k} ms": round(v / 2**20, 2) for k, v in peaks.items()}, "floor ms": round(size / 2**20, 2),
                 "bnviz/torch": round(peaks["bnviz"] / max(peaks["torch"], 1), 3),
                 "textbook/torch": round(peaks["textbook"] / max(peaks["torch"], 1), 3), "floor/torch": ""}
            )  # fmt: skip
    return rows


def print_table(rows: list[dict], device: str) -> None:
    print(f"bnviz benchmark on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("medians in ms (peak rows: MiB; floor column there = one input's size); ratios are to torch\n")
    cols = ["shape", "mode", *(f"{i} ms" for i in IMPLS), "bnviz/torch", "textbook/torch", "floor/torch"]
    widths = [8, 17, 10, 10, 11, 10, 12, 15, 12]
    print(" ".join(f"{c:>{w}s}" for c, w in zip(cols, widths, strict=True)))
    for row in rows:
        print(" ".join(f"{row.get(c, '')!s:>{w}s}" for c, w in zip(cols, widths, strict=True)))


def measure_config(config: Any, repeats: int = 7) -> dict[str, float]:
    """bnviz vs torch on one app config: median ms of the displayed batch's step (forward +
    backward in train mode, forward in eval), interleaved, after one warm-up round."""
    from bnviz.explorer.compare import make_module
    from bnviz.explorer.data import sample_batch

    dtype = getattr(torch, config.dtype)
    x = sample_batch(config.dist, config.shape, config.seed, 0, dtype, config.device)
    upstream = torch.ones_like(x)
    calls = {}
    for side in ("bnviz", "torch"):
        m = make_module(config, side).train(config.mode == "train")
        params = [p for p in (m.weight, m.bias) if p is not None]
        xr = x.clone().requires_grad_()
        if config.mode == "train":
            calls[side] = lambda m=m, xr=xr, params=params: torch.autograd.grad(m(xr), [xr, *params], upstream)
        else:
            calls[side] = lambda m=m: _no_grad_call(m, x)
    medians = time_case(Case("config", tuple(config.shape), config.mode, calls), config.device, repeats, 1)
    return {**medians, "ratio": medians["bnviz"] / medians["torch"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnviz.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per case (default 15)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--shapes", nargs="*", choices=[*SHAPES, *TINY_SHAPES], help="a subset of shapes")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes only (a smoke run)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    every = {**SHAPES, **TINY_SHAPES}
    shapes = TINY_SHAPES if args.tiny else ({k: every[k] for k in args.shapes} if args.shapes else SHAPES)
    rows = run(shapes, args.device, args.rounds, args.warmup, not args.no_memory)
    print_table(rows, args.device)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
