"""Soak: N concurrent browser pages against one server for a bounded time.

    .venv/bin/python scripts/soak.py [--pages 8] [--seconds 120]

Each page opens different links (every layer and mode, errors, hostile values, oversize
requests) and changes controls, in a loop until the time is up. Reports loads, verdicts,
errors seen (page errors, exceptions shown by Streamlit, a verdict missing), and the server's
resident memory at start, peak and end (after the pages have closed). Exits 1 on any error.
Traffic goes to 127.0.0.1 only, and every loop is bounded by the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bnviz.shots import CHROMIUM, CHROMIUM_ARGS, DRAWN, NOT_RUNNING, VERDICT_TEXT, VIEWPORT, serve_app

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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def wait_drawn(page, timeout_ms: float = 60_000) -> None:
    await page.wait_for_selector(NOT_RUNNING, timeout=timeout_ms)
    await page.wait_for_function(DRAWN, timeout=timeout_ms)


async def worker(index: int, browser, base: str, deadline: float, stats: dict) -> None:
    page = await browser.new_page(viewport=VIEWPORT)
    page.on("pageerror", lambda e: stats["errors"].append(f"page {index}: {e}"))
    page.on("dialog", lambda d: stats["errors"].append(f"page {index}: a dialog opened: {d.message}"))
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


async def record(page, link: str, stats: dict, index: int) -> None:
    stats["loads"] += 1
    if await page.locator('[data-testid="stException"]').count():
        stats["errors"].append(f"page {index}: an exception is shown for {link}")
    words = await page.evaluate(VERDICT_TEXT, ".st-key-verdict")
    if words:
        stats["verdicts"][words.split("\n", 1)[0]] += 1
    elif await page.locator('[data-testid="stAlertContentError"]').count():
        stats["verdicts"]["refused"] += 1
    else:
        stats["errors"].append(f"page {index}: neither a verdict nor a refusal for {link}")


async def soak(base: str, pages: int, seconds: float) -> dict:
    from playwright.async_api import async_playwright

    stats: dict = {"loads": 0, "verdicts": Counter(), "errors": []}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(i, browser, base, deadline, stats) for i in range(pages)))
        await browser.close()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before the end RSS")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    with serve_app() as (base, proc):
        start = rss_mb(proc.pid)
        peak = [start]
        timeline: list[tuple[float, float]] = []  # (seconds, RSS MB) every ~15 s
        stop = threading.Event()
        t_start = time.monotonic()

        def sample() -> None:
            while not stop.wait(0.25):
                rss = rss_mb(proc.pid)
                peak[0] = max(peak[0], rss)
                elapsed_s = time.monotonic() - t_start
                if not timeline or elapsed_s - timeline[-1][0] >= 15:
                    timeline.append((round(elapsed_s, 1), round(rss, 1)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.monotonic()
        stats = asyncio.run(soak(base, args.pages, args.seconds))
        elapsed = time.monotonic() - t0
        time.sleep(args.settle)
        stop.set()
        sampler.join()
        end = rss_mb(proc.pid)
    report = {
        "pages": args.pages,
        "seconds": round(elapsed, 1),
        "loads": stats["loads"],
        "verdicts": dict(stats["verdicts"]),
        "errors": stats["errors"],
        "rss_mb": {"start": round(start, 1), "peak": round(peak[0], 1), "end": round(end, 1)},
        "rss_timeline": timeline,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
