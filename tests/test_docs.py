"""The docs match the code: every relative link in README.md and docs/ leads to a file (and a heading
that exists, for an anchor into a Markdown file), and every backticked module path names something
that exists — a dotted ``bnviz.…`` name that imports (or an attribute of one), a source path on disk."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"bnviz(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"(?:bnviz|app_pages|tests|scripts|docs|examples)/[\w./-]*")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", path.read_text(), re.M)}


def resolves(dotted: str) -> bool:
    """``a.b.c``: a module, or an attribute of the longest prefix that is one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def links(doc: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # links, not code
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    for target in links(doc):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: link to {target}: no such file"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{doc.name}: link to {target}: no such heading in {file.name}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_backticked_module_path_exists(doc):
    for code in CODE.findall(doc.read_text()):
        for dotted in DOTTED.findall(code):
            if "/" not in code:
                assert resolves(dotted.rstrip(".")), f"{doc.name}: `{code}` names {dotted}, which does not exist"
        for path in PATH.findall(code):
            path = path.rstrip(".")
            assert (ROOT / path).exists(), f"{doc.name}: `{code}` names {path}, which does not exist"


def test_every_picture_in_docs_is_shown_somewhere():
    shown = " ".join(d.read_text() for d in DOCS)
    unused = [p.name for p in (ROOT / "docs").glob("*.png") if p.name not in shown]
    assert not unused, f"pictures referenced nowhere: {unused}"
