"""The /inference page in Chromium: the verdict, the formulas and charts drawn, the URL, hostile
links, and nothing overlapping or clipped at a phone's and a tablet's width."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from bnviz.explorer.inference.url import VARIANTS
from bnviz.shots import layout_problems, open_view, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser

KATEX = '[data-testid="stMainBlockContainer"] .katex .katex-html'
CHARTS = 2 + len(VARIANTS)  # the fold's differences, one running-statistics chart per variant, the drift


def test_default_view(server, page, request):
    open_view(page, server, "inference")
    assert verdict(page).startswith("match\n") and "Folding is exact" in verdict(page), verdict(page)
    assert charts(page) == CHARTS
    # the two folding formulas (KaTeX is loaded on demand: wait for it before the screenshot)
    page.wait_for_function(f"() => document.querySelectorAll('{KATEX}').length === 2", timeout=30_000)
    body = main_text(page)
    assert "Can I fold BatchNorm into the conv before it for inference?" in body
    assert "Why does my frozen BatchNorm still change during fine-tuning?" in body
    assert "Folding a network in training mode gives the wrong answer" in body
    assert "mismatch" not in body and not page.page_errors
    check_screenshot(page, "inference", request)


def test_a_control_goes_to_the_url_and_the_link_reproduces_it(server, page, browser):
    open_view(page, server, "inference?finetune=3&batch=8")
    box = page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Fine-tuning steps")
    box.fill("4")
    box.press("Enter")
    page.wait_for_function("() => location.search.includes('finetune=4')", timeout=30_000)
    wait_until_drawn(page)
    assert parse_qs(urlsplit(page.url).query)["batch"] == ["8"]
    assert "at 4 of 4 steps" in main_text(page)
    fresh = browser.new_page()
    try:
        fresh.goto(page.url)
        wait_until_drawn(fresh)
        assert verdict(fresh) == verdict(page)
        assert fresh.locator('[data-testid="stPlotlyChart"]:has(.main-svg)').count() == CHARTS
    finally:
        fresh.close()


def test_hostile_link_is_inert(server, page):
    hostile = {"batch": "<img src=x onerror=alert(1)>", "dtype": "<script>alert(1)</script>", "lr": "$$x$$"}
    open_view(page, server, "inference?" + urlencode(hostile))
    assert not page.dialogs
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == len(hostile)
    assert page.locator('[data-testid="stMainBlockContainer"] img[src=x]').count() == 0
    assert page.locator('[data-testid="stMainBlockContainer"] script').count() == 0
    assert verdict(page).startswith("match")


def test_refused_view_draws_nothing(server, page):
    open_view(page, server, "inference?channels=4&channel=9")
    assert "Not run: channel must be between 0 and 3." in main_text(page)
    assert charts(page) == 0 and not page.page_errors


@pytest.mark.parametrize("width", [390, 1024])
@pytest.mark.parametrize("view", ["inference", "inference?channels=1&finetune=100&steps=0&batch=2&image=3"])
def test_nothing_overlaps_or_clips(server, browser, view, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, view)
        assert charts(page) == CHARTS
        assert layout_problems(page) == []
    finally:
        page.close()
