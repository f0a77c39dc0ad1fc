"""``/training``: why batch norm helps training — the papers' experiments, run live on the digits.
Widgets ⇄ URL → cached, budgeted calls into bnviz.explorer.training.engine → figures and words."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st

from app_pages import common
from app_pages.common import chart, load, on_button, report_or_reason, view, write_url
from bnviz.explorer import mlp
from bnviz.explorer.mlp import seconds_estimate
from bnviz.explorer.query import QuerySpec
from bnviz.explorer.training import engine as training
from bnviz.explorer.training import url as training_url
from bnviz.explorer.training.engine import DEAD_INIT, TEN_SEEDS, command_line, to_csv
from bnviz.explorer.training.figures import drift_figures, noise_figures, placement_figures, sweep_figure
from bnviz.explorer.training.url import (
    TRAINING_DRIFT,
    TRAINING_NOISE,
    TRAINING_PLACEMENT,
    TRAINING_SWEEP,
    DriftConfig,
    NoiseConfig,
    PlacementConfig,
    SweepConfig,
)
from bnviz.explorer.training.words import (
    Sentences,
    drift_sentences,
    noise_sentences,
    placement_sentences,
    sweep_sentences,
)

PREFIX = "tr."
INTS = ("steps", "every", "width", "batch", "sweep_steps", "noise_steps", "relu_steps")
KINDS = {name: "int" for name in INTS}
EXPERIMENTS: dict[str, tuple[QuerySpec, Any]] = {  # name: (its URL, its defaults)
    "drift": (TRAINING_DRIFT, DriftConfig()),
    "sweep": (TRAINING_SWEEP, SweepConfig()),
    "noise": (TRAINING_NOISE, NoiseConfig()),
    "placement": (TRAINING_PLACEMENT, PlacementConfig()),
}


DRAW = {DriftConfig: drift_figures, NoiseConfig: noise_figures, PlacementConfig: placement_figures,
        SweepConfig: lambda r: {"sweep": sweep_figure(r)}}  # fmt: skip


def load_experiment(config: Any, doing: str) -> Any:
    """An experiment's report: trained within the server's memory budget and a core of its own,
    with a progress bar (``common.load``)."""
    return load(config, training.run, doing, cpu=True, progress=True)


def cached_figures(config: Any, report: Any) -> dict:
    """The figures of an experiment's report, cached (``common.figures``)."""
    return common.figures(config, (), DRAW[type(config)], report)


def sentences(words: Sentences, config: Any) -> None:
    st.markdown(f"**The paper.** {words.claim}")
    st.markdown(f"**This run.** {words.shows}")
    st.markdown(f"**Why a small reproduction may differ.** {words.differs}")
    if training.computed_ahead(config):
        st.caption("These numbers were computed ahead for this default view (python scripts/store_defaults.py, "
                   "with this code; the tests rerun seed 0 and find them again). Change any setting to train "
                   "live.")  # fmt: skip
    else:
        st.caption("Trained live on this server for this view.")


def on_demand(name: str, config: Any, doing: str) -> Any:
    """An experiment that costs more: on its button (``common.on_button``) — shown at once when it
    is a view computed ahead."""
    return on_button(f"{PREFIX}run.{name}", config, config.refusal(), seconds_estimate(config),
                     lambda: load_experiment(config, doing), ready=training.computed_ahead(config))  # fmt: skip


def sidebar() -> None:
    sb = st.sidebar
    sb.header("1. Ioffe & Szegedy's Figure 1")
    sb.text_input("Learning rate", key=PREFIX + "lr", help="Plain SGD. The paper's network; try 0.1, 0.5 and 8.")
    sb.number_input("SGD steps", step=100, key=PREFIX + "steps", help=f"1 to {mlp.MAX_STEPS:,}.")
    sb.text_input("Seeds", key=PREFIX + "seeds", help=f"1 to {training_url.MAX_SEEDS}, comma-separated; a verdict "
                  "needs 3 or more.")  # fmt: skip
    sb.text_input("Initial weights' std", key=PREFIX + "init",
                  help="Gaussian N(0, std²), the paper's small weights; default: torch's initialisation.")  # fmt: skip
    sb.number_input("Evaluate every … steps", step=10, key=PREFIX + "every")
    sb.number_input("Units per hidden layer", step=10, key=PREFIX + "width")
    sb.number_input("Batch size", step=10, key=PREFIX + "batch")


