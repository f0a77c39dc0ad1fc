"""Soak: N concurrent browser pages against one server for a bounded time.

    .venv/bin/python scripts/soak.py [--pages 8] [--seconds 120]
    .venv/bin/python scripts/soak.py --worst [--pages 8] [--seconds 600] [--idle 60]

Default mode: each page opens different links (every layer and mode, errors, hostile values,
oversize requests) and changes controls, in a loop until the time is up.

``--worst``: the pages ask for the worst. Once each page has been drawn once (``--cold``: not
even that), a burst: every page opens, at the same moment, one of the largest views the pages
allow, each with its own seed (no cache helps). Then, until the time is up, each page in turn
opens another worst-case view, changes its seed three times
in quick succession (each change supersedes the run before), opens a worst-case view in a new
tab and closes it a second later, and opens the default view with a fresh seed — a small view,
timed while the heavy ones run. Then every page closes and the server idles ``--idle`` seconds.

Reports loads, verdicts, errors seen (page errors, exceptions shown by Streamlit, a page left
with neither a verdict nor a refusal), the time to verdict of every page (burst, heavy, default
views), and the resident memory of the server's whole process tree (the server and any process it
started) sampled every 0.25 s: at start, peak, after the pages closed and after idling. Exits 1
on any error. Traffic goes to 127.0.0.1 only, and every loop is bounded by the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bnviz.shots import CHROMIUM, CHROMIUM_ARGS, DRAWN, NOT_RUNNING, VERDICT_TEXT, VIEWPORT, serve_app, tree_rss_mb

LINKS = [
    "layer=BatchNorm1d&shape=32,4",
    "layer=BatchNorm1d&shape=16,4,8&mode=eval",
    "layer=BatchNorm2d&shape=8,3,16,16",
    "layer=BatchNorm2d&shape=16,8,8,8&mode=eval&dtype=bfloat16",
    "layer=BatchNorm3d&shape=4,2,4,8,8&momentum=none&steps=12",
    "layer=BatchNorm&shape=2,3,4,4,2,2&dist=heavy-tailed",
    "layer=BatchNorm2d&shape=8,3,16",
    "layer=BatchNorm1d&shape=1,8",
    "shape=4000,4000",
    "layer=BatchNorm1d&shape=256,64&track=false&mode=eval&dist=bimodal",
    urlencode({"layer": "<script>alert(1)</script>", "shape": "<img src=x onerror=alert(1)>", "eps": "$$x$$"}),
    "layer=BatchNorm2d&shape=32,16,16,16&steps=20&dtype=float64",
]
# The largest views the pages allow (each config.estimate_bytes() in MiB), each opened with its own seed.
WORST = [
    "layer=BatchNorm1d&shape=2000,1000&steps=7&train_n=2000&dtype=float64",  # 196: 16M values, float64
    "network?batch=256&image=64&channels=4&steps=0",  # 383: the largest network
    "layer=BatchNorm1d&shape=2,1000000&steps=1&train_n=2&dtype=float64",  # 364: a million channels
    "family?shape=16,64,32,30&groups=8",  # 136: the largest family tensor
    "layer=BatchNorm1d&shape=2,1000000&mode=eval&steps=0&train_n=2",  # 346
    "layer=BatchNorm1d&shape=2000,1000&steps=7&train_n=2000&dist=heavy-tailed",  # 180
    "network?batch=128&image=64&channels=4&steps=1",  # 252: training
    "layer=BatchNorm2d&shape=32,16,64,61&steps=3&train_n=32&dtype=bfloat16",  # 167
]
HEAVY_TIMEOUT_MS = 240_000  # a worst-case view may wait its turn in the queue


def rss_mb(pid: int) -> float:
    """The server's resident memory: its whole process tree."""
    return tree_rss_mb(pid)


async def wait_drawn(page, timeout_ms: float = 60_000) -> None:
    await page.wait_for_selector(NOT_RUNNING, timeout=timeout_ms)
    await page.wait_for_function(DRAWN, timeout=timeout_ms)


def with_seed(link: str, seed: int) -> str:
    path, _, query = link.rpartition("?") if "?" in link else ("", "", link)
    return f"{path}?{query}&seed={seed}" if query else f"{path}?seed={seed}"


