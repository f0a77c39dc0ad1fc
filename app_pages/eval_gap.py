"""``/eval-gap``: "my model is worse in eval() than in train()" — each cause run, measured and fixed.
Widgets ⇄ URL → cached, budgeted calls into bnviz.explorer.eval_gap.engine → figures and words."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import common
from app_pages.common import chart, load, on_button, report_or_reason, view, write_url
from bnviz.explorer.eval_gap import engine as eval_gap
from bnviz.explorer.eval_gap import url as eval_gap_url
from bnviz.explorer.eval_gap.figures import checkpoint_table, figures
from bnviz.explorer.eval_gap.url import EVAL_GAP
from bnviz.explorer.eval_gap.words import section
from bnviz.explorer.mlp import seconds_estimate

PREFIX = "eg."
INTS = ("order_steps", "order_batch", "lag_steps", "dropout_steps", "micro", "micro_batch", "accum_steps", "pairs",
        "passes_steps", "ckpt_steps")  # fmt: skip
KINDS = {name: "int" for name in INTS}
TITLES = {  # section: (heading, anchor)
    "batches": ("1. Batches that are not i.i.d.: sorted by class", "non-iid-batches"),
    "lag": ("2. Running statistics that lag the weights", "lagging-statistics"),
    "dropout": ("3. Dropout before batch norm: the variance shift", "dropout"),
    "accumulation": ("4. Micro-batches and gradient accumulation", "micro-batches"),
    "passes": ("5. Two forward passes against one concatenated batch", "two-passes"),
    "checkpoint": ("6. Activation checkpointing runs the forward twice", "checkpointing"),
}
LABELS = {  # URL name: the control's label
    "order_lr": "Learning rate", "order_steps": "Steps", "order_batch": "Batch size", "order_seeds": "Seeds",
    "lag_momenta": "Momenta", "lag_lr": "Learning rate", "lag_steps": "Steps", "lag_seeds": "Seeds",
    "p": "Dropout p (torch's: the chance of dropping)", "dropout_input": "Dropout's input", "dropout_steps": "Steps",
    "dropout_seeds": "Seeds", "micro": "Micro-batches k", "micro_batch": "Micro-batch size n",
    "accum_momentum": "Momentum", "accum_steps": "Steps", "pair": "The two batches", "pairs": "Pairs",
    "passes_steps": "Steps", "ckpt_steps": "Steps", "ckpt_momentum": "Momentum",
}  # fmt: skip
CHOICES = {"dropout_input": eval_gap_url.DROPOUT_INPUTS, "pair": eval_gap_url.PAIRS}


def load_section(config: Any) -> Any:
    """A section's report: trained within the server's memory budget and a core of its own, with a
    progress bar (``common.load``)."""
    return load(config, eval_gap.run, "Training…", cpu=True, progress=True)


def controls(name: str) -> None:
    """A section's controls in one row, under their URL names."""
    names = EVAL_GAP[name].names
    for column, param in zip(st.columns(len(names)), names, strict=True):
        key, label = PREFIX + param, LABELS[param]
        if param in CHOICES:
            column.selectbox(label, CHOICES[param], key=key)
        elif param in KINDS:
            column.number_input(label, step=1, key=key)
        else:
            column.text_input(label, key=key)


def draw(name: str, config: Any, report: Any) -> None:
    """A section's detail: every number, the charts, the fix and its code."""
    words = section(report)
    for key, figure in common.figures(config, (), figures, report).items():
        chart(figure, f"chart-{name}-{key}")
    if name == "checkpoint":
        st.dataframe(checkpoint_table(report), hide_index=True)
    st.markdown(f"**Measured.** {words.measured}")
    st.markdown(f"**The fix.** {words.fix}")
    st.code(words.code, language="python")
    if eval_gap.computed_ahead(config):
        st.caption("Computed ahead for this default view (python scripts/store_defaults.py, with this code; the "
                   "tests rerun seed 0 and find it again). Change any setting to run it live.")  # fmt: skip


def card(name: str, report: Any) -> None:
    """A cause at a glance: the symptom, the measured gap, the fix — one sentence each."""
    words = section(report)
    with st.container(border=True, key=f"card-{name}"):
        st.markdown(f"**Symptom.** {words.symptom}")
        st.markdown(f"**Measured.** {words.gap}")
        st.markdown(f"**Fix.** {words.fix.split('. ')[0].rstrip('.')}.")


def show(name: str, config: Any) -> None:
    heading, anchor = TITLES[name]
    st.subheader(heading, anchor=anchor)
    reason = config.refusal()
    ready = eval_gap.computed_ahead(config)
    if name in eval_gap_url.DEFAULT_SECTIONS or ready:
        report = report_or_reason(reason, lambda: load_section(config))
    else:
        report = on_button(f"{PREFIX}run.{name}", config, reason, seconds_estimate(config),
                           lambda: load_section(config))  # fmt: skip
    if report is not None:
        card(name, report)
    with st.expander("The detail: every number, the charts, the fix in PyTorch — and the settings", key=f"more-{name}"):
        controls(name)
        if report is not None:
            draw(name, config, report)


def main() -> None:
    configs, warnings = {}, []
    for name, spec in EVAL_GAP.items():
        configs[name], said = view(f"eval-gap.{name}", spec, eval_gap.CONFIGS[name](), KINDS, PREFIX,
                                   url_page="eval-gap")  # fmt: skip
        warnings += said
    write_url("eval-gap", {k: v for name, spec in EVAL_GAP.items() for k, v in spec.to_query(configs[name]).items()})
    st.title("Worse in eval() than in train()?")
    st.caption(
        "In train mode batch norm normalizes each batch with that batch's own statistics; in eval mode, with the "
        "running statistics it kept. When the two disagree, the model does too. Six causes, each trained on "
        "scikit-learn's digits with bnviz's layers, measured, and fixed — with the fix in plain PyTorch. Each cause is "
        "one card (the symptom, the measured gap, the fix); its detail opens below it. Sections 1–3 make claims about "
        "training and run five seeds: each verdict says on how many it holds. The default views were computed ahead; "
        "any other setting runs live on this server. Every control is in the URL."
    )
    for warning in warnings:
        st.warning(warning)
    for name in eval_gap_url.SECTIONS:
        show(name, configs[name])


main()
