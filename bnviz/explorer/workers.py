"""The explorer's worker processes: forks of one fork server (``bnviz.hosting.forks``) that has
preloaded ``fork_preload`` — torch, bnviz, the data-parallel rank's code, one warm-up forward and
backward, then ``gc.freeze`` — so that a worker shares most of its memory with the fork server.

The /data-parallel page's gloo ranks and the layer page's compiled timings run here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bnviz.hosting import forks
from bnviz.hosting.memory import MB

PRELOAD = "bnviz.explorer.fork_preload"
# The fork server itself: measured 178 MB, its resource tracker 5 MB. It starts once per server,
# on the first view that needs it, as a budgeted step of its own, and then stays.
FORK_SERVER_BYTES = 200 * MB
UPLOAD_WORKER_BYTES = 60 * MB  # a fork reading a visitor's upload: its own pages beyond the shared ones


def context() -> Any:
    """The multiprocessing context whose processes are forks of the preloaded fork server."""
    return forks.context(PRELOAD)


def start() -> None:
    """Start the fork server (once per process) and wait until it has warmed up."""
    forks.start(PRELOAD)


def limit_memory(extra_bytes: int) -> None:
    """In a worker: cap its address space at what it maps now plus ``extra_bytes`` (``RLIMIT_AS``),
    so that a file claiming more than its size allows fails to allocate there, not in the server."""
    import resource

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, vm + extra_bytes))


def read_upload(fn: Callable[[str, bytes], Any], name: str, data: bytes, extra_bytes: int) -> tuple[str, Any]:
    """In a worker: its address space capped (``limit_memory(extra_bytes)``), then ``fn(name,
    data)``. ``("ok", result)``, or ``("refused", reason)`` when ``fn`` refused the file with a
    ``ValueError`` (bnviz's ``CheckpointError`` and ``OwnTensorError`` are ones) or reading it needed
    more memory than the cap allows (a file claiming more than its size)."""
    limit_memory(extra_bytes)
    try:
        return "ok", fn(name, data)
    except ValueError as exc:
        return "refused", str(exc)
    except MemoryError:
        return "refused", "reading it needed more memory than its size allows"


def run_in_fork(fn: Callable[..., Any], args: tuple = (), deadline_s: float = 120.0) -> Any:
    """``fn(*args)`` in a fork of the preloaded fork server (``forks.run_in_fork``)."""
    return forks.run_in_fork(PRELOAD, fn, args, deadline_s)
