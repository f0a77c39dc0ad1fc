"""Explanations: the snippet reruns the page's numbers, the panel's numbers add up, every note is
true for its case, hints match errors."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest

from bnviz.explorer.layer.engine import run as run_comparison
from bnviz.explorer.layer.url import DTYPES, Config
from bnviz.explorer.layer.words import (
    channel_table,
    code_snippet,
    empty_note,
    error_hint,
    mode_note,
    modes_text,
    precision_warning,
    quantity_cells,
    reduced_axes,
    spacing,
)
from bnviz.explorer.text import markdown_table, sci

SNIPPETS = [
    Config(),
    Config(layer="BatchNorm", shape=(2, 3, 2, 2, 3), momentum=None, mode="eval", dist="bimodal"),
    Config(layer="BatchNorm1d", shape=(16, 4), affine=False, track_running_stats=False, dtype="float64",
           dist="heavy-tailed"),
    Config(layer="BatchNorm3d", shape=(2, 2, 2, 3, 3), dtype="bfloat16", dist="uniform", steps=2, train_batch=3),
    Config(layer="BatchNorm1d", shape=(8, 16, 16), layout="features-last", dist="large-mean"),
    Config(shape=(0, 3, 4, 4)),
]  # fmt: skip


def _run(script: str) -> str:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("config", SNIPPETS, ids=lambda c: f"{c.layer}-{c.shape}-{c.dtype}")
def test_code_snippet_prints_the_numbers_the_page_shows(config):
    """Run standalone in a fresh interpreter: each line is the parity table's max |bnviz − torch|."""
    assert "if True" not in code_snippet(config) and "bnviz.explorer" not in code_snippet(config)
    printed = dict(re.findall(r"^(\S+(?: \S+)?)\s+max \|bnviz - torch\| = (\S+)$", _run(code_snippet(config)), re.M))
    report = run_comparison(config)
    shown = {q.name: sci(q.max_abs) for q in report.quantities if not q.absent}
    assert printed == shown, f"snippet printed {printed}, the page shows {shown}"


def test_code_snippet_reproduces_both_errors():
    config = Config(layer="BatchNorm1d", shape=(8, 16, 4), layout="features-last")
    out = _run(code_snippet(config))
    report = run_comparison(config)
    assert f"bnviz raised {report.error.bnviz}" in out and f"torch raised {report.error.torch}" in out, out


def test_channel_table_formula_rows_equal_the_actual_update():
    r = run_comparison(Config(momentum=0.3))
    rows = {row["quantity"]: row for row in channel_table(r, 2)}
    for name in ("running_mean", "running_var"):
        actual, formula = float(rows[f"{name} after"]["value"]), float(rows[f"{name} by the formula"]["value"])
        assert math.isclose(actual, formula, rel_tol=2e-6), f"{name}: layer {actual} vs formula {formula}"
    assert "2048/2047" in rows["batch variance, unbiased (goes into running_var)"]["formula"]
    assert "batch mean (normalizes)" in rows


@pytest.mark.parametrize(
    "config, normalizes, not_used",
    [(Config(mode="eval"), ["running_mean (normalizes in eval)", "running_var (normalizes in eval)"],
      ["batch mean (not used in eval)", "batch variance, biased (not used in eval)"]),
     (Config(mode="train"), ["batch mean (normalizes)", "batch variance, biased (normalizes)"], []),
     (Config(mode="eval", track_running_stats=False), ["batch mean (normalizes)"], [])],
    ids=["eval", "train", "eval-untracked"],
)  # fmt: skip
def test_rows_label_what_really_normalizes(config, normalizes, not_used):
    """Eval mode: the running statistics normalize and the batch's are not used — the rows say so."""
    quantities = [row["quantity"] for row in channel_table(run_comparison(config), 0)]
    for q in normalizes + not_used:
        assert q in quantities, (q, quantities)
    if config.mode == "eval" and config.track_running_stats:
        assert not any("goes into running_var" in q or q == "batch mean (normalizes)" for q in quantities), quantities