async def worker(index: int, browser, base: str, deadline: float, stats: dict) -> None:
    page = await browser.new_page(viewport=VIEWPORT)
    watch(page, index, stats)
    k = index
    try:
        while time.monotonic() < deadline:
            link = LINKS[k % len(LINKS)]
            k += 1
            await page.goto(f"{base}/?{link}")
            await wait_drawn(page)
            await record(page, link, stats, index)
            if time.monotonic() >= deadline:
                break
            radio = page.get_by_test_id("stSidebar").get_by_text("eval", exact=True)
            await radio.click()
            await page.wait_for_timeout(200)
            await wait_drawn(page)
            await record(page, link + " → eval", stats, index)
    except Exception as exc:  # reported, and the soak fails
        stats["errors"].append(f"page {index}: {type(exc).__name__}: {exc}")
    finally:
        await page.close()


def watch(page, index: int, stats: dict) -> None:
    page.on("pageerror", lambda e: stats["errors"].append(f"page {index}: {e}"))
    page.on("dialog", lambda d: stats["errors"].append(f"page {index}: a dialog opened: {d.message}"))


async def record(page, link: str, stats: dict, index: int) -> str:
    """Count what the page ends with; an exception, or neither a verdict nor a refusal, is an error."""
    stats["loads"] += 1
    if await page.locator('[data-testid="stException"]').count():
        stats["errors"].append(f"page {index}: an exception is shown for {link}")
    words = await page.evaluate(VERDICT_TEXT, ".st-key-verdict")
    if words:
        outcome = words.split("\n", 1)[0]
    elif await page.locator('[data-testid="stAlertContentError"]').count():
        outcome = "refused"
    else:
        outcome = "nothing"
        stats["errors"].append(f"page {index}: neither a verdict nor a refusal for {link}")
    stats["verdicts"][outcome] += 1
    return outcome


async def timed_view(page, base: str, link: str, stats: dict, index: int, kind: str) -> None:
    """Open ``link`` and time it to its verdict (or refusal); a page that saw the queue's message
    on the way counts as queued."""
    start = time.monotonic()
    queued = asyncio.create_task(_saw_queue(page))
    await page.goto(f"{base}/{link}")
    await wait_drawn(page, HEAVY_TIMEOUT_MS)
    seconds = time.monotonic() - start
    queued.cancel()
    outcome = await record(page, link, stats, index)
    stats["times"].setdefault(kind, []).append(round(seconds, 2))
    if queued.done() and not queued.cancelled() and queued.result():
        stats["queued"] += 1
    stats["log"].append({"page": index, "kind": kind, "link": link, "s": round(seconds, 2), "outcome": outcome})


async def _saw_queue(page) -> bool:
    try:
        await page.get_by_text("queued:", exact=False).first.wait_for(timeout=HEAVY_TIMEOUT_MS)
        return True
    except Exception:
        return False


async def change_seed_fast(page, base: str, link: str, seeds: list[int], stats: dict, index: int) -> None:
    """A worst-case view, then its seed changed three times, 0.3 s apart: each change supersedes
    the run before (Streamlit stops it at its next update); only the last ends with a verdict."""
    await page.goto(f"{base}/{with_seed(link, seeds[0])}")
    box = page.get_by_test_id("stSidebar").get_by_label("Seed")
    await box.wait_for(timeout=60_000)
    start = time.monotonic()
    for seed in seeds[1:]:
        await page.wait_for_timeout(300)
        await box.fill(str(seed))
        await box.press("Enter")
    await page.wait_for_timeout(300)
    await wait_drawn(page, HEAVY_TIMEOUT_MS)
    stats["times"].setdefault("after fast changes", []).append(round(time.monotonic() - start, 2))
    await record(page, link + " (seed changed 3×)", stats, index)


async def close_early(browser, base: str, link: str, stats: dict, index: int) -> None:
    """A worst-case view in a new tab, closed a second later: its run must not hold the budget."""
    tab = await browser.new_page(viewport=VIEWPORT)
    await tab.goto(f"{base}/{link}")
    await tab.wait_for_timeout(1000)
    await tab.close()
    stats["closed"] += 1


async def worst_worker(index: int, browser, base: str, deadline: float, stats: dict, seeds, start: asyncio.Event):
    page = await browser.new_page(viewport=VIEWPORT)
    watch(page, index, stats)
    try:
        await page.goto(f"{base}/_stcore/health")
        await start.wait()  # the burst: every page at the same moment
        await timed_view(page, base, with_seed(WORST[index % len(WORST)], next(seeds)), stats, index, "burst")
        for k in itertools.count(index + 1):
            if time.monotonic() >= deadline:
                break
            worst = WORST[k % len(WORST)]
            action = k % 4
            if action == 0:
                await timed_view(page, base, with_seed(worst, next(seeds)), stats, index, "heavy")
            elif action == 1:
                await change_seed_fast(page, base, worst, [next(seeds) for _ in range(4)], stats, index)
            elif action == 2:
                await close_early(browser, base, with_seed(worst, next(seeds)), stats, index)
            await timed_view(page, base, f"?seed={next(seeds)}", stats, index, "default view")
    except Exception as exc:  # reported, and the soak fails
        stats["errors"].append(f"page {index}: {type(exc).__name__}: {str(exc)[:300]}")
    finally:
        await page.close()


