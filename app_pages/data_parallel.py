"""``/data-parallel``: batch norm across k devices — per-rank statistics, bnviz.SyncBatchNorm in real
gloo processes, and the full batch. Widgets ⇄ URL → cached call into bnviz.explorer.data_parallel."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from app_pages.common import (
    chart,
    ensure_fork_server,
    load,
    report_or_reason,
    show_warnings,
    verdict_badge,
    view,
    write_url,
)
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.data_parallel import engine
from bnviz.explorer.data_parallel.engine import DataParallelReport, all_figures, rank_rows
from bnviz.explorer.data_parallel.url import DATA_PARALLEL, DataParallelConfig
from bnviz.explorer.layer.url import FOCUS, Focus
from bnviz.explorer.text import markdown_table
from bnviz.hosting import forks

PREFIX = "dp."
KINDS = {"world": "int", "per_rank": "int", "seed": "int"}


def load_report(config: DataParallelConfig) -> DataParallelReport | None:
    """The ranks' report, within the server's memory budget (None when it could never fit). The
    first view of a server first starts the fork server the ranks come from: its own budgeted
    step, after which it stays (part of the server's baseline)."""
    if not ensure_fork_server("the ranks come from"):
        return None
    return load(config, engine.run, f"Starting {config.world} gloo processes…")


def sidebar() -> None:
    sb = st.sidebar
    sb.header("The devices")
    sb.number_input("World size (ranks)", step=1, key=PREFIX + "world", help="1 to 8 gloo processes here.")
    sb.number_input("Samples per rank", step=1, key=PREFIX + "per_rank", help="0 to 64, the same on every rank.")
    sb.text_input(
        "…or each rank's batch size",
        key=PREFIX + "batches",
        help="Comma-separated, one per rank, zeros allowed: 8,8,4,0. Empty: the same everywhere.",
    )
    sb.text_input("Sample shape (C, spatial…)", key=PREFIX + "sample", help="One sample, e.g. 3,8,8.")
    sb.selectbox("Input distribution", DISTRIBUTIONS, key=PREFIX + "dist")
    sb.number_input("Seed", step=1, key=PREFIX + "seed")


def main() -> None:
    config, warnings = view("data-parallel", DATA_PARALLEL, DataParallelConfig(), KINDS, PREFIX)
    focus, focus_warnings = view("data-parallel.focus", FOCUS, Focus(), {"channel": "int", "code": "bool"},
                                 PREFIX + "focus.", url_page="data-parallel")  # fmt: skip
    sidebar()
    st.title("Batch norm across devices")
    st.caption(
        "Under DistributedDataParallel each device normalizes with its own slice of the batch. bnviz.SyncBatchNorm — "
        "written on torch.distributed's collectives, and running here on CPU — gives every device the whole batch's "
        "statistics. Each rank below is a real gloo process on this server. Every control is in the URL."
    )
    show_warnings("data-parallel", config, warnings, focus_warnings)
    query = {**DATA_PARALLEL.to_query(config), **FOCUS.to_query(focus)}
    try:
        report = report_or_reason(config.refusal(), lambda: load_report(config), ("data-parallel", query))
    except forks.ForkError as exc:  # a rank died or ran out of time: said plainly, never a hang
        write_url("data-parallel", query)
        st.error(f"The ranks failed: {exc}")
        return
    if report is None:
        return
    channels = min(config.sample[0], 8)
    channel = min(focus.channel, channels - 1)
    write_url("data-parallel", {**DATA_PARALLEL.to_query(config), **FOCUS.to_query(Focus(channel, focus.code))})
    figures = common.figures(config, (channel,), all_figures, report)
    failing = [f"rank {r.rank}" for r in report.ranks if not r.ok]
    verdict_badge(
        report.verdict,
        f"SyncBatchNorm equals batch norm on the whole batch on every rank (output, ∂L/∂x, running statistics); "
        f"{config.world} processes took {report.seconds:.1f} s." if not failing
        else f"Differs from the full batch on {', '.join(failing)}.",
    )  # fmt: skip
    sizes = config.sizes()
    st.markdown(
        f"One batch of **{sum(sizes)} samples**, shape {(sum(sizes), *config.sample)}, split over **{config.world} "
        f"ranks** ({', '.join(map(str, sizes))} samples). Plain batch norm on a rank sees only its slice: its mean "
        "and variance are estimates from a few samples. SyncBatchNorm gathers every rank's (count, mean, M2), merges "
        "them, and normalizes with the result — the same numbers as one device holding the whole batch."
    )
    chart(figures["slices"], "chart-slices")

    st.subheader("Per-rank statistics against the whole batch")
    st.session_state[PREFIX + "focus.channel"] = channel
    if channels > 1:
        st.segmented_control("Channel in focus", list(range(channels)), key=PREFIX + "focus.channel",
                             required=True, format_func=lambda c: f"c={c}")  # fmt: skip
    chart(figures["statistics"], "chart-statistics")
    st.markdown(markdown_table(rank_rows(report, channel)))
    st.caption(
        f"The whole batch: mean {report.full_mean[channel]:.4g}, variance {report.full_var[channel]:.4g} (channel "
        f"{channel}) — what SyncBatchNorm uses on every rank. \"plain BN off by\": the largest difference between a "
        "rank's plain batch-norm output and the full batch's; \"sync off by\": SyncBatchNorm's (output and ∂L/∂x). "
        "An empty rank still joins both collectives."
    )

    st.subheader("Why small per-device batches hurt")
    chart(figures["spread"], "chart-spread")
    st.caption(
        "Drawn from the same distribution: how much a slice's mean and variance scatter (channel 0) against n, the "
        "values each device's statistic is taken over — its samples times each sample's positions — with σ/√n for "
        "the mean. Dashed: this view's per-rank n. Halving the per-device batch makes each device's statistics "
        "about √2 noisier; SyncBatchNorm restores the whole batch's."
    )

    st.subheader("On several machines")
    st.markdown(
        "The same layer runs under torchrun: `bnviz.SyncBatchNorm.convert_sync_batchnorm(model)`, then "
        "`torchrun --nnodes 2 --nproc-per-node 4 --node-rank <i> --rdzv-endpoint <host>:29500 train.py` on each "
        "machine — gloo on CPUs, nccl on GPUs. torch's own SyncBatchNorm refuses CPU tensors; bnviz's does not."
    )


main()
