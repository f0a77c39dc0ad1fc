"""Render any view of the app to a PNG, headlessly: ``python -m bnviz.shots "<query or URL>" out.png``.

Starts its own Streamlit server on a free 127.0.0.1 port, opens the view in Debian's Chromium
(through Playwright, which never downloads a browser here), waits until the script has finished
and every Plotly chart is drawn, screenshots the main area, and stops the server. The same
pieces serve the browser tests and the soak script.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bnviz.hosting.serve import ALLOCATOR_ENV

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(
    port: int | None = None, timeout: float = 90.0, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run app.py`` on 127.0.0.1:port (headless, no file watcher, no usage stats), with
    glibc's allocator set to give memory back (``serve.ALLOCATOR_ENV``) and ``env`` added to the
    environment.

    Yields (base URL, process) once ``/_stcore/health`` answers; stops the server on exit.
    """
    port = port or free_port()
    log = tempfile.TemporaryFile()
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
        "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **ALLOCATOR_ENV, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{log.read().decode(errors='replace')}")
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {base} within {timeout:.0f}s")
            time.sleep(0.3)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of process ``pid`` and every process below it (workers it started),
    read from /proc; 0 for a process that is gone."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
        todo += children.get(current, [])
    return total


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def split_view(view: str) -> tuple[str, str]:
    """``(page path, query string)`` of ``view``: a full URL, ``network?a=b``, ``?a=b&…`` or
    ``a=b&…`` (a bare query is the layer page at ``/``)."""
    if "://" in view:
        parts = urlsplit(view)
        return parts.path.strip("/"), parts.query
    if "?" in view:
        path, query = view.split("?", 1)
        return path.strip("/"), query
    if "=" in view or not view:
        return "", view
    return view.strip("/"), ""


NOT_RUNNING = '[data-testid="stApp"][data-test-script-state="notRunning"]'
DRAWN = """() => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return charts.every(c => c.querySelector('.js-plotly-plot .main-svg .cartesianlayer'));
}"""


def wait_until_drawn(page: Any, timeout_ms: float = 60_000) -> None:
    """Wait until the script has run to the end and every Plotly chart on the page has its SVG."""
    page.wait_for_selector(NOT_RUNNING, timeout=timeout_ms)
    page.wait_for_function(DRAWN, timeout=timeout_ms)
    page.wait_for_timeout(300)  # let the last layout settle


def open_view(page: Any, base: str, view: str) -> None:
    """Open ``view`` and wait until it is drawn, with the window as tall as the page (a screenshot
    of Streamlit's scrolling main area shows only what is inside the window)."""
    path, query = split_view(view)
    page.goto(f"{base}/{path}?{query}")
    wait_until_drawn(page)
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight")
    if height + 100 > page.viewport_size["height"]:
        page.set_viewport_size({"width": page.viewport_size["width"], "height": int(height) + 100})
        wait_until_drawn(page)


def screenshot_main(page: Any, path: str | Path, max_height: int | None = None) -> None:
    """The main area (without the sidebar), as the person reading it sees it; its top
    ``max_height`` pixels only, when given."""
    main = page.locator('[data-testid="stMainBlockContainer"]')
    if max_height is None:
        main.screenshot(path=str(path), animations="disabled")
        return
    box = main.bounding_box()
    clip = {**box, "height": min(box["height"], max_height)}
    page.screenshot(path=str(path), clip=clip, animations="disabled")


def screenshot_section(page: Any, path: str | Path, title: str) -> None:
    """From the subheader ``title`` down to the next subheader (or the end of the main area)."""
    main = page.locator('[data-testid="stMainBlockContainer"]').bounding_box()
    headings = page.locator('[data-testid="stHeadingWithActionElements"] h3')
    tops = {headings.nth(i).inner_text().strip(): headings.nth(i).bounding_box()["y"] for i in range(headings.count())}
    if title not in tops:
        raise ValueError(f"no section {title!r}; the page has {', '.join(tops)}")
    top = tops[title] - 10
    below = [y for y in tops.values() if y > top + 20]
    bottom = min(below) - 10 if below else main["y"] + main["height"]
    page.screenshot(path=str(path), clip={"x": main["x"], "y": top, "width": main["width"], "height": bottom - top})


