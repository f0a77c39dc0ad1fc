"""/doctor in Chromium: a sample's verdict, findings and picture drawn; an upload through the
browser gives the command line's findings for the same file; nothing overlaps or clips."""

from __future__ import annotations

import json

import pytest

from bnviz.doctor import main as doctor_main
from bnviz.explorer.doctor import engine
from bnviz.explorer.doctor.url import DoctorConfig
from bnviz.shots import layout_problems, open_view, wait_until_drawn
from tests.e2e.conftest import charts, check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser


def test_default_view(server, page, request):
    open_view(page, server, "doctor")
    assert verdict(page).startswith("clean"), verdict(page)
    assert charts(page) == 1
    body = main_text(page)
    assert "Is something wrong with the batch norms in my model?" in body and "foldable" in body
    assert not page.page_errors
    check_screenshot(page, "doctor", request)


def test_a_planted_fault_is_found(server, page):
    open_view(page, server, "doctor?sample=never-updated")
    assert verdict(page).startswith("needs a fix"), verdict(page)
    assert "stats-never-updated" in main_text(page)


def test_an_upload_gives_the_command_lines_findings(server, page, tmp_path, capsys):
    report = engine.run(DoctorConfig("nan"))
    assert report.file is not None
    path = tmp_path / "mine.safetensors"
    path.write_bytes(report.file)
    assert doctor_main([str(path), "--json"]) == 1
    cli = {f["check"] for f in json.loads(capsys.readouterr().out)["findings"]}
    open_view(page, server, "doctor")
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
    page.get_by_text("mine.safetensors —").wait_for(timeout=60_000)
    wait_until_drawn(page)
    assert verdict(page).startswith("needs a fix"), verdict(page)
    # the findings' grid is drawn on a canvas: the line under it names every check it lists
    line = next(t for t in main_text(page).splitlines() if t.startswith("Explained in this app:"))
    shown = {c.strip() for c in line.removeprefix("Explained in this app:").split("·")}
    assert shown == cli, (shown, cli)


@pytest.mark.parametrize("width", [390, 1280])
def test_nothing_overlaps_or_clips(server, browser, width):
    p = browser.new_page(viewport={"width": width, "height": 900})
    try:
        open_view(p, server, "doctor?sample=nan")
        assert layout_problems(p) == []
    finally:
        p.close()
