"""The /eval-gap page in Chromium: the default sections drawn, a button section drawn when pressed,
the section links of the question index scrolled to, layout at narrow and medium widths, a baseline."""

from __future__ import annotations

import pytest

from bnviz.shots import layout_problems, open_view, press_all, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text

pytestmark = pytest.mark.browser
SMALL = "order_steps=60&lag_steps=40&ckpt_steps=5&accum_steps=20&passes_steps=20&pairs=4&dropout_steps=40"


def test_default_view(server, page, request):
    open_view(page, server, "eval-gap")
    body = main_text(page)
    assert body.count("Symptom.") == 6 and body.count("Fix.") >= 6, "six cards"
    assert "Eval mode collapses on all 5 seeds." in body
    assert page.get_by_role("button", name="Run it", exact=False).count() == 0, "every default view computed ahead"
    assert not page.page_errors
    check_screenshot(page, "eval-gap", request)


def test_the_checkpointing_section_runs_on_its_button(server, page):
    open_view(page, server, f"eval-gap?{SMALL}")
    before = charts(page)
    page.get_by_role("button", name="Run it", exact=False).nth(3).click()  # section 6
    page.wait_for_function(f"() => document.querySelectorAll('.js-plotly-plot').length > {before}", timeout=120_000)
    wait_until_drawn(page)
    body = main_text(page)
    assert "num_batches_tracked" in body and body.count("Symptom.") == 3
    assert page.locator('[data-testid="stDataFrame"]').count() == 1


@pytest.mark.parametrize("width", [390, 1024])
def test_nothing_overlaps_or_clips(server, browser, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, f"eval-gap?{SMALL}")
        press_all(page, "Run it")  # every section drawn
        assert layout_problems(page) == []
    finally:
        page.close()
