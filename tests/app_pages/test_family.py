"""The /family page through AppTest: five members, their pictures, the URL, refusals, hostile links."""

from __future__ import annotations

import re

import pytest

from tests.app_pages.helpers import outside_code, page_text, run_app, verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_default_view():
    at = run_app(page="family")
    assert verdict(at) == "match"
    assert len(at.get("image")) == 5, "one statistics picture per member"
    assert len(at.get("plotly_chart")) == 2, "the cells and the outputs"
    text = page_text(at)
    for words in ("| BatchNorm | N, H, W |", "| GroupNorm | C/2, H, W |", "0 (exactly)", "sample 0's"):
        assert words in text, words
    assert dict(at.query_params) == {}, "a bare link says the default view: it stays bare"


def test_every_control_reads_the_url_and_a_link_reproduces_the_view():
    params = {"shape": "4,6,5", "groups": "3", "dist": "uniform", "seed": "3", "ln": "last", "eps": "0.001",
              "channel": "2", "member": "GroupNorm"}  # fmt: skip
    at = run_app(params, page="family")
    assert dict(at.query_params) == params
    at.sidebar.number_input(key="fam.groups").set_value(2).run()
    assert at.query_params["groups"] == "2"
    again = run_app(dict(at.query_params), page="family")
    assert page_text(again) == page_text(at)


@pytest.mark.parametrize("params, words", [({"shape": "8,6"}, "rank 3"), ({"groups": "4"}, "divisible")])
def test_refused_before_running(params, words):
    at = run_app(params, page="family")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "Not run" in errors[0] and words in errors[0], errors
    assert not at.get("plotly_chart")


def test_hostile_values_are_inert():
    at = run_app({"shape": "<img src=x onerror=alert(1)>", "member": "<script>", "ln": "[x](javascript:1)"},
                 page="family")  # fmt: skip
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 3
    for w in warnings:
        assert not re.search(r"(?<!\\)[<>$\[\]]", outside_code(w)), w
    assert verdict(at) == "match"
