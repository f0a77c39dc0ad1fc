"""What every page folder provides, so that a page — and the server's queue and report cache — can
treat all of them alike:

- ``url.py``: a frozen, hashable config (it keys the server's report cache) with
  ``estimate_bytes()`` — the peak memory a run adds, an upper bound the budget admits it by — and
  ``refusal()`` — why it is not run (a value out of range, too much work), or None — both computed
  from plain numbers before anything is allocated (``PageConfig``);
- ``engine.py``: ``run(config, stopped, progress)`` — the run, asking ``stopped()`` between steps
  (``check_stop``) and reporting ``progress(fraction)`` — returning a plain, picklable report that
  holds its config and a verdict (``PageReport``); the page's figures functions turn a report into
  plotly figures, which the app caches as plain dicts.

``tests/explorer/test_contract.py`` holds every page to it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Protocol, TypeVar, runtime_checkable

from bnviz.hosting.serve import Cancelled

Stopped = Callable[[], bool]
Progress = Callable[[float], None]
C = TypeVar("C", contravariant=True)
R = TypeVar("R", covariant=True)


def never() -> bool:
    """A run nobody stops (``stopped`` by default)."""
    return False


def ignore(fraction: float) -> None:
    """Progress nobody shows (``progress`` by default)."""
    return None


def check_stop(stopped: Stopped) -> None:
    """Between two steps of a run: ``Cancelled`` once ``stopped()`` says the view is no longer wanted."""
    if stopped():
        raise Cancelled("stopped: the view is no longer wanted")


@runtime_checkable
class PageConfig(Hashable, Protocol):
    """A page's view: frozen and hashable, sized and vetted before it runs."""

    def estimate_bytes(self) -> int: ...

    def refusal(self) -> str | None: ...


@runtime_checkable
class PageReport(Protocol):
    """A run's outcome: plain data, its config, and its verdict in a word or two."""

    config: Any

    @property
    def verdict(self) -> str: ...


class Run(Protocol[C, R]):
    """A page engine's ``run``."""

    def __call__(self, config: C, stopped: Stopped = never, progress: Progress = ignore) -> R: ...
