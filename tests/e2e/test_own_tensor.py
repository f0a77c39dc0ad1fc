"""Your own tensor on ``/`` in Chromium: an upload runs every section of the explorer on it, a
non-finite tensor is refused with its count, and the page says that a link cannot carry it."""

from __future__ import annotations

import numpy as np
import pytest

from bnviz.shots import layout_problems, open_view, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser

CHARTS = 5  # the cells, train vs eval, distributions, running statistics, the gradient's lesson


def _upload(page, path) -> None:
    page.get_by_text("Run it on your own tensor").click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
    page.wait_for_timeout(500)
    wait_until_drawn(page)


def test_your_tensor_runs_through_every_section(server, page, tmp_path, request):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((16, 4, 6, 6)) * np.array([1, 2, 3, 4]).reshape(1, 4, 1, 1) + 5).astype(np.float32)
    path = tmp_path / "activations.npy"
    np.save(path, x)
    open_view(page, server, "?steps=3")
    _upload(page, path)
    page.get_by_text("Running on your tensor activations.npy").wait_for(timeout=60_000)
    wait_until_drawn(page)
    assert verdict(page).startswith("match"), verdict(page)
    assert charts(page) == CHARTS
    body = main_text(page)
    assert "your 16×4×6×6 float32 tensor" in body and "A link cannot carry a file" in body, body
    assert "shape=16%2C4%2C6%2C6" in page.url
    assert layout_problems(page) == [] and not page.page_errors
    check_screenshot(page, "own-tensor", request)


def test_a_tensor_with_nan_is_refused_with_its_count(server, page, tmp_path):
    x = np.ones((4, 3, 2), dtype=np.float64)
    x[0, 0, 0] = np.nan
    x[1, 2, 1] = np.inf
    path = tmp_path / "bad.npy"
    np.save(path, x)
    open_view(page, server, "")
    _upload(page, path)
    assert "2 of 24 values are NaN or infinite" in main_text(page)
