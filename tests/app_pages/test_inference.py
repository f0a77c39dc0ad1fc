"""The /inference page through AppTest: folding and freezing on a small network, its controls in
the URL, refusals, hostile links."""

from __future__ import annotations

import re

import pytest

from bnviz.explorer.inference import engine
from bnviz.explorer.inference.url import INFERENCE, VARIANTS, InferenceConfig
from tests.app_pages.helpers import outside_code, page_text, run_app, verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Small and fast, every field away from its default: a link that sets all of them.
VIEW = {"batch": "8", "channels": "3", "image": "6", "steps": "4", "finetune": "3", "lr": "0.1", "shift": "-1.5",
        "channel": "2", "seed": "5", "dtype": "float64"}  # fmt: skip


def test_default_view_teaches_both_questions_and_shows_every_chart():
    at = run_app(page="inference")
    assert verdict(at) == "match"
    assert len(at.get("plotly_chart")) == 2 + len(VARIANTS)  # the fold's differences, one per variant, the drift
    text = page_text(at)
    for words in ("Can I fold BatchNorm into the conv before it for inference?",
                  "Why does my frozen BatchNorm still change during fine-tuning?", "Folding is exact",
                  "0: Conv2d → 1: BatchNorm2d, channel 0", "3: Conv2d (no bias) → 4: BatchNorm2d, channel 0",
                  "b′ = (b − mean) · s + β", "| W′ = W · s |", "1: Identity",
                  "Folding a network in training mode gives the wrong answer",
                  "ValueError: fold_batch_norms needs a model in eval mode",
                  "at 8 of 8 steps", "nothing moved", "3 and 4 keep it at zero",
                  "bn.eval()  # after model.train(), every time"):  # fmt: skip
        assert words in text, words
    assert len(at.latex) == 2, "the two folding formulas"
    assert not at.warning and not at.error
    assert dict(at.query_params) == {}, "a bare link says the default view: it stays bare"


def test_every_control_reads_the_url_writes_it_back_and_a_link_reproduces_the_view():
    at = run_app(VIEW, page="inference")
    assert dict(at.query_params) == VIEW
    sb = at.sidebar
    for name in ("batch", "channels", "image", "steps", "finetune", "channel", "seed"):
        assert sb.number_input(key=f"inf.{name}").value == int(VIEW[name]), name
    assert sb.text_input(key="inf.lr").value == "0.1" and sb.text_input(key="inf.shift").value == "-1.5"
    assert sb.radio(key="inf.dtype").value == "float64"
    assert "channel 2" in page_text(at) and "float64 rounding" in page_text(at)

    sb.number_input(key="inf.finetune").set_value(4).run()
    assert at.query_params["finetune"] == "4" and at.query_params["seed"] == "5"
    assert "at 4 of 4 steps" in page_text(at)
    sb.text_input(key="inf.shift").set_value("3").run()
    assert at.query_params["shift"] == "3.0"
    again = run_app(dict(at.query_params), page="inference")
    strip = re.compile(r"\d+\.\d+ ms.*?as fast")  # the timings, never compared
    assert strip.sub("", page_text(again)) == strip.sub("", page_text(at))


@pytest.mark.parametrize(
    "params, words",
    [
        ({"channels": "4", "channel": "4"}, "channel must be between 0 and 3"),
        ({"batch": "256", "channels": "64", "image": "32"}, "activation values per batch is over the limit"),
        ({"batch": "64", "channels": "8", "image": "8", "steps": "200", "finetune": "100"}, "forward passes"),
    ],
    ids=["channel", "batch-values", "work"],
)
def test_refused_before_running(params, words, monkeypatch):
    monkeypatch.setattr(engine, "run", lambda *a, **k: pytest.fail("ran a refused config"))
    at = run_app(params, page="inference")
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Not run: ") and words in errors[0], errors
    assert not at.get("plotly_chart")


def test_hostile_link_is_inert_with_one_warning_per_bad_value():
    hostile = {"batch": "<script>alert(1)</script>", "lr": "[x](javascript:alert(1))", "dtype": ":red[x]",
               "shift": "$$\\LaTeX$$", "finetune": "1e9"}  # fmt: skip
    at = run_app(hostile, page="inference")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(hostile), warnings
    for w in warnings:
        assert not re.search(r"(?<!\\)[<>$\[\]]", outside_code(w)), w
    assert verdict(at) == "match"
    assert dict(at.query_params) == INFERENCE.to_query(InferenceConfig())


def test_typed_over_limit_value_gets_a_message():
    at = run_app(page="inference")
    at.sidebar.number_input(key="inf.finetune").set_value(1000).run()
    assert any("Ignored finetune=`1000`" in w.value for w in at.warning), [w.value for w in at.warning]
    assert verdict(at) == "match"
