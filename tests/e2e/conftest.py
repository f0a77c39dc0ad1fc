"""Fixtures for the browser tests: one Debian Chromium and one served app per module, a fresh
context per test, and screenshots compared with baselines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from bnviz.shots import CHROMIUM, VIEWPORT, chromium, screenshot_main, serve_app, verdict_text
from tests.snapshots import compare_png

BASELINES = Path(__file__).parent / "baselines"
ARTIFACTS = Path(__file__).parent / "__artifacts__"
ROOT = Path(__file__).resolve().parents[2]


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {CHROMIUM} is missing: browser tests must run in CI")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium): browser tests skipped locally")


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def server(browser):
    with serve_app() as (base, _proc):
        yield base


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.dialogs = []
    p.on("dialog", lambda d: (p.dialogs.append(d.message), d.dismiss()))
    p.page_errors = []
    p.on("pageerror", lambda e: p.page_errors.append(str(e)))
    yield p
    context.close()


def verdict(page, key: str = "verdict") -> str:
    """The verdict badge's words (match / mismatch / match: both refuse …) and its detail line."""
    return verdict_text(page, key) or ""


def charts(page) -> int:
    """Plotly charts on the page that have drawn their SVG."""
    return page.locator('[data-testid="stPlotlyChart"]:has(.main-svg)').count()


def main_text(page) -> str:
    return page.locator('[data-testid="stMainBlockContainer"]').inner_text()


def check_screenshot(page, name: str, request) -> None:
    """The main area against ``baselines/<name>.png`` (stored with a 256-colour palette, well
    inside the comparison's per-pixel threshold); --update-snapshots rewrites it."""
    shot = ARTIFACTS / f"{name}-actual.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    screenshot_main(page, shot)
    baseline = BASELINES / f"{name}.png"
    if request.config.getoption("--update-snapshots") or not baseline.exists():
        if os.environ.get("CI") == "true" and not baseline.exists():
            pytest.fail(f"no baseline {baseline}: run pytest --update-snapshots and commit it")
        BASELINES.mkdir(parents=True, exist_ok=True)
        with Image.open(shot) as img:
            img.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                baseline, optimize=True
            )
        shot.unlink()
        return
    problem = compare_png(shot, baseline, ARTIFACTS / f"{name}-diff.png")
    if problem:
        (ARTIFACTS / f"{name}-expected.png").write_bytes(baseline.read_bytes())
        pytest.fail(f"{name}: {problem}; see {ARTIFACTS}/{name}-{{actual,expected,diff}}.png")
    shot.unlink()
