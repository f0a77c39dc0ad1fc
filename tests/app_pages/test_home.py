"""The front door: the home page names the questions, each link opens a view that runs, and the
navigation's icons are Material icons (emoji render as empty boxes without an emoji font)."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from bnviz.explorer.data_parallel.url import DATA_PARALLEL, DataParallelConfig
from bnviz.explorer.doctor.url import DOCTOR, DoctorConfig
from bnviz.explorer.eval_gap.url import EVAL_GAP, BatchesConfig
from bnviz.explorer.family.url import FAMILY, FamilyConfig
from bnviz.explorer.inference.url import INFERENCE, InferenceConfig
from bnviz.explorer.layer.url import LAYER, Config
from bnviz.explorer.network.url import NETWORK, NetworkConfig
from bnviz.explorer.questions import QUESTIONS, WHAT_BATCH_NORM_DOES, Link, index_html
from bnviz.explorer.training.url import TRAINING_DRIFT, DriftConfig
from tests.app_pages.helpers import page_text, run_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]
PAGES = {  # page: (its URL spec, its base config, its file)
    "": (LAYER, Config(), "layer"),
    "network": (NETWORK, NetworkConfig(), "network"),
    "family": (FAMILY, FamilyConfig(), "family"),
    "data-parallel": (DATA_PARALLEL, DataParallelConfig(), "data_parallel"),
    "inference": (INFERENCE, InferenceConfig(), "inference"),
    "training": (TRAINING_DRIFT, DriftConfig(), "training"),
    "eval-gap": (EVAL_GAP["batches"], BatchesConfig(), "eval_gap"),
    "doctor": (DOCTOR, DoctorConfig(), "doctor"),
}
LINKS = [(f"Q{q.number}" + (f" more {i}" if i else ""), link)
         for q in QUESTIONS for i, link in enumerate([q.link, *(lk for _, lk in q.more)])]  # fmt: skip


def index_links(markdown: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'<a href="([^"]+)" target="_self">', markdown)]


def test_the_home_page_opens_with_one_sentence_then_every_question():
    at = run_app()
    bodies = [m.value for m in at.markdown]
    assert bodies[0] == WHAT_BATCH_NORM_DOES
    (index,) = [h.proto.body for h in at.get("html") if "bnviz-questions" in h.proto.body]  # HTML, not Markdown
    assert index_links(index) == [link.href for _, link in LINKS]
    assert [q.number for q in QUESTIONS] == list(range(1, len(QUESTIONS) + 1)), "numbered as in the product brief"
    assert not [e for e in at.expander if e.get("html")], "the index is open at home"
    assert dict(at.query_params) == {}, "the home page keeps its empty URL"
    assert at.subheader[0].value == "The layer explorer"


def test_a_view_in_the_url_folds_the_index_away_above_the_page():
    at = run_app({"mode": "eval"})
    assert "bnviz-questions" in at.expander[0].get("html")[0].proto.body, "the first expander holds the index"
    assert WHAT_BATCH_NORM_DOES not in [m.value for m in at.markdown]
    assert at.query_params["mode"] == "eval"


def test_changing_a_control_on_the_home_page_writes_the_view_and_folds_the_index():
    at = run_app()
    at.sidebar.radio(key="mode").set_value("eval").run()
    assert at.query_params["mode"] == "eval" and at.query_params["shape"] == "8,3,16,16"
    assert "bnviz-questions" in at.expander[0].get("html")[0].proto.body


@pytest.mark.parametrize(("name", "link"), LINKS, ids=[name for name, _ in LINKS])
def test_every_index_link_names_a_view_its_page_runs(name, link: Link):
    spec, base, _ = PAGES[link.page]
    parts = urlsplit(link.href)
    assert parts.path == "./" + link.page
    config, warnings = spec.parse(dict(parse_qsl(parts.query)), base)
    assert not warnings, f"{name}: {warnings}"
    assert config.refusal() is None, f"{name}: {config.refusal()}"


@pytest.mark.parametrize(("name", "link"), [(n, lk) for n, lk in LINKS if lk.section], ids=lambda v: str(v)[:40])
def test_every_section_a_link_names_is_a_heading_of_its_view(name, link: Link):
    file = PAGES[link.page][2]
    at = run_app(dict(parse_qsl(urlsplit(link.href).query)), None if file == "layer" else file)
    anchors = [h.proto.anchor for h in at.subheader] + [h.proto.anchor for h in at.header]
    assert link.section in anchors, f"{name}: #{link.section} not among {anchors}"


def test_the_index_escapes_its_text():
    q = QUESTIONS[0]
    odd = type(q)(99, 'a <b> & "c"', Link("", (("shape", "1,2"),), "x"), "<i>")
    text = index_html((odd,))
    assert "<b>" not in text and "&lt;b&gt;" in text and "&lt;i&gt;" in text and 'href="./?shape=1%2C2#x"' in text


def _keywords(path: Path, name: str) -> list[str]:
    return [node.value.value for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.keyword) and node.arg == name and isinstance(node.value, ast.Constant)]  # fmt: skip


def _icons(path: Path) -> list[str]:
    return _keywords(path, "icon") + _keywords(path, "page_icon")


@pytest.mark.parametrize("path", [ROOT / "app.py", *sorted((ROOT / "app_pages").glob("*.py"))], ids=lambda p: p.name)
def test_icons_are_material_icons(path):
    for icon in _icons(path):
        assert re.fullmatch(r":material/[a-z0-9_]+:", icon), f"{path.name}: {icon!r} is not a Material icon"


def test_every_page_in_the_navigation_answers_a_question_of_the_index():
    """A page the index does not link is a page a newcomer never finds: every page of app.py's
    navigation (``/`` has no url_path) is the first view of at least one question, and every
    page file is in the navigation."""
    navigation = {"", *_keywords(ROOT / "app.py", "url_path")}
    first_views = {q.link.page for q in QUESTIONS}
    assert navigation == set(PAGES), f"navigation {sorted(navigation)} vs the pages tested here {sorted(PAGES)}"
    assert navigation <= first_views, f"pages no question opens: {sorted(navigation - first_views)}"
    files = {p.stem for p in (ROOT / "app_pages").glob("*.py")} - {"common", "__init__"}
    assert files == {f for _, _, f in PAGES.values()}, f"page files {sorted(files)} vs navigation {sorted(PAGES)}"


def test_the_navigation_has_icons_on_every_page():
    icons = _icons(ROOT / "app.py")
    assert len(icons) >= 1 + len(PAGES), icons


def test_a_question_view_shows_what_its_line_promises():
    """Spot checks of the words each view shows (the browser test opens them all)."""
    at = run_app({"layer": "BatchNorm1d", "shape": "1,16", "steps": "0"})
    text = page_text(at)
    assert "drop_last=True" in text and "GroupNorm or LayerNorm" in text and "batch norms in eval" in text
    at = run_app({"layer": "BatchNorm1d", "shape": "32,10,64", "layout": "features-last"})
    assert "running_mean should contain 10 elements not 64" in page_text(at)
