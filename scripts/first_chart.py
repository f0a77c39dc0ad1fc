"""Time to the first chart: how long after navigation a person sees the first picture or chart.

    .venv/bin/python scripts/first_chart.py [--loads 7] [--width 1400] ["<path?query>" ...]

Starts one server (127.0.0.1, a free port), opens each view in a fresh headless Chromium
context ``--loads`` times, and reads — in the page, with a MutationObserver installed before
the page's own scripts — the ``performance.now()`` (milliseconds since navigation started) at
which the first chart is drawn: the first statistics picture (a static SVG image, decoded) or
Plotly chart (its ``.main-svg``), whichever comes first; also the first Plotly chart alone, and
when the script has finished and every chart is drawn. The first load of each view is cold
(nothing cached on the server, plotly.js not in the browser's cache); the medians are over the
warm loads that follow.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bnviz.shots import DRAWN, chromium, serve_app

DEFAULT_VIEWS = ["", "network"]
OBSERVER = """(() => {
  window.__firstChart = null;
  window.__firstPlotly = null;
  const picture = () => [...document.querySelectorAll('[data-testid="stImage"] img')]
    .some(i => i.complete && i.naturalWidth);
  const plotly = () => document.querySelector('[data-testid="stPlotlyChart"] .main-svg');
  const seen = () => {
    const now = performance.now();
    if (window.__firstPlotly === null && plotly()) window.__firstPlotly = now;
    if (window.__firstChart === null && (plotly() || picture())) window.__firstChart = now;
  };
  new MutationObserver(seen).observe(document, {subtree: true, childList: true, attributes: true});
  document.addEventListener('load', seen, true);  // an image finished decoding
})();"""


def time_view(browser, base: str, view: str, loads: int, width: int) -> dict:
    """Cold and warm times (ms) to the first chart and to the whole page drawn."""
    firsts, plotlies, alls = [], [], []
    context = browser.new_context(viewport={"width": width, "height": 1000})
    context.add_init_script(OBSERVER)
    try:
        for _ in range(loads):
            page = context.new_page()
            page.goto(f"{base}/{view.lstrip('/')}")
            page.wait_for_function("() => window.__firstPlotly !== null", timeout=60_000)
            page.wait_for_function(DRAWN, timeout=60_000)
            firsts.append(page.evaluate("() => window.__firstChart"))
            plotlies.append(page.evaluate("() => window.__firstPlotly"))
            alls.append(page.evaluate("() => performance.now()"))
            page.close()
    finally:
        context.close()
    warm_first, warm_all, warm_plotly = firsts[1:] or firsts, alls[1:] or alls, plotlies[1:] or plotlies
    return {
        "view": "/" + view.lstrip("/"),
        "cold_first_chart_ms": round(firsts[0]),
        "warm_first_chart_ms_median": round(statistics.median(warm_first)),
        "warm_first_chart_ms_range": [round(min(warm_first)), round(max(warm_first))],
        "warm_first_plotly_ms_median": round(statistics.median(warm_plotly)),
        "warm_all_drawn_ms_median": round(statistics.median(warm_all)),
        "loads": loads,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("views", nargs="*", default=DEFAULT_VIEWS, help="paths with query, e.g. 'network?steps=5'")
    parser.add_argument("--loads", type=int, default=7)
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args(argv)
    with serve_app() as (base, _), chromium() as browser:
        results = [time_view(browser, base, view, args.loads, args.width) for view in args.views]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
