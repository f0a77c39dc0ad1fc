"""The layer page as a person sees it, in real Chromium against a served app: verdicts, the
picture drawn, hover, the channel in focus, errors, layout at narrow and medium widths, the URL,
hostile links, and screenshots compared with baselines."""

from __future__ import annotations

import json
import subprocess
import sys
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from PIL import Image

from bnviz.shots import VIEWPORT, layout_problems, open_view, wait_until_drawn
from tests.e2e.conftest import ROOT, charts, check_screenshot, main_text, require_chromium, verdict

pytestmark = pytest.mark.browser

VIEWS = {
    "bn1d-train": "layer=BatchNorm1d&shape=32,4&mode=train",
    "bn1d-eval": "layer=BatchNorm1d&shape=16,4,8&mode=eval",
    "bn2d-train": "layer=BatchNorm2d&shape=8,3,16,16&mode=train",
    "bn2d-eval": "layer=BatchNorm2d&shape=8,3,16,16&mode=eval",
    "bn3d-train": "layer=BatchNorm3d&shape=4,2,4,8,8&mode=train",
    "any-rank-train": "layer=BatchNorm&shape=2,3,4,4,2,2&mode=train",
    "momentum-none": "layer=BatchNorm2d&shape=8,3,8,8&momentum=none&steps=20&channel=1",
    "untracked-eval": "layer=BatchNorm2d&shape=8,3,8,8&track=false&mode=eval",
    "empty-batch": "shape=0,3,4,4",
    "float16-large-mean": "dtype=float16&dist=large-mean",
    "invalid-rank": "layer=BatchNorm2d&shape=8,3,16",
    "batch-of-one": "layer=BatchNorm1d&shape=1,8",
    "features-last": "layer=BatchNorm1d&shape=8,128,64&layout=features-last",
}
REFUSED = {
    "invalid-rank": "expected 4D input (got 3D input)",
    "batch-of-one": "Expected more than 1 value per channel when training",
    "features-last": "running_mean should contain 128 elements not 64",
}
CHARTS = 5  # the cells, train vs eval, distributions, running statistics, gradients (the differences are folded)


@pytest.mark.parametrize("name", VIEWS)
def test_view_as_a_person_sees_it(server, page, name, request):
    open_view(page, server, VIEWS[name])
    text, body = verdict(page), main_text(page)
    if name in REFUSED:
        assert text.startswith("match: both refuse this input"), text
        assert "torch and bnviz both refuse this input" in body and REFUSED[name] in body
        assert charts(page) == 0
    elif name == "untracked-eval":
        assert text.startswith("match") and "there are no running statistics" in body, body
        assert charts(page) == CHARTS - 1  # no running statistics to draw
    elif name == "empty-batch":
        assert text.startswith("match") and "Nothing to draw: an empty batch has no values." in body, body
        assert charts(page) == 1  # running statistics; the gradients and differences are in the folded proof
    else:
        assert text.startswith("match"), text
        assert charts(page) == CHARTS
        assert "What batch norm does to this tensor" in body and "values per channel" in body
        cube = page.locator('[data-testid="stImage"] img').first
        assert cube.evaluate("img => img.complete && img.naturalWidth > 200"), "the cube is drawn"
        cells = page.locator('[data-testid="stPlotlyChart"]').first
        assert cells.locator(".hm, image").count() >= 1, "the cells are drawn"
    assert "mismatch" not in body
    if name == "momentum-none":
        assert "1/21 (cumulative average)" in body
    if name == "features-last":
        assert "x.permute(0, 2, 1)" in body and verdict(page, "verdict-fix").startswith("match")
    assert not page.page_errors and not page.dialogs
    check_screenshot(page, name, request)


def test_hover_shows_index_value_and_statistics(server, page):
    open_view(page, server, "layer=BatchNorm2d&shape=8,3,4,4")
    cells = page.locator('[data-testid="stPlotlyChart"]').first.locator(".nsewdrag").first
    box = cells.bounding_box()
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] / 2)
    hover = page.locator(".hoverlayer .hovertext")
    hover.first.wait_for(timeout=10_000)
    text = hover.first.text_content()
    assert "x[n=" in text and "c=0" in text and "mean" in text and "variance" in text, text


def test_choosing_a_channel_moves_the_whole_page(server, page):
    open_view(page, server, "layer=BatchNorm2d&shape=8,3,8,8")
    page.get_by_role("radio", name="c=2").click()
    page.wait_for_function("() => location.search.includes('channel=2')", timeout=30_000)
    wait_until_drawn(page)
    titles = [t.text_content() for t in page.locator(".gtitle").all()]
    assert "Running statistics, channel 2" in titles and "Channel 2: train vs eval" in titles, titles


@pytest.mark.parametrize("width", [390, 1024])
@pytest.mark.parametrize("view", ["", "layer=BatchNorm1d&shape=8,128,64&layout=features-last", "shape=0,3,4,4",
                                  "track=false&mode=eval&affine=false", "network"])  # fmt: skip
def test_nothing_overlaps_or_clips(server, browser, view, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, view)
        assert layout_problems(page) == []
    finally:
        page.close()


def test_narrow_screen_screenshot(server, browser, request):
    page = browser.new_page(viewport={"width": 390, "height": 900})
    try:
        open_view(page, server, "")
        check_screenshot(page, "narrow-390", request)
    finally:
        page.close()


def test_changing_a_control_updates_url_and_verdict(server, page, browser):
    open_view(page, server, "layer=BatchNorm2d&shape=1,3,1,1&steps=0")
    assert verdict(page).startswith("match: both refuse"), verdict(page)
    page.get_by_test_id("stSidebar").get_by_text("eval", exact=True).click()
    page.wait_for_function("() => location.search.includes('mode=eval')", timeout=30_000)
    wait_until_drawn(page)
    assert verdict(page).startswith("match\n"), verdict(page)
    params = parse_qs(urlsplit(page.url).query)
    assert params["mode"] == ["eval"] and params["shape"] == ["1,3,1,1"] and params["steps"] == ["0"]

    shape_box = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Shape")
    shape_box.fill("4,3,5,5")
    shape_box.press("Enter")
    page.wait_for_function("() => location.search.includes('shape=4%2C3%2C5%2C5')", timeout=30_000)
    wait_until_drawn(page)
    first = main_text(page)

    fresh = browser.new_page(viewport=VIEWPORT)
    try:
        fresh.goto(page.url)
        wait_until_drawn(fresh)
        again = main_text(fresh)
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
    "layout": "<a href=javascript:alert(1)>x</a>",
    "train_n": "<marquee>",
    "channel": "<svg/onload=alert(1)>",
}


def test_hostile_link_runs_no_script(server, page):
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
    for tag in ("script", "img", "iframe", "svg[onload]", "style", "marquee", "a[href^=javascript]"):
        injected = main.locator(f'[data-testid="stAlertContentWarning"] {tag}').count()
        assert injected == 0, f"a {tag} element was rendered from the link"
    assert verdict(page).startswith("match")


@pytest.mark.parametrize("view", ["layer=BatchNorm1d&shape=32,4", "network?steps=3"])
def test_shots_cli_renders_a_view(tmp_path, view):
    require_chromium()
    out = tmp_path / "view.png"
    done = subprocess.run(
        [sys.executable, "-m", "bnviz.shots", view, str(out), "--max-height", "900"],
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