def test_untracked_rows_say_not_tracked():
    r = run_comparison(Config(track_running_stats=False))
    rows = channel_table(r, 0)
    assert rows[-1]["value"] == "not tracked", rows[-1]
    cells = {c["quantity"]: c for c in (quantity_cells(q) for q in r.quantities)}
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert cells[name]["max abs diff"] == "not tracked", cells[name]
        assert cells[name]["agrees"] == "yes"


def test_empty_batch_says_why_and_does_not_claim_tracking_is_off():
    r = run_comparison(Config(shape=(0, 3, 4, 4)))
    note = empty_note(r)
    assert "no values" in note and "num_batches_tracked" in note and "track_running_stats=False" not in note
    rows = {row["quantity"]: row for row in channel_table(r, 0)}
    mean_row = rows["batch mean (normalizes)"]
    assert mean_row["value"] == "nan" and "empty batch" in mean_row["formula"]
    assert empty_note(run_comparison(Config())) is None


@pytest.mark.parametrize(
    "dtype, gap", [("float16", 8.0), ("bfloat16", 64.0)],
)
def test_reduced_precision_large_mean_warns_with_the_spacing(dtype, gap):
    assert spacing(DTYPES[dtype], 1e4) == gap
    r = run_comparison(Config(dtype=dtype, dist="large-mean"))
    warning = precision_warning(r)
    assert warning and f"spacing is {gap:g}" in warning and "distinct values" in warning, warning
    assert r.channels["distinct"][0] <= 8, r.channels["distinct"]
    assert precision_warning(run_comparison(Config(dist="large-mean"))) is None
    assert precision_warning(run_comparison(Config(dtype=dtype))) is None


def test_reduced_axes_and_notes():
    assert "over dims [0, 2, 3]" in reduced_axes(Config()) and "n = 2,048" in reduced_axes(Config())
    assert "over dims [0]" in reduced_axes(Config(layer="BatchNorm1d", shape=(32, 4)))
    assert "no channel" in reduced_axes(Config(shape=(5,)))
    assert "running_mean and running_var normalize" in mode_note(Config(mode="eval"))
    assert "no running statistics" in mode_note(Config(mode="eval", track_running_stats=False))


def test_features_last_note_only_where_it_applies():
    """The permute note belongs to a features-last tensor, not to every rank-3 shape."""
    assert "features last" not in reduced_axes(Config(layer="BatchNorm1d", shape=(16, 4, 8)))
    assert "features last" in reduced_axes(Config(layer="BatchNorm1d", shape=(16, 8, 8), layout="features-last"))


def test_modes_text_states_the_numbers_of_the_chart():
    r = run_comparison(Config(steps=3))
    text = modes_text(r, 1)
    entry = r.modes["channels"][1]
    assert f"{entry['train_mean']:.3g}" in text and f"{entry['eval_std']:.3g}" in text, text
    assert "then γ = " in text and "(β)" in text and "(γ)" in text


@pytest.mark.parametrize(
    "config, words",
    [(Config(shape=(1, 3, 1, 1)), "In eval mode the running statistics normalize"),
     (Config(shape=(4, 3, 1, 1), train_batch=1), "training steps before the displayed batch"),
     (Config(shape=(8, 3, 16)), "accepts only its rank"),
     (Config(eps=0.0), "eps guards"),
     (Config(layer="BatchNorm1d", shape=(8, 16, 4), layout="features-last"), "Move the features to dim 1"),
     (Config(layer="BatchNorm1d", shape=(8, 16, 4)), None)],
    ids=["batch-of-one", "batch-of-one-in-training", "rank", "eps", "features-last", "no-error"],
)  # fmt: skip
def test_error_hints_are_true(config, words):
    r = run_comparison(config)
    hint = error_hint(r)
    assert (hint is None) if words is None else (words in hint), hint
    if words and "eval mode" in words:  # the advice works: the same batch in eval mode matches
        assert run_comparison(Config(shape=config.shape, mode="eval")).verdict == "match"


def test_markdown_table_escapes_pipes():
    table = markdown_table([{"a|b": "1|2", "c": "3"}])
    assert table.splitlines()[0] == "| a\\|b | c |" and "1\\|2" in table
