"""The layer explorer (``/``): widgets ⇄ URL → Config → cached comparison → figures. No maths here."""

from __future__ import annotations

import math
from dataclasses import replace

import streamlit as st
import torch

from app_pages import common
from app_pages.common import (
    chart,
    ensure_fork_server,
    heavy,
    load,
    picture,
    report_or_reason,
    show_warnings,
    verdict_badge,
    view,
    write_url,
)
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.family.url import FAMILY, FamilyConfig
from bnviz.explorer.layer import engine
from bnviz.explorer.layer.engine import PLOT_CHANNELS, Report
from bnviz.explorer.layer.figures import all_figures, cube
from bnviz.explorer.layer.own import MAX_BYTES, OwnTensor, own_tensor, read_in_worker, unpack, upload_bytes
from bnviz.explorer.layer.timing import measure_config, measure_config_compiled
from bnviz.explorer.layer.url import (
    DTYPES,
    LAYER,
    LAYER_FOCUS,
    LAYERS,
    LAYOUTS,
    MAX_ELEMENTS,
    MODES,
    Config,
    LayerFocus,
)
from bnviz.explorer.layer.words import (
    agreement_note,
    bit_exact_note,
    channel_rows,
    channels_first_fix,
    code_snippet,
    empty_note,
    eps_rows,
    eps_text,
    error_hint,
    explorer_note,
    features_last_warning,
    focus_label,
    gradient_text,
    mode_note,
    modes_text,
    momentum_note,
    other_mode_view,
    precision_warning,
    quantity_cells,
    reduced_axes,
    speed_text,
    truth_cells,
)
from bnviz.explorer.picture import cells_note
from bnviz.explorer.query import inert
from bnviz.explorer.questions import INDEX_HEADING, WHAT_BATCH_NORM_DOES, index_html
from bnviz.explorer.text import E_NOTATION, markdown_table
from bnviz.hosting import forks, serve

KINDS = {"affine": "bool", "track": "bool", "seed": "int", "steps": "int", "train_n": "int"}


OWN = "layer.own"  # the visitor's own tensor (an OwnTensor): this session's, no one else's
MAX_ELEMENTS_TEXT = f"{MAX_ELEMENTS:,}"


def load_report(config: Config, moved: bool = False) -> Report | None:
    """The comparison, within the server's memory budget (None when it could never fit). On the
    visitor's own tensor it runs budgeted like any view, its report kept in this session only
    (``common.in_session``); ``moved``: on the tensor with its features moved to dim 1 (the fix)."""
    if not config.own:
        return load(config, engine.run, "Running bnviz and torch side by side…")
    own: OwnTensor | None = st.session_state.get(OWN)
    if own is None or own.digest != config.own:
        return None
    values = own.values.movedim(-1, 1) if moved else own.values

    def run() -> Report | None:
        return heavy(("own", config), config.estimate_bytes(), lambda stopped: engine.run(config, stopped, own=values),
                     "Running bnviz and torch on your tensor…", cache=serve.ResultCache(0))  # fmt: skip

    return common.in_session(f"layer.own.report.{'moved' if moved else 'as-is'}", config, run)


def with_own(config: Config) -> Config:
    """The view on the visitor's tensor, when there is one: its shape, dtype and digest."""
    own: OwnTensor | None = st.session_state.get(OWN)
    if own is None:
        return config
    return replace(config, shape=own.shape, dtype=own.dtype, own=own.digest)


def read_upload(name: str, data: bytes) -> tuple[str, object]:
    """``own.read_in_worker`` in a worker (``common.upload_in_worker``): ("ok", packed) or ("refused", why)."""
    return common.upload_in_worker(read_in_worker, name, data, upload_bytes(len(data)), "Reading your tensor…")


def read_own(name: str, data: bytes) -> None:
    """An uploaded tensor read (in a worker): this session's own tensor, or why it was refused."""
    if len(data) > MAX_BYTES:
        status, value = "refused", f"{len(data):,} bytes is over the limit of {MAX_BYTES:,}"
    else:
        status, value = read_upload(name, data)
    if status == "ok":
        st.session_state[OWN] = own_tensor(name, unpack(value))  # type: ignore[arg-type]
        st.session_state.pop("layer.own_refused", None)
    else:
        st.session_state["layer.own_refused"] = str(value)


