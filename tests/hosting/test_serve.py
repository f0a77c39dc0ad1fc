"""The server's memory budget: the fair queue's order, small jobs passing a big one that cannot
start, the big one never starved, cancellation, refusal, accounting under concurrent admits, and
the shared cache in front of it."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

from bnviz.hosting import serve
from bnviz.hosting.serve import MB, Budget, Cancelled, Refused, ResultCache, run_heavy


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


class Job:
    """A job in its own thread: admitted for ``cost``, then held until ``finish()``."""

    def __init__(self, budget: Budget, owner: str, cost: int, on_wait=None, cpu: bool = False) -> None:
        self.budget, self.owner, self.cost, self.cpu = budget, owner, cost, cpu
        self.started = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.ticket: serve.Ticket | None = None
        issued = budget.issued
        self.thread = threading.Thread(target=self._run, args=(on_wait,), daemon=True)
        self.thread.start()
        # queued, or started, before the next job arrives: the order of arrival is the test's
        wait_until(
            lambda: self.error or self.started.is_set() or (budget.issued > issued and budget.state(owner) == "waiting")
        )

    def _run(self, on_wait) -> None:
        try:
            with self.budget.admit(self.owner, self.cost, on_wait, self.cpu) as ticket:
                self.ticket = ticket
                self.started.set()
                self.done.wait(10)
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.done.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def order(budget: Budget, jobs: dict[str, Job]) -> list[str]:
    """The jobs' names in the order they started."""
    by_seq = {job.ticket.seq: name for name, job in jobs.items() if job.ticket is not None}
    return [by_seq[s] for s in budget.started if s in by_seq]


def test_jobs_start_first_come_first_served():
    budget = Budget(10, poll=0.01)
    jobs = {"A": Job(budget, "a", 10)}
    for name in "BCD":
        jobs[name] = Job(budget, name.lower(), 6)
    assert jobs["A"].started.is_set() and budget.snapshot() == {"used": 10, "running": 1, "waiting": 3}
    for current, following in (("A", "B"), ("B", "C"), ("C", "D")):
        jobs[current].finish()
        wait_until(jobs[following].started.is_set)
        assert budget.snapshot()["running"] == 1, "only one 6 fits in 10"
    jobs["D"].finish()
    assert order(budget, jobs) == ["A", "B", "C", "D"]
    assert budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}


def test_a_small_job_passes_a_big_one_that_cannot_start_yet():
    budget = Budget(10, max_overtakes=0, poll=0.01)
    a = Job(budget, "a", 6)
    big = Job(budget, "big", 8)  # 6 + 8 > 10: waits
    small = Job(budget, "small", 2)  # fits now, and 2 + 8 ≤ 10: cannot delay the big one
    assert small.started.is_set() and not big.started.is_set()
    a.finish()
    wait_until(big.started.is_set)  # the small one still runs: the big one did not wait for it
    assert not small.done.is_set()
    assert budget.snapshot() == {"used": 10, "running": 2, "waiting": 0}
    small.finish()
    big.finish()


def test_small_jobs_keep_passing_while_they_leave_room_for_the_big_one():
    """Passers that together leave the big job's room never delay it: they are not counted."""
    budget = Budget(10, max_overtakes=0, poll=0.01)
    a = Job(budget, "a", 5)
    big = Job(budget, "big", 6)  # 5 + 6 > 10
    for i in range(20):  # one after another, each 1 + 6 ≤ 10 with the others gone
        small = Job(budget, f"s{i}", 1)
        assert small.started.is_set(), i
        small.finish()
    assert not big.started.is_set()
    four = [Job(budget, f"t{i}", 1) for i in range(5)]  # 4 × 1 + 6 ≤ 10 — the fifth would take the big one's room
    assert [j.started.is_set() for j in four] == [True] * 4 + [False]
    a.finish()
    wait_until(big.started.is_set)
    assert not four[4].started.is_set(), "the big one was first in line"
    for j in four[:4]:
        j.finish()
    wait_until(four[4].started.is_set)
    for j in (big, four[4]):
        j.finish()
    assert budget.used == 0


def test_a_big_job_is_overtaken_by_small_ones_at_most_max_overtakes_times():
    budget = Budget(20, max_overtakes=2, poll=0.01)
    a = Job(budget, "a", 10)
    big = Job(budget, "big", 20)
    jobs = {"A": a, "big": big}
    for i in range(1, 5):  # each fits beside A, and delays the big one (5 + 20 > 20): small (5 ≤ 20 / 4)
        jobs[f"s{i}"] = Job(budget, f"s{i}", 5)
    assert [jobs[f"s{i}"].started.is_set() for i in range(1, 5)] == [True, True, False, False]
    jobs["s1"].finish()
    time.sleep(0.05)
    assert not jobs["s3"].started.is_set(), "a third would starve the big one"
    jobs["s2"].finish()
    a.finish()
    wait_until(big.started.is_set)
    big.finish()
    for name in ("s3", "s4"):
        wait_until(jobs[name].started.is_set)
        jobs[name].finish()
    assert order(budget, jobs) == ["A", "s1", "s2", "big", "s3", "s4"]


