"""The /data-parallel page through AppTest: ranks in real processes, the URL, refusals, a dying rank."""

from __future__ import annotations

import re

import pytest

from bnviz.explorer.data_parallel import worker as dp_worker
from tests.app_pages.helpers import outside_code, page_text, run_app, verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_default_view():
    at = run_app(page="data_parallel")
    assert verdict(at) == "match"
    assert len(at.get("plotly_chart")) == 3
    text = page_text(at)
    assert "| 3 | 4 |" in text and "SyncBatchNorm equals batch norm on the whole batch" in text
    assert dict(at.query_params) == {}, "a bare link says the default view: it stays bare"


def test_controls_in_the_url_and_a_typed_list_with_an_empty_rank():
    params = {"world": "3", "per_rank": "4", "batches": "6,0,2", "sample": "2,5", "dist": "uniform", "seed": "2",
              "channel": "1", "code": "false"}  # fmt: skip
    at = run_app(params, page="data_parallel")
    assert dict(at.query_params) == params
    assert verdict(at) == "match" and "| 1 | 0 | empty |" in page_text(at)


def test_a_dying_rank_shows_a_clear_error(monkeypatch):
    monkeypatch.setenv(dp_worker.FAULT_ENV, "rank:1")
    at = run_app({"world": "2", "seed": "11"}, page="data_parallel")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The ranks failed: rank 1 stopped"), errors
    assert not at.get("plotly_chart")


@pytest.mark.parametrize("params, words", [({"world": "9"}, "Ignored world=`9`"), ({"batches": "1,2"}, "one batch")])
def test_bad_values_warn_or_refuse(params, words):
    at = run_app(params, page="data_parallel")
    assert words in page_text(at), page_text(at)


def test_hostile_values_are_inert():
    at = run_app({"batches": "<img src=x onerror=alert(1)>", "sample": "[x](javascript:1)"}, page="data_parallel")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 2 and all(not re.search(r"(?<!\\)[<>$\[\]]", outside_code(w)) for w in warnings), warnings