def own_section(config: Config) -> None:
    """Upload a tensor to run the explorer on; while one is loaded, what it is and the way back."""
    own: OwnTensor | None = st.session_state.get(OWN)
    with st.expander("Run it on your own tensor (.npy, .pt or .safetensors)", expanded=own is not None):
        common.take_upload(
            "layer", f"One tensor of rank 2 to 5, channels on dim 1 (or features last, with the layout set so), "
            f"float16, bfloat16, float32 or float64, up to {MAX_ELEMENTS_TEXT} values",
            ["npy", "pt", "pth", "safetensors"], math.ceil(MAX_BYTES / 2**20),
            "Read in a separate process with a memory and a time limit: `.npy` with `allow_pickle=False`, `.pt` "
            "through `torch.load(weights_only=True)` (a pickle that would run code is refused and runs nothing), "
            "`.safetensors` by bnviz's own reader. Your tensor stays in this session only, is shared with no one, and "
            "is gone when you close the tab. A link cannot carry a file: the page's link opens a synthetic tensor of "
            "the same shape.", read_own)  # fmt: skip
        refused = st.session_state.get("layer.own_refused")
        if refused:
            st.error("Refused: " + inert(refused, 400))
        if own is not None:
            st.text(f"Running on your tensor {own.name[:80]}: shape {own.shape}, {own.dtype}.")
            if st.button("Back to the synthetic tensor", key="layer.own_clear"):
                del st.session_state[OWN]
                st.rerun()


def draw(report: Report, channel: int) -> dict:
    """The picture of the channel's values, and every chart."""
    return {"cube": cube(report, channel), **all_figures(report, channel)}


def load_speed(config: Config) -> dict[str, float] | None:
    return heavy(("speed", config), config.speed_bytes(), lambda stopped: measure_config(config), "Timing…")


def load_compiled_speed(config: Config) -> dict[str, float] | None:
    """The compiled timing, in a process of its own (``timing.measure_config_compiled``)."""
    if not ensure_fork_server("the timing process comes from"):
        return None
    doing = "Compiling both layers with torch.compile in a fresh process, then timing them (15–30 s)…"
    return heavy(("compiled speed", config), config.compiled_speed_bytes(),
                 lambda stopped: measure_config_compiled(config), doing)  # fmt: skip


def sidebar() -> None:
    """The controls; their values live in session state under their URL names."""
    sb = st.sidebar
    sb.header("Set-up")
    sb.selectbox("Layer", LAYERS, key="layer", help="BatchNorm is bnviz's universal layer: any rank ≥ 2.")
    sb.text_input("Shape", key="shape", help="Comma-separated, e.g. 8,3,16,16 — N first.")
    sb.radio(
        "Layout of the shape",
        LAYOUTS,
        key="layout",
        format_func={"channels-first": "(N, C, L…) channels on dim 1", "features-last": "(N, L…, C) features last"}.get,
        help="Transformers keep (batch, length, features): the layer is then built for the last dim.",
    )
    sb.radio("Mode of the displayed batch", MODES, key="mode", horizontal=True)
    sb.text_input(
        "Momentum (0–1, or none)",
        key="momentum",
        help="torch's momentum weights the new batch, Keras/Flax's the old value: torch 0.1 = Keras 0.9, "
        "Keras' default 0.99 = torch 0.01. none: a cumulative average.",
    )
    sb.text_input(
        "eps", key="eps", help="Added to the variance under the square root. torch's default 1e-5, Keras' 1e-3."
    )
    sb.checkbox("affine (γ, β)", key="affine")
    sb.checkbox("track_running_stats", key="track")
    sb.selectbox("dtype", tuple(DTYPES), key="dtype")
    devices = ("cpu", "cuda") if torch.cuda.is_available() or st.session_state.get("device") == "cuda" else ("cpu",)
    sb.selectbox("Device", devices, key="device")
    sb.selectbox("Input distribution", DISTRIBUTIONS, key="dist")
    sb.number_input("Seed", step=1, key="seed")
    sb.number_input("Training steps before", step=1, key="steps", help="0 to 100 train-mode batches first.")
    sb.number_input("Training batch size", step=1, key="train_n", help="N of each training batch before the shown one.")


