"""Measuring what a call costs in memory, and what a worker process adds — for the server's budget.

A heavy call states its peak before it runs (its config's ``estimate_bytes()``, fitted on what
``measure_peak`` gives and rounded up; the tests hold every estimate at or above the measured
peak). A run whose workers are processes counts them too — the server's memory is its whole
process tree: ``with_workers``.
"""

from __future__ import annotations

import gc
import os
import re
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bnviz.hosting import procmem, serve

MB = 2**20
BASE = 8 * MB  # any run: the Python objects of its report, module copies, the heap's own growth
PROCESS_BYTES = 240 * MB  # a fresh interpreter with torch imported (measured 221–226 MB)


def with_workers(workers: int, per_worker_bytes: int, process_bytes: int = PROCESS_BYTES) -> int:
    """What ``workers`` child processes add: each its own resident start (``process_bytes``: a
    fresh interpreter with torch by default; a fork of a process that holds torch already costs
    only what it does not share — measure it) and its own data."""
    return workers * (process_bytes + per_worker_bytes)


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
    (a fork server). Short-lived ones may be missed between samples: such workers should report
    their own (``procmem.private_bytes()`` at their end)."""

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
