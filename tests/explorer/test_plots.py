"""Figures: structure, and a payload that stays small whatever the tensor size."""

from __future__ import annotations

import pytest

from bnviz.explorer.compare import Config, run_comparison
from bnviz.explorer.plots import all_figures, figure_bytes

SIZES = [
    pytest.param(Config(), id="default"),
    pytest.param(Config(layer="BatchNorm1d", shape=(2000, 1000), steps=3), id="2M-elements"),
    pytest.param(Config(shape=(16, 64, 32, 32), steps=2), id="64-channels"),
    pytest.param(Config(layer="BatchNorm", shape=(2, 3, 2, 2, 2, 2), momentum=None, steps=30), id="rank6-30-steps"),
]


@pytest.mark.parametrize("config", SIZES)
def test_figures_are_drawn_and_small(config):
    figs = all_figures(run_comparison(config))
    assert set(figs) == {"distributions", "running", "differences", "gradients"}
    for name, fig in figs.items():
        size = figure_bytes(fig)
        assert size <= 100_000, f"{name}: {size} bytes"
        assert fig.data, f"{name} has no trace"


def test_figure_contents():
    config = Config(steps=4)
    figs = all_figures(run_comparison(config))
    dist = figs["distributions"]
    names = {t.name for t in dist.data}
    assert {"input", "bnviz output", "torch output"} <= names
    running = figs["running"]
    assert all(len(t.x) == config.steps + 1 for t in running.data)
    assert {t.name for t in running.data} == {"bnviz", "torch"}
    assert len(running.layout.shapes) == 2 * 3  # population lines: mean and var per channel
    diffs = figs["differences"]
    assert {t.name for t in diffs.data} >= {"output", "grad input"}
    assert "bit-exact" in diffs.layout.title.subtitle.text
    grads = figs["gradients"]
    assert {t.name for t in grads.data} >= {"bnviz", "torch", "bnviz grad_weight", "torch grad_bias"}


def test_no_figures_for_an_error():
    assert all_figures(run_comparison(Config(shape=(8, 3, 16)))) == {}


def test_untracked_eval_has_no_running_lines():
    figs = all_figures(run_comparison(Config(track_running_stats=False, mode="eval")))
    assert not figs["running"].data
