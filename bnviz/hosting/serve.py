"""What keeps a hosted demo alive under its audience: one memory budget for the whole server.

Every heavy call (a comparison, a network's training, a timing…) states its peak bytes before
anything is allocated (its config's ``estimate_bytes()``). ``Budget`` runs it only while
the estimates of the calls running together stay under the server's budget; the others wait in
a fair queue, and a call that could never fit is refused with the reason. ``ResultCache`` keeps
finished reports (plain data, bounded); ``run_heavy`` ties the two: a cached result at once,
else wait for room → compute → store.

The queue is first come, first served, with one exception that keeps small views fast: while the
oldest waiting job does not fit yet, a later one that fits may start ahead of it when it cannot
delay it — when the jobs started ahead of it leave room for it (``overtakers + cost + its cost
≤ budget``) — or, when it may, if it is small (at most a quarter of the oldest one's cost) and
fewer than ``max_overtakes`` have done so. So a small view never waits long behind a big one
that cannot start yet, and a big one waits at most for what ran before it plus ``max_overtakes``
small ones: it is never starved, and no other big one passes it.

Memory is not the only thing a job uses up: a training run keeps a core busy for seconds. A job
that says so (``cpu=True``) also takes one of ``cpu_slots`` (default: the cores this process may
use), so at most that many run at once; the others wait in the same queue, and a job that needs no
core slot (a quick view) may pass them as above — it cannot take a slot they wait for.

Each owner (a browser session) holds at most one job: a newer request of the same owner cancels
its older one — dropped from the queue, or stopped between steps of the run (``Ticket.stopped``).

glibc keeps freed memory in its heaps; ``tune_allocator`` (called once where the server starts;
``ALLOCATOR_ENV`` sets the same for a process about to start) makes large blocks their own
mappings, returned at once on free, and ``trim`` gives back the rest when the budget is idle.

No streamlit here: the pages make one Budget and one cache per server process.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

MB = 2**20
BUDGET_ENV = "BNVIZ_MEMORY_BUDGET_MB"
CPU_SLOTS_ENV = "BNVIZ_CPU_SLOTS"  # CPU-heavy jobs at once (default: the cores this process may use)
DEFAULT_BUDGET_MB = 512  # with the server's baseline (~460 MiB, every page warm) it fits a 1 GiB instance
MMAP_THRESHOLD = 256 * 1024  # blocks from 256 KiB up are their own mappings: freed → returned
ARENA_MAX = 2  # malloc heaps for all threads (glibc's default: 8 per core, each keeping its free memory)
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_ARENA_MAX": str(ARENA_MAX)}
REPORTS = 128  # finished reports kept, every page together (each a few tens of KB of plain data)
TRIM_EVERY_S = 20.0  # under continuous load (never idle) the heaps are still trimmed this often
_log = logging.getLogger("bnviz.serve")


class Refused(Exception):
    """The job could never run here: its estimate is over the whole budget."""


class Cancelled(Exception):
    """The job is no longer wanted: its owner asked for another, or it was stopped."""


def budget_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The server's budget: ``BNVIZ_MEMORY_BUDGET_MB`` (in MB of 2**20 bytes) or the default
    (logged when the variable is not a positive number)."""
    text = (environ if environ is not None else os.environ).get(BUDGET_ENV, "").strip()
    if text:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if value > 0 and math.isfinite(value):
            return int(value * MB)
        logging.getLogger("bnviz").warning("%s=%r is not a positive number of MiB: using %d", BUDGET_ENV, text,
                                           DEFAULT_BUDGET_MB)  # fmt: skip
    return DEFAULT_BUDGET_MB * MB


