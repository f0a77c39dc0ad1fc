"""What every page does the same way: widgets ⇄ URL, the verdict badge, charts. UI only, no maths."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import StopException, get_script_run_ctx

from bnviz.explorer import workers
from bnviz.explorer.contract import PageConfig, Run
from bnviz.explorer.query import QuerySpec
from bnviz.hosting import forks, serve

CHART_CONFIG = {"displaylogo": False, "responsive": True}
T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def server() -> serve.Shared:
    """One per server process (app.py calls it first): the memory budget every visitor shares, the
    finished reports, and the allocator tuned to give memory back."""
    # Imported before any page runs (the first visitors wait for this): plotly finds pandas in
    # sys.modules, and two pages drawing at once on a cold server saw it half imported.
    import pandas  # noqa: F401

    return serve.shared()


def _session_open() -> bool:
    """The visitor of this script run still has the page open (True outside a server)."""
    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx is None or not Runtime.exists() or Runtime.instance().is_active_session(ctx.session_id)


def heavy(
    key: Hashable, cost: int, run: Callable[..., T], doing: str, cpu: bool = False, progress: bool = False,
    cache: serve.ResultCache | None = None,
) -> T | None:
    """The report for ``key``: from the shared cache at once, else computed by ``run(stopped)``
    once the server's memory budget has room for ``cost`` bytes (and, with ``cpu``, a core slot:
    a training). While it waits, a placeholder says how many views wait ahead of it; then
    ``doing`` — with ``progress``, as a progress bar that ``run(stopped, progress)`` moves
    (``progress(fraction)``). None, with the reason shown, when the budget could never hold it.

    A job nobody wants any more stops: between steps once the visitor left (and no other waits
    for the same view), and at once when the visitor asks for another heavy view (``serve``'s
    one job per owner). A view change makes Streamlit start a new run and stop this one at its next
    page update; the job itself goes on while the page is open — the new run may want the very
    same report (then it waits for this one), and otherwise its own job supersedes this one.

    ``cache``: where the result goes instead of the server-wide cache (a visitor's upload: a
    ``ResultCache(0)`` that keeps nothing)."""
    owner = st.session_state.setdefault("bnviz.owner", uuid.uuid4().hex)
    shared = server()
    reports = shared.reports if cache is None else cache
    slot = st.empty()

    def wanted() -> bool:
        return _session_open() or reports.waiting(key) > 0

    def update(show: Callable[[], Any]) -> None:
        try:
            show()
        except StopException:  # this run was replaced or the page closed: go on only if wanted
            if not wanted():
                raise

    def on_wait(w: serve.Waiting) -> None:
        ahead = f"queued: {w.ahead} ahead" if w.ahead else "queued: next"
        update(lambda: slot.info(
            f"{ahead}, {w.running} running. The server shares its memory between visitors; this view starts as "
            f"soon as there is room ({w.waited_s:.0f} s so far).", icon=":material/hourglass_top:"))  # fmt: skip

    bar: list[Any] = []

    def on_start() -> None:
        if progress:
            update(lambda: bar.append(slot.progress(0.0, text=doing)))
        else:
            update(lambda: slot.caption(doing))

    def moved(fraction: float) -> None:
        if bar:
            update(lambda: bar[0].progress(min(max(fraction, 0.0), 1.0), text=doing))

    job = (lambda stopped: run(stopped, moved)) if progress else run
    try:
        value = serve.run_heavy(shared.budget, reports, owner, key, cost, job, on_wait=on_wait,
                                should_stop=lambda: not wanted(), on_start=on_start, cpu=cpu)  # fmt: skip
    except serve.Refused as exc:
        slot.error(f"Not run: {exc}.")
        return None
    except serve.Cancelled:
        slot.info("This view was replaced by a newer one.")
        st.stop()
    slot.empty()
    return value


def load(config: PageConfig, run: Run, doing: str, cpu: bool = False, progress: bool = False) -> Any:
    """A page engine's report for ``config`` (``run``: the engine's ``run``), keyed by ``config``
    itself: from the server's cache, or run within its memory budget (``heavy``; with ``cpu``, a
    core of its own; with ``progress``, a progress bar). None when the budget could never hold it."""
    job = (lambda stopped, moved: run(config, stopped, moved)) if progress else (lambda stopped: run(config, stopped))
    return heavy(config, config.estimate_bytes(), job, doing, cpu=cpu, progress=progress)


@st.cache_data(max_entries=64, show_spinner=False)
def figures(config: Hashable, view: tuple, _draw: Callable[..., Mapping[str, Any]], _report: Any) -> dict:
    """What ``_draw(_report, *view)`` builds — plotly figures as plain dicts, pictures as SVG text —
    cached by ``config`` (which keys its report, and names its page) and ``view`` (a channel…);
    ``_draw`` and ``_report`` are not hashed."""
    return plain_figures(_draw, _report, view)


def plain_figures(draw: Callable[..., Mapping[str, Any]], report: Any, view: tuple) -> dict:
    """``draw(report, *view)`` with its plotly figures as plain dicts (what ``figures`` caches)."""
    return {name: fig.to_dict() if hasattr(fig, "to_dict") else fig for name, fig in draw(report, *view).items()}


def in_session(slot: str, key: Hashable, make: Callable[[], T | None]) -> T | None:
    """``make()`` for a visitor's own data, kept in this session alone (``st.session_state[slot]``,
    the latest ``key`` only), so that a rerun (a widget changed) does not compute it again; shared
    with no one, gone with the session. A None (not run) is not kept."""
    held = st.session_state.get(slot)
    if held is not None and held[0] == key:
        return held[1]
    value = make()
    if value is not None:
        st.session_state[slot] = (key, value)
    return value


def finished(key: Hashable) -> bool:
    """Whether the report for ``key`` is in the server's cache: shown without asking for it."""
    return server().reports.get(key) is not serve.MISSING


