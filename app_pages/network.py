"""``/network``: the question, answered by running it — BatchNorm2d after the convolutions,
BatchNorm1d in the classifier — with torch's layers and bnviz's trained side by side."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from app_pages import common
from app_pages.common import (
    chart,
    load,
    picture,
    report_or_reason,
    show_warnings,
    verdict_badge,
    view,
    write_url,
)
from bnviz.explorer.layer.url import LAYER, Config
from bnviz.explorer.network import engine
from bnviz.explorer.network.engine import (
    NetworkReport,
    all_figures,
    divergence_heading,
    divergence_text,
    eval_samples,
    stop_pictures,
    stop_text,
)
from bnviz.explorer.network.url import MODES, NETWORK, NetworkConfig
from bnviz.explorer.text import markdown_table, sci_unbroken

PREFIX = "net."
KINDS = {"batch": "int", "image": "int", "channels": "int", "steps": "int", "seed": "int"}


def draw(report: NetworkReport) -> dict:
    """Every chart, and the pictures of what reaches each batch norm."""
    return {**all_figures(report), "stops": stop_pictures(report)}


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
    config, warnings = view("network", NETWORK, NetworkConfig(), KINDS, PREFIX)
    sidebar()
    write_url("network", NETWORK.to_query(config))
    st.title("BatchNorm2d after the convolutions, BatchNorm1d in the classifier")
    st.caption(
        "The same small CNN twice — torch's batch-norm layers in one, bnviz's in the other — trained with SGD on a "
        "synthetic three-class image task. Before each step bnviz's network takes the state of torch's, so the "
        "verdict tests the layers, step by step. Every control is in the URL."
    )
    show_warnings("network", config, warnings)
    report = report_or_reason(config.refusal(), lambda: load(config, engine.run, "Training the networks…", cpu=True))
    if report is None:
        return
    figures = common.figures(config, (), draw, report)
    failing = [layer.name for layer in report.layers if not layer.ok]
    verdict_badge(
        report.verdict,
        "Every batch norm of bnviz's network agrees with torch's at every step, from the same state." if not failing
        else f"Layers that differ beyond float32 rounding: {', '.join(failing)}",
    )  # fmt: skip
    st.markdown(architecture(config))

    st.subheader("What arrives at each batch norm", anchor="what-arrives")
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
        f"Loss: torch's network; dotted, bnviz's network and torch's float64 network, each on its own path (see "
        f"below). Accuracy on {eval_samples(config)}, in {config.mode} mode, from torch's final state: "
        f"bnviz {acc['bnviz']:.0%}, torch {acc['torch']:.0%}."
    )

    st.subheader("Layer by layer")
    rows = [
        {
            "layer": layer.name,
            "bnviz − torch": sci_unbroken(layer.max_abs),
            "÷ allowed": f"{layer.worst:.2g}",
            "verdict": "match" if layer.ok else "mismatch",
        }
        for layer in report.layers
    ]
    st.markdown(markdown_table(rows))
    st.caption(
        f"At each of the {config.steps} steps each of bnviz's batch norms took the state torch's had before it, and "
        "the input and upstream gradient torch's got: output, gradients and running statistics compared (the "
        "logits: once, from torch's final state). \"bnviz − torch\" is the largest difference over all of them. A "
        "value matches within float32's tolerance — the backward's sums allowed a few ulps of what they add up: "
        "where a statistic has two values its backward cancels almost entirely, and is judged by the size of what "
        "cancels — or when bnviz is no further than torch from a float64 run of the same call. \"÷ allowed\" under 1 "
        "is within tolerance. The other layers are torch's own in both networks."
    )
    chart(figures["layers"], "chart-layers")

    st.subheader(divergence_heading(report), anchor="free-running")
    chart(figures["divergence"], "chart-divergence", "No training steps (steps = 0).")
    st.markdown(divergence_text(report))
    if report.config.batch > 2:
        st.page_link("app_pages/network.py", label="The same network with 2 samples per batch",
                     query_params=NETWORK.to_query(replace(report.config, batch=2)))  # fmt: skip
    st.info(
        "Why two classes at all? BatchNorm1d, 2d and 3d compute the same thing — one statistic per channel (dim 1) "
        "over every other dim — and differ only in the rank they accept. bnviz.BatchNorm, the universal layer, "
        "takes any rank ≥ 2: the layer explorer shows it next to torch's."
    )
    st.page_link("app_pages/layer.py", label="The universal layer on a rank-6 tensor",
                 query_params=LAYER.to_query(Config(layer="BatchNorm", shape=(2, 3, 4, 4, 2, 2))))  # fmt: skip


main()
