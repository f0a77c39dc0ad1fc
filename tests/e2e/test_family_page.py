"""The /family page in Chromium: five pictures drawn, the verdict, layout, hostile links, a baseline."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from bnviz.explorer.family.engine import FONT
from bnviz.shots import layout_problems, open_view
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser


def test_default_view(server, page, request):
    open_view(page, server, "family")
    assert verdict(page).startswith("match"), verdict(page)
    assert charts(page) == 2
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == 5 and all(images.nth(i).evaluate("i => i.naturalWidth > 100") for i in range(5))
    body = main_text(page)
    assert "Batch size matters to batch norm only" in body and "0 (exactly)" in body
    assert not page.page_errors
    check_screenshot(page, "family", request)


@pytest.mark.parametrize("width", [390, 1024])
def test_nothing_overlaps_or_clips(server, browser, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, "family?shape=8,128,64&ln=last&groups=4")
        assert layout_problems(page) == []
    finally:
        page.close()


def test_hostile_link_is_inert(server, page):
    open_view(page, server, "family?" + urlencode({"shape": "<img src=x onerror=alert(1)>", "member": "<script>"}))
    assert not page.dialogs
    assert page.locator('[data-testid="stAlertContentWarning"]').count() == 2
    assert page.locator('[data-testid="stMainBlockContainer"] img[src=x]').count() == 0
    assert verdict(page).startswith("match")


@pytest.mark.parametrize("width", [1024, 1280, 1440])
def test_the_pictures_are_readable_at_desktop_widths(server, browser, width):
    """The newcomer measured the cubes at about 140 px wide with 7 px labels at 1280 px: each
    picture's labels must be drawn at 10 px or more (the SVG's font size scaled by how it is
    drawn), the picture at least 160 px wide."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, "family")
        sizes = page.locator('[data-testid="stImage"] img').evaluate_all(
            "imgs => imgs.map(i => [i.getBoundingClientRect().width, i.naturalWidth])")
        assert len(sizes) == 5
        for drawn, natural in sizes:
            assert drawn >= 160 and FONT * drawn / natural >= 10, (width, drawn, natural)
    finally:
        page.close()