def proof_section(report: Report, figures: dict) -> None:
    """The proof, after the lesson: the verdict, then — folded — every compared quantity, the
    differences' histograms, the gradients side by side, and the timing."""
    config = report.config
    st.subheader("The proof: bnviz against torch", anchor="proof")
    failing = [q.name for q in report.quantities if not q.ok]
    verdict_badge(
        report.verdict,
        "bnviz's from-scratch layer and torch's give the same numbers on this tensor: every output, gradient and "
        "running statistic, compared value by value below." if not failing
        else f"bnviz and torch differ beyond {config.dtype} rounding on: {', '.join(failing)}",
    )  # fmt: skip
    # folded behind a toggle, not an expander: an expander's charts are drawn even when closed, and
    # they made the front door's first picture 0.4 s later (scripts/first_chart.py); a mismatch unfolds
    unfolded = st.toggle("Show the comparison, value by value: tables, differences, gradients and timing",
                         key="proof")  # fmt: skip
    if not (unfolded or failing):
        return
    with st.container(border=True):
        st.markdown(markdown_table([quantity_cells(q) for q in report.quantities]))
        if config.dtype != "float64":
            st.markdown(markdown_table([truth_cells(q) for q in report.quantities if not q.absent]))
        st.caption(
            f"{E_NOTATION} max abs diff is the largest |bnviz − torch| over the values. A quantity agrees when it is "
            f"within {config.dtype}'s tolerance of torch (rtol={report.rtol:g}, atol={report.atol:g}), or when bnviz "
            "is about as close as torch to a float64 run of the same values (the second table: within 8× of torch's "
            "error; at a large mean both are at float32's limit)."
        )
        st.markdown("**Differences from torch**")
        chart(figures["differences"], "chart-differences")
        st.caption(bit_exact_note(report))
        st.markdown("**The gradients, both sides**")
        st.caption("Backpropagated from the same fixed upstream gradient (every value N(0, 1)) on both sides.")
        chart(figures["gradients"], "chart-gradients", "Nothing to draw.")
        if config.own:
            st.caption("The timing runs on a synthetic tensor of your tensor's shape and dtype: the time depends on "
                       "them, not on the values.")  # fmt: skip
        performance_section(replace(config, own=""))


def teach_section(report: Report, figures: dict, channel: int) -> None:
    """What batch norm does to this tensor: the picture next to one channel's numbers."""
    config = report.config
    st.subheader("What batch norm does to this tensor", anchor="what-batch-norm-does")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        picture(figures["cube"], "the tensor as a box with the values that share one statistic shaded")
        chart(figures["cells"], "chart-cells", "No cells to draw: the batch is empty.")
        note = cells_note(report.cells) if report.cells else ""
        st.caption(
            "Each coloured block shares one mean and one variance; hover a cell for its value and its group's "
            "statistics. " + note
        )
    with right:
        st.markdown(reduced_axes(config))
        st.table(channel_rows(report, channel), hide_index=True)
        st.caption(mode_note(config))
    for note in (precision_warning(report), empty_note(report)):
        if note:
            st.warning(note)
    agreement = agreement_note(report)
    if agreement:
        st.info(agreement, icon=":material/info:")
    if report.eps is not None:
        with st.expander("What eps changes: torch's 1e-5 against Keras' 1e-3, measured on this batch",
                         expanded=config.eps != Config().eps):  # fmt: skip
            st.markdown(eps_text(report, channel))
            st.dataframe(eps_rows(report), hide_index=True)  # scrolls sideways on a phone


def modes_section(report: Report, figures: dict, channel: int) -> None:
    """The same batch in train and in eval mode, and what torch.no_grad() does and does not do."""
    st.subheader("Train mode and eval mode on this batch", anchor="train-and-eval")
    left, right = st.columns([3, 2], gap="medium")
    with left:
        chart(figures["modes"], "chart-modes", "Nothing to draw: an empty batch has no values.")
    with right:
        modes = report.modes
        st.markdown(modes_text(report, channel))
        ng = modes["no_grad"]
        if ng["running_mean_before"] is not None and not modes["errors"]["train"] and channel < len(
            ng["running_mean_before"]
        ):
            st.markdown(
                f"`torch.no_grad()` does not switch modes: in train mode under no_grad the output is still the "
                f"train-mode one, and running_mean of channel {channel} still moves "
                f"{ng['running_mean_before'][channel]:.6g} → {ng['running_mean_after'][channel]:.6g} "
                f"(num_batches_tracked {ng['num_batches_tracked_before']} → {ng['num_batches_tracked_after']}). "
                "Only `.eval()` switches to the running statistics."
            )


