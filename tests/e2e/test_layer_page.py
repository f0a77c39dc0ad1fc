"""What a person sees, in real Chromium against a served app: verdicts, charts, errors,
interaction through the URL, hostile links, and screenshots compared with baselines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from bnviz.shots import CHROMIUM, VIEWPORT, chromium, open_view, screenshot_main, serve_app, wait_until_drawn
from tests.snapshots import compare_png

pytestmark = pytest.mark.browser
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


def verdict(page) -> str:
    return page.locator(".st-key-verdict").inner_text()


def charts(page) -> int:
    """Plotly charts on the page that have drawn their SVG."""
    return page.locator('[data-testid="stPlotlyChart"]:has(.main-svg)').count()


VIEWS = {
    "bn1d-train": "layer=BatchNorm1d&shape=32,4&mode=train",
    "bn1d-eval": "layer=BatchNorm1d&shape=16,4,8&mode=eval",
    "bn2d-train": "layer=BatchNorm2d&shape=8,3,16,16&mode=train",
    "bn2d-eval": "layer=BatchNorm2d&shape=8,3,16,16&mode=eval",
    "bn3d-train": "layer=BatchNorm3d&shape=4,2,4,8,8&mode=train",
    "bn3d-eval": "layer=BatchNorm3d&shape=4,2,4,8,8&mode=eval",
    "any-rank-train": "layer=BatchNorm&shape=2,3,4,4,2,2&mode=train",
    "any-rank-eval": "layer=BatchNorm&shape=2,3,4,4,2,2&mode=eval",
    "momentum-none": "layer=BatchNorm2d&shape=8,3,8,8&momentum=none&steps=20",
    "invalid-rank": "layer=BatchNorm2d&shape=8,3,16",
    "batch-of-one": "layer=BatchNorm1d&shape=1,8",
}
ERRORS = {
    "invalid-rank": "expected 4D input (got 3D input)",
    "batch-of-one": "Expected more than 1 value per channel when training",
}


@pytest.mark.parametrize("name", VIEWS)
def test_view_as_a_person_sees_it(server, page, name, request):
    open_view(page, server, VIEWS[name])
    text = verdict(page)
    assert text.startswith("match"), text
    body = page.locator('[data-testid="stMainBlockContainer"]').inner_text()
    assert "mismatch" not in body
    if name in ERRORS:
        assert ERRORS[name] in text, text  # torch's message, and bnviz's beside it
        assert text.count(ERRORS[name]) == 2, text
        assert charts(page) == 0
    else:
        assert charts(page) == 4
        assert "Which axes are reduced" in body and "values per channel" in body
    if name == "momentum-none":
        assert "1/21 (cumulative average)" in body
    assert not page.page_errors and not page.dialogs

    shot = ARTIFACTS / f"{name}-actual.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    screenshot_main(page, shot)
    baseline = BASELINES / f"{name}.png"
    if request.config.getoption("--update-snapshots") or not baseline.exists():
        if os.environ.get("CI") == "true" and not baseline.exists():
            pytest.fail(f"no baseline {baseline}: run pytest --update-snapshots and commit it")
        BASELINES.mkdir(parents=True, exist_ok=True)
        baseline.write_bytes(shot.read_bytes())
        shot.unlink()
        return
    problem = compare_png(shot, baseline, ARTIFACTS / f"{name}-diff.png")
    if problem:
        (ARTIFACTS / f"{name}-expected.png").write_bytes(baseline.read_bytes())
        pytest.fail(f"{name}: {problem}; see {ARTIFACTS}/{name}-{{actual,expected,diff}}.png")
    shot.unlink()


def test_changing_a_control_updates_url_and_verdict(server, page, browser):
    open_view(page, server, "layer=BatchNorm2d&shape=1,3,1,1&steps=0")
    assert "Expected more than 1 value" in verdict(page)
    page.get_by_test_id("stSidebar").get_by_text("eval", exact=True).click()
    page.wait_for_function("() => location.search.includes('mode=eval')", timeout=30_000)
    wait_until_drawn(page)
    assert verdict(page).startswith("match — bnviz agrees with torch"), verdict(page)
    params = parse_qs(urlsplit(page.url).query)
    assert params["mode"] == ["eval"] and params["shape"] == ["1,3,1,1"] and params["steps"] == ["0"]

    shape_box = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Shape (N, C, …)")
    shape_box.fill("4,3,5,5")
    shape_box.press("Enter")
    page.wait_for_function("() => location.search.includes('shape=4%2C3%2C5%2C5')", timeout=30_000)
    wait_until_drawn(page)
    first = page.locator('[data-testid="stMainBlockContainer"]').inner_text()

    fresh = browser.new_page(viewport=VIEWPORT)
    try:
        fresh.goto(page.url)
        wait_until_drawn(fresh)
        again = fresh.locator('[data-testid="stMainBlockContainer"]').inner_text()
    finally:
        fresh.close()
    assert again == first, "the link does not reproduce the view"


HOSTILE = {
    "layer": "<script>window.__pwned=1</script>",
    "shape": '<img src=x onerror="window.__pwned=2">',
    "mode": "javascript:alert(1)",
    "momentum": "[x](javascript:alert(1))",
    "eps": "$$\\alert{1}$$",
    "affine": "<b>bold</b>",
    "track": "';alert(1);//",
    "dtype": ":red[red]",
    "device": "<iframe src=javascript:alert(1)>",
    "dist": "<svg onload=alert(1)>",
    "seed": "1<script>alert(1)</script>",
    "steps": "<style>*{display:none}</style>",
}


def test_hostile_link_runs_no_script(server, page):
    from urllib.parse import urlencode

    open_view(page, server, urlencode(HOSTILE))
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.__pwned") is None
    assert not page.dialogs, page.dialogs
    warnings = page.locator('[data-testid="stAlertContentWarning"]')
    assert warnings.count() == len(HOSTILE)
    text = "\n".join(warnings.all_inner_texts())
    assert "<script>window.__pwned=1</script>" in text  # shown as text, inertly
    assert '<img src=x onerror="window.__pwned=2">' in text
    main = page.locator('[data-testid="stMainBlockContainer"]')
    for tag in ("script", "img", "iframe", "svg[onload]", "style"):
        injected = main.locator(f'[data-testid="stAlertContentWarning"] {tag}').count()
        assert injected == 0, f"a {tag} element was rendered from the link"
    assert verdict(page).startswith("match")
    assert re.search(r"layer=BatchNorm2d", page.url)


def test_shots_cli_renders_a_view(tmp_path):
    require_chromium()
    out = tmp_path / "view.png"
    done = subprocess.run(
        [sys.executable, "-m", "bnviz.shots", "layer=BatchNorm1d&shape=32,4", str(out), "--max-height", "900"],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    with Image.open(out) as img:
        assert img.size[1] == 900 and img.size[0] > 800


def test_soak_smoke():
    require_chromium()
    done = subprocess.run(
        [sys.executable, "scripts/soak.py", "--pages", "2", "--seconds", "8", "--settle", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["errors"] == [] and report["loads"] >= 2 and sum(report["verdicts"].values()) == report["loads"]
    assert report["rss_mb"]["peak"] >= report["rss_mb"]["start"] > 0
