"""Does the layer page's default view stay fast while trainings run? (Issue 18: the queue bounds the CPU.)

    .venv/bin/python scripts/busy_server.py [--trainings 4] [--views 5] [--steps 5000]

Starts one server (127.0.0.1, a free port) and warms it up (every page drawn once). Then times
the layer page's default view — a fresh seed each time, so no cache helps — on an idle server;
then opens ``--trainings`` /training pages at once (each with its own seed and ``--steps`` steps,
so each is a real training of several seconds, queued for the server's core slots) and, while
they train, times the same view again. Prints the times to the verdict badge, and how many
trainings were still running at each measurement (read from the pages' progress bars).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bnviz.shots import VERDICT_TEXT, VIEWPORT, chromium, open_view, serve_app, wait_until_drawn


def time_to_verdict(browser, base: str, seed: int) -> float:
    page = browser.new_page(viewport=VIEWPORT)
    try:
        start = time.monotonic()
        page.goto(f"{base}/?seed={seed}")
        page.wait_for_function(f"() => ({VERDICT_TEXT})('.st-key-verdict')", timeout=120_000)
        return time.monotonic() - start
    finally:
        page.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=4)
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    with serve_app() as (base, _), chromium() as browser:
        warm = browser.new_page(viewport=VIEWPORT)
        for view in ("", "training?steps=100&every=50", "network"):
            open_view(warm, base, view)
        warm.close()
        idle = [time_to_verdict(browser, base, 1000 + i) for i in range(args.views)]
        trainers = []
        for i in range(args.trainings):
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{base}/training?steps={args.steps}&every=500&seed={2000 + i}", wait_until="commit")
            trainers.append(page)
        time.sleep(3)  # the trainings have started (or queued)
        busy, running = [], []
        for i in range(args.views):
            running.append(sum(p.locator('[data-testid="stProgress"]').count() > 0 for p in trainers))
            busy.append(time_to_verdict(browser, base, 3000 + i))
        start = time.monotonic()
        for page in trainers:
            wait_until_drawn(page, 600_000)
        left = time.monotonic() - start
        for page in trainers:
            page.close()
    print(f"layer page, default view, seconds to the verdict: idle {[f'{t:.2f}' for t in idle]} "
          f"(median {statistics.median(idle):.2f})")
    print(f"while {args.trainings} trainings of {args.steps} steps ran: {[f'{t:.2f}' for t in busy]} "
          f"(median {statistics.median(busy):.2f}); trainings showing progress at each view: {running}")
    print(f"the trainings finished {left:.1f} s after the last view")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
