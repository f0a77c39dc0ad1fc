"""The layer page's timing of its own view: bnviz's layer against torch's on the displayed batch,
interleaved, eager (``measure_config``) and under ``torch.compile`` in a process of its own
(``measure_config_compiled``), with ``bnviz.bench``'s timing loop."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Any

import torch

from bnviz.bench import Case, fresh_compiles, inductor_startup, step_call, time_samples
from bnviz.explorer import workers
from bnviz.explorer.data import sample_batch
from bnviz.explorer.layer.engine import make_module
from bnviz.explorer.mlp import one_thread
from bnviz.hosting import procmem

BUSY_CPU = 1.25  # the server's process used more than this many CPU-seconds per second of timing: others ran too


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """The 25th, 50th and 75th percentiles."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def measure_config(config: Any, repeats: int = 15, compiled: bool = False) -> dict[str, float]:
    """bnviz vs torch on one app config, both with one intra-op thread (``mlp.one_thread``): the
    displayed batch's step (forward + backward in train mode, forward in eval), interleaved round
    by round after one warm-up round. Returns per side the median ms and its quartiles
    (``"bnviz q1"``, ``"bnviz q3"``), ``ratio`` (of the medians) with the quartiles of the
    per-round ratios, and how busy the machine was: ``"cpu per s"`` (CPU-seconds this process used
    per second of timing — 1 is the timing alone), ``"load"`` (the 1-minute load average after),
    ``"cores"`` and ``busy`` (1.0 when either says others ran). With ``compiled``, both layers under
    ``torch.compile`` and each one's compile time (s)."""
    dtype = getattr(torch, config.dtype)
    x = sample_batch(config.dist, config.shape, config.seed, 0, dtype, config.device)
    upstream = torch.ones_like(x)
    mode = "train fwd+bwd" if config.mode == "train" else "eval fwd"
    with one_thread():
        modules = {side: make_module(config, side).train(config.mode == "train") for side in ("bnviz", "torch")}
        if compiled:
            fresh_compiles()
            modules = {side: torch.compile(m) for side, m in modules.items()}
        calls = {side: step_call(m, x, upstream, mode) for side, m in modules.items()}
        case = Case("config", tuple(config.shape), mode, calls, tuple(calls) if compiled else ())
        wall, cpu = time.perf_counter(), time.process_time()
        samples, first = time_samples(case, config.device, repeats, 1)
        cpu_per_s = (time.process_time() - cpu) / max(time.perf_counter() - wall, 1e-9)
    out: dict[str, float] = {}
    for side, values in samples.items():
        out[f"{side} q1"], out[side], out[f"{side} q3"] = _quartiles(values)
    out["ratio q1"], _, out["ratio q3"] = _quartiles([b / t for b, t in zip(samples["bnviz"], samples["torch"],
                                                                          strict=True)])  # fmt: skip
    out["ratio"] = out["bnviz"] / out["torch"]
    cores, load = float(os.cpu_count() or 1), os.getloadavg()[0]
    out |= {"cpu per s": cpu_per_s, "load": load, "cores": cores, "threads": 1.0,
            "busy": float(cpu_per_s > BUSY_CPU or load > cores - 0.5)}  # fmt: skip
    return out | {f"{side} compile s": s - out[side] / 1e3 for side, s in first.items()}


COMPILE_DEADLINE_S = 240.0  # a compiled timing, start-up and both compiles included


def _compiled_job(config: Any) -> dict[str, float]:
    """The body of ``measure_config_compiled``, in the forked process."""
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = 1  # compile here, without a pool of worker processes
    with tempfile.TemporaryDirectory(prefix="bnviz-inductor-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # from cold, and nothing left on disk
        startup = inductor_startup(config.device)
        out = measure_config(config, compiled=True)
    eager = measure_config(config)  # the same process: the rows compare
    return {**out, "eager bnviz": eager["bnviz"], "eager torch": eager["torch"], "inductor start-up s": startup,
            "process bytes": float(procmem.private_bytes())}  # fmt: skip


def measure_config_compiled(config: Any) -> dict[str, float]:
    """``measure_config(config, compiled=True)`` in a process of its own, forked from the app's
    fork server (``bnviz.explorer.workers``), from cold: an empty inductor cache, removed after;
    inductor's start-up in that process measured first and reported apart ("inductor start-up
    s"), so each layer's "compile s" is its own compile; then both eager in the same process
    ("eager bnviz", "eager torch"), for a fair comparison. The compiled code and the memory it took
    ("process bytes", private to that process) leave with the process. Raises ``ForkError``."""
    return workers.run_in_fork(_compiled_job, (config,), COMPILE_DEADLINE_S)
