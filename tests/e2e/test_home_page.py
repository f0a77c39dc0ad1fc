"""The front door in real Chromium: the question index at 1280 and 390 px, every index link
clicked (the view it names is shown, the URL is the link's, its section scrolled into view),
links inside one session that change the view, and hostile links inert on every page."""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from bnviz.explorer.questions import QUESTIONS, Link
from bnviz.shots import VIEWPORT, layout_problems, open_view, wait_until_drawn
from tests.e2e.conftest import check_screenshot, main_text, verdict

pytestmark = pytest.mark.browser
LINKS = [(f"Q{q.number}" + (f"-{i}" if i else ""), text, link)
         for q in QUESTIONS for i, (text, link) in enumerate([(q.text, q.link), *q.more])]  # fmt: skip

def arrived(url: str, link: Link) -> bool:
    parts = urlsplit(url)
    return parts.path.strip("/") == link.page and all(f"{k}={quote(v, safe='')}" in parts.query for k, v in link.query)


def shown_query(page) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(page.url).query))


@pytest.mark.parametrize("width", [1280, 390])
def test_the_home_page_names_the_questions(server, browser, width, request):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        open_view(page, server, "")
        index = page.locator("ol.bnviz-questions > li")
        assert index.count() == len(QUESTIONS)
        assert page.locator("ol.bnviz-questions a").count() == len(LINKS)
        body = main_text(page)
        assert body.index("Batch norm takes a batch of activations") < body.index(QUESTIONS[0].text)
        assert body.index(QUESTIONS[-1].text) < body.index("The layer explorer")
        assert verdict(page).startswith("match")
        assert urlsplit(page.url).query == "", "the home page keeps its empty URL"
        assert layout_problems(page) == []
        assert not errors
        if width == 1280:
            check_screenshot(page, "home", request)
    finally:
        page.close()


@pytest.mark.parametrize(("name", "text", "link"), LINKS, ids=[name for name, _, _ in LINKS])
def test_every_index_link_opens_its_view(server, page, name, text, link: Link):
    open_view(page, server, "")
    page.locator("ol.bnviz-questions a", has_text=text).first.click()
    page.wait_for_url(lambda url: arrived(url, link), timeout=30_000)
    wait_until_drawn(page)
    url = urlsplit(page.url)
    assert url.path.strip("/") == link.page, page.url
    shown = shown_query(page)
    for key, value in link.query:  # the link's parameters, and the page's defaults beside them
        assert shown.get(key) == value, f"{name}: {key}={shown.get(key)!r}, the link says {value!r}"
    assert not [w for w in page.locator('[data-testid="stAlertContentWarning"]').all_inner_texts()
                if w.startswith("Ignored")], "a link of the index was refused"  # fmt: skip
    if link.section:
        assert url.fragment == link.section, page.url
        heading = page.locator(f'[id="{link.section}"]')
        assert heading.count() == 1, f"{name}: no heading #{link.section}"
        page.wait_for_function(
            "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
            " return r.top >= -5 && r.top < window.innerHeight; }", arg=link.section, timeout=10_000)  # fmt: skip
    assert "could not draw this view" not in main_text(page)
    assert not page.page_errors


def test_a_link_inside_the_session_changes_the_view_and_the_url(server, page):
    """st.page_link to the page already open, with a query: the widgets take the link's values
    instead of writing the old URL back (the newcomer's stale-widget defect)."""
    open_view(page, server, "layer=BatchNorm1d&shape=8,128,64&layout=features-last")
    page.get_by_text("Open the permuted view").click()
    page.wait_for_function("() => location.search.includes('layout=channels-first')", timeout=30_000)
    wait_until_drawn(page)
    assert shown_query(page)["shape"] == "8,64,128"
    assert page.get_by_test_id("stSidebar").get_by_role("textbox", name="Shape").input_value() == "8,64,128"
    assert verdict(page).startswith("match\n")
    # and from another page, into this one
    open_view(page, server, "network?steps=0")
    page.get_by_text("The universal layer on a rank-6 tensor").click()
    page.wait_for_function("() => location.search.includes('shape=2%2C3%2C4%2C4%2C2%2C2')", timeout=30_000)
    wait_until_drawn(page)
    assert shown_query(page)["layer"] == "BatchNorm"
    assert page.get_by_test_id("stSidebar").get_by_role("textbox", name="Shape").input_value() == "2,3,4,4,2,2"


HOST = "evil.example"
HOSTILE = [
    f"see https://{HOST}/login now", f"www.{HOST}/x", f"[x](https://{HOST}/a)", f"![](https://{HOST}/i.png)",
    f"<a href='https://{HOST}'>x</a>", ":red[boom] $x^2$ `tick`", f"<img src=https://{HOST}/p.png>",
]  # fmt: skip
PAGE_PARAMS = {"": ("eps", "shape"), "network": ("lr", "batch"), "family": ("eps", "shape"),
               "data-parallel": ("sample", "batches"), "inference": ("lr", "shift"),
               "training": ("lr", "sweep_lrs"), "eval-gap": ("order_lr", "lag_momenta")}  # fmt: skip


@pytest.mark.parametrize("path", list(PAGE_PARAMS), ids=lambda p: p or "layer")
def test_hostile_links_stay_inert_text_on_every_page(server, page, path):
    names = PAGE_PARAMS[path]
    for i, value in enumerate(HOSTILE):
        query = "&".join(f"{n}={quote(value, safe='')}" for n in names)
        page.goto(f"{server}/{path}?{query}")
        wait_until_drawn(page)
        warnings = page.locator('[data-testid="stAlertContentWarning"]')
        texts = warnings.all_inner_texts()
        assert len(texts) == len(names), (value, texts)
        shown = value if len(value) <= 60 else value[:60] + "…"
        assert all(shown in t for t in texts), f"not shown literally: {value!r} → {texts}"
        for selector in (f'a[href*="{HOST}"]', f'img[src*="{HOST}"]', '[data-testid="stAlertContentWarning"] .katex',
                         '[data-testid="stAlertContentWarning"] a', '[data-testid="stAlertContentWarning"] img'):
            assert page.locator(selector).count() == 0, f"{value!r} made {selector}"  # fmt: skip
        assert not page.page_errors and not page.dialogs, (i, page.page_errors, page.dialogs)


def test_the_home_page_at_the_default_viewport_has_no_overlap(server, browser):
    page = browser.new_page(viewport=VIEWPORT)
    try:
        open_view(page, server, "")
        assert layout_problems(page) == []
    finally:
        page.close()