def error_section(report: Report) -> None:
    """Both sides raised: the message, where, a true hint, and for a features-last tensor the fix."""
    err, config = report.error, report.config
    assert err is not None
    if err.agree:
        st.markdown(f"**torch and bnviz both refuse this input**, {err.stage}:")
        st.code(err.torch or "", language=None, wrap_lines=True)
    else:
        left, right = st.columns(2)
        left.caption("torch raised")
        left.code(err.torch or "nothing", language=None, wrap_lines=True)
        right.caption("bnviz raised")
        right.code(err.bnviz or "nothing", language=None, wrap_lines=True)
    hint = error_hint(report)
    if hint:
        st.info(hint)
    other = other_mode_view(report)
    if other is not None:
        st.page_link("app_pages/layer.py", label=other[0], query_params=LAYER.to_query(other[1]))
    if config.features_last:
        fix_section(config)


def fix_section(config: Config) -> None:
    """For a features-last tensor: the permuted view, run, and LayerNorm over the features."""
    fixed = config.channels_first()
    st.subheader("The fix, side by side", anchor="the-fix")
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown(f"**Batch norm on the features.** {channels_first_fix(config)} The same values, features on "
                    "dim 1:")  # fmt: skip
        reason = fixed.refusal()
        if reason:
            st.caption(f"Not run: {reason}.")
        else:
            fixed_report = load_report(fixed, moved=True)
            if fixed_report is not None:
                verdict_badge(fixed_report.verdict, "bnviz against torch on the permuted tensor", key="verdict-fix")
            st.page_link("app_pages/layer.py", label="Open the permuted view", query_params=LAYER.to_query(fixed))
    with right:
        st.markdown(
            "**Or normalize each position over its features** — LayerNorm(C), what a transformer uses. It needs "
            "no batch statistics at all; the normalization family compares it with batch norm:"
        )
        st.page_link("app_pages/family.py", label="LayerNorm over the features, beside batch norm",
                     query_params=FAMILY.to_query(FamilyConfig(shape=config.shape, ln_over="last")))  # fmt: skip


def main() -> None:
    """The page; the sidebar's controls are drawn last, so that the browser draws the first picture
    before them (their values are in session state from the start: ``view``)."""
    config, warnings = view("layer", LAYER, Config(), KINDS)
    focus, focus_warnings = view("layer.focus", LAYER_FOCUS, LayerFocus(),
                                 {"channel": "int", "code": "bool", "proof": "bool"}, url_page="layer")  # fmt: skip
    content(config, focus, warnings, focus_warnings)
    sidebar()


def content(config: Config, focus: LayerFocus, warnings: list[str], focus_warnings: list[str]) -> None:
    """Everything in the main area: the front door or the folded index, the lesson, the proof."""
    home = not st.query_params and config == Config() and focus == LayerFocus()
    st.title("Batch norm, run on your tensor")
    if home:  # the front door: what batch norm does, then the questions, each a link to its answer
        st.markdown(WHAT_BATCH_NORM_DOES)
        st.markdown(INDEX_HEADING)
        st.html(index_html())  # our own strings, escaped: no user text in it
    else:
        with st.expander(INDEX_HEADING):
            st.html(index_html())
    st.subheader("The layer explorer", anchor="explorer")
    config = with_own(config)
    st.caption(explorer_note(config))
    own_section(config)
    show_warnings("layer", config, warnings, focus_warnings)
    query = {**LAYER.to_query(config), **LAYER_FOCUS.to_query(focus)}
    report = report_or_reason(config.refusal(), lambda: load_report(config), ("layer", query))
    if report is None:
        return
    count = min(report.config.num_features, PLOT_CHANNELS) if report.error is None else 0
    channel = min(focus.channel, max(count - 1, 0))
    write_url("layer", {**LAYER.to_query(config), **LAYER_FOCUS.to_query(replace(focus, channel=channel))})

    if report.error is not None:
        agree = report.error.agree
        detail = "bnviz raises torch's error, word for word." if agree else "The two sides raise different errors."
        verdict_badge(report.verdict, detail, refused=agree)
        error_section(report)
        code_section(config)
        return
    wrong_axis = features_last_warning(config)
    if wrong_axis:
        st.warning(wrong_axis, icon=":material/warning:")
    if count > 1:
        st.session_state["channel"] = channel
        label, short = focus_label(config)
        st.segmented_control(label, list(range(count)), key="channel", required=True,
                             format_func=lambda c: f"{short}={c}")  # fmt: skip
    if config.own:  # the visitor's tensor: drawn for this session, kept in no shared cache
        figures = common.in_session("layer.own.figures", (config, channel),
                                    lambda: common.plain_figures(draw, report, (channel,)))  # fmt: skip
    else:
        figures = common.figures(config, (channel,), draw, report)
    teach_section(report, figures, channel)
    if wrong_axis:
        fix_section(config)
    modes_section(report, figures, channel)
    nothing = "Nothing to draw: an empty batch has no values." if not config.numel else "Nothing to draw."
    st.subheader("Distributions")
    chart(figures["distributions"], "chart-distributions", nothing)
    st.subheader("Running statistics", anchor="running-statistics")
    st.markdown(momentum_note(config))
    if config.track_running_stats:
        st.caption(f"Channel {channel}: bnviz the red line, torch the blue circles, the population value dashed; "
                   "the other channels in grey. Step 0 is the initial state, the last step the displayed batch.")
    chart(figures["running"], "chart-running", "Nothing to draw: with track_running_stats=False there are no running "
          "statistics.")  # fmt: skip
    st.subheader("What the gradient through batch norm looks like", anchor="gradients")
    st.markdown(gradient_text(report, channel))
    st.caption("Per channel, the upstream gradient ∂L/∂y (arriving at the output) and ∂L/∂x (leaving for the layers "
               "before): on the left the mean over the channel's values, on the right the cosine with x̂.")
    chart(figures["gradient_lesson"], "chart-gradient-lesson", nothing)
    proof_section(report, figures)
    code_section(config)


