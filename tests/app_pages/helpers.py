"""Running a page of the app through AppTest, and reading what it shows."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[2] / "app.py"


def run_app(params: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    """The app at ``page`` (a file under app_pages/; the layer page by default) with a query."""
    at = AppTest.from_file(str(APP), default_timeout=90)
    if page:  # st.navigation registers the pages on a first run: only then does a custom url_path match
        at.run()
        at.switch_page(f"app_pages/{page}.py")
        at.query_params.clear()
    for key, value in (params or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def verdict(at: AppTest) -> str:
    """The verdict badge's words: "match", "mismatch" or "match: both refuse this input"."""
    badges = [found.group(1) for m in at.markdown if (found := re.search(r"-badge\[:material/\w+: (.*)\]$", m.value))]
    assert badges, [m.value for m in at.markdown]
    return badges[0]


def page_text(at: AppTest) -> str:
    """Everything the page writes, but the home page's question index (the same on every view)."""
    parts = [m.value for m in at.markdown if 'class="bnviz-questions"' not in m.value]
    parts += [w.value for w in at.warning] + [e.value for e in at.error]
    parts += [c.value for c in at.caption] + [i.value for i in at.info] + [c.value for c in at.code]
    return "\n".join(parts)


def outside_code(markdown: str) -> str:
    """``markdown`` without its code spans: where a quoted value from a link or a box must be."""
    return re.sub(r"(`+)(.+?)\1", "", markdown)