def test_a_big_job_is_not_passed_by_another_big_one():
    budget = Budget(10, max_overtakes=8, poll=0.01)
    a = Job(budget, "a", 6)
    big = Job(budget, "big", 8)
    other = Job(budget, "other", 4)  # fits beside A, but would delay the big one and is not small
    time.sleep(0.05)
    assert not other.started.is_set()
    a.finish()
    wait_until(big.started.is_set)
    big.finish()
    wait_until(other.started.is_set)
    other.finish()


def test_a_job_over_the_whole_budget_is_refused_before_it_runs():
    budget = Budget(100 * MB)
    with pytest.raises(Refused, match=r"needs about 101 MB of memory, more than this server's budget of 100 MB"):
        with budget.admit("x", 101 * MB):
            pytest.fail("must not run")
    assert budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}
    assert budget.refusal(100 * MB) is None


def test_a_newer_request_of_the_same_owner_cancels_its_waiting_one():
    budget = Budget(10, poll=0.01)
    other = Job(budget, "other", 10)
    old = Job(budget, "me", 5)
    new = Job(budget, "me", 5)
    old.thread.join(5)
    assert isinstance(old.error, Cancelled) and not new.started.is_set()
    assert budget.counts["left the queue"] == 1
    assert budget.snapshot() == {"used": 10, "running": 1, "waiting": 1}
    other.finish()
    wait_until(new.started.is_set)
    new.finish()
    assert budget.used == 0


def test_a_newer_request_of_the_same_owner_stops_its_running_one():
    budget = Budget(10, poll=0.01)
    old = Job(budget, "me", 6)
    assert old.started.is_set() and not old.ticket.stopped
    new = Job(budget, "me", 6)
    assert old.ticket.stopped, "the running job is asked to stop between steps"
    assert not new.started.is_set()
    old.finish()  # it stops: its memory comes back, and the new one starts
    wait_until(new.started.is_set)
    new.finish()
    assert budget.used == 0


def test_a_job_that_stops_with_an_exception_gives_its_memory_back():
    budget = Budget(10, poll=0.01)
    with pytest.raises(Cancelled):
        with budget.admit("me", 7) as ticket:
            assert budget.used == 7 and not ticket.stopped
            raise Cancelled("stopped between steps")
    assert budget.used == 0 and budget.counts == {"done": 0, "stopped": 1, "left the queue": 0}


def test_a_closed_session_drops_its_waiting_job_and_stops_its_running_one():
    budget = Budget(10, poll=0.01)
    running = Job(budget, "closed", 10)
    waiting = Job(budget, "left", 4)
    budget.cancel_owner("left")
    waiting.thread.join(5)
    assert isinstance(waiting.error, Cancelled)
    budget.cancel_owner("closed")
    assert running.ticket.stopped
    running.finish()
    assert budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}


def test_an_exception_in_on_wait_leaves_the_queue():
    """Streamlit stops a script (the visitor changed the view) by raising from the page's update."""

    class Stop(BaseException):
        pass

    calls = []

    def on_wait(w: serve.Waiting) -> None:
        calls.append(w)
        raise Stop

    budget = Budget(10, poll=0.01)
    first = Job(budget, "a", 8)
    second = Job(budget, "b", 8, on_wait)
    second.thread.join(5)
    assert isinstance(second.error, Stop) and calls and calls[0].ahead == 0 and calls[0].running == 1
    assert budget.snapshot() == {"used": 8, "running": 1, "waiting": 0}
    first.finish()
    assert budget.used == 0 and budget.counts == {"done": 1, "stopped": 0, "left the queue": 1}


def test_on_wait_says_how_many_wait_ahead():
    budget = Budget(10, poll=0.01)
    seen: dict[str, list[int]] = {"c": []}
    a = Job(budget, "a", 10)
    b = Job(budget, "b", 10)
    c = Job(budget, "c", 10, lambda w: seen["c"].append(w.ahead))
    wait_until(lambda: len(seen["c"]) >= 2)
    assert set(seen["c"]) == {1}
    a.finish()
    wait_until(b.started.is_set)
    wait_until(lambda: seen["c"][-1] == 0)
    b.finish()
    c.finish()


def test_accounting_stays_within_the_budget_and_returns_to_zero_under_concurrent_admits():
    capacity = 100
    idle = []
    budget = Budget(capacity, max_overtakes=4, on_idle=lambda: idle.append(1), poll=0.005)
    lock = threading.Lock()
    live = [0, 0]  # now, highest
    errors = []

    def worker(i: int) -> None:
        rng = random.Random(i)
        for _ in range(40):
            cost = rng.choice([1, 2, 5, 10, 40, 90])
            try:
                with budget.admit(f"owner{i}", cost):
                    with lock:
                        live[0] += cost
                        live[1] = max(live[1], live[0])
                    time.sleep(rng.random() * 0.002)
                    with lock:
                        live[0] -= cost
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    assert 0 < live[1] <= capacity, live
    assert budget.snapshot() == {"used": 0, "running": 0, "waiting": 0}
    assert len(budget.started) == 16 * 40 and idle


