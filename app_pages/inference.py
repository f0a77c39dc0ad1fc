"""``/inference``: folding batch norm into the conv before it, and freezing it for fine-tuning —
run on a small trained network, every number from the report."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from app_pages.common import (
    chart,
    load,
    report_or_reason,
    show_warnings,
    verdict_badge,
    view,
    write_url,
)
from bnviz.explorer.inference import engine
from bnviz.explorer.inference.engine import SHIFT_SCALE, VARIANT_CODE, InferenceReport
from bnviz.explorer.inference.figures import all_figures
from bnviz.explorer.inference.url import (
    DTYPES,
    INFERENCE,
    MAX_BATCH,
    MAX_CHANNELS,
    MAX_FINETUNE_STEPS,
    MAX_IMAGE,
    MAX_STEPS,
    VARIANTS,
    InferenceConfig,
)
from bnviz.explorer.inference.words import (
    difference_text,
    drift_text,
    finetune_text,
    network_text,
    output_rows,
    pair_text,
    timing_text,
    train_mode_text,
    variant_text,
    verdict_detail,
    weight_rows,
)
from bnviz.explorer.text import E_NOTATION, markdown_table

PREFIX = "inf."
KINDS = {name: "int" for name in ("batch", "channels", "image", "steps", "finetune", "channel", "seed")}
INTRO = (
    "In eval mode a batch norm no longer computes statistics: it multiplies each channel by a fixed number and adds "
    "another, both made from its stored running statistics and its learned γ and β. A fixed multiply-and-add can be "
    "merged — **folded** — into the weights and bias of the conv before it, so the deployed network runs one layer "
    "instead of two and gives the same output. This page runs a small network to answer two questions: **Can I "
    "fold BatchNorm into the conv before it for inference?** and **Why does my frozen BatchNorm still change during "
    "fine-tuning?**"
)
WHY = (
    "**Why it works.** In eval mode a batch norm computes, for each channel, y = (x − mean) · γ / √(var + eps) + β, "
    "where mean and var are its stored running_mean and running_var. γ / √(var + eps) is one fixed number per "
    "channel; call it s. When x = W ⋆ u + b comes out of a conv (W its weights, b its bias, u its input), then "
    "y = (W · s) ⋆ u + (b − mean) · s + β: a conv with new weights W′ and bias b′,"
)


def sidebar() -> None:
    sb = st.sidebar
    sb.header("The network")
    sb.number_input("Batch size", step=1, key=PREFIX + "batch", help=f"2 to {MAX_BATCH} images per step.")
    sb.number_input("Channels", step=1, key=PREFIX + "channels", help=f"1 to {MAX_CHANNELS} channels in each conv.")
    sb.number_input("Image size", step=1, key=PREFIX + "image", help=f"3 to {MAX_IMAGE} pixels a side.")
    sb.number_input("Training steps", step=1, key=PREFIX + "steps", help=f"0 to {MAX_STEPS} SGD steps before folding.")
    sb.text_input("Learning rate", key=PREFIX + "lr", help="Above 0, at most 1; for training and fine-tuning.")
    sb.number_input("Seed", step=1, key=PREFIX + "seed")
    sb.radio("dtype", tuple(DTYPES), key=PREFIX + "dtype", horizontal=True)
    sb.header("Folding")
    sb.number_input("Channel in the formula", step=1, key=PREFIX + "channel", help="0 to channels − 1.")
    sb.header("Fine-tuning")
    sb.number_input("Fine-tuning steps", step=1, key=PREFIX + "finetune", help=f"1 to {MAX_FINETUNE_STEPS} SGD steps.")
    sb.text_input(
        "Shift of the new data", key=PREFIX + "shift", help=f"−100 to 100, added to the inputs × {SHIFT_SCALE:g}."
    )


def folding_section(report: InferenceReport, figures: dict) -> None:
    st.subheader("1. Folding batch norm into the conv")
    st.markdown(WHY)
    st.latex(r"W' = W \cdot \frac{\gamma}{\sqrt{\mathrm{var} + \mathrm{eps}}}")
    st.latex(r"b' = (b - \mathrm{mean}) \cdot \frac{\gamma}{\sqrt{\mathrm{var} + \mathrm{eps}}} + \beta")
    st.markdown(f"With this network's numbers, for channel {report.config.channel} (chosen in the sidebar):")
    for column, pair in zip(st.columns(len(report.pairs), gap="medium"), report.pairs, strict=True):
        with column:
            st.markdown(pair_text(pair))
            st.markdown(markdown_table(weight_rows(pair)))
    st.markdown(
        "After `bnviz.fold_batch_norms(model)` each batch norm is an Identity and each conv carries W′, b′: "
        + " → ".join(report.layers_after)
    )
    chart(figures["fold_difference"], "chart-fold-difference")
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("The first probe image's three class scores (logits, class 0 to 2), in eval mode:")
        st.markdown(markdown_table(output_rows(report)))
    with right:
        st.caption(f"{difference_text(report)} {E_NOTATION}")
    st.markdown(timing_text(report))
    st.markdown(train_mode_text(report))
    if report.train_mode["refused"]:
        st.code(report.train_mode["refused"], language=None, wrap_lines=True)


def freezing_section(report: InferenceReport, figures: dict) -> None:
    st.subheader("2. Freezing batch norm for fine-tuning")
    st.markdown(finetune_text(report))
    for number, (key, label) in enumerate(VARIANTS.items(), start=1):
        st.markdown(f"**{number}. {label}**")
        st.code(VARIANT_CODE[key], language="python", wrap_lines=True)
        st.markdown(variant_text(report, key))
        chart(figures[f"running_stats_{key}"], f"chart-running-{key}")
    chart(figures["output_drift"], "chart-output-drift")
    st.caption(drift_text(report))


def main() -> None:
    config, warnings = view("inference", INFERENCE, InferenceConfig(), KINDS, PREFIX)
    sidebar()
    write_url("inference", INFERENCE.to_query(config))
    st.title("Fold and freeze batch norm for inference")
    st.markdown(INTRO)
    show_warnings("inference", config, warnings)
    report = report_or_reason(config.refusal(), lambda: load(config, engine.run, "Training, folding and fine-tuning…"))
    if report is None:
        return
    figures = common.figures(config, (), all_figures, report)
    verdict_badge(report.verdict, verdict_detail(report))
    st.markdown(network_text(report))
    folding_section(report, figures)
    freezing_section(report, figures)


main()