async def soak(base: str, pages: int, seconds: float, worst: bool = False, warm: bool = True, pid: int = 0) -> dict:
    from playwright.async_api import async_playwright

    stats: dict = {"loads": 0, "verdicts": Counter(), "errors": [], "times": {}, "log": [], "queued": 0, "closed": 0}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        deadline = time.monotonic() + seconds
        if worst:
            if warm:  # as a server that has been up a while: every page drawn once (imports, plotly)
                page = await browser.new_page(viewport=VIEWPORT)
                for view in ("", "network", "family", "inference"):
                    await page.goto(f"{base}/{view}")
                    await wait_drawn(page, HEAVY_TIMEOUT_MS)
                await page.close()
            stats["warm_rss_mb"] = round(rss_mb(pid), 1) if pid else None
            seeds = itertools.count(int(time.time()) % 1_000_000 * 1000)  # fresh seeds: no cache helps
            start = asyncio.Event()
            tasks = [asyncio.create_task(worst_worker(i, browser, base, deadline, stats, seeds, start))
                     for i in range(pages)]  # fmt: skip
            await asyncio.sleep(3)  # every page open, then the burst
            start.set()
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(worker(i, browser, base, deadline, stats) for i in range(pages)))
        await browser.close()
    return stats


def summary(times: list[float]) -> dict:
    if not times:
        return {}
    return {"n": len(times), "median": round(statistics.median(times), 2), "max": max(times)}


@contextlib.contextmanager
def server(attach: list[str] | None) -> Iterator[tuple[str, int]]:
    """The server to soak — one already running (``--attach URL PID``), or one started here — as
    its base URL and pid."""
    if attach:
        yield attach[0].rstrip("/"), int(attach[1])
        return
    with serve_app() as (base, proc):
        yield base, proc.pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the pages keep going (after the burst)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the end RSS")
    parser.add_argument("--worst", action="store_true", help="the worst-case mode (see above)")
    parser.add_argument("--idle", type=float, default=0.0, help="then idle this long and read the RSS again")
    parser.add_argument("--cold", action="store_true", help="--worst: burst on a cold server (no page drawn yet)")
    parser.add_argument("--attach", nargs=2, metavar=("URL", "PID"), help="a server already running (its URL and pid)")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    with server(args.attach) as (base, pid):
        start = rss_mb(pid)
        peak = [start]
        timeline: list[tuple[float, float]] = []  # (seconds, RSS MB) every ~15 s, and every new peak
        stop = threading.Event()
        t_start = time.monotonic()

        def sample() -> None:
            while not stop.wait(0.25):
                rss = rss_mb(pid)
                elapsed_s = time.monotonic() - t_start
                if rss > peak[0] or not timeline or elapsed_s - timeline[-1][0] >= 15:
                    timeline.append((round(elapsed_s, 1), round(rss, 1)))
                peak[0] = max(peak[0], rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        stats = asyncio.run(soak(base, args.pages, args.seconds, args.worst, not args.cold, pid))
        elapsed = time.monotonic() - t0
        time.sleep(args.settle)
        end = rss_mb(pid)
        time.sleep(max(args.idle - args.settle, 0))
        idle = rss_mb(pid)
        stop.set()
        sampler.join()
    report = {
        "pages": args.pages,
        "mode": "worst" if args.worst else "links",
        "seconds": round(elapsed, 1),
        "loads": stats["loads"],
        "verdicts": dict(stats["verdicts"]),
        "errors": stats["errors"],
        "rss_mb": {"start": round(start, 1), "peak": round(peak[0], 1), "end": round(end, 1)},
        "rss_timeline": timeline,
    }
    if args.worst:
        report["rss_mb"]["warm"] = stats.get("warm_rss_mb")
        report["rss_mb"][f"after {args.idle:.0f} s idle"] = round(idle, 1)
        report["time_to_verdict_s"] = {kind: summary(times) for kind, times in stats["times"].items()}
        report["burst"] = sorted(e["s"] for e in stats["log"] if e["kind"] == "burst")
        report["queued_pages"] = stats["queued"]
        report["closed_tabs"] = stats["closed"]
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "log": stats["log"]}, indent=2))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