def on_button(
    key: str, job: Hashable, reason: str | None, seconds: float, load: Callable[[], T | None], ready: bool = False
) -> T | None:
    """A run that costs more, behind its button (``key``): run when pressed — and, until its
    settings change, on every rerun — or shown at once when the server already has the report of
    ``job``, or it is ``ready`` (computed ahead: a page's default view). A link carries the settings
    and starts nothing by itself. "Not run: <reason>." instead for settings the engine refuses."""
    if reason is not None:
        st.error(f"Not run: {reason}.")
        return None
    if ready or finished(job):
        return load()
    if st.button(f"Run it (about {seconds:.0f} s)", key=key, type="primary"):
        st.session_state[key + ".ran"] = job
    if st.session_state.get(key + ".ran") == job:
        return load()
    st.caption("Runs when you press the button, on this server, within its budget; the result is then kept for "
               "every visitor. A link carries these settings, and opening it starts nothing by itself.")  # fmt: skip
    return None


def ensure_fork_server(why: str) -> bool:
    """Start the fork server that worker processes come from, once per server, as a budgeted
    step of its own (it then stays: part of the server's baseline). False, with the reason shown,
    when the budget could never hold it."""
    if forks.started():
        return True
    heavy("fork server", workers.FORK_SERVER_BYTES, lambda stopped: workers.start(),
          f"Starting the fork server {why} (once per server)…")  # fmt: skip
    return forks.started()


def view(
    page: str, spec: QuerySpec, base: Any, kinds: Mapping[str, str], prefix: str = "", url_page: str | None = None
) -> tuple[Any, list[str]]:
    """The config the page's widgets describe, and the warnings to show. Call it before the
    widgets are drawn: it may set them.

    - The URL sets every widget on the page's first run in a session, when its widgets were
      dropped by a page switch, and whenever the URL changed from outside — a link into this page
      from the app itself, the browser's back button: the URL differs from what the page last
      wrote (``write_url``). The link's refused values are kept to be shown until the view changes.
    - Else the widgets are the view. A value just typed that is refused is replaced in its box by
      the value in use, and its warning is shown on this run only.

    ``kinds`` maps URL names to widget kinds: "text" (a text box or a choice: the URL text),
    "bool" (a checkbox) or "int" (a number box). ``url_page`` names the page whose URL this is
    (a page with two specs, its view and its focus, passes its own name for both)."""
    keys = [prefix + name for name in spec.names]
    url = st.query_params.to_dict()
    outside = url != st.session_state.get(f"{url_page or page}.url")
    st.session_state.setdefault(f"{url_page or page}.defaults", {}).update(spec.to_query(base))  # for write_url
    if outside or not st.session_state.get(f"{page}.initialized") or any(k not in st.session_state for k in keys):
        config, warnings = spec.parse(url, base)
        _set_widgets(spec, config, kinds, prefix, spec.names)
        st.session_state[f"{page}.url_warnings"] = warnings
        st.session_state[f"{page}.url_config"] = config
        st.session_state[f"{page}.initialized"] = True
        return config, warnings
    config, typed, refused = spec.parse_refused(widget_query(spec, prefix), base)
    _set_widgets(spec, config, kinds, prefix, refused)
    url_warnings = st.session_state[f"{page}.url_warnings"] if config == st.session_state[f"{page}.url_config"] else []
    return config, url_warnings + typed


def _set_widgets(spec: QuerySpec, config: Any, kinds: Mapping[str, str], prefix: str, names: Any) -> None:
    for name in names:
        kind = kinds.get(name, "text")
        value = getattr(config, spec.params[name].field)
        st.session_state[prefix + name] = value if kind in ("bool", "int") else spec.format_value(name, config)


def widget_query(spec: QuerySpec, prefix: str = "") -> dict[str, str]:
    """The widgets' values as URL text (a checkbox as true/false, a number as its digits)."""
    out = {}
    for name in spec.names:
        value = st.session_state.get(prefix + name)
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def show_warnings(page: str, config: Any, warnings: list[str], focus_warnings: list[str] = ()) -> None:
    """The link's refused values and the ones just typed, as warnings; a focus's link warnings
    go once the reader changes the view."""
    if config != st.session_state[f"{page}.url_config"]:
        focus_warnings = []
    for warning in [*warnings, *focus_warnings]:
        st.warning(warning)


