"""Server-side cost of the app: the default view's rerun, cold and cached, and each chart's payload.

    .venv/bin/python scripts/bench_app.py

Cold = a config seen for the first time (comparison + figures); cached = a rerun of a config
already cached (its report in the server's shared cache, its figures in st.cache_data: what a
widget click that returns to a seen view costs); the full
script run is measured through Streamlit's AppTest. Medians of repeated runs.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from streamlit.testing.v1 import AppTest

from bnviz.explorer.layer.engine import run as run_comparison
from bnviz.explorer.layer.figures import all_figures, figure_bytes
from bnviz.explorer.layer.url import Config

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def median_ms(fn, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main() -> None:
    run_comparison(Config())  # warm torch up once, as a running server is
    seeds = iter(range(1, 10_000))
    cold = median_ms(lambda: all_figures(run_comparison(replace(Config(), seed=next(seeds)))))
    compare_only = median_ms(lambda: run_comparison(replace(Config(), seed=next(seeds))))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    cached = median_ms(lambda: at.run())
    print(f"default view, cold (comparison + 4 figures): {cold:.1f} ms   (comparison alone {compare_only:.1f} ms)")
    print(f"default view, full script rerun with warm cache (AppTest): {cached:.1f} ms")
    for config in (Config(), Config(layer="BatchNorm1d", shape=(2000, 1000), steps=3)):
        sizes = {name: figure_bytes(fig) for name, fig in all_figures(run_comparison(config)).items()}
        print(f"chart JSON bytes for {config.layer}{config.shape}: {sizes}")


if __name__ == "__main__":
    main()
