"""Figures: structure, colours, axes, and a payload that stays small whatever the tensor size."""

from __future__ import annotations

import pytest

from bnviz.explorer.layer.engine import run as run_comparison
from bnviz.explorer.layer.figures import all_figures, figure_bytes
from bnviz.explorer.layer.url import Config
from bnviz.explorer.theme import BNVIZ_COLOR, TORCH_COLOR

SIZES = [
    pytest.param(Config(), id="default"),
    pytest.param(Config(layer="BatchNorm1d", shape=(2000, 1000), steps=3), id="2M-elements"),
    pytest.param(Config(shape=(16, 64, 32, 32), steps=2), id="64-channels"),
    pytest.param(Config(layer="BatchNorm", shape=(2, 3, 2, 2, 2, 2), momentum=None, steps=30), id="rank6-30-steps"),
]
NAMES = {"cells", "modes", "distributions", "running", "differences", "gradients", "gradient_lesson"}


@pytest.mark.parametrize("config", SIZES)
def test_figures_are_drawn_and_small(config):
    figs = all_figures(run_comparison(config), channel=1)
    assert set(figs) == NAMES
    for name, fig in figs.items():
        size = figure_bytes(fig)
        assert size <= 100_000, f"{name}: {size} bytes"
        assert fig.data, f"{name} has no trace"


def test_figure_contents():
    config = Config(steps=4)
    figs = all_figures(run_comparison(config), channel=2)
    names = {t.name for t in figs["distributions"].data}
    assert names == {"input", "bnviz output", "torch output"}
    running = figs["running"]
    assert all(len(t.x) == config.steps + 2 and t.x[0] == 0 for t in running.data), "from step 0"
    focus = [t for t in running.data if t.name and t.name.endswith("channel 2")]
    assert {t.name for t in focus} == {"bnviz, channel 2", "torch, channel 2"}
    assert len(running.layout.shapes) == 2  # the focus channel's population mean and variance
    assert figs["differences"].layout.title.text == "Differences from torch"
    assert {t.name for t in figs["gradients"].data} >= {"bnviz", "torch", "bnviz grad_weight", "torch grad_bias"}
    assert {t.name.split(" mode")[0] for t in figs["modes"].data} == {"train", "eval"}


def test_bnviz_is_red_and_torch_blue_everywhere_and_differences_are_neither():
    figs = all_figures(run_comparison(Config(steps=2)))
    seen = 0
    for fig in figs.values():
        for t in fig.data:
            name = (t.name or "").lower()
            marker = getattr(t, "marker", None)
            colors = {str(getattr(marker, "color", None)), str(getattr(getattr(t, "line", None), "color", None))}
            colors |= {str(getattr(getattr(marker, "line", None), "color", None))}
            if name.startswith("bnviz"):
                assert BNVIZ_COLOR in colors, (name, colors)
                seen += 1
            elif name.startswith("torch"):
                assert TORCH_COLOR in colors, (name, colors)
                seen += 1
    assert seen >= 8
    for t in figs["differences"].data:
        assert t.marker.color not in (BNVIZ_COLOR, TORCH_COLOR), t.name


def test_axes_of_steps_and_channels_are_whole_numbers_and_values_have_no_si_suffix():
    figs = all_figures(run_comparison(Config(dist="large-mean", steps=3)))
    assert figs["running"].layout.xaxis.tickformat == "d" and figs["running"].layout.xaxis.dtick == 1
    grads = figs["gradients"].layout
    assert grads.xaxis2.tickformat == "d" and grads.xaxis3.tickformat == "d"
    assert figs["distributions"].layout.xaxis.tickformat == ",.6~g", "9,997.5 rather than 9.9975k"


def test_no_figures_for_an_error():
    assert all_figures(run_comparison(Config(shape=(8, 3, 16)))) == {}


def test_untracked_eval_has_no_running_lines():
    figs = all_figures(run_comparison(Config(track_running_stats=False, mode="eval")))
    assert not figs["running"].data
