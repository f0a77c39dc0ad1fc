"""Work that runs in processes of its own, forked from one fork server: the /data-parallel page's
gloo ranks, and the layer page's compiled timings (whose compiled code and memory leave with the
process instead of staying in the server's).

The fork server imports ``fork_preload`` once (torch, bnviz, one warm-up forward and backward,
then ``gc.freeze``), so a fork starts at once and copies little of it. It lives as long as the
process that started it. Every process started here is joined, or terminated then killed, on
every exit path.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Callable
from typing import Any

PRELOAD = "bnviz.explorer.fork_preload"
START_DEADLINE_S = 60.0
_started = False


class ForkError(RuntimeError):
    """A forked process failed, died or ran out of time; the message says which and how."""


def _forkserver_context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([PRELOAD])
    return ctx


def context() -> Any:
    """The multiprocessing context whose processes are forks of the preloaded fork server, the
    server started (and waited for) first if need be."""
    if not _started:
        start()
    return _forkserver_context()


def started() -> bool:
    """Whether this process has started its fork server."""
    return _started


def start() -> None:
    """Start the fork server and wait until it has imported and warmed up: its first fork (a
    process that only returns its pid) waits for that. Raises ``ForkError``."""
    global _started
    probe = _forkserver_context().Process(target=os.getpid, daemon=True)
    probe.start()
    probe.join(START_DEADLINE_S)
    code = probe.exitcode
    stop([probe])
    if code != 0:
        raise ForkError("the fork server that starts worker processes did not start")
    _started = True


def stop(procs: list) -> None:
    """Join every process, terminating then killing the ones still running: none is left behind."""
    for p in procs:
        if p.pid is None:
            continue
        p.join(timeout=2)
        if p.is_alive():
            p.terminate()
            p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join()
        p.close()


def _call(fn: Callable[..., Any], args: tuple, results: Any) -> None:
    try:
        results.put(("ok", fn(*args)))
    except Exception as exc:  # reported by the parent
        results.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=-3)))


def run_in_fork(fn: Callable[..., Any], args: tuple = (), deadline_s: float = 120.0) -> Any:
    """``fn(*args)`` in a fork of the fork server (started if need be), its result sent back
    pickled (plain data). Raises ``ForkError`` when it raised, died or passed ``deadline_s``."""
    ctx = context()
    results = ctx.Queue()
    proc = ctx.Process(target=_call, args=(fn, args, results), daemon=True)
    end = time.monotonic() + deadline_s
    try:
        proc.start()
        while True:
            try:
                answer = results.get(timeout=min(max(end - time.monotonic(), 0.01), 0.5))
                break
            except queue.Empty:
                if proc.exitcode is not None:
                    raise ForkError(f"the process stopped (exit code {proc.exitcode}) before answering") from None
                if time.monotonic() > end:
                    raise ForkError(f"the process did not finish within {deadline_s:.0f} s") from None
        if answer[0] == "error":
            raise ForkError(answer[1])
        return answer[1]
    finally:
        stop([proc])
        results.close()
        results.join_thread()
