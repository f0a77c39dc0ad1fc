"""The source tree's rules (docs/development.md), read from the source — every import statement,
those inside functions too, so that a lazy import cannot hide a wrong direction:

- dependencies point one way: app_pages → bnviz.explorer → bnviz, and pages or engines →
  bnviz.hosting; hosting imports nothing of bnviz; no library module imports the explorer (the
  command-line tools may); nothing in the explorer or hosting imports streamlit;
- the explorer's kernel (its top-level modules) imports no page folder — but for the question
  index, which links to every page through their ``url.py``, and the fork server's warm-up, which
  preloads the data-parallel rank's code; a page folder imports no other page folder but for its
  ``url.py``;
- no import cycle among bnviz's modules; no file in bnviz/explorer over 700 lines;
- a page does no maths.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"bench.py", "shots.py", "training.py", "doctor.py", "__main__.py"}  # command-line tools may use the explorer
PAGES = ("layer", "network", "inference", "training", "eval_gap", "family", "data_parallel", "doctor")
KERNEL_EXCEPTIONS = {  # kernel module: the page modules it may import
    "questions.py": {f"bnviz.explorer.{p}.url" for p in PAGES},
    "fork_preload.py": {"bnviz.explorer.data_parallel.worker"},
}
MAX_LINES = 700


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


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def files(folder: str, recursive: bool = False) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py") if recursive else (ROOT / folder).glob("*.py"))


def offending(path: Path, allowed: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in imported(path) if n.startswith(forbidden) and not n.startswith(allowed))


RULES = [  # (folder, recursive, which files, forbidden prefixes, allowed prefixes, why)
    ("bnviz/hosting", True, lambda p: True, ("bnviz", "streamlit", "app_pages"), ("bnviz.hosting",),
     "hosting knows nothing about batch norm"),
    ("bnviz/explorer", True, lambda p: True, ("streamlit", "app_pages"), (), "the explorer never imports streamlit"),
    ("bnviz", False, lambda p: p.name not in TOOLS, ("bnviz.explorer", "streamlit", "app_pages"), (),
     "no library module imports the explorer"),
]  # fmt: skip
CASES = [(path, forbidden, allowed, why) for folder, rec, which, forbidden, allowed, why in RULES
         for path in files(folder, rec) if which(path)]  # fmt: skip


@pytest.mark.parametrize(("path", "forbidden", "allowed", "why"), CASES,
                         ids=[str(c[0].relative_to(ROOT)) for c in CASES])  # fmt: skip
def test_dependencies_point_one_way(path, forbidden, allowed, why):
    wrong = offending(path, allowed, forbidden)
    assert not wrong, f"{path.relative_to(ROOT)} imports {wrong}: {why}"


def _page_modules(names: set[str]) -> set[str]:
    """The page-folder modules among ``names`` (``bnviz.explorer.<page>.<module>``)."""
    return {n for n in names if n.count(".") >= 3 and n.split(".")[2] in PAGES and n.startswith("bnviz.explorer.")}


@pytest.mark.parametrize("path", files("bnviz/explorer"), ids=lambda p: p.name)
def test_the_kernel_imports_no_page_folder(path):
    pages = {n for n in _page_modules(imported(path)) if n.count(".") == 3}  # modules, not names in them
    wrong = pages - KERNEL_EXCEPTIONS.get(path.name, set())
    assert not wrong, f"bnviz/explorer/{path.name} imports {sorted(wrong)}: the kernel holds what pages share"


PAGE_FILES = [p for page in PAGES for p in files(f"bnviz/explorer/{page}")]


@pytest.mark.parametrize("path", PAGE_FILES, ids=lambda p: str(p.relative_to(ROOT / "bnviz/explorer")))
def test_a_page_folder_imports_no_other_page_folder_but_its_url(path):
    own = path.parent.name
    others = {n for n in _page_modules(imported(path)) if n.count(".") == 3 and n.split(".")[2] != own}
    wrong = {n for n in others if not n.endswith(".url")}
    assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}: another page's only door is its url.py"


def test_no_import_cycle_among_bnvizs_modules():
    """Module-level imports (at import time) form no cycle."""
    graph: dict[str, set[str]] = {}
    mods = {module_name(p): p for p in files("bnviz", recursive=True)}
    for name, path in mods.items():
        edges = set()
        for node in ast.parse(path.read_text()).body:  # top level only: a lazy import inside a function is no cycle
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                edges.add(node.module)
                edges.update(f"{node.module}.{a.name}" for a in node.names)
        graph[name] = {e for e in edges if e in mods and e != name}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " → ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])


@pytest.mark.parametrize("path", files("bnviz/explorer", recursive=True), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_explorer_file_is_over_700_lines(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines; split it (at most {MAX_LINES})"


def test_pages_do_no_maths():
    """A page maps widgets to a config and draws what the explorer built: no numpy, no plotly (torch
    only to ask whether there is a GPU)."""
    for path in files("app_pages"):
        heavy = sorted(n for n in imported(path) if n.split(".")[0] in {"numpy", "plotly"})
        assert not heavy, f"{path.name} imports {heavy}"
