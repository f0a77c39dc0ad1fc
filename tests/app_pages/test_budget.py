"""The pages under the server's memory budget: a view that could never fit is refused with its
reason, a view waits its turn while the budget is full, and a cached view is served at once."""

from __future__ import annotations

import threading
import time

import pytest

from app_pages.common import server
from bnviz.explorer import workers
from bnviz.hosting import forks, serve
from tests.app_pages.helpers import page_text, run_app, verdict


@pytest.fixture
def fresh_server(monkeypatch):
    """A new shared budget and cache for the test (the environment's budget), and again after it."""

    def make(budget_mb: str | None = None):
        if budget_mb is not None:
            monkeypatch.setenv(serve.BUDGET_ENV, budget_mb)
        server.clear()
        return server()

    yield make
    monkeypatch.delenv(serve.BUDGET_ENV, raising=False)
    server.clear()


def hog(budget: serve.Budget, seconds: float) -> threading.Thread:
    """Another visitor's job holding the whole budget for ``seconds``."""
    held = threading.Event()

    def run() -> None:
        with budget.admit("another visitor", budget.capacity):
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    held.wait(5)
    return thread


@pytest.mark.parametrize(
    ("page", "params", "needs"),
    [
        (None, {"layer": "BatchNorm1d", "shape": "2000,1000", "dtype": "float64", "steps": "0"}, "about 196 MB"),
        ("network", {"batch": "256", "image": "64", "channels": "4", "steps": "0"}, "about 383 MB"),
        ("family", {"shape": "16,64,32,30", "groups": "8"}, "about 136 MB"),
    ],
)
def test_a_view_over_the_servers_budget_is_refused_with_its_reason(fresh_server, page, params, needs):
    shared = fresh_server("100")
    at = run_app(params, page)
    text = page_text(at)
    assert f"Not run: this view needs {needs} of memory, more than this server's budget of 100 MB" in text, text
    assert not [m for m in at.markdown if "-badge[" in m.value], "no verdict for a view that did not run"
    assert shared.budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}


@pytest.mark.parametrize(
    ("fork_server_running", "needs"),
    [(False, "about 200 MB"), (True, "about 336 MB")],  # the fork server first, once; then the world's ranks
)
def test_the_data_parallel_page_counts_its_processes_in_the_budget(fresh_server, monkeypatch, fork_server_running,
                                                                   needs):  # fmt: skip
    if fork_server_running:
        workers.start()
    else:
        monkeypatch.setattr(forks, "_started", None)
    shared = fresh_server("100")
    at = run_app({"world": "8", "per_rank": "64", "sample": "6,8,8"}, "data_parallel")
    text = page_text(at)
    assert f"Not run: this view needs {needs} of memory, more than this server's budget of 100 MB" in text, text
    assert not [m for m in at.markdown if "-badge[" in m.value], "no verdict for a view that did not run"
    assert shared.budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}


def test_a_view_waits_while_the_budget_is_full_then_runs(fresh_server):
    shared = fresh_server()
    other = hog(shared.budget, 1.5)
    start = time.monotonic()
    at = run_app({"seed": str(int(time.time()))})  # a fresh seed: not cached
    assert verdict(at) == "match" and time.monotonic() - start >= 1.0
    other.join(5)
    assert shared.budget.counts["done"] == 2 and shared.budget.used == 0
    assert not [i for i in at.info if "queued" in i.value], "the queue's message is gone once the view runs"


def test_a_cached_view_is_served_at_once_while_the_budget_is_full(fresh_server):
    shared = fresh_server()
    params = {"seed": str(int(time.time()) + 1)}
    assert verdict(run_app(params)) == "match"
    other = hog(shared.budget, 5)
    start = time.monotonic()
    assert verdict(run_app(params)) == "match"
    assert time.monotonic() - start < 4, "served from the cache, not after the other job"
    other.join(6)