def report_or_reason(
    reason: str | None, load: Callable[[], T | None], url: tuple[str, Mapping[str, str]] | None = None
) -> T | None:
    """The view's report from ``load()``; or None with the reason shown — "Not run: <reason>."
    for a view its engine refuses (``load`` is not called), the budget's own message when it
    could never fit — and then the URL written, when ``url`` (the page, its query) is given (a page
    that runs writes it itself, once it knows the view's focus)."""
    if reason is None:
        report = load()
        if report is not None:
            return report
    else:
        st.error(f"Not run: {reason}.")
    if url is not None:
        write_url(*url)
    return None


def write_url(page: str, query: Mapping[str, str]) -> None:
    """The URL follows the view, and ``page`` remembers it (``view`` tells a link from outside by
    it). A URL that already says this view — every parameter it has is the view's, the others at
    their defaults, as a link from the home page's index — is left as it is, its section anchor
    (``#…``) with it. Else the view's whole query is sent. A link to the page already open, inside
    the session, does not change the browser's address by itself: then it is sent too."""
    query = dict(query)
    url = st.query_params.to_dict()
    defaults = st.session_state.get(f"{page}.defaults", {})
    says_this_view = set(url) <= set(query) and all(url.get(k, defaults.get(k)) == v for k, v in query.items())
    remembered = st.session_state.get(f"{page}.url")
    in_session_link = remembered is not None and url != remembered
    if says_this_view and not in_session_link:
        query = url
    else:
        st.query_params.from_dict(query)
    st.session_state[f"{page}.url"] = query


def verdict_badge(verdict: str, detail: str, refused: bool = False, key: str = "verdict") -> None:
    """The verdict as a compact coloured badge that keeps the word match or mismatch, then one
    line of detail. Both sides refusing the input is neutral grey: it is not a success."""
    with st.container(key=key):
        if refused:
            st.badge(f"{verdict}: both refuse this input", icon=":material/block:", color="gray")
        elif verdict == "match":
            st.badge("match", icon=":material/check_circle:", color="green")
        else:
            st.badge("mismatch", icon=":material/error:", color="red")
        st.caption(detail)


def picture(svg: str | None, alt: str) -> None:
    """A static SVG picture (drawn by the explorer), as wide as it was drawn or its column."""
    if svg:
        st.image(svg, width="content", alt=alt)


def chart(figure: Mapping[str, Any], key: str, empty: str = "Nothing to draw.") -> None:
    """A prepared Plotly figure (a dict from the cache), full width; ``empty`` says why there is
    nothing to draw when the figure has no trace."""
    if figure.get("data"):
        st.plotly_chart(dict(figure), key=key, width="stretch", config=CHART_CONFIG)
    else:
        st.caption(empty)


def take_upload(prefix: str, label: str, types: list[str], max_mb: int, caption: str,
                read: Callable[[str, bytes], None]) -> None:
    """A file uploader (and its ``caption``) whose file goes to ``read(name, data)`` once and is
    then let go: a new uploader (key ``{prefix}.upload.{n + 1}``) replaces it, so Streamlit drops
    the bytes, and the page reruns. ``read`` keeps what it needs in the session."""
    n = st.session_state.setdefault(f"{prefix}.upload_n", 0)
    upload = st.file_uploader(label, type=types, key=f"{prefix}.upload.{n}", max_upload_size=max_mb)
    st.caption(caption)
    if upload is not None:
        read(upload.name, upload.getvalue())
        st.session_state[f"{prefix}.upload_n"] = n + 1
        st.rerun()


def upload_in_worker(fn: Callable[[str, bytes], T], name: str, data: bytes, cost: int, doing: str,
                     deadline_s: float = 60.0) -> tuple[str, T | str]:
    """``("ok", fn(name, data))`` for a visitor's upload, or ``("refused", reason)``. It runs in a
    fork of the fork server (its address space capped at what it maps + 4 × the file + 1 GB:
    ``workers.read_upload``, which also turns the file's ``ValueError`` into a refusal), admitted
    by the budget for ``cost`` bytes, its result in no shared cache (``ResultCache(0)``). Whatever
    stops it comes back as a refusal."""
    if not ensure_fork_server("to read uploaded files"):
        return "refused", "the server has no room to start a worker now; try again in a minute"

    def job(stopped: Callable[[], bool]) -> tuple[str, T | str]:
        try:
            return workers.run_in_fork(workers.read_upload, (fn, name, data, 4 * len(data) + 2**30), deadline_s)
        except forks.ForkError as exc:
            return "refused", f"the worker could not read it ({exc})"

    result = heavy(("upload", fn.__qualname__, len(data)), cost, job, doing, cache=serve.ResultCache(0))
    return result if result is not None else ("refused", "over the server's memory budget")