def code_section(config: Config) -> None:
    """The standalone script, shown on demand (its highlighting is the page's slowest element)."""
    st.subheader("Code")
    if st.toggle("Show a standalone script (torch and bnviz only) that reruns this comparison and prints its numbers",
                 key="code"):  # fmt: skip
        st.code(code_snippet(config), language="python")


def timing_row(speed: dict[str, float], suffix: str) -> None:
    """torch's and bnviz's median times and their ratio, side by side."""
    left, mid, right = st.columns(3)
    left.metric(f"torch{suffix}", f"{speed['torch']:.3f} ms")
    mid.metric(f"bnviz{suffix}", f"{speed['bnviz']:.3f} ms")
    right.metric("bnviz / torch", f"{speed['ratio']:.2f}×")


def performance_section(config: Config) -> None:
    """Speed on this configuration: the default view's measured on opening (then shared through the
    cache), any other on demand — timing costs the server real work."""
    st.markdown("**Speed on this tensor**")
    what = "forward + backward" if config.mode == "train" else "forward"
    st.caption(
        f"One {what} on this shape, bnviz and torch interleaved round by round, each with one thread, on this "
        "shared server. The default view is timed when first opened and kept for every visitor; any other view when "
        "asked. `python -m bnviz.bench` runs the full benchmark."
    )
    ready = config == Config()
    if ready or st.button("Measure bnviz vs torch", key="measure") or st.session_state.get("measured") == config:
        st.session_state["measured"] = config
        speed = load_speed(config)
        if speed is not None:  # else over the budget: the reason is shown
            timing_row(speed, "")
            st.caption(speed_text(speed))

    st.caption(
        "Under `torch.compile`: both layers compiled by inductor (C++ on CPU, Triton on GPU) in a fresh process, "
        "then timed the same way; the compile times are shown. It takes 15–30 s."
    )
    if st.button("Compile both and measure", key="measure_compiled") or st.session_state.get("compiled") == config:
        st.session_state["compiled"] = config
        try:
            speed = load_compiled_speed(config)
        except forks.ForkError as exc:
            st.error(f"The compiled timing failed: {exc}")
            return
        if speed is None:
            return
        timing_row(speed, ", compiled")
        st.caption(
            f"Compile time: bnviz {speed['bnviz compile s']:.1f} s, torch {speed['torch compile s']:.1f} s — each "
            f"layer's own compile, from an empty cache. Before them, inductor's start-up in the fresh process took "
            f"{speed['inductor start-up s']:.1f} s (once per process, whatever is compiled). The timing process "
            f"held {speed['process bytes'] / 2**20:.0f} MB of its own, returned when it ended. Eager in that same "
            f"process: torch {speed['eager torch']:.3f} ms, bnviz {speed['eager bnviz']:.3f} ms (the server's own "
            "timing above runs beside its other work)."
        )


main()
