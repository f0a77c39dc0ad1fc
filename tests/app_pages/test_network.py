"""The /network page through AppTest: the question's CNN, its controls in the URL, refusals."""

from __future__ import annotations

import re

import pytest

from tests.app_pages.helpers import outside_code, page_text, run_app, verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_default_view_shows_every_batch_norm_and_the_training():
    at = run_app(page="network")
    assert verdict(at) == "match"
    assert len(at.get("plotly_chart")) == 4  # loss, logits, layers, the free-running divergence
    assert len(at.get("image")) == 3, "one picture per batch-norm layer"
    text = page_text(at)
    for words in ("Layer 1: BatchNorm2d", "Layer 9: BatchNorm1d", "expected 2D or 3D input (got 4D input)",
                  "expected 4D input (got 2D input)", "| logits |", "values per statistic"):  # fmt: skip
        assert words in text, words
    assert dict(at.query_params) == {}, "a bare link says the default view: it stays bare"


def test_every_control_is_in_the_url_and_a_link_reproduces_the_view():
    params = {"batch": "8", "image": "8", "channels": "3", "steps": "4", "lr": "0.05", "seed": "2", "mode": "train"}
    at = run_app(params, page="network")
    assert dict(at.query_params) == params
    sb = at.sidebar
    sb.number_input(key="net.steps").set_value(6).run()
    assert at.query_params["steps"] == "6"
    again = run_app(dict(at.query_params), page="network")
    assert page_text(again) == page_text(at)


@pytest.mark.parametrize(
    "params, words",
    [({"batch": "256", "image": "64", "channels": "32", "steps": "50"}, "multiply-adds")],
)
def test_refused_before_running(params, words):
    at = run_app(params, page="network")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and words in errors[0], errors
    assert not at.get("plotly_chart")


def test_hostile_values_are_inert():
    at = run_app({"batch": "<script>alert(1)</script>", "lr": "[x](javascript:alert(1))", "mode": ":red[x]"},
                 page="network")  # fmt: skip
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3
    for w in warnings:
        assert not re.search(r"(?<!\\)[<>$\[\]]", outside_code(w)), w
    assert verdict(at) == "match"


def test_typed_over_limit_value_gets_a_message():
    at = run_app(page="network")
    at.sidebar.number_input(key="net.batch").set_value(100000).run()
    assert any("Ignored batch=`100000`" in w.value for w in at.warning)
