"""Work that runs in processes of its own, forked from one fork server (in the app: the
/data-parallel page's gloo ranks, and the layer page's compiled timings, whose compiled code and
memory leave with the process instead of staying in the server's).

The fork server imports the ``preload`` module it is started with once — the caller's warm-up:
heavy imports, a first run, ``gc.freeze`` — so a fork starts at once and copies little of it. A
process has one fork server (multiprocessing's), started by the first ``start`` or ``context``;
it lives as long as that process. Every process started here is joined, or terminated then
killed, on every exit path.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import time
import traceback
from collections.abc import Callable
from typing import Any

START_DEADLINE_S = 60.0
_started: str | None = None  # the preload module of this process's fork server, once started


class ForkError(RuntimeError):
    """A forked process failed, died or ran out of time; the message says which and how."""


def _forkserver_context(preload: str) -> Any:
    if _started is not None and preload != _started:
        raise ValueError(f"this process's fork server preloads {_started}, not {preload}")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload])
    return ctx


def context(preload: str) -> Any:
    """The multiprocessing context whose processes are forks of the fork server that preloads
    the module ``preload``, the server started (and waited for) first if need be."""
    if _started is None:
        start(preload)
    return _forkserver_context(preload)


def started() -> bool:
    """Whether this process has started its fork server."""
    return _started is not None


def start(preload: str) -> None:
    """Start the fork server, which imports the module named ``preload`` first, and wait until
    it has: its first fork (a process that only returns its pid) waits for that. Raises
    ``ForkError``; ``ValueError`` when the server was started with another module."""
    global _started
    probe = _forkserver_context(preload).Process(target=os.getpid, daemon=True)
    probe.start()
    probe.join(START_DEADLINE_S)
    code = probe.exitcode
    stop([probe])
    if code != 0:
        raise ForkError("the fork server that starts worker processes did not start")
    _started = preload


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


def run_in_fork(preload: str, fn: Callable[..., Any], args: tuple = (), deadline_s: float = 120.0) -> Any:
    """``fn(*args)`` in a fork of the fork server that preloads ``preload`` (started if need
    be), its result sent back pickled (plain data). Raises ``ForkError`` when it raised, died or
    passed ``deadline_s``."""
    ctx = context(preload)
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
