"""The /training page through AppTest: experiment 1 on opening, the others only on their button
(then cached for everyone), every control in the URL, refusals and hostile values."""

from __future__ import annotations

import pytest

from app_pages.common import server
from bnviz.explorer.mlp import seconds_estimate
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
from tests.app_pages.helpers import outside_code, page_text, run_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SMALL = {"steps": "200", "every": "50"}  # experiment 1, small
TINY = {"sweep_lrs": "0.1,1", "sweep_seeds": "0", "sweep_steps": "50", "noise_steps": "50", "noise_seeds": "0",
        "relu_steps": "50", "relu_seeds": "0,1"}  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_cache():
    server.clear()
    yield
    server.clear()


def test_the_default_views_computed_ahead_show_at_once_and_say_so():
    at = run_app({}, "training")
    keys = [c.key for c in at.get("plotly_chart")]
    assert keys == ["chart-accuracy", "chart-percentiles", "chart-sweep", "chart-noise", "chart-smoothness",
                    "chart-placement"], keys  # fmt: skip
    assert not [b for b in at.button if b.key.startswith("tr.run.")]
    text = page_text(at)
    assert text.count("These numbers were computed ahead for this default view") == 4, text
    assert "Batch norm ends ahead on all 5 seeds, as in the paper." in text


def test_a_changed_view_trains_live_and_the_costly_ones_wait_for_their_button():
    at = run_app({**SMALL, **TINY}, "training")
    assert [c.key for c in at.get("plotly_chart")] == ["chart-accuracy", "chart-percentiles"]
    text = page_text(at)
    for words in ("**The paper.**", "**This run.**", "python -m bnviz.training --experiment drift --lr 0.5 --steps 200",
                  "Trained live on this server for this view."):  # fmt: skip
        assert words in text, words
    configs = [TRAINING_SWEEP.parse(TINY, SweepConfig())[0], TRAINING_NOISE.parse(TINY, NoiseConfig())[0],
               TRAINING_PLACEMENT.parse(TINY, PlacementConfig())[0]]  # fmt: skip
    labels = [b.label for b in at.button if b.key.startswith("tr.run.")]
    assert labels == [f"Run it (about {seconds_estimate(c):.0f} s)" for c in configs], labels
    assert "opening it starts nothing by itself" in text
    assert len(at.get("download_button")) == 1


def test_a_button_runs_its_experiment_and_the_result_stays_for_everyone():
    at = run_app({**SMALL, **TINY}, "training")
    at.button(key="tr.run.placement").click().run(timeout=120)
    assert not at.exception and "chart-placement" in [c.key for c in at.get("plotly_chart")]
    assert "Seeds 0 and 1" in page_text(at), page_text(at)
    other_visitor = run_app({**SMALL, **TINY}, "training")  # a new session: the server's cache shows it at once
    assert "chart-placement" in [c.key for c in other_visitor.get("plotly_chart")]
    assert "chart-sweep" not in [c.key for c in other_visitor.get("plotly_chart")]


@pytest.mark.parametrize("name", ["sweep", "noise"])
def test_the_other_buttons_run_theirs(name):
    at = run_app({**SMALL, **TINY}, "training")
    at.button(key=f"tr.run.{name}").click().run(timeout=120)
    keys = [c.key for c in at.get("plotly_chart")]
    assert not at.exception and ("chart-sweep" in keys if name == "sweep" else "chart-smoothness" in keys), keys


NON_DEFAULT = {"lr": "8.0", "steps": "300", "seeds": "3", "init": "default", "every": "30", "width": "20",
               "batch": "16", "sweep_lrs": "0.5,2", "sweep_seeds": "4,5", "sweep_steps": "60", "sweep_act": "sigmoid",
               "sweep_init": "0.1", "noise_lr": "0.2", "noise_steps": "70", "noise_seeds": "1", "noise_mean": "0.5",
               "noise_std": "3.0", "relu_lr": "0.3", "relu_steps": "80", "relu_seeds": "2,9"}  # fmt: skip


def test_every_control_reads_the_url_and_a_link_reproduces_the_view():
    at = run_app(NON_DEFAULT, "training")
    assert not at.warning, [w.value for w in at.warning]
    expected = {**TRAINING_DRIFT.to_query(DriftConfig()), **TRAINING_SWEEP.to_query(SweepConfig()),
                **TRAINING_NOISE.to_query(NoiseConfig()), **TRAINING_PLACEMENT.to_query(PlacementConfig())}  # fmt: skip
    assert set(NON_DEFAULT) == set(expected), "every control of the page is in the table"
    assert at.sidebar.text_input(key="tr.lr").value == "8.0" and at.text_input(key="tr.sweep_lrs").value == "0.5,2"
    at.sidebar.text_input(key="tr.seeds").set_value("4,5").run()
    assert dict(at.query_params) == {**NON_DEFAULT, "seeds": "4,5"}


def test_an_old_link_with_one_seed_shows_that_seed_alone():
    at = run_app({**SMALL, "seed": "3"}, "training")
    assert not at.warning, [w.value for w in at.warning]
    assert at.sidebar.text_input(key="tr.seeds").value == "3"
    assert "seed 3" in page_text(at) and "there is no verdict" in page_text(at)


def test_refused_settings_say_why_and_run_nothing():
    at = run_app({"steps": "4000", "every": "1", "sweep_lrs": "0.1,0.1"}, "training")
    errors = [e.value for e in at.error]
    assert any("more than 200 evaluations" in e for e in errors), errors
    assert any("the sweep's learning rates repeat one" in e for e in errors), errors
    assert not [b for b in at.button if b.key == "tr.run.sweep"], "no button for a refused sweep"
    keys = [c.key for c in at.get("plotly_chart")]  # the two refused draw nothing; the defaults are shown
    assert keys == ["chart-noise", "chart-smoothness", "chart-placement"], keys


def test_hostile_values_are_inert():
    hostile = {"lr": "see https://evil.example/x", "sweep_lrs": "![](https://evil.example/i.png)",
               "noise_seeds": "<script>alert(1)</script>", "init": ":red[x] $y$"}  # fmt: skip
    at = run_app({**hostile, **SMALL}, "training")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(hostile), warnings
    for w in warnings:
        assert "evil.example" not in outside_code(w) and "<script>" not in outside_code(w), w