def cpu_slots(environ: Mapping[str, str] | None = None) -> int:
    """How many CPU-heavy jobs may run at once: ``BNVIZ_CPU_SLOTS``, else the cores this process
    may run on."""
    text = (environ if environ is not None else os.environ).get(CPU_SLOTS_ENV, "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(eq=False)
class Ticket:
    """One job's place: waiting in the queue, then running, then done (or cancelled)."""

    owner: Hashable
    cost: int
    seq: int
    cpu: bool = False  # takes a core slot while it runs
    state: str = "waiting"  # waiting → running → done, or → cancelled
    overtaken: int = 0  # jobs started ahead of this one while it waited first in line, delaying it
    passed: Ticket | None = None  # the waiting job this one started ahead of
    stop: bool = False  # set when a newer job of the owner supersedes this one
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def stopped(self) -> bool:
        """True once the job should stop between steps (its owner asked for another)."""
        return self.stop


@dataclass(frozen=True)
class Waiting:
    """What a waiting job's ``on_wait`` is told: how many wait ahead of it, how many run."""

    ahead: int
    running: int
    waited_s: float


class Budget:
    """A thread-safe budget of ``capacity`` bytes with the fair queue the module describes.

    ``admit(owner, cost, on_wait)`` is a context manager: it returns once the job may run (its
    ``cost`` counted against the budget until the block ends), raises ``Refused`` when the cost is
    over the whole budget, and ``Cancelled`` when a newer job of the owner supersedes it while it
    waits. ``on_wait`` is called in the waiting thread every ``poll`` seconds with ``Waiting``; an
    exception from it leaves the queue (Streamlit stops a script that way). ``on_idle`` runs each
    time the budget empties (and at most every ``TRIM_EVERY_S`` under continuous load).
    """

    def __init__(
        self,
        capacity: int,
        max_overtakes: int = 8,
        on_idle: Callable[[], None] | None = None,
        poll: float = 0.25,
        cores: int | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError("the budget must be positive")
        self.capacity = capacity
        self.cores = cores if cores is not None else cpu_slots()
        self._cores_used = 0
        self.max_overtakes = max_overtakes
        self.poll = poll
        self._on_idle = on_idle
        self._cond = threading.Condition()
        self._queue: list[Ticket] = []  # waiting, oldest first
        self._running: set[Ticket] = set()
        self._latest: dict[Hashable, Ticket] = {}  # each owner's newest ticket
        self._used = 0
        self._seq = itertools.count()
        self._last_trim = time.monotonic()
        self.issued = 0  # jobs that asked
        self.counts = {"done": 0, "stopped": 0, "left the queue": 0}  # how jobs ended
        self.started: deque[int] = deque(maxlen=1000)  # the latest jobs' seq, in the order they started

    # --- what tests and the page read ------------------------------------------------------------

    @property
    def used(self) -> int:
        with self._cond:
            return self._used

    def snapshot(self) -> dict[str, int]:
        with self._cond:
            return {"used": self._used, "running": len(self._running), "waiting": len(self._queue)}

    @property
    def cores_used(self) -> int:
        """Core slots held by the CPU-heavy jobs running now."""
        with self._cond:
            return self._cores_used

    def state(self, owner: Hashable) -> str | None:
        """The state of ``owner``'s current job ("waiting" or "running"), or None."""
        with self._cond:
            ticket = self._latest.get(owner)
            return ticket.state if ticket is not None and ticket.state in ("waiting", "running") else None

    def refusal(self, cost: int) -> str | None:
        """Why a job of ``cost`` bytes is never run here, or None."""
        if cost > self.capacity:
            return (
                f"this view needs about {cost / MB:,.0f} MB of memory, more than this server's budget of "
                f"{self.capacity / MB:,.0f} MB for all visitors together; use a smaller shape or fewer steps"
            )
        return None

    # --- admission ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def admit(
        self, owner: Hashable, cost: int, on_wait: Callable[[Waiting], None] | None = None, cpu: bool = False
    ) -> Iterator[Ticket]:
        reason = self.refusal(cost)
        if reason is not None:
            raise Refused(reason)
        cost = max(int(cost), 0)
        with self._cond:
            older = self._latest.get(owner)
            if older is not None and older.state in ("waiting", "running"):
                self._cancel(older)
            ticket = Ticket(owner, cost, next(self._seq), cpu)
            self.issued += 1
            self._latest[owner] = ticket
            self._queue.append(ticket)
            self._schedule()
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: ticket.state != "waiting", self.poll)
                    if ticket.state == "running":
                        break
                    if ticket.state == "cancelled":
                        raise Cancelled("superseded by a newer request of the same visitor")
                    status = Waiting(self._queue.index(ticket), len(self._running), time.monotonic() - ticket.queued_at)
                if on_wait is not None:
                    on_wait(status)  # outside the lock: it may take a while, or raise to leave
            yield ticket
        except BaseException as exc:  # Streamlit's stop and rerun are BaseExceptions too
            self._leave(ticket, exc)
            raise
        else:
            self._leave(ticket, None)

    def cancel_owner(self, owner: Hashable) -> None:
        """Drop ``owner``'s waiting job and ask its running one to stop (a closed session)."""
        with self._cond:
            ticket = self._latest.get(owner)
            if ticket is not None and ticket.state in ("waiting", "running"):
                self._cancel(ticket)
                self._schedule()

    def _cancel(self, ticket: Ticket) -> None:  # under the lock
        if ticket.state == "waiting":
            self._queue.remove(ticket)
            ticket.state = "cancelled"
            self._cond.notify_all()
        else:  # running: it stops at its next step and then leaves
            ticket.stop = True

    def _leave(self, ticket: Ticket, exc: BaseException | None) -> None:
        with self._cond:
            how = "done" if exc is None else "stopped" if ticket.state == "running" else "left the queue"
            self.counts[how] += 1
            if ticket.state == "waiting":
                self._queue.remove(ticket)
            elif ticket.state == "running":
                self._running.discard(ticket)
                self._used -= ticket.cost
                self._cores_used -= ticket.cpu
            ticket.state = {"waiting": "cancelled", "running": "done"}.get(ticket.state, ticket.state)
            if self._latest.get(ticket.owner) is ticket:
                del self._latest[ticket.owner]
            self._schedule()
            now = time.monotonic()
            trim = (not self._running and not self._queue) or now - self._last_trim > TRIM_EVERY_S
            if trim:
                self._last_trim = now
        if exc is not None:
            _log.info("job %d (%.0f MiB) %s after %.1f s: %s", ticket.seq, ticket.cost / MB, how,
                      time.monotonic() - ticket.queued_at, type(exc).__name__)  # fmt: skip
        else:
            _log.debug("job %d (%.0f MiB) done %.1f s after it asked", ticket.seq, ticket.cost / MB,
                       time.monotonic() - ticket.queued_at)  # fmt: skip
        if trim and self._on_idle is not None:
            self._on_idle()

    def _start(self, ticket: Ticket, passed: Ticket | None = None) -> None:  # under the lock
        _log.debug("job %d (%.0f MiB) starts after %.1f s, %d running", ticket.seq, ticket.cost / MB,
                   time.monotonic() - ticket.queued_at, len(self._running))  # fmt: skip
        self._queue.remove(ticket)
        ticket.state, ticket.passed = "running", passed
        self._running.add(ticket)
        self._used += ticket.cost
        self._cores_used += ticket.cpu
        self.started.append(ticket.seq)
        self._cond.notify_all()

    def _fits(self, ticket: Ticket) -> bool:
        return self._used + ticket.cost <= self.capacity and (not ticket.cpu or self._cores_used < self.cores)

    def _leaves_a_core(self, ticket: Ticket, head: Ticket) -> bool:
        """Whether ``ticket`` can start ahead of ``head`` without taking the core slot it waits for."""
        return not (ticket.cpu and head.cpu) or self._cores_used + 2 <= self.cores

    def _schedule(self) -> None:  # under the lock
        """Start the oldest jobs while they fit; then, behind an oldest one that does not fit yet,
        the later ones that fit and cannot delay it (and up to ``max_overtakes`` small ones that may)."""
        while self._queue and self._fits(self._queue[0]):
            self._start(self._queue[0])
        if not self._queue:
            return
        head = self._queue[0]
        for ticket in list(self._queue[1:]):
            if not self._fits(ticket) or not self._leaves_a_core(ticket, head):
                continue
            ahead = sum(t.cost for t in self._running if t.passed is head)
            if ahead + ticket.cost + head.cost <= self.capacity:  # room left for head: no delay
                self._start(ticket, head)
            elif 4 * ticket.cost <= head.cost and head.overtaken < self.max_overtakes:  # small: a short delay
                head.overtaken += 1
                self._start(ticket, head)


