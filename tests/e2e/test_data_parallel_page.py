"""The /data-parallel page in Chromium: real gloo ranks drawn, none left behind afterwards, and a
rank that dies mid-run shown as a clear error within its time bound."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bnviz.explorer.data_parallel import worker as dp_worker
from bnviz.shots import layout_problems, open_view, serve_app, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser


def _descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below ``pid``, with its command line (from /proc)."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            ppid = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("PPid:")), None)
            if ppid == parent:
                child = int(status.parent.name)
                cmd = (status.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((child, cmd))
                frontier.append(child)
    return found


def _ranks_left(pid: int) -> list[tuple[int, str]]:
    """Descendants that are not the fork server itself (it stays, holding torch, for the next run)."""
    return [(p, cmd) for p, cmd in _descendants(pid) if "forkserver" not in cmd and "resource_tracker" not in cmd]


def test_default_view_and_no_rank_left_behind(browser, request):
    with serve_app() as (base, proc):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            open_view(page, base, "data-parallel")
            assert verdict(page).startswith("match"), verdict(page)
            assert charts(page) == 3
            assert "SyncBatchNorm equals batch norm on the whole batch" in main_text(page)
            check_screenshot(page, "data-parallel", request)
            deadline = time.monotonic() + 10
            while _ranks_left(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert _ranks_left(proc.pid) == [], _ranks_left(proc.pid)
            for width in (390, 1024):
                page.set_viewport_size({"width": width, "height": 900})
                wait_until_drawn(page)
                assert layout_problems(page) == [], width
        finally:
            page.close()


def test_a_rank_killed_mid_run_is_a_clear_error_not_a_hang(browser):
    with serve_app(env={dp_worker.FAULT_ENV: "rank:1"}) as (base, proc):
        page = browser.new_page()
        try:
            start = time.monotonic()
            page.goto(f"{base}/data-parallel?world=2&seed=21")
            page.wait_for_function(  # the alert, and its text (drawn a moment after the alert itself)
                """() => { const e = document.querySelector('[data-testid="stAlertContentError"]');
                           return e && e.innerText.trim().length > 0; }""", timeout=60_000)
            took = time.monotonic() - start
            text = page.locator('[data-testid="stAlertContentError"]').inner_text()
            assert text.startswith("The ranks failed: rank 1 stopped"), text
            assert took < dp_worker.GLOO_TIMEOUT.total_seconds() + 30, took
            assert _ranks_left(proc.pid) == []
        finally:
            page.close()