def test_run_heavy_serves_the_cache_without_queuing_and_computes_once():
    budget, cache = Budget(10, poll=0.01), ResultCache(4)
    calls = []

    def compute(stopped):
        calls.append(1)
        time.sleep(0.2)
        return "report"

    results = []
    threads = [
        threading.Thread(target=lambda o=o: results.append(run_heavy(budget, cache, o, "key", 3, compute)))
        for o in ("a", "b", "c")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert results == ["report"] * 3 and len(calls) == 1, "three visitors, one computation"
    hog = Job(budget, "hog", 10)  # the budget is full: a cached view is still served at once
    start = time.monotonic()
    assert run_heavy(budget, cache, "d", "key", 3, compute) == "report"
    assert time.monotonic() - start < 0.1 and len(calls) == 1
    hog.finish()


def test_run_heavy_refuses_before_computing_and_caches_nothing_when_stopped():
    budget, cache = Budget(10, poll=0.01), ResultCache(4)
    with pytest.raises(Refused):
        run_heavy(budget, cache, "a", "big", 11, lambda stopped: pytest.fail("must not run"))

    def stops(stopped):
        if stopped():
            raise Cancelled("stopped")
        return "never"

    with pytest.raises(Cancelled):
        run_heavy(budget, cache, "a", "k", 5, stops, should_stop=lambda: True)
    assert cache.get("k") is serve.MISSING and budget.used == 0
    assert run_heavy(budget, cache, "a", "k", 5, stops) == "never"


def test_the_cache_keeps_the_most_recent_entries():
    cache = ResultCache(3)
    for k in "abcd":
        cache.put(k, k.upper())
    assert cache.get("a") is serve.MISSING and len(cache) == 3
    cache.get("b")
    cache.put("e", "E")
    assert cache.get("c") is serve.MISSING and cache.get("b") == "B"


@pytest.mark.parametrize(
    ("value", "mib"), [(None, None), ("", None), ("300", 300), ("1.5", 1.5), ("-5", None), ("no", None), ("inf", None)]
)
def test_the_budget_comes_from_the_environment(value, mib):
    """BNVIZ_MEMORY_BUDGET_MB in MiB; unset or not a positive number: the default."""
    env = {} if value is None else {serve.BUDGET_ENV: value}
    assert serve.budget_bytes(env) == int((mib or serve.DEFAULT_BUDGET_MB) * MB)


def test_the_allocator_is_tuned_and_trimmed_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert serve.tune_allocator()
    serve.trim()


# --- the CPU: at most ``cores`` CPU-heavy jobs at once ------------------------------------------------


@pytest.mark.parametrize("cores", [1, 2, 3])
def test_cpu_heavy_jobs_run_at_most_one_per_core_in_order(cores):
    budget = Budget(100 * MB, cores=cores)
    jobs = [Job(budget, f"trainer {i}", 1 * MB, cpu=True) for i in range(cores + 2)]
    assert [j.started.is_set() for j in jobs] == [True] * cores + [False, False]
    assert budget.cores_used == cores
    jobs[0].finish()
    wait_until(lambda: jobs[cores].started.is_set())
    assert not jobs[cores + 1].started.is_set(), "first come, first served"
    for j in jobs[1:]:
        j.finish()
    assert budget.cores_used == 0 and budget.used == 0


def test_a_quick_view_passes_trainings_that_wait_for_a_core():
    """The layer page's default view stays fast while trainings hold every core."""
    budget = Budget(100 * MB, cores=1)
    training = Job(budget, "trainer", 1 * MB, cpu=True)
    waiting = Job(budget, "second trainer", 1 * MB, cpu=True)
    view = Job(budget, "reader", 5 * MB)
    assert training.started.is_set() and not waiting.started.is_set()
    assert view.started.is_set(), "a job that needs no core does not wait for one"
    late = Job(budget, "third trainer", 1 * MB, cpu=True)
    training.finish()
    wait_until(lambda: waiting.started.is_set())
    assert not late.started.is_set(), "a later training does not take the core the first in line waits for"
    for j in (view, waiting, late):
        j.finish()
    assert budget.cores_used == 0


def test_cpu_slots_come_from_the_environment_or_the_cores():
    assert serve.cpu_slots({serve.CPU_SLOTS_ENV: "3"}) == 3
    assert serve.cpu_slots({serve.CPU_SLOTS_ENV: "zero"}) >= 1
    assert serve.cpu_slots({}) == len(os.sched_getaffinity(0))
