"""Load: four browser pages ask at once for heavy views (distinct seeds: no cache helps) of a
server with a small memory budget. Each is served — at once or after the queue's message — and the
server's whole process tree stays within its baseline plus the budget."""

from __future__ import annotations

import threading
import time

from bnviz.explorer.family.url import FamilyConfig
from bnviz.explorer.layer.url import Config
from bnviz.explorer.network.url import NetworkConfig
from bnviz.hosting import serve
from bnviz.shots import DRAWN, NOT_RUNNING, VIEWPORT, open_view, serve_app, tree_rss_mb, verdict_text

BUDGET_MB = 300
SEED = int(time.time()) % 100_000 * 10  # fresh seeds: no cache of any earlier run helps
HEAVY = {  # the link, and the config it asks for
    f"?layer=BatchNorm1d&shape=2000,1000&steps=7&train_n=2000&dtype=float64&seed={SEED}": Config(
        layer="BatchNorm1d", shape=(2000, 1000), steps=7, train_batch=2000, dtype="float64", seed=SEED),
    f"?layer=BatchNorm1d&shape=2000,1000&steps=7&train_n=2000&dtype=float64&seed={SEED + 1}": Config(
        layer="BatchNorm1d", shape=(2000, 1000), steps=7, train_batch=2000, dtype="float64", seed=SEED + 1),
    f"family?shape=16,64,32,30&groups=8&seed={SEED}": FamilyConfig(shape=(16, 64, 32, 30), groups=8, seed=SEED),
    f"network?batch=64&image=64&channels=8&steps=1&seed={SEED}": NetworkConfig(
        batch=64, image=64, channels=8, steps=1, seed=SEED),
}  # fmt: skip
WARM = ["", "family", "network"]  # each page's default view: every module imported, every page drawn once


def test_the_heavy_views_fit_the_budget_together_only_in_turns():
    """The test's premise: each view fits the budget, and no two fit it together (they queue)."""
    costs = sorted(config.estimate_bytes() / serve.MB for config in HEAVY.values())
    assert costs[-1] <= BUDGET_MB and costs[0] + costs[1] > BUDGET_MB, costs


def test_four_pages_at_once_are_all_served_within_the_memory_budget(browser):
    env = {serve.BUDGET_ENV: str(BUDGET_MB)}
    with serve_app(env=env) as (base, proc):
        warm = browser.new_page(viewport=VIEWPORT)
        for view in WARM:
            open_view(warm, base, view)
        warm.close()
        time.sleep(1)
        baseline = tree_rss_mb(proc.pid)
        peak = [baseline]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.1):
                peak[0] = max(peak[0], tree_rss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        pages = [browser.new_page(viewport=VIEWPORT) for _ in HEAVY]
        start = time.monotonic()
        for page, link in zip(pages, HEAVY, strict=True):
            page.goto(f"{base}/{link}", wait_until="commit")
        queued, done = set(), {}
        try:
            while len(done) < len(pages) and time.monotonic() - start < 240:
                for i, page in enumerate(pages):
                    if i in done:
                        continue
                    if page.get_by_text("queued:", exact=False).count():
                        queued.add(i)
                    if page.locator(NOT_RUNNING).count() and page.evaluate(DRAWN):
                        done[i] = (round(time.monotonic() - start, 1), verdict_text(page) or "")
                time.sleep(0.1)
        finally:
            stop.set()
            sampler.join()
        errors = [p.locator('[data-testid="stException"], [data-testid="stAlertContentError"]').count() for p in pages]
        for page in pages:
            page.close()
    report = f"baseline {baseline:.0f} MB, peak {peak[0]:.0f} MB, budget {BUDGET_MB} MB; pages {done}; queued {queued}"
    assert len(done) == len(pages), "a page was not served in 4 minutes: " + report
    assert all(words.startswith("match") for _, words in done.values()), report
    assert not any(errors), report
    assert queued, "no page saw the queue, though no two views fit the budget together: " + report
    assert peak[0] <= baseline + BUDGET_MB, report
