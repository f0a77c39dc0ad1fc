"""``/family``: BatchNorm, LayerNorm, InstanceNorm, GroupNorm and RMSNorm on one tensor — the same
operation over different sets of values — each from scratch against torch, and batch dependence
shown live. Widgets ⇄ URL → cached call into bnviz.explorer.family.engine → pictures and figures."""

from __future__ import annotations

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
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.family import engine
from bnviz.explorer.family.engine import (
    FamilyReport,
    dependence_note,
    dependence_rows,
    member_cells,
    member_pictures,
    output_figure,
    universal_rows,
)
from bnviz.explorer.family.url import FAMILY, FAMILY_FOCUS, LN_OVER, MEMBERS, FamilyConfig, FamilyFocus
from bnviz.explorer.text import markdown_table, sci

PREFIX = "fam."
PICTURES_PER_ROW = 3
KINDS = {"groups": "int", "seed": "int"}
FOCUS_PREFIX = "famf."


def draw(report: FamilyReport, channel: int, member: str) -> dict:
    """The pictures of every member, the cells of the one in focus, and the outputs."""
    return {"pictures": member_pictures(report, 0, channel), "cells": member_cells(report, channel)[member],
            "outputs": output_figure(report)}  # fmt: skip


def sidebar() -> None:
    sb = st.sidebar
    sb.header("The tensor")
    sb.text_input("Shape (N, C, spatial…)", key=PREFIX + "shape", help="Rank 3 to 6, e.g. 8,6,8,8.")
    sb.number_input("GroupNorm groups", step=1, key=PREFIX + "groups", help="Must divide C.")
    sb.radio(
        "LayerNorm and RMSNorm over",
        LN_OVER,
        key=PREFIX + "ln",
        format_func={"sample": "every per-sample dim (C, spatial…)", "last": "the last dim only (features)"}.get,
        help="A transformer's (N, L, C) tensor: normalize each position over its C features.",
    )
    sb.selectbox("Input distribution", DISTRIBUTIONS, key=PREFIX + "dist")
    sb.number_input("Seed", step=1, key=PREFIX + "seed")
    sb.text_input("eps", key=PREFIX + "eps")


def main() -> None:
    config, warnings = view("family", FAMILY, FamilyConfig(), KINDS, PREFIX)
    focus, focus_warnings = view("family.focus", FAMILY_FOCUS, FamilyFocus(), {"channel": "int"}, FOCUS_PREFIX,
                                 url_page="family")  # fmt: skip
    sidebar()
    st.title("One operation, five sets of values")
    st.caption(
        "BatchNorm, LayerNorm, InstanceNorm, GroupNorm and RMSNorm, each written from scratch in bnviz and run beside "
        "torch's on the same tensor. Every control is in the URL."
    )
    show_warnings("family", config, warnings, focus_warnings)
    query = {**FAMILY.to_query(config), **FAMILY_FOCUS.to_query(focus)}
    report = report_or_reason(config.refusal(), lambda: load(config, engine.run, "Running the five members…"),
                              ("family", query))  # fmt: skip
    if report is None:
        return
    channels = min(config.shape[1], 8)
    channel = min(focus.channel, channels - 1)
    write_url("family", {**FAMILY.to_query(config), **FAMILY_FOCUS.to_query(FamilyFocus(channel, focus.member))})
    failing = [m.member for m in report.members if not m.ok]
    verdict_badge(
        report.verdict,
        "All five agree with torch: outputs and gradients." if not failing
        else f"Differ from torch: {', '.join(failing)}",
    )
    st.markdown(
        "Each member computes statistics over a set of values — a mean and a variance, or for RMSNorm only the mean "
        "of the squares (no mean is taken out) — normalizes every value with its set's statistics, then scales by γ "
        "(and shifts by β; RMSNorm has no β). They differ **mostly in which values share a statistic** — the shaded "
        "block in each picture (the set that holds sample 0 and the channel in focus)."
    )
    st.session_state[FOCUS_PREFIX + "channel"] = channel
    st.segmented_control("Channel in focus", list(range(channels)), key=FOCUS_PREFIX + "channel", required=True,
                         format_func=lambda c: f"c={c}")  # fmt: skip
    views = common.figures(config, (channel, focus.member), draw, report)

    st.subheader("Which values share a statistic")
    for start in range(0, len(report.members), PICTURES_PER_ROW):  # three to a row: readable at 1024 px
        columns = st.columns(PICTURES_PER_ROW, gap="medium")
        for column, m in zip(columns, report.members[start : start + PICTURES_PER_ROW], strict=False):
            with column:
                st.markdown(f"**{m.member}**")
                picture(views["pictures"][m.member], f"{m.member}: the values that share one statistic")
                st.caption(f"{m.statistics:,} statistics of {m.per_statistic:,} values · {m.verdict}")
    st.radio("Draw every value for", MEMBERS, key=FOCUS_PREFIX + "member", horizontal=True)
    chart(views["cells"], "chart-cells")
    st.caption("Each colour is one statistic's set of values; hover a cell for its index, value, and its set's mean "
               "and variance. The channel in focus is drawn in full colour.")  # fmt: skip

    st.subheader("The universal form")
    sizes, kinds = universal_rows(report)
    st.markdown(markdown_table(sizes))
    st.markdown(markdown_table(kinds))
    st.caption(f"For a tensor of shape {config.shape}: groups is how many means and variances the member computes. "
               "Running statistics are kept per channel (instance norm averages its samples' into them). RMSNorm "
               "divides by the root mean square: no mean is taken out, so it has no β.")  # fmt: skip

    st.subheader("Batch size matters to batch norm only, and only in training")
    st.markdown(
        "Keep sample 0, replace every other sample of the batch (other values, three times the spread, shifted by 2), "
        "and run each member again. How far does **sample 0's** output move?"
    )
    st.markdown(markdown_table(dependence_rows(report)))
    st.caption(dependence_note(report))

    st.subheader("Outputs against torch")
    chart(views["outputs"], "chart-outputs")
    rows = [{"member": m.member, "output": sci(m.max_abs["output"]),
             "gradients": sci(max(v for k, v in m.max_abs.items() if k != "output"))}
            for m in report.members]  # fmt: skip
    st.markdown(markdown_table(rows))
    st.caption("Largest |bnviz − torch| of the output, and of the gradients of x, γ and β (a fixed random upstream "
               "gradient). A member matches (the verdict under its picture above) within float32's tolerance, or "
               "when it is about as close as torch to a float64 run.")  # fmt: skip

    st.subheader("Features last: what a transformer does")
    st.markdown(
        "A transformer's activations are (N, L, C): batch, length, features. Batch norm takes dim 1 for the "
        "channels, so it would normalize each position L over the batch — the layer explorer shows its error and "
        "the permute that fixes it. LayerNorm over the last dim normalizes each position over its own C features "
        "instead, with no batch statistics:"
    )
    st.page_link("app_pages/family.py", label="The family on an (N, L, C) = (8, 128, 64) tensor, LayerNorm over C",
                 query_params=FAMILY.to_query(FamilyConfig(shape=(8, 128, 64), ln_over="last", groups=4)))  # fmt: skip


main()