def drift_section(config: DriftConfig) -> None:
    st.subheader("1. Activations that stop drifting (Ioffe & Szegedy 2015, Figure 1)", anchor="why-it-helps")
    st.caption(
        f"A 64 → {config.width} → {config.width} → {config.width} → 10 network of sigmoid units, trained twice from "
        "the same initial weights on the same minibatches: plain, and with bnviz.BatchNorm1d before each sigmoid — "
        f"once per seed ({len(config.seeds)}). The controls are in the sidebar. In the charts, a line is the mean "
        "over the seeds and its band runs from the lowest seed to the highest."
    )
    report = report_or_reason(config.refusal(), lambda: load_experiment(config, "Training both networks…"))
    if report is None:
        return
    figures = cached_figures(config, report)
    chart(figures["accuracy"], "chart-accuracy")
    chart(figures["percentiles"], "chart-percentiles")
    sentences(drift_sentences(report), config)
    if config.init_std != DEAD_INIT.init_std:
        st.page_link("app_pages/training.py", label="A second view: the paper's smallest weights (std 0.01), where the "
                     "plain network never learns", query_params=TRAINING_DRIFT.to_query(replace(config,
                     init_std=DEAD_INIT.init_std)))  # fmt: skip
    else:
        st.page_link("app_pages/training.py", label="Back to weights of std 0.1, where both networks learn",
                     query_params=TRAINING_DRIFT.to_query(replace(config, init_std=DriftConfig().init_std)))
    if config.init_std is not None:
        st.page_link("app_pages/training.py", label="The same run with torch's default initialisation",
                     query_params=TRAINING_DRIFT.to_query(replace(config, init_std=None)))  # fmt: skip
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    left.markdown("The same run from a terminal, printing these numbers:")
    left.code(command_line(config), language="bash", wrap_lines=True)
    right.download_button("Download the CSV", to_csv(report), file_name="bnviz-training.csv", mime="text/csv",
                          key=PREFIX + "csv")  # fmt: skip


def sweep_section(config: SweepConfig) -> None:
    st.subheader("2. Higher learning rates (Ioffe & Szegedy §3.3, Bjorck et al. 2018)", anchor="higher-learning-rates")
    a, b, c, d = st.columns([3, 2, 1, 1])
    a.text_input("Learning rates", key=PREFIX + "sweep_lrs", help=f"1 to {training_url.MAX_LRS}, comma-separated.")
    b.text_input("Seeds", key=PREFIX + "sweep_seeds", help=f"1 to {training_url.MAX_SEEDS}, comma-separated.")
    c.number_input("Steps", step=100, key=PREFIX + "sweep_steps")
    d.selectbox("Units", tuple(mlp.ACTIVATIONS), key=PREFIX + "sweep_act")
    st.text_input("Initial weights' std (or default)", key=PREFIX + "sweep_init")
    report = on_demand("sweep", config, "Training both networks at every learning rate and seed…")
    if report is None:
        return
    chart(cached_figures(config, report)["sweep"], "chart-sweep")
    sentences(sweep_sentences(report), config)


def noise_section(config: NoiseConfig) -> None:
    st.subheader("3. Not internal covariate shift: noisy batch norm (Santurkar et al. 2018)",
                 anchor="noisy-batch-norm")  # fmt: skip
    a, b, c, d, e = st.columns(5)
    a.text_input("Learning rate", key=PREFIX + "noise_lr")
    b.number_input("Steps", step=100, key=PREFIX + "noise_steps")
    c.text_input("Seeds", key=PREFIX + "noise_seeds")
    strong = "The fifth network's stronger additive noise (the paper's own noise keeps the paper's values): "
    d.text_input("Stronger noise: mean range n_μ", key=PREFIX + "noise_mean",
                 help=strong + "each step, each unit gets μ ~ U(−n_μ, n_μ).")  # fmt: skip
    e.text_input("Stronger noise: std range n_σ", key=PREFIX + "noise_std",
                 help=strong + "each step, each unit gets σ ~ U(1, n_σ).")  # fmt: skip
    report = on_demand("noise", config, "Training five networks per seed…")
    if report is None:
        return
    figures = cached_figures(config, report)
    chart(figures["accuracy"], "chart-noise")
    chart(figures["smoothness"], "chart-smoothness")
    sentences(noise_sentences(report), config)


def placement_section(config: PlacementConfig) -> None:
    st.subheader("4. Batch norm before or after the ReLU?", anchor="before-or-after-relu")
    a, b, c = st.columns(3)
    a.text_input("Learning rate", key=PREFIX + "relu_lr")
    b.number_input("Steps", step=100, key=PREFIX + "relu_steps")
    c.text_input("Seeds", key=PREFIX + "relu_seeds")
    report = on_demand("placement", config, "Training both orders for every seed…")
    if report is None:
        return
    chart(cached_figures(config, report)["placement"], "chart-placement")
    sentences(placement_sentences(report), config)
    other = TEN_SEEDS if config != TEN_SEEDS else PlacementConfig()
    st.page_link("app_pages/training.py", label=f"The same over {len(other.seeds)} seeds (computed ahead)",
                 query_params=TRAINING_PLACEMENT.to_query(other))  # fmt: skip


def main() -> None:
    configs, warnings = {}, []
    for name, (spec, base) in EXPERIMENTS.items():
        configs[name], said = view(f"training.{name}", spec, base, KINDS, PREFIX, url_page="training")
        warnings += said
    sidebar()
    write_url("training", {k: v for name, (spec, _) in EXPERIMENTS.items()
                           for k, v in spec.to_query(configs[name]).items()})  # fmt: skip
    st.title("Why batch norm helps training")
    st.caption(
        "The papers' experiments, run with bnviz's layers on scikit-learn's digits: 1,797 handwritten digits of 8×8 "
        "pixels, 1,438 to train on and 359 to test. Each runs five seeds by default, and each claim's verdict says "
        "on how many of them it holds (\"as in the paper\" only when on all). The default views were computed "
        "ahead; any other setting trains live on this server. Every control is in the URL. Where this small run "
        "disagrees with a paper, the text says so."
    )
    for warning in warnings:
        st.warning(warning)
    drift_section(configs["drift"])
    sweep_section(configs["sweep"])
    noise_section(configs["noise"])
    placement_section(configs["placement"])


main()
