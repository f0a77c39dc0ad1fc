"""Compute the pages' default views ahead and keep them as data: ``python scripts/store_defaults.py``.

/training's and /eval-gap's default views train networks over five seeds (about 17 s for Figure 1
alone on a 2-core machine); their reports are computed here, live, and written beside each page's
engine (``bnviz/explorer/<page>/stored.json``), from where the engine serves a config equal to one
of them. Rerun after any change to what those runs compute: the tests rerun seed 0 of every stored
config and fail when the numbers differ.
"""

from __future__ import annotations

import argparse
import time

import torch

from bnviz.explorer.eval_gap import engine as eval_gap
from bnviz.explorer.training import engine as training

PAGES = {"training": training, "eval-gap": eval_gap}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", help=f"the pages to store, of {', '.join(PAGES)} (default: all)")
    args = parser.parse_args()
    if unknown := [p for p in args.pages if p not in PAGES]:
        parser.error(f"no page {unknown[0]!r}; the pages are {', '.join(PAGES)}")
    torch.set_num_threads(1)  # as the server runs them (mlp.one_thread)
    for name in args.pages or PAGES:
        engine = PAGES[name]
        reports = []
        for config in engine.AHEAD:
            start = time.perf_counter()
            reports.append(engine.run(config, live=True))
            print(f"{name}: {type(config).__name__} in {time.perf_counter() - start:.1f} s — {reports[-1].verdict}")
        engine.STORE.write(reports)
        print(f"wrote {engine.STORE.path}")


if __name__ == "__main__":
    main()
