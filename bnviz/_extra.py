"""The app's extra (``pip install "bnviz[app]"``): what the command-line tools that run the app's
engines need beyond torch — the library itself (``import bnviz``) needs torch alone."""

from __future__ import annotations

import importlib.util
import sys

APP_MODULES = ("numpy", "plotly", "sklearn")  # the engines' arrays, figures and the digits data


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_app(tool: str) -> None:
    """Return when the app's extra is installed; else one line on stderr saying what ``tool`` needs,
    and exit status 2."""
    missing = [name for name in APP_MODULES if not _installed(name)]
    if missing:
        print(f'{tool} runs the app\'s engines, which need bnviz\'s app extra (missing: {", ".join(missing)}): '
              'pip install "bnviz[app]"', file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
