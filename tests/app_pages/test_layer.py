"""The Streamlit app through AppTest: URL round trips, verdicts, errors, refusals, hostile links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from bnviz.explorer.compare import Config
from bnviz.explorer.query import PARAMS, to_query

APP = Path(__file__).resolve().parents[2] / "app.py"

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def run_app(params: dict[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    for key, value in (params or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def verdict_text(at: AppTest) -> str:
    texts = [m.value for m in at.markdown if m.value.startswith("### **")]
    assert len(texts) == 1, texts
    return texts[0]


def page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [w.value for w in at.warning] + [e.value for e in at.error]
    parts += [c.value for c in at.caption] + [i.value for i in at.info] + [c.value for c in at.code]
    return "\n".join(parts)


def test_default_view():
    at = run_app()
    assert verdict_text(at).startswith("### **match**")
    assert len(at.get("plotly_chart")) == 4
    assert len(at.dataframe) == 1 and len(at.table) == 1
    assert "n = 2,048" in page_text(at)
    assert dict(at.query_params) == to_query(Config())


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(
    "layer, shape", [("BatchNorm1d", "32,4"), ("BatchNorm1d", "16,4,8"), ("BatchNorm2d", "8,3,8,8"),
                     ("BatchNorm3d", "4,2,3,4,4"), ("BatchNorm", "2,3,2,2,2,3")],
)  # fmt: skip
def test_each_layer_matches(layer, shape, mode):
    at = run_app({"layer": layer, "shape": shape, "mode": mode})
    text = verdict_text(at)
    assert text.startswith("### **match**"), text
    assert "mismatch" not in page_text(at)


NON_DEFAULT = {
    "layer": "BatchNorm3d",
    "shape": "4,2,3,4,4",
    "mode": "eval",
    "momentum": "none",
    "eps": "0.001",
    "affine": "false",
    "track": "false",
    "dtype": "float64",
    "device": "cpu",
    "dist": "heavy-tailed",
    "seed": "7",
    "steps": "3",
}


def test_every_control_reads_the_url_and_writes_it_back():
    at = run_app(NON_DEFAULT)
    sb = at.sidebar
    assert sb.selectbox(key="layer").value == "BatchNorm3d"
    assert sb.text_input(key="shape").value == "4,2,3,4,4"
    assert sb.radio(key="mode").value == "eval"
    assert sb.text_input(key="momentum").value == "none"
    assert sb.text_input(key="eps").value == "0.001"
    assert sb.checkbox(key="affine").value is False and sb.checkbox(key="track").value is False
    assert sb.selectbox(key="dtype").value == "float64"
    assert sb.selectbox(key="dist").value == "heavy-tailed"
    assert sb.number_input(key="seed").value == 7 and sb.number_input(key="steps").value == 3
    assert dict(at.query_params) == NON_DEFAULT
    assert not at.warning


@pytest.mark.parametrize(
    "change, param, expected",
    [(lambda sb: sb.selectbox(key="layer").select("BatchNorm"), "layer", "BatchNorm"),
     (lambda sb: sb.text_input(key="shape").input("16,3,4,4"), "shape", "16,3,4,4"),
     (lambda sb: sb.radio(key="mode").set_value("eval"), "mode", "eval"),
     (lambda sb: sb.text_input(key="momentum").input("None"), "momentum", "none"),
     (lambda sb: sb.text_input(key="eps").input("1e-3"), "eps", "0.001"),
     (lambda sb: sb.checkbox(key="affine").uncheck(), "affine", "false"),
     (lambda sb: sb.checkbox(key="track").uncheck(), "track", "false"),
     (lambda sb: sb.selectbox(key="dtype").select("float16"), "dtype", "float16"),
     (lambda sb: sb.selectbox(key="dist").select("uniform"), "dist", "uniform"),
     (lambda sb: sb.number_input(key="seed").set_value(11), "seed", "11"),
     (lambda sb: sb.number_input(key="steps").set_value(9), "steps", "9")],
    ids=[p for p in PARAMS if p != "device"],
)  # fmt: skip
def test_changing_a_control_updates_the_url(change, param, expected):
    at = run_app()
    change(at.sidebar).run()
    assert not at.exception
    assert at.query_params[param] == expected
    again = run_app(dict(at.query_params))  # the new link reproduces the view
    assert verdict_text(again) == verdict_text(at)


@pytest.mark.parametrize(
    "params, message",
    [({"layer": "BatchNorm2d", "shape": "8,3,16"}, "expected 4D input (got 3D input)"),
     ({"layer": "BatchNorm1d", "shape": "1,3"}, "Expected more than 1 value per channel when training"),
     ({"eps": "0"}, "batch_norm eps must be positive during training"),
     ({"layer": "BatchNorm1d", "shape": "8,16,4", "steps": "0"}, None)],
    ids=["wrong-rank", "batch-of-one", "eps-zero", "features-last-is-fine-but-wrong"],
)  # fmt: skip
def test_invalid_set_ups_show_torch_message(params, message):
    at = run_app(params)
    if message is None:
        assert verdict_text(at).startswith("### **match**")
        return
    codes = [c.value for c in at.code]
    assert any(message in c for c in codes[:2]), codes[:2]
    assert codes[0] == codes[1]  # torch's and bnviz's, side by side
    assert verdict_text(at).startswith("### **match** — both raise the same error")
    assert at.info, "a hint explains the error"


@pytest.mark.parametrize(
    "params, words",
    [({"shape": "4000,4000"}, "over the limit"), ({"shape": "1000,1000", "steps": "60"}, "fewer steps"),
     ({"device": "cuda"}, "cuda")],
)  # fmt: skip
def test_refused_before_running(params, words):
    at = run_app(params)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "Not run" in errors[0] and words in errors[0], errors
    assert not at.get("plotly_chart")


HOSTILE = {
    "layer": "<script>alert(1)</script>",
    "shape": '"><img src=x onerror=alert(1)>',
    "momentum": "[click](javascript:alert(1))",
    "eps": "$$\\frac{1}{0}$$",
    "dtype": ":red[boom]",
    "seed": "1; DROP TABLE",
    "steps": "9" * 40,
}


def test_hostile_link_falls_back_with_warnings():
    at = run_app(HOSTILE)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(HOSTILE)
    for w in warnings:  # every Markdown-active character of the quoted value is escaped
        assert not re.search(r"(?<!\\)[<>$\[\]]", w), w
    assert verdict_text(at).startswith("### **match**")
    assert dict(at.query_params) == to_query(Config())
    at.sidebar.radio(key="mode").set_value("eval").run()
    assert not at.warning, "the link's warnings go once the reader changes the view"


def test_performance_is_measured_on_demand_only():
    at = run_app()
    assert not at.metric, "no timing before the button"
    at.button(key="measure").click().run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert set(values) == {"torch", "bnviz", "bnviz / torch"}
    assert values["bnviz / torch"].endswith("×") and float(values["bnviz / torch"][:-1]) > 0


@pytest.mark.parametrize(
    "key, text, words",
    [("shape", "abc", "Ignored shape=abc"), ("shape", "<b>1</b>", "Ignored shape=\\<b\\>1\\<\\/b\\>"),
     ("momentum", "1.5", "between 0 and 1"), ("eps", "1e400", "between \\-1 and 1")],
)  # fmt: skip
def test_bad_typed_values_warn_and_fall_back(key, text, words):
    at = run_app()
    at.sidebar.text_input(key=key).input(text).run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and words in warnings[0], warnings
    assert verdict_text(at).startswith("### **match**")
    assert at.query_params[key] == to_query(Config())[key], "the URL keeps the value actually shown"
