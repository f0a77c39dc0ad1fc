"""Explanations: the snippet runs and agrees, the panel's numbers add up, hints match errors."""

from __future__ import annotations

import contextlib
import io
import math
import re

import pytest

from bnviz.explorer.compare import Config, run_comparison
from bnviz.explorer.explain import channel_table, code_snippet, error_hint, mode_note, reduced_axes

SNIPPETS = [
    Config(),
    Config(layer="BatchNorm", shape=(2, 3, 2, 2, 3), momentum=None, mode="eval"),
    Config(layer="BatchNorm1d", shape=(16, 4), affine=False, track_running_stats=False, dtype="float64"),
    Config(layer="BatchNorm3d", shape=(2, 2, 2, 3, 3), dtype="bfloat16", dist="bimodal", steps=2),
]


@pytest.mark.parametrize("config", SNIPPETS, ids=lambda c: c.layer)
def test_code_snippet_runs_and_reports_small_differences(config):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code_snippet(config), "<snippet>", "exec"), {})
    diffs = [float(v) for v in re.findall(r"= ([0-9.e+-]+)", out.getvalue())]
    assert diffs, out.getvalue()
    limit = 0.1 if config.dtype == "bfloat16" else 1e-3
    assert max(diffs) < limit, out.getvalue()


def test_channel_table_formula_rows_equal_the_actual_update():
    r = run_comparison(Config(momentum=0.3))
    rows = {row["quantity"]: row for row in channel_table(r, 2)}
    for name in ("running_mean", "running_var"):
        actual, formula = float(rows[f"{name} after"]["value"]), float(rows[f"{name} by the formula"]["value"])
        assert math.isclose(actual, formula, rel_tol=2e-6), f"{name}: layer {actual} vs formula {formula}"
    assert "2048/2047" in rows["unbiased variance (stored)"]["formula"]


def test_channel_table_cumulative_and_eval():
    rows = channel_table(run_comparison(Config(momentum=None, steps=3)), 0)
    assert any("1/4 (cumulative average)" in r["formula"] for r in rows)
    rows = channel_table(run_comparison(Config(mode="eval")), 0)
    assert any("not updated in eval" in r["formula"] for r in rows)
    assert channel_table(run_comparison(Config()), 99) == []


def test_reduced_axes_and_mode_notes():
    assert "over dims [0, 2, 3]" in reduced_axes(Config()) and "n = 2,048" in reduced_axes(Config())
    assert "over dims [0]" in reduced_axes(Config(layer="BatchNorm1d", shape=(32, 4)))
    assert "no channel" in reduced_axes(Config(shape=(5,)))
    assert "running_mean and running_var normalize" in mode_note(Config(mode="eval"))
    assert "no running statistics" in mode_note(Config(mode="eval", track_running_stats=False))


@pytest.mark.parametrize(
    "config, words",
    [(Config(shape=(1, 3, 1, 1)), "bigger batch"), (Config(shape=(8, 3, 16)), "accepts only its rank"),
     (Config(eps=0.0), "eps guards"), (Config(layer="BatchNorm1d", shape=(8, 16, 4)), None)],
)  # fmt: skip
def test_error_hints(config, words):
    r = run_comparison(config)
    hint = error_hint(r.error.torch) if r.error else None
    assert (hint is None) if words is None else (words in hint), hint


def test_channel_hint_for_features_last():
    assert "permute" in error_hint("RuntimeError: running_mean should contain 16 elements not 4")
