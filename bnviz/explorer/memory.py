"""How much memory a heavy call needs, told from its config alone, before anything is allocated.

``estimate_bytes(config)`` is the peak the run of ``config`` adds to the server's resident memory
— what ``serve.Budget`` counts. One estimator per engine's config type (``functools.singledispatch``);
a new engine registers its own. A run whose workers are processes counts them too (the server's
memory is its whole process tree): the data-parallel page's estimate is its parent's bytes plus
``with_workers(config.world, per_rank_bytes, FORKED_RANK_BYTES)``.

Each estimator is a sum of terms an engine's code makes visible (values per element × elements,
per channel, per parameter), fitted on the peaks ``measure_peak`` gives and rounded up; the tests
(``tests/explorer/test_memory.py``) hold every estimate at or above the measured peak over a table
of configs, the largest each page allows among them.
"""

from __future__ import annotations

import gc
import math
import os
import re
import threading
import tracemalloc
from collections.abc import Callable
from functools import singledispatch
from pathlib import Path
from typing import Any

from bnviz.explorer import procmem, serve
from bnviz.explorer.compare import Config
from bnviz.explorer.data_parallel import DataParallelConfig
from bnviz.explorer.family import FamilyConfig
from bnviz.explorer.inference import InferenceConfig
from bnviz.explorer.network import NetworkConfig

MB = 2**20
BASE = 8 * MB  # any run: Python objects of the report, module copies, the heap's own growth
PROCESS_BYTES = 240 * MB  # a fresh interpreter with torch imported (measured 221–226 MB)
ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
# A comparison's displayed batch, bytes per value (measured at 2,000,000 values: float64 82,
# float32 74, bfloat16 68), with 10% on top: both sides' outputs and gradients, the batch and its
# upstream gradient, the float64 truth's (when the dtype is not float64), x̂ and the
# gradient's allowance; differences are taken in blocks of rows.
COMPARE_PER_VALUE = {"float64": 90, "float32": 81, "bfloat16": 75, "float16": 75}
SMALL_BLOCKS = 64  # bytes per value up to 2**18 values: blocks under the mmap threshold stay in the heap
COMPARE_PER_CHANNEL = 176  # running statistics, their copies, per-channel sums and statistics (measured ≤ 151)
# A training batch, bytes per value: drawn in float64 with its temporaries, cast, and its float64
# copy (measured at 2,000,000 values: normal 24, bimodal 30, heavy-tailed — four normal draws — 56).
TRAIN_PER_VALUE = {"heavy-tailed": 64, "bimodal": 40}
TRAIN_PER_VALUE_ELSE = 32
SPEED_PER_CHANNEL = 200
# The data-parallel page: each gloo rank is a fork of a warmed-up, frozen fork server
# (``fork_preload``), and holds privately what it writes (measured 24–28 MB with tiny batches);
# each draws the whole batch and its upstream gradient in float64 (measured ≤ 4 MB more at
# 200,000 values). The fork server itself (measured 178 MB, its resource tracker 5 MB) starts
# once per server, on the first data-parallel view, and stays.
FORKED_RANK_BYTES = 30 * MB
RANK_PER_VALUE = 48
FORK_SERVER_BYTES = 200 * MB
DP_PER_VALUE = 64  # the parent: the full-batch reference in float32 and float64 (measured ≤ 62 at 200,000)
DP_PER_CHANNEL = 1024  # per-channel statistics of every rank, as Python lists (measured 4 MB at 4,096)


def _compare(config: Config) -> int:
    """The larger of the displayed batch's phase and a training batch's (one at a time), plus
    what grows with the channels."""
    n, c = config.numel, max(config.num_features, 1)
    shown = COMPARE_PER_VALUE.get(config.dtype, 90) * n
    per_train = TRAIN_PER_VALUE.get(config.dist, TRAIN_PER_VALUE_ELSE)
    train = per_train * math.prod(config.train_shape) if config.steps else 0
    return BASE + max(shown, train) + SMALL_BLOCKS * min(n, 2**18) + COMPARE_PER_CHANNEL * c


def _network(config: NetworkConfig) -> int:
    """Three networks (bnviz, torch, float64): per image pixel, the float64 conv's unfolded input
    (27 values) and every layer's activations (∝ channels), twice that with training's saved
    activations and gradients; per parameter of the classifier's first linear layer
    (2c·(H/2)²·32), the weights and gradients of the three networks and the float64 copies that
    compare them. 15% on top."""
    pixels = config.batch * config.image**2
    per_pixel = 260 + 12 * config.channels + (16 * config.channels + 16 if config.steps else 0)
    params = 16 * config.channels * config.image**2
    return BASE + math.ceil(1.15 * (pixels * per_pixel + 72 * params))


def _family(config: FamilyConfig) -> int:
    """Five members, each bnviz, torch and float64 with gradients, one member at a time
    (measured 110–113 bytes per value at a million)."""
    return BASE + 136 * config.numel


def _inference(config: InferenceConfig) -> int:
    """A small network and its batches (capped at 32,768 activation values per batch)."""
    itemsize = ITEMSIZE.get(config.dtype, 8)
    return BASE + 64 * itemsize * config.batch_values


