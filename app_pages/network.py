"""``/network``: the question, answered by running it — BatchNorm2d after the convolutions,
BatchNorm1d in the classifier — with torch's layers and bnviz's trained side by side."""

from __future__ import annotations

import streamlit as st

from app_pages.common import (
    chart,
    heavy,
    init_widgets,
    picture,
    read_view,
    report_or_reason,
    show_warnings,
    verdict_badge,
    write_url,
)
from bnviz.explorer.explain import markdown_table, sci
from bnviz.explorer.network import (
    MODES,
    NetworkConfig,
    NetworkReport,
    all_figures,
    refusal,
    run_network,
    stop_pictures,
    stop_text,
)
from bnviz.explorer.query import NETWORK

PREFIX = "net."
KINDS = {"batch": "int", "image": "int", "channels": "int", "steps": "int", "seed": "int"}


def load_report(config: NetworkConfig) -> NetworkReport | None:
    """The trained networks' report, within the server's memory budget (None when it could never fit)."""
    return heavy(config, config.estimate_bytes(), lambda stopped: run_network(config, stopped),
                 "Training both networks…")  # fmt: skip


@st.cache_data(max_entries=32, show_spinner=False)
def cached_figures(config: NetworkConfig, _report: NetworkReport) -> dict:
    return {**{name: fig.to_dict() for name, fig in all_figures(_report).items()}, "stops": stop_pictures(_report)}


def sidebar() -> None:
    sb = st.sidebar
    sb.header("The network")
    sb.number_input("Batch size", step=1, key=PREFIX + "batch", help="2 to 256 images per step.")
    sb.number_input("Image size", step=2, key=PREFIX + "image", help="Even, 4 to 64 pixels a side.")
    sb.number_input("Channels of the first conv", step=1, key=PREFIX + "channels", help="1 to 32; the second has 2×.")
    sb.number_input("SGD steps", step=1, key=PREFIX + "steps", help="0 to 50 training steps.")
    sb.text_input("Learning rate", key=PREFIX + "lr")
    sb.number_input("Seed", step=1, key=PREFIX + "seed")
    sb.radio("Mode of the evaluation", MODES, key=PREFIX + "mode", horizontal=True,
             help="eval: the running statistics normalize; train: each batch's own.")  # fmt: skip


def architecture(config: NetworkConfig) -> str:
    c, half = config.channels, config.image // 2
    return (
        f"Conv2d(3→{c}) → **BatchNorm2d({c})** → ReLU → MaxPool2d(2) → Conv2d({c}→{2 * c}) → "
        f"**BatchNorm2d({2 * c})** → ReLU → Flatten → Linear({2 * c * half * half:,}→32) → **BatchNorm1d(32)** → "
        "ReLU → Linear(32→3)"
    )


def main() -> None:
    init_widgets("network", NETWORK, NetworkConfig(), KINDS, PREFIX)
    sidebar()
    config, warnings = read_view("network", NETWORK, NetworkConfig(), PREFIX)
    write_url(NETWORK.to_query(config))
    st.title("BatchNorm2d after the convolutions, BatchNorm1d in the classifier")
    st.caption(
        "The same small CNN twice — torch's batch-norm layers in one, bnviz's in the other — trained in lockstep "
        "on a synthetic three-class image task. Every control is in the URL."
    )
    show_warnings("network", config, warnings)
    report = report_or_reason(refusal(config), lambda: load_report(config))
    if report is None:
        return
    figures = cached_figures(config, report)
    failing = [layer.name for layer in report.layers if not layer.ok]
    verdict_badge(
        report.verdict,
        "Every layer of the bnviz network agrees with torch's after training." if not failing
        else f"Layers that differ beyond float32 rounding: {', '.join(failing)}",
    )  # fmt: skip
    st.markdown(architecture(config))

    st.subheader("What arrives at each batch norm")
    for stop in report.stops:
        left, right = st.columns([2, 3], gap="medium")
        with left:
            picture(figures["stops"][stop.name], f"the values that share one statistic in layer {stop.name}")
        with right:
            st.markdown(f"**Layer {stop.name}: {stop.layer}**, input shape `{stop.shape}`")
            st.markdown(stop_text(stop))
            st.caption(f"{stop.other_layer} on this tensor — torch and bnviz raise the same:")
            st.code(stop.other_error, language=None, wrap_lines=True)

    st.subheader("Training both networks")
    left, right = st.columns(2, gap="medium")
    with left:
        chart(figures["loss"], "chart-loss", "No training steps (steps = 0).")
    with right:
        chart(figures["logits"], "chart-logits")
    acc = report.accuracy
    st.caption(
        f"Accuracy on the evaluation batch ({config.mode} mode): bnviz {acc['bnviz']:.0%}, torch {acc['torch']:.0%}."
    )

    st.subheader("Layer by layer")
    rows = [
        {
            "layer": layer.name,
            "bnviz − torch": sci(layer.max_abs),
            "torch − float64": sci(layer.err_torch),
            "verdict": "match" if layer.ok else "mismatch",
        }
        for layer in report.layers
    ]
    st.markdown(markdown_table(rows))
    st.caption(
        "Largest |difference| over parameters, gradients of the last step, running statistics and logits, after "
        "training. A layer matches when bnviz is within 1e-5 of the values' size from torch, or no further from a "
        "float64 run than torch itself."
    )
    chart(figures["layers"], "chart-layers")
    st.info(
        "Why two classes at all? BatchNorm1d, 2d and 3d compute the same thing — one statistic per channel (dim 1) "
        "over every other dim — and differ only in the rank they accept. bnviz.BatchNorm, the universal layer, "
        "takes any rank ≥ 2: the layer explorer shows it next to torch's."
    )
    st.page_link("app_pages/layer.py", label="The universal layer on a rank-6 tensor",
                 query_params={"layer": "BatchNorm", "shape": "2,3,4,4,2,2"})  # fmt: skip


main()
