"""The layer page's timing of its own view: bnviz's layer against torch's on the displayed batch,
interleaved, eager (``measure_config``) and under ``torch.compile`` in a process of its own
(``measure_config_compiled``), with ``bnviz.bench``'s timing loop."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

from bnviz.bench import Case, fresh_compiles, inductor_startup, step_call, time_case
from bnviz.explorer import workers
from bnviz.explorer.data import sample_batch
from bnviz.explorer.layer.engine import make_module
from bnviz.hosting import procmem


def measure_config(config: Any, repeats: int = 7, compiled: bool = False) -> dict[str, float]:
    """bnviz vs torch on one app config: median ms of the displayed batch's step (forward +
    backward in train mode, forward in eval), interleaved, after one warm-up round; with
    ``compiled``, both layers under ``torch.compile`` and each one's compile time (s)."""
    dtype = getattr(torch, config.dtype)
    x = sample_batch(config.dist, config.shape, config.seed, 0, dtype, config.device)
    upstream = torch.ones_like(x)
    mode = "train fwd+bwd" if config.mode == "train" else "eval fwd"
    modules = {side: make_module(config, side).train(config.mode == "train") for side in ("bnviz", "torch")}
    if compiled:
        fresh_compiles()
        modules = {side: torch.compile(m) for side, m in modules.items()}
    calls = {side: step_call(m, x, upstream, mode) for side, m in modules.items()}
    case = Case("config", tuple(config.shape), mode, calls, tuple(calls) if compiled else ())
    medians, compile_s = time_case(case, config.device, repeats, 1)
    out = {**medians, "ratio": medians["bnviz"] / medians["torch"]}
    return {**out, **{f"{side} compile s": s for side, s in compile_s.items()}}


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
