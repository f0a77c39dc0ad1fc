"""The library installs and runs without the app: ``import bnviz`` needs torch alone, the tools that
run the app's engines say what is missing, and the wheel holds every module."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP_ONLY = ("numpy", "plotly", "pandas", "sklearn", "scipy", "streamlit")
# Run first in each subprocess: the app's packages are "not installed" (ModuleNotFoundError, as for a
# missing package; torch itself then goes on without numpy, as it does where numpy is absent).
BLOCK = f"""
import importlib.abc, sys
class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {APP_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _NotInstalled())
"""
LIBRARY_USE = """
import torch, bnviz
for name in bnviz.__all__:
    getattr(bnviz, name)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), bnviz.BatchNorm2d(4), torch.nn.ReLU(inplace=True))
net(torch.randn(4, 3, 8, 8)).sum().backward()
bnviz.recompute_batch_norm_stats(net.eval(), [torch.randn(4, 3, 8, 8) for _ in range(2)])
bnviz.fold_batch_norms(net.eval())
bnviz.GroupNorm(2, 4)(torch.randn(2, 4, 5))
bnviz.SyncBatchNorm(4)(torch.randn(4, 4, 3))
import bnviz.bench, bnviz.stats, bnviz.fold, bnviz.sync
print(sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}))
"""


def python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_library_imports_and_runs_with_torch_alone():
    done = python(BLOCK + LIBRARY_USE.format(blocked=APP_ONLY))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", f"app packages imported: {done.stdout}"


@pytest.mark.parametrize("tool", ["bnviz", "bnviz.training"])
def test_a_tool_that_runs_the_apps_engines_says_what_is_missing(tool):
    done = python(BLOCK + f"import runpy; runpy.run_module({tool!r}, run_name='__main__')")
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    ours = [line for line in done.stderr.splitlines() if 'pip install "bnviz[app]"' in line]
    assert len(ours) == 1 and "numpy" in ours[0] and "Traceback" not in done.stderr, done.stderr


def test_pyproject_asks_for_torch_alone_and_the_app_in_its_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["torch==2.13.0"]
    assert {"numpy", "plotly", "pandas", "scikit-learn", "streamlit"} <= set(project["optional-dependencies"]["app"])


def test_the_wheel_holds_every_module_and_its_version(tmp_path):
    """Built from a copy of the sources (nothing written into the checkout), without build isolation."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "bnviz", src / "bnviz", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", str(src), "-w",
             str(tmp_path / "dist")]  # fmt: skip
    done = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("bnviz-*.whl")
    import bnviz

    assert wheel.name.startswith(f"bnviz-{bnviz.__version__}-"), wheel.name
    held = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bnviz").rglob("*.py")}
    assert modules <= held, f"missing from the wheel: {sorted(modules - held)}"
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bnviz").rglob("*.json")}  # the stored default views
    assert data and data <= held, f"missing from the wheel: {sorted(data - held)}"
