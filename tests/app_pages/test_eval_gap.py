"""The /eval-gap page through AppTest: the two default sections on opening, the others only on
their button, every control in the URL, refusals and hostile values inert."""

from __future__ import annotations

import pytest

from app_pages.common import server
from bnviz.explorer.eval_gap import url as eval_gap_url
from bnviz.explorer.eval_gap.url import EVAL_GAP
from tests.app_pages.helpers import outside_code, page_text, run_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SMALL = {"order_steps": "60", "lag_steps": "40", "dropout_steps": "40", "accum_steps": "20", "passes_steps": "20",
         "pairs": "4", "ckpt_steps": "5"}  # fmt: skip
ANCHORS = ["non-iid-batches", "lagging-statistics", "dropout", "micro-batches", "two-passes", "checkpointing"]


@pytest.fixture(autouse=True)
def fresh_cache():
    server.clear()
    yield
    server.clear()


def test_the_default_sections_run_on_opening_and_the_others_wait():
    at = run_app(SMALL, "eval_gap")
    assert [h.proto.anchor for h in at.subheader] == ANCHORS
    keys = [c.key for c in at.get("plotly_chart")]
    assert keys and all(k.startswith(("chart-batches-", "chart-lag-")) for k in keys), keys
    on_buttons = [n for n in eval_gap_url.SECTIONS if n not in eval_gap_url.DEFAULT_SECTIONS]
    assert [b.key for b in at.button] == [f"eg.run.{n}" for n in on_buttons]
    text = page_text(at)
    assert text.count("**Symptom.**") == 2 and text.count("**The fix.**") == 2
    assert len(at.code) == 2, "the fix in plain PyTorch, per section run"


@pytest.mark.parametrize("name", [n for n in eval_gap_url.SECTIONS if n not in eval_gap_url.DEFAULT_SECTIONS])
def test_each_button_runs_its_section(name):
    at = run_app(SMALL, "eval_gap")
    at.button(key=f"eg.run.{name}").click().run(timeout=180)
    assert not at.exception
    assert any(c.key.startswith(f"chart-{name}-") for c in at.get("plotly_chart"))
    assert page_text(at).count("**Symptom.**") == 3
    if name == "checkpoint":
        assert len(at.dataframe) == 1, "the buffers side by side"


NON_DEFAULT = {"order_lr": "0.2", "order_steps": "50", "order_batch": "40", "order_seeds": "3",
               "lag_momenta": "0.05,0.5", "lag_lr": "0.1", "lag_steps": "30", "lag_seeds": "2,4", "p": "0.3",
               "dropout_input": "before", "dropout_steps": "30", "dropout_seeds": "1", "micro": "2",
               "micro_batch": "16", "accum_momentum": "0.2", "accum_steps": "30", "pair": "views", "pairs": "3",
               "passes_steps": "20", "ckpt_steps": "7", "ckpt_momentum": "0.3"}  # fmt: skip


def test_every_control_reads_the_url_and_writes_it_back():
    at = run_app(NON_DEFAULT, "eval_gap")
    assert not at.warning, [w.value for w in at.warning]
    assert set(NON_DEFAULT) == {n for spec in EVAL_GAP.values() for n in spec.names}, "every control in the table"
    assert at.text_input(key="eg.lag_momenta").value == "0.05,0.5" and at.selectbox(key="eg.pair").value == "views"
    at.text_input(key="eg.order_seeds").set_value("4,5,6").run()
    assert dict(at.query_params) == {**NON_DEFAULT, "order_seeds": "4,5,6"}


def test_an_old_link_with_one_seed_shows_that_seed_alone():
    at = run_app({**SMALL, "order_seed": "3"}, "eval_gap")
    assert not at.warning, [w.value for w in at.warning]
    assert at.text_input(key="eg.order_seeds").value == "3"
    assert "seed 3" in page_text(at)


def test_the_default_view_shows_every_cause_computed_ahead_with_its_verdict_over_five_seeds():
    at = run_app({}, "eval_gap")
    assert not [b for b in at.button if b.key.startswith("eg.run.")], "every default section is computed ahead"
    keys = {c.key.split("-")[1] for c in at.get("plotly_chart")}
    assert keys == set(eval_gap_url.SECTIONS), keys
    text = page_text(at)
    assert text.count("**Symptom.**") == 6, text
    assert "Eval mode collapses on all 5 seeds." in text and "Hendrycks & Gimpel" in text


def test_refused_settings_say_why():
    at = run_app({**SMALL, "micro": "16", "micro_batch": "128"}, "eval_gap")
    assert any("Not run" in e.value for e in at.error), [e.value for e in at.error]
    assert "eg.run.accumulation" not in [b.key for b in at.button]


def test_hostile_values_are_inert():
    hostile = {"order_lr": "see https://evil.example/x", "lag_momenta": "![](https://evil.example/i.png)",
               "pair": "<script>alert(1)</script>", "p": ":red[x] $y$"}  # fmt: skip
    at = run_app({**SMALL, **hostile}, "eval_gap")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(hostile), warnings
    for w in warnings:
        assert "evil.example" not in outside_code(w) and "<script>" not in outside_code(w), w