def _data_parallel(config: DataParallelConfig) -> int:
    """The parent's full-batch reference and the spread's draws (a few MB, in blocks), plus
    ``config.world`` forked ranks. The fork server is not in it: ``FORK_SERVER_BYTES``, once."""
    values = sum(config.sizes()) * math.prod(config.sample)
    parent = DP_PER_VALUE * values + DP_PER_CHANNEL * config.sample[0] + 4 * MB
    return BASE + parent + with_workers(config.world, RANK_PER_VALUE * values, FORKED_RANK_BYTES)


@singledispatch
def estimate_bytes(config: Any) -> int:
    """The peak bytes the run of ``config`` adds to the process (an upper bound, before running)."""
    raise TypeError(f"no memory estimate for {type(config).__name__}: register one with @estimate_bytes.register")


estimate_bytes.register(Config, _compare)
estimate_bytes.register(NetworkConfig, _network)
estimate_bytes.register(FamilyConfig, _family)
estimate_bytes.register(InferenceConfig, _inference)
estimate_bytes.register(DataParallelConfig, _data_parallel)


def speed_bytes(config: Config) -> int:
    """The peak of ``bench.measure_config`` on the layer page's config: the batch (drawn in
    float64), its upstream gradient, the output and the gradient of each side; per channel, the
    statistics (measured: float32 26, float64 52 bytes per value; 150 per channel)."""
    e = ITEMSIZE.get(config.dtype, 8)
    return BASE + math.ceil((24 + 4.5 * e) * config.numel) + SPEED_PER_CHANNEL * max(config.num_features, 1)


# A forked process that starts inductor and compiles two layers, with the C++ compiler processes
# it runs (measured 414 MB at a tiny shape: the process 190 MB, the compiler the rest).
COMPILE_PROCESS_BYTES = 430 * MB


def compiled_speed_bytes(config: Config) -> int:
    """``bench.measure_config_compiled``: the forked process and its compilers, and the timing's
    own data as ``speed_bytes`` counts it (measured 478 MB at 2000×1000 float64)."""
    return COMPILE_PROCESS_BYTES + speed_bytes(config) - BASE


def with_workers(workers: int, per_worker_bytes: int, process_bytes: int = PROCESS_BYTES) -> int:
    """What ``workers`` child processes add: each its own resident start (``process_bytes``: a
    fresh interpreter with torch by default; a fork of a process that holds torch already costs
    only what it does not share — measure it) and its own data."""
    return workers * (process_bytes + per_worker_bytes)


# --- measuring -------------------------------------------------------------------------------------


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _can_reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class _ChildSampler(threading.Thread):
    """The largest sum, over time, of the private memory of the processes started below this one
    since the sampler began, sampled every 20 ms and once more at the end: for long-lived children
    (a fork server). Short-lived ones may be missed between samples: the data-parallel ranks report
    their own (``RankReport.private_bytes``)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.old = set(procmem.descendants(os.getpid()))
        self.peak = 0
        self.done = threading.Event()

    def sample(self) -> None:
        new = [p for p in procmem.descendants(os.getpid()) if p not in self.old]
        self.peak = max(self.peak, sum(procmem.private_bytes(p) for p in new))

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.sample()
        self.sample()


def measure_peak(fn: Callable[[], Any], children: bool = False) -> tuple[Any, int, str]:
    """``(fn(), peak bytes it added, method)``.

    On Linux: the resident set's high-water mark, reset just before (``/proc/self/clear_refs``),
    less the resident set then — every allocation, torch's, numpy's and Python's — with the
    allocator tuned (``serve.tune_allocator``) so that freed blocks leave the resident set.
    With ``children``, plus the largest private memory of the processes ``fn`` starts (what a
    fork shares with its parent is counted once, in the parent). Elsewhere: torch's profiler
    (torch's allocations, the largest live sum) plus tracemalloc's peak (numpy's and Python's),
    which bound the peak from above; ``children`` is Linux only.
    """
    gc.collect()
    serve.tune_allocator()
    serve.trim()
    if _can_reset_peak():
        sampler = _ChildSampler() if children else None
        before = _status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        if sampler is not None:
            sampler.start()
        try:
            out = fn()
        finally:
            if sampler is not None:
                sampler.done.set()
                sampler.join()
        own = max(_status("VmHWM") - before, 0)
        return out, own + (sampler.peak if sampler else 0), "rss+children" if children else "rss"
    if children:
        raise OSError("measuring child processes needs Linux's /proc")
    from torch.profiler import ProfilerActivity, profile

    tracemalloc.start()
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    changes = []
    for e in prof.events():
        own = e.self_cpu_memory_usage
        if own:  # each op's allocations (+) at its start, its frees (−) at the latest at its end
            changes.append((e.time_range.start if own > 0 else e.time_range.end, own))
    live = peak = 0
    for _, own in sorted(changes):
        live += own
        peak = max(peak, live)
    return out, peak + traced, "profiler+tracemalloc"
