"""Work in forked processes (``bnviz.hosting.forks``): a table of jobs against what the caller
gets back — the value, or a ForkError that says what happened — and never a process left behind."""

from __future__ import annotations

import os
import time

import pytest

from bnviz.explorer import workers
from bnviz.explorer.workers import PRELOAD  # a process has one fork server: the app's
from bnviz.hosting import forks, procmem


def answer(x: int) -> dict:
    return {"twice": 2 * x, "pid": os.getpid()}


def fails(x: int) -> None:
    raise ValueError(f"bad {x}")


def dies(code: int) -> None:
    os._exit(code)


def sleeps(seconds: float) -> None:
    time.sleep(seconds)


CASES = [  # (job, args, deadline s, expected value or the ForkError's message)
    (answer, (21,), 30, {"twice": 42}),
    (fails, (3,), 30, "ValueError: bad 3"),
    (dies, (7,), 30, "the process stopped (exit code 7) before answering"),
    (sleeps, (60,), 2, "the process did not finish within 2 s"),
]


@pytest.mark.parametrize(("job", "args", "deadline", "expected"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_job_in_a_fork_gives_its_value_or_a_clear_error(job, args, deadline, expected):
    before = set(procmem.descendants(os.getpid()))
    start = time.monotonic()
    if isinstance(expected, str):
        with pytest.raises(forks.ForkError) as caught:
            forks.run_in_fork(PRELOAD, job, args, deadline)
        assert str(caught.value) == expected, (str(caught.value), expected)
    else:
        got = forks.run_in_fork(PRELOAD, job, args, deadline)
        assert got["twice"] == expected["twice"], (got, expected)
        assert got["pid"] != os.getpid()
    assert time.monotonic() - start < deadline + 10
    left = set(procmem.descendants(os.getpid())) - before
    assert not left or left <= _fork_server_and_tracker(), f"left behind: {left}"
    assert forks.started()


def repeat(name: str, times: int) -> str:
    return name * times


UPLOAD_CASES = [  # (name, data, the cap over what the worker maps, expected)
    ("ab", 2, 2**28, ("ok", "abab")),
    ("x", 3 * 2**30, 2**28, ("refused", "reading it needed more memory than its size allows")),  # 3 GB, 256 MB cap
]


@pytest.mark.parametrize(("name", "data", "cap", "expected"), UPLOAD_CASES, ids=["fits", "over-the-cap"])
def test_reading_an_upload_in_a_worker_is_capped_and_a_memory_error_is_a_refusal(name, data, cap, expected):
    got = workers.run_in_fork(workers.read_upload, (repeat, name, data, cap), 30.0)
    assert got == expected, (got, expected)


def _fork_server_and_tracker() -> set[int]:
    """The fork server (and multiprocessing's resource tracker), which stay by design."""
    return {p for p in procmem.descendants(os.getpid())
            if "forkserver" in _cmdline(p) or "resource_tracker" in _cmdline(p)}  # fmt: skip


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""
