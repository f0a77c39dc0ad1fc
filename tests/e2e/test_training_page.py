"""The /training page in Chromium: experiment 1 drawn on opening, a button experiment drawn when
pressed, the URL round trip, layout at narrow and medium widths, and a baseline."""

from __future__ import annotations

import pytest

from bnviz.shots import layout_problems, open_view, press_all, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text

pytestmark = pytest.mark.browser
TINY = "sweep_lrs=0.1,1&sweep_seeds=0&sweep_steps=50&relu_steps=60&relu_seeds=0,1&noise_steps=60&noise_seeds=0"


def test_default_view(server, page, request):
    open_view(page, server, "training")
    assert charts(page) == 6, "every experiment's default view, computed ahead"
    body = main_text(page)
    assert "The paper." in body and "This run." in body and "Why a small reproduction may differ." in body
    assert "python -m bnviz.training --experiment drift --lr 0.5 --steps 2000" in body
    assert "Batch norm ends ahead on all 5 seeds, as in the paper." in body
    assert page.get_by_role("button", name="Download the CSV").count() == 1
    assert page.get_by_role("button", name="Run it", exact=False).count() == 0
    assert not page.page_errors
    check_screenshot(page, "training", request)


def test_a_button_draws_its_experiment_and_the_link_keeps_its_settings(server, page, browser):
    open_view(page, server, f"training?steps=200&every=50&{TINY}")
    page.get_by_role("button", name="Run it", exact=False).nth(2).click()  # before or after the ReLU
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 3", timeout=120_000)
    wait_until_drawn(page)
    assert charts(page) == 3 and "Seeds 0 and 1" in main_text(page)
    assert "relu_seeds=0,1" in page.url or "relu_seeds=0%2C1" in page.url
    fresh = browser.new_page()
    try:
        fresh.goto(page.url)
        wait_until_drawn(fresh)
        assert charts(fresh) == 3, "the finished report is the server's: a link shows it at once"
    finally:
        fresh.close()


@pytest.mark.parametrize("width", [390, 1024])
def test_nothing_overlaps_or_clips(server, browser, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(page, server, "training?steps=300&every=50&" + TINY)
        press_all(page, "Run it")  # every section drawn
        assert layout_problems(page) == []
    finally:
        page.close()
