"""The /network page in Chromium: the three batch-norm stops drawn, training agreeing, the URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from bnviz.shots import open_view, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser


def test_default_view(server, page, request):
    open_view(page, server, "network")
    assert verdict(page).startswith("match"), verdict(page)
    assert charts(page) == 4  # loss, logits, every batch norm, the free-running divergence
    assert page.locator('[data-testid="stImage"] img').count() == 3
    body = main_text(page)
    assert "Layer 1: BatchNorm2d" in body and "Layer 9: BatchNorm1d" in body
    assert "expected 2D or 3D input (got 4D input)" in body and "expected 4D input (got 2D input)" in body
    assert "mismatch" not in body and not page.page_errors
    check_screenshot(page, "network", request)


def test_a_control_goes_to_the_url_and_the_link_reproduces_it(server, page, browser):
    open_view(page, server, "network?steps=4&batch=8")
    box = page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="SGD steps")
    box.fill("6")
    box.press("Enter")
    page.wait_for_function("() => location.search.includes('steps=6')", timeout=30_000)
    wait_until_drawn(page)
    assert parse_qs(urlsplit(page.url).query)["batch"] == ["8"]
    first = main_text(page)
    fresh = browser.new_page()
    try:
        fresh.goto(page.url)
        wait_until_drawn(fresh)
        assert main_text(fresh) == first
    finally:
        fresh.close()


def test_hostile_link_is_inert(server, page):
    open_view(page, server, "network?" + urlencode({"batch": "<img src=x onerror=alert(1)>", "mode": "<script>"}))
    assert not page.dialogs
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 2
    assert page.locator('[data-testid="stMainBlockContainer"] img[src=x]').count() == 0
    assert verdict(page).startswith("match")


def test_two_samples_per_statistic_is_chaos_not_a_mismatch(server, page):
    """The newcomer's link: training diverges, and the page says why, apart from a true verdict."""
    open_view(page, server, "network?batch=2&image=16&channels=8&steps=10&lr=0.1&seed=0&mode=eval")
    assert verdict(page).startswith("match"), verdict(page)
    body = main_text(page)
    assert "mismatch" not in body and "chaotic" in body and "torch's own float32 network ends" in body
    assert page.locator('[id="free-running"]').count() == 1


ONE_LINE = """td => { const r = document.createRange(); r.selectNodeContents(td);
    return new Set([...r.getClientRects()].map(x => Math.round(x.top))).size === 1; }"""


def test_the_layer_table_keeps_numbers_whole_on_a_phone(server, browser):
    page = browser.new_page(viewport={"width": 390, "height": 900})
    try:
        open_view(page, server, "network?steps=3")
        cells = page.locator('[data-testid="stMarkdownContainer"] table td').all()
        numbers = [c for c in cells if "e\u2011" in c.inner_text() or "e-" in c.inner_text()]
        assert numbers, "no number in the table"
        for cell in numbers:  # one line each: a number broken after its hyphen would be two
            assert cell.evaluate(ONE_LINE), f"{cell.inner_text()!r} wraps"
    finally:
        page.close()