# --- finished results ------------------------------------------------------------------------------

MISSING = object()


class ResultCache:
    """A bounded, thread-safe LRU of finished results (plain data), by config key, with a claim
    per key so that visitors asking for the same view at once compute it once."""

    def __init__(self, max_entries: int = 64) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, Any] = OrderedDict()
        self._claims: dict[Hashable, threading.Event] = {}
        self._waiters: dict[Hashable, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def get(self, key: Hashable) -> Any:
        """The value for ``key`` (now the most recent), or ``MISSING``."""
        with self._lock:
            if key not in self._values:
                return MISSING
            self._values.move_to_end(key)
            return self._values[key]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.max_entries:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def claim(self, key: Hashable) -> threading.Event | None:
        """None: the caller computes ``key`` and must ``release`` it. Else the event of the one
        computing it now, set when it is done or gave up; the caller counts as waiting for it
        (``waiting``) until it calls ``unwait``."""
        with self._lock:
            if key in self._claims:
                self._waiters[key] = self._waiters.get(key, 0) + 1
                return self._claims[key]
            self._claims[key] = threading.Event()
            return None

    def unwait(self, key: Hashable) -> None:
        with self._lock:
            left = self._waiters.get(key, 0) - 1
            if left > 0:
                self._waiters[key] = left
            else:
                self._waiters.pop(key, None)

    def waiting(self, key: Hashable) -> int:
        """How many wait for the one computing ``key``: while any do, it is worth finishing."""
        with self._lock:
            return self._waiters.get(key, 0)

    def release(self, key: Hashable) -> None:
        with self._lock:
            event = self._claims.pop(key, None)
        if event is not None:
            event.set()


def run_heavy(
    budget: Budget,
    cache: ResultCache,
    owner: Hashable,
    key: Hashable,
    cost: int,
    fn: Callable[[Callable[[], bool]], Any],
    *,
    on_wait: Callable[[Waiting], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_start: Callable[[], None] | None = None,
    cpu: bool = False,
) -> Any:
    """The result of ``fn(stopped)`` for ``key``: from the cache without queuing; else, when
    another visitor computes the same key now, theirs; else computed once the budget admits
    ``cost`` bytes, then cached. ``stopped()`` is True once the job should stop between steps
    (superseded by the owner's newer job, or ``should_stop()``). Raises ``Refused`` (before
    anything is allocated) or ``Cancelled``. ``on_wait`` is called while it waits, ``on_start``
    when it starts computing; ``cpu``: the job keeps a core busy (see ``Budget``)."""
    while True:
        value = cache.get(key)
        if value is not MISSING:
            return value
        reason = budget.refusal(cost)
        if reason is not None:
            raise Refused(reason)
        other = cache.claim(key)
        if other is None:
            break
        try:  # someone computes this very view now: wait for theirs
            started = time.monotonic()
            while not other.wait(budget.poll):
                if on_wait is not None:
                    on_wait(Waiting(0, budget.snapshot()["running"], time.monotonic() - started))
        finally:
            cache.unwait(key)
    try:
        with budget.admit(owner, cost, on_wait, cpu) as ticket:
            if on_start is not None:
                on_start()

            def stopped() -> bool:
                return ticket.stopped or (should_stop is not None and should_stop())

            value = fn(stopped)
        cache.put(key, value)
        return value
    finally:
        cache.release(key)


# --- the allocator ---------------------------------------------------------------------------------

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters (malloc.h)
_M_ARENA_MAX = -8


def _libc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD, arena_max: int = ARENA_MAX) -> bool:
    """Make glibc return large freed blocks at once and keep few heaps (what ``ALLOCATOR_ENV``
    sets for a process about to start). True when done; False where the C library is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(_M_ARENA_MAX, arena_max))


def trim() -> None:
    """Give the free memory at the top of every glibc heap back to the system."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# --- one per server -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shared:
    """What one server process shares between its visitors: the budget and the finished reports."""

    budget: Budget
    reports: ResultCache


def shared() -> Shared:
    """A server's shared state, made once where the server starts (the allocator tuned too)."""
    tune_allocator()
    return Shared(Budget(budget_bytes(), on_idle=trim), ResultCache(REPORTS))
