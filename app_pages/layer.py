"""The layer explorer (``/``): widgets ⇄ URL → Config → cached comparison → figures. No maths here."""

from __future__ import annotations

import streamlit as st
import torch

from bnviz.bench import measure_config
from bnviz.explorer.compare import DTYPES, LAYERS, MAX_STEPS, MODES, Config, Report, refusal, run_comparison
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.explain import channel_table, code_snippet, error_hint, mode_note, reduced_axes
from bnviz.explorer.plots import all_figures
from bnviz.explorer.query import PARAMS, format_value, parse_query, to_query


@st.cache_data(max_entries=64, show_spinner=False)
def cached_report(config: Config) -> Report:
    return run_comparison(config)


@st.cache_data(max_entries=32, show_spinner=False)
def cached_speed(config: Config) -> dict[str, float]:
    return measure_config(config)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_figures(config: Config) -> dict:
    return {name: fig.to_dict() for name, fig in all_figures(cached_report(config)).items()}


def init_from_url() -> None:
    """First run of a session: the URL sets every widget; refused values are reported once."""
    if "initialized" in st.session_state:
        return
    config, warnings = parse_query(st.query_params.to_dict())
    for name in PARAMS:
        st.session_state[name] = format_value(name, config)
    st.session_state["seed"], st.session_state["steps"] = config.seed, config.steps
    st.session_state["affine"], st.session_state["track"] = config.affine, config.track_running_stats
    st.session_state["url_warnings"] = warnings
    st.session_state["url_config"] = config
    st.session_state["initialized"] = True


def sidebar() -> dict[str, str]:
    """The controls; returns their values as URL text."""
    sb = st.sidebar
    sb.header("Set-up")
    sb.selectbox("Layer", LAYERS, key="layer", help="BatchNorm is bnviz's universal layer: any rank ≥ 2.")
    sb.text_input("Shape (N, C, …)", key="shape", help="Comma-separated, channels on dim 1, e.g. 8,3,16,16")
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
    sb.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed")
    sb.number_input("Training steps before", min_value=0, max_value=MAX_STEPS, step=1, key="steps")
    values = {name: st.session_state[name] for name in PARAMS}
    values["affine"] = "true" if values["affine"] else "false"
    values["track"] = "true" if values["track"] else "false"
    return {k: str(v) for k, v in values.items()}


def verdict(report: Report) -> None:
    with st.container(key="verdict", border=True):
        if report.error is not None:
            err = report.error
            if err.agree:
                st.markdown(f"### **match** — both raise the same error ({err.stage})")
            else:
                st.markdown(f"### **mismatch** — the two sides raise different errors ({err.stage})")
            left, right = st.columns(2)
            left.caption("torch raised")
            left.code(err.torch or "nothing", language=None, wrap_lines=True)
            right.caption("bnviz raised")
            right.code(err.bnviz or "nothing", language=None, wrap_lines=True)
            hint = error_hint(err.torch or err.bnviz)
            if hint:
                st.info(hint)
            return
        failing = [q.name for q in report.quantities if not q.ok]
        dtype = report.config.dtype
        if not failing:
            st.markdown(
                f"### **match** — bnviz agrees with torch on every quantity ({dtype}: rtol={report.rtol:g}, "
                f"atol={report.atol:g}, or closer to the float64 truth than torch)"
            )
        else:
            st.markdown(f"### **mismatch** — outside {dtype} tolerance: {', '.join(failing)}")


def parity_table(report: Report) -> None:
    def sci(v: float | None) -> str:
        return "—" if v is None else f"{v:.2e}"

    rows = [
        {
            "quantity": q.name,
            "max |bnviz − torch|": sci(q.max_abs),
            "max relative": sci(q.max_rel),
            "bit-exact": f"{q.exact_fraction:.0%}",
            "bnviz error vs float64": sci(q.err_bnviz),
            "torch error vs float64": sci(q.err_torch),
            "agrees": "yes" if q.ok else "NO",
        }
        for q in report.quantities
    ]
    st.dataframe(rows, hide_index=True, width="stretch")


def axes_section(report: Report) -> None:
    st.subheader("Which axes are reduced")
    config = report.config
    st.markdown(reduced_axes(config))
    st.caption(mode_note(config))
    if report.channels.get("mean"):
        count = len(report.channels["mean"])
        channel = st.number_input("Channel", 0, count - 1, 0, key="channel") if count > 1 else 0
        st.table(channel_table(report, int(channel)))


def main() -> None:
    init_from_url()
    values = sidebar()
    config, typed_warnings = parse_query(values)
    query = to_query(config)
    if st.query_params.to_dict() != query:  # the URL follows the view; unchanged, nothing is sent
        st.query_params.from_dict(query)

    st.title("bnviz — batch norm from scratch, next to torch")
    st.caption(
        "bnviz's own forward and backward (no torch normalization kernel) run beside torch's layer on the "
        "same batches. Every control is in the URL: copy it to share this exact view."
    )
    # The link's refused values are reported until the reader changes the view.
    url_warnings = st.session_state["url_warnings"] if config == st.session_state["url_config"] else []
    for warning in url_warnings + typed_warnings:
        st.warning(warning)

    reason = refusal(config)
    if reason is not None:
        st.error(f"Not run: {reason}.")
        return
    report = cached_report(config)
    verdict(report)
    if report.error is not None:
        st.subheader("Code")
        st.code(code_snippet(config), language="python")
        return
    parity_table(report)
    axes_section(report)
    figures = cached_figures(config)
    for name, title in (
        ("distributions", "Distributions"),
        ("running", "Running statistics"),
        ("gradients", "Gradients"),
        ("differences", "Differences from torch"),
    ):
        st.subheader(title)
        if figures[name]["data"]:
            st.plotly_chart(figures[name], key=f"chart-{name}", width="stretch", config={"displaylogo": False})
        else:
            st.caption("Nothing to draw: with track_running_stats=False there are no running statistics.")
    st.subheader("Code")
    st.caption("A script that reproduces this comparison:")
    st.code(code_snippet(config), language="python")
    performance_section(config)


def performance_section(config: Config) -> None:
    """Speed on this configuration, on demand: timing costs the server real work."""
    st.subheader("Performance")
    what = "forward + backward" if config.mode == "train" else "forward"
    st.caption(
        f"Median time of one {what} on this shape, bnviz and torch interleaved on this server. "
        "Measured only when asked, then cached; `python -m bnviz.bench` runs the full benchmark."
    )
    if st.button("Measure bnviz vs torch", key="measure") or st.session_state.get("measured") == config:
        st.session_state["measured"] = config
        speed = cached_speed(config)
        left, mid, right = st.columns(3)
        left.metric("torch", f"{speed['torch']:.3f} ms")
        mid.metric("bnviz", f"{speed['bnviz']:.3f} ms")
        right.metric("bnviz / torch", f"{speed['ratio']:.2f}×")


main()
