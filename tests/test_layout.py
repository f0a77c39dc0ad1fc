"""Dependencies point one way: app_pages → bnviz.explorer → bnviz, and pages or engines → bnviz.hosting.

Read from the source (every import statement, those inside functions too), so that a lazy import
cannot hide a wrong direction.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"bench.py", "shots.py", "training.py", "__main__.py"}  # command-line tools may use the explorer


def imported(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names (``from a import b`` gives ``a`` and ``a.b``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


def offending(path: Path, allowed: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        n for n in imported(path) if n.startswith(forbidden) and not n.startswith(allowed)
    )


RULES = [  # (folder, which files, forbidden prefixes, allowed prefixes, why)
    ("bnviz/hosting", lambda p: True, ("bnviz", "streamlit", "app_pages"), ("bnviz.hosting",),
     "hosting knows nothing about batch norm"),
    ("bnviz/explorer", lambda p: True, ("streamlit", "app_pages"), (), "the explorer never imports streamlit"),
    ("bnviz", lambda p: p.name not in TOOLS, ("bnviz.explorer", "streamlit", "app_pages"), (),
     "no library module imports the explorer"),
]  # fmt: skip
CASES = [(folder, path, forbidden, allowed, why) for folder, which, forbidden, allowed, why in RULES
         for path in files(folder) if which(path)]  # fmt: skip


@pytest.mark.parametrize(("folder", "path", "forbidden", "allowed", "why"), CASES,
                         ids=[str(c[1].relative_to(ROOT)) for c in CASES])  # fmt: skip
def test_dependencies_point_one_way(folder, path, forbidden, allowed, why):
    wrong = offending(path, allowed, forbidden)
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: {why}"


def test_pages_do_no_maths():
    """A page maps widgets to a config and draws what the explorer built: no numpy, no plotly (torch
    only to ask whether there is a GPU)."""
    for path in files("app_pages"):
        heavy = sorted(n for n in imported(path) if n.split(".")[0] in {"numpy", "plotly"})
        assert not heavy, f"{path.name} imports {heavy}"