def press_all(page: Any, label: str, timeout_ms: float = 600_000) -> None:
    """Press each button whose label starts with ``label``, top to bottom, waiting until the page
    has run and drawn after each."""
    buttons = page.locator("button", has_text=label)
    for _ in range(buttons.count()):  # a pressed button goes away once its section is drawn: press the first left
        if buttons.count() == 0:
            break
        buttons.first.click()
        page.wait_for_timeout(500)
        wait_until_drawn(page, timeout_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnviz.shots", description=__doc__.splitlines()[0])
    parser.add_argument("view", help='a page and query ("network?steps=5", "layer=BatchNorm1d&shape=32,4" for the '
                        'layer page at /) or a full app URL')
    parser.add_argument("out", help="the PNG to write")
    parser.add_argument("--full", action="store_true", help="the whole window, sidebar included")
    parser.add_argument("--max-height", type=int, help="keep only the top N pixels of the main area")
    parser.add_argument("--section", help='only one section, by its title (e.g. "Running statistics")')
    parser.add_argument("--press", metavar="LABEL", help='press every button whose label starts with LABEL, one '
                        'after the other, and wait for each ("Run it": every experiment of /training)')
    args = parser.parse_args(argv)
    with serve_app() as (base, _), chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        open_view(page, base, args.view)
        if args.press:
            press_all(page, args.press)
            open_view(page, base, args.view)  # again, for the window's height with everything drawn
        if args.full:
            page.screenshot(path=args.out, full_page=True)
        elif args.section:
            screenshot_section(page, args.out, args.section)
        else:
            screenshot_main(page, args.out, args.max_height)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


LAYOUT_PROBLEMS = """() => {
    const problems = [];
    const r = el => el.getBoundingClientRect();
    const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2
        && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2;
    const root = document.documentElement;
    if (root.scrollWidth > window.innerWidth + 1) problems.push(`page is ${root.scrollWidth}px wide`);
    document.querySelectorAll('[data-testid="stMainBlockContainer"] table').forEach((t, i) => {
        const box = t.parentElement.getBoundingClientRect();
        if (r(t).right > box.right + 1 || t.scrollWidth > t.clientWidth + 1) problems.push(`table ${i} is clipped`);
    });
    document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot').forEach((plot, i) => {
        const name = (plot.querySelector('.gtitle') || {}).textContent || `chart ${i}`;
        const box = r(plot.querySelector('.main-svg'));
        const texts = [...plot.querySelectorAll(
            '.infolayer .gtitle, .infolayer [class$="title"] text, .infolayer g.legend, .infolayer g.annotation')]
            .filter(el => r(el).width > 0);
        for (const el of texts) {
            const b = r(el);
            if (b.left < box.left - 1 || b.right > box.right + 1 || b.top < box.top - 1 || b.bottom > box.bottom + 1)
                problems.push(`${name}: "${el.textContent.slice(0, 40)}" is clipped`);
        }
        for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++) {
            if (texts[a].contains(texts[b]) || texts[b].contains(texts[a])) continue;
            const [ta, tb] = [texts[a].textContent.slice(0, 30), texts[b].textContent.slice(0, 30)];
            if (overlap(r(texts[a]), r(texts[b]))) problems.push(`${name}: "${ta}" overlaps "${tb}"`);
        }
    });
    return problems;
}"""


def layout_problems(page: Any) -> list[str]:
    """What overlaps or is clipped on the page as drawn: chart titles, axis titles, legends and
    annotations against each other and their chart's edges; tables wider than their column."""
    return page.evaluate(LAYOUT_PROBLEMS)


VERDICT_TEXT = """(selector) => {
    const box = document.querySelector(selector);
    if (!box) return null;
    const copy = box.cloneNode(true);
    copy.querySelectorAll('[role="img"][aria-label$=" icon"]').forEach(icon => icon.remove());
    document.body.appendChild(copy);
    const text = copy.innerText.trim();
    copy.remove();
    return text;
}"""


def verdict_text(page: Any, key: str = "verdict") -> str | None:
    """The words of a page's verdict badge and its detail line, without the badge's icon."""
    return page.evaluate(VERDICT_TEXT, f".st-key-{key}")
