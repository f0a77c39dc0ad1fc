"""The layer page through AppTest: URL round trips, the teaching sections, verdicts, errors,
refusals, hostile links, and the regressions a newcomer found."""

from __future__ import annotations

import base64
import re

import pytest

from bnviz.explorer.layer.url import PARAMS, Config, to_query
from tests.app_pages.helpers import outside_code, page_text, run_app, verdict

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CHARTS = 5  # cells, train-vs-eval, distributions, running statistics, the gradient's lesson (the cube is an image;
# the proof's two — differences, both sides' gradients — are folded)


def test_default_view_teaches_first_and_proves_below():
    at = run_app()
    assert verdict(at) == "match"
    assert len(at.get("plotly_chart")) == CHARTS
    assert len(at.table) == 1, "one channel's numbers"
    assert len(at.get("image")) == 1, "the cube picture"
    assert not at.code, "the script is shown on demand"
    at.toggle(key="code").set_value(True).run()
    assert "import bnviz" in at.code[0].value and at.query_params["code"] == "true"
    headers = [h.value for h in at.subheader]
    assert headers[:8] == [  # the lesson, then the proof
        "The layer explorer", "What batch norm does to this tensor", "Train mode and eval mode on this batch",
        "Distributions", "Running statistics", "What the gradient through batch norm looks like",
        "The proof: bnviz against torch", "Code"], headers  # fmt: skip
    assert "| output | " not in page_text(at), "the parity table is folded under the proof"
    at.toggle(key="proof").set_value(True).run()
    assert "| output | " in page_text(at) and at.query_params["proof"] == "true"
    text = page_text(at)
    assert "n = 2,048" in text and "| output | " in text, "the parity table is selectable text"
    assert "1.2 × 10⁻⁷" in text, "e-notation is explained"
    assert dict(at.query_params) == {**to_query(Config()), "channel": "0", "code": "true", "proof": "true"}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(
    "layer, shape", [("BatchNorm1d", "32,4"), ("BatchNorm1d", "16,4,8"), ("BatchNorm2d", "8,3,8,8"),
                     ("BatchNorm3d", "4,2,3,4,4"), ("BatchNorm", "2,3,2,2,2,3")],
)  # fmt: skip
def test_each_layer_matches(layer, shape, mode):
    at = run_app({"layer": layer, "shape": shape, "mode": mode})
    assert verdict(at) == "match"
    assert "mismatch" not in page_text(at)
    assert len(at.get("plotly_chart")) == CHARTS


NON_DEFAULT = {
    "layer": "BatchNorm3d",
    "shape": "4,2,3,4,4",
    "layout": "features-last",
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
    "train_n": "5",
}


def test_every_control_reads_the_url_and_writes_it_back():
    at = run_app({**NON_DEFAULT, "layout": "channels-first", "channel": "1", "code": "true"})
    sb = at.sidebar
    assert sb.selectbox(key="layer").value == "BatchNorm3d"
    assert sb.text_input(key="shape").value == "4,2,3,4,4"
    assert sb.radio(key="mode").value == "eval" and sb.radio(key="layout").value == "channels-first"
    assert sb.text_input(key="momentum").value == "none"
    assert sb.text_input(key="eps").value == "0.001"
    assert sb.checkbox(key="affine").value is False and sb.checkbox(key="track").value is False
    assert sb.selectbox(key="dtype").value == "float64"
    assert sb.selectbox(key="dist").value == "heavy-tailed"
    assert sb.number_input(key="seed").value == 7 and sb.number_input(key="steps").value == 3
    assert sb.number_input(key="train_n").value == 5
    assert dict(at.query_params) == {**NON_DEFAULT, "layout": "channels-first", "channel": "1", "code": "true"}
    assert not at.warning


@pytest.mark.parametrize(
    "change, param, expected",
    [(lambda sb: sb.selectbox(key="layer").select("BatchNorm"), "layer", "BatchNorm"),
     (lambda sb: sb.text_input(key="shape").input("16,3,4,4"), "shape", "16,3,4,4"),
     (lambda sb: sb.radio(key="layout").set_value("features-last"), "layout", "features-last"),
     (lambda sb: sb.radio(key="mode").set_value("eval"), "mode", "eval"),
     (lambda sb: sb.text_input(key="momentum").input("None"), "momentum", "none"),
     (lambda sb: sb.text_input(key="eps").input("1e-3"), "eps", "0.001"),
     (lambda sb: sb.checkbox(key="affine").uncheck(), "affine", "false"),
     (lambda sb: sb.checkbox(key="track").uncheck(), "track", "false"),
     (lambda sb: sb.selectbox(key="dtype").select("float16"), "dtype", "float16"),
     (lambda sb: sb.selectbox(key="dist").select("uniform"), "dist", "uniform"),
     (lambda sb: sb.number_input(key="seed").set_value(11), "seed", "11"),
     (lambda sb: sb.number_input(key="steps").set_value(9), "steps", "9"),
     (lambda sb: sb.number_input(key="train_n").set_value(3), "train_n", "3")],
    ids=[p for p in PARAMS if p != "device"],
)  # fmt: skip
def test_changing_a_control_updates_the_url(change, param, expected):
    at = run_app()
    change(at.sidebar).run()
    assert not at.exception
    assert at.query_params[param] == expected
    again = run_app(dict(at.query_params))  # the new link reproduces the view
    assert verdict(again) == verdict(at) and page_text(again) == page_text(at)


def test_channel_in_focus_is_in_the_url_and_drives_the_table():
    at = run_app({"channel": "2"})
    assert at.query_params["channel"] == "2"
    assert "Running statistics, channel 2" in at.get("plotly_chart")[3].proto.spec
    at.segmented_control(key="channel").set_value(1).run()
    assert at.query_params["channel"] == "1"
    assert run_app({"channel": "7"}).query_params["channel"] == "2", "clamped to the channels drawn"


@pytest.mark.parametrize(
    "params, message, stage",
    [({"layer": "BatchNorm2d", "shape": "8,3,16"}, "expected 4D input (got 3D input)", "training step 1"),
     ({"layer": "BatchNorm1d", "shape": "1,3"}, "Expected more than 1 value per channel when training",
      "displayed batch"),
     ({"eps": "0"}, "batch_norm eps must be positive during training", "training step 1"),
     ({"layer": "BatchNorm1d", "shape": "8,128,64", "layout": "features-last"},
      "running_mean should contain 128 elements not 64", "training step 1")],
    ids=["wrong-rank", "batch-of-one", "eps-zero", "features-last"],
)  # fmt: skip
def test_both_refuse_is_said_plainly_and_neutrally(params, message, stage):
    at = run_app(params)
    assert verdict(at) == "match: both refuse this input"
    assert any(m.value.startswith("**torch and bnviz both refuse this input**") and stage in m.value
               for m in at.markdown), page_text(at)  # fmt: skip
    assert message in at.code[0].value
    assert at.info, "a hint explains the error"
    assert not at.success


def test_features_last_shows_the_fix_side_by_side():
    at = run_app({"layer": "BatchNorm1d", "shape": "8,128,64", "layout": "features-last"})
    text = page_text(at)
    assert "`x.permute(0, 2, 1)`" in text and "`nn.BatchNorm1d(64)`" in text and "LayerNorm" in text
    assert [v for v in (verdict(at),)] and text.count("-badge[") == 2, "the fix has its own verdict"
    assert "-badge[:material/check_circle: match]" in text


def test_batch_of_one_advice_is_true():
    at = run_app({"layer": "BatchNorm1d", "shape": "1,3"})
    assert "In eval mode the running statistics normalize, and a batch of one works" in page_text(at)
    at.sidebar.radio(key="mode").set_value("eval").run()
    assert verdict(at) == "match" and len(at.get("plotly_chart")) == CHARTS


def test_untracked_eval_says_not_tracked():
    at = run_app({"track": "false", "mode": "eval", "proof": "true"})
    text = page_text(at)
    assert "| running_mean | not tracked" in text and "0.00e+00 | 100%" not in text.split("| running_mean |")[1][:40]
    assert "Nothing to draw: with track_running_stats=False" in text


def test_empty_batch_explains_itself():
    at = run_app({"shape": "0,3,4,4"})
    text = page_text(at)
    assert verdict(at) == "match" and "An empty batch has no values" in text
    assert "track_running_stats=False" not in text


def test_float16_large_mean_warns():
    at = run_app({"dtype": "float16", "dist": "large-mean"})
    assert any("spacing is 8" in w.value for w in at.warning), [w.value for w in at.warning]


@pytest.mark.parametrize(
    "params, words",
    [({"shape": "4000,4000"}, "over the limit"), ({"shape": "1000,1000", "steps": "60", "train_n": "1000"},
     "fewer steps"), ({"device": "cuda"}, "cuda")],
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
    "layout": "<b>x</b>",
    "train_n": "-1",
    "channel": "<svg onload=alert(1)>",
    "code": "<script>",
}


def test_hostile_link_falls_back_with_warnings():
    at = run_app(HOSTILE)
    warnings = [w.value for w in at.warning]
    assert len(warnings) == len(HOSTILE)
    for w in warnings:  # every Markdown-active character of the quoted value is escaped
        assert not re.search(r"(?<!\\)[<>$\[\]]", outside_code(w)), w
    assert verdict(at) == "match"
    assert dict(at.query_params) == {**to_query(Config()), "channel": "0", "code": "false", "proof": "false"}
    at.sidebar.radio(key="mode").set_value("eval").run()
    assert not at.warning, "the link's warnings go once the reader changes the view"


def test_the_default_views_timing_is_shown_at_once_and_any_other_on_demand():
    at = run_app({"proof": "true"})
    values = {m.label: m.value for m in at.metric}
    assert set(values) == {"torch", "bnviz", "bnviz / torch"}, "the default view is timed on opening"
    assert values["bnviz / torch"].endswith("×") and float(values["bnviz / torch"][:-1]) > 0
    caption = " ".join(c.value for c in at.caption)
    assert "both layers with 1 thread" in caption and "quartiles" in caption and "The server was" in caption
    other = run_app({"shape": "4,3,4,4", "proof": "true"})
    assert not other.metric, "no timing before the button"
    other.button(key="measure").click().run()
    assert not other.exception and {m.label for m in other.metric} == {"torch", "bnviz", "bnviz / torch"}


def test_compiled_performance_is_measured_on_demand_with_its_compile_times():
    at = run_app({"shape": "4,3,4,4", "proof": "true"})
    at.button(key="measure_compiled").click().run(timeout=300)
    assert not at.exception and not at.error, [e.value for e in at.error]
    values = {m.label: m.value for m in at.metric}
    assert set(values) == {"torch, compiled", "bnviz, compiled", "bnviz / torch"}, values
    caption = " ".join(c.value for c in at.caption)
    assert re.search(r"Compile time: bnviz \d+\.\d s, torch \d+\.\d s", caption), caption
    assert "inductor's start-up" in caption and "returned when it ended" in caption


@pytest.mark.parametrize(
    "widget, key, value, words",
    [("text_input", "shape", "abc", "Ignored shape=`abc`"),
     ("text_input", "shape", "<b>1</b>", "Ignored shape=`<b>1</b>`"),
     ("text_input", "momentum", "1.5", "between 0 and 1"), ("text_input", "eps", "1e400", "between \\-1 and 1"),
     ("number_input", "steps", 500, "Ignored steps=`500`"), ("number_input", "seed", -3, "Ignored seed=`-3`"),
     ("number_input", "train_n", 100000, "between 1 and 4,096")],
)  # fmt: skip
def test_bad_typed_values_get_a_visible_message(widget, key, value, words):
    """Over-limit values typed into a box, number boxes included, say so — not only a red outline."""
    at = run_app()
    box = getattr(at.sidebar, widget)(key=key)
    (box.input(value) if widget == "text_input" else box.set_value(value)).run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and words in warnings[0], warnings
    assert verdict(at) == "match"
    default = to_query(Config())[key]
    assert at.query_params.get(key, default) == default, "the URL keeps the value actually shown (or stays empty)"
    shown = getattr(at.sidebar, widget)(key=key).value
    assert str(shown) == to_query(Config())[key], f"the box still shows {shown!r}, not the value in use"
    at.sidebar.radio(key="mode").set_value("eval").run()
    assert not at.warning, f"warnings piled up: {[w.value for w in at.warning]}"


# --- the newcomer's defects (issue 17), each failing before its fix ---------------------------------


@pytest.mark.parametrize(
    ("params", "fix", "layer"),
    [({"layout": "features-last"}, "`x.permute(0, 3, 1, 2)`", "`nn.BatchNorm2d(16)`"),
     ({"layer": "BatchNorm1d", "shape": "8,128,64", "layout": "features-last"}, "`x.permute(0, 2, 1)`",
      "`nn.BatchNorm1d(64)`"),
     ({"layer": "BatchNorm3d", "shape": "2,4,4,4,6", "layout": "features-last"}, "`x.permute(0, 4, 1, 2, 3)`",
      "`nn.BatchNorm3d(6)`"),
     ({"layer": "BatchNorm", "shape": "2,3,4,4,4,5", "layout": "features-last"}, "`x.movedim(-1, 1)`",
      "`bnviz.BatchNorm(5)`")],
)  # fmt: skip
def test_the_features_last_fix_is_written_for_the_tensors_rank(params, fix, layer):
    text = page_text(run_app(params))
    assert fix in text and layer in text, text


@pytest.mark.parametrize("shape", ["8,64,64", "4,16,8,16"])
def test_a_features_last_shape_that_happens_to_fit_is_not_silent(shape):
    layer = {3: "BatchNorm1d", 4: "BatchNorm2d"}[len(shape.split(","))]
    at = run_app({"layer": layer, "shape": shape, "layout": "features-last"})
    assert verdict(at) == "match", "torch and bnviz agree — on the wrong axis"
    wrong = [w.value for w in at.warning if "wrong axis" in w.value]
    assert len(wrong) == 1 and "movedim(-1, 1)" in wrong[0], [w.value for w in at.warning]
    assert any(h.value == "The fix, side by side" for h in at.subheader)
    text = page_text(at)
    assert "lists its" in text and "batch norm takes dim 1 for the channels" in text


def test_features_last_picture_names_the_dims_for_what_they_hold():
    at = run_app({"layer": "BatchNorm1d", "shape": "8,64,64", "layout": "features-last"})
    url = at.get("image")[0].proto.imgs[0].url
    svg = base64.b64decode(url.split(",", 1)[1]).decode() if url.startswith("data:") else url
    labels = re.findall(r">([^<>]+ = [^<>]+)</text>", svg)
    assert "L = 64" in labels and "C = 64" in labels, labels


def test_untracked_statistics_are_not_said_to_move():
    at = run_app({"track": "false", "proof": "true"})
    text = page_text(at)
    assert "not tracked" in text and "move towards" not in text, text
    at = run_app({"track": "false", "mode": "eval"})
    assert "depends on the other samples in its batch" in page_text(at)


def test_gamma_and_beta_are_stated_where_the_output_is_explained():
    text = page_text(run_app({"mode": "eval"}))
    assert "γ = 0.5 scales it and β = -0.5 shifts it" in text
    assert "A fresh torch layer starts at γ = 1 and β = 0" in text


def test_running_statistics_say_what_momentum_means():
    text = page_text(run_app({"momentum": "0.01", "steps": "30"}))
    assert "torch's 0.01 is their 0.99" in text and "(1 − m)^k: 0.732 here, after 31" in text
    assert "cumulative average" in page_text(run_app({"momentum": "none"}))


def test_a_batch_of_one_names_the_plain_pytorch_options_and_links_eval():
    at = run_app({"layer": "BatchNorm1d", "shape": "1,16", "steps": "0"})
    text = page_text(at)
    assert "drop_last=True" in text and "GroupNorm or LayerNorm" in text and "m.eval()" in text
    links = [e for e in at.get("page_link") if "eval mode" in e.proto.label]
    assert (links and "mode=eval" in links[0].proto.page) or links, "a link to the same batch in eval mode"


def _npy(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def test_your_own_tensor_runs_every_section_in_no_shared_cache():
    import numpy as np

    from app_pages.common import server

    at = run_app({"steps": "2"})
    x = np.random.default_rng(1).standard_normal((6, 3, 4, 4)).astype(np.float64) * 3 + 1
    at.file_uploader[0].set_value(("acts.npy", _npy(x), "application/octet-stream"))
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    assert verdict(at) == "match"
    text = page_text(at)
    assert "your 6×3×4×4 float64 tensor" in text and "cannot carry a file" in text, text
    assert "Running on your tensor acts.npy: shape (6, 3, 4, 4), float64." in [t.value for t in at.text]
    assert len(at.get("plotly_chart")) == CHARTS
    keys = list(server().reports._values)
    assert not [k for k in keys if "own" in repr(k) and "own=''" not in repr(k)], keys  # the fork server's is there
    at.button(key="layer.own_clear").click().run()
    assert "your 6×3×4×4" not in page_text(at)


def test_a_tensor_with_nan_is_refused_with_its_count_as_inert_text():
    import numpy as np

    at = run_app()
    x = np.ones((4, 3), dtype=np.float32)
    x[0, 0], x[2, 1] = np.nan, np.inf
    at.file_uploader[0].set_value(("[x](https://evil.example).npy", _npy(x), "application/octet-stream"))
    at.run(timeout=120)
    errors = [e.value for e in at.error]
    assert errors and errors[0] == "Refused: `2 of 12 values are NaN or infinite: batch norm's statistics would be " \
        "NaN; replace them first`", errors


def test_the_fix_on_your_features_last_tensor_runs_on_the_moved_values_even_when_the_shape_is_unchanged():
    """(8, 16, 16) features last: moving the features to dim 1 keeps the shape, and the fix must
    still run on the moved values — its per-channel population mean is each feature's mean over N
    and L, not over N and the features. The report is kept in this session, not recomputed."""
    import numpy as np

    x = np.random.default_rng(2).standard_normal((8, 16, 16)) + np.arange(16) * 10.0  # feature f near 10·f
    at = run_app({"layer": "BatchNorm1d", "layout": "features-last", "steps": "2"})
    at.file_uploader[0].set_value(("tokens.npy", _npy(x), "application/octet-stream"))
    at.run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    config, fixed = at.session_state["layer.own.report.moved"]
    assert config.shape == (8, 16, 16) and config.layout == "channels-first", config
    got = fixed.history["population_mean"]  # the channels the page draws
    want = x.mean(axis=(0, 1)).tolist()[: len(got)]
    assert len(got) > 1 and got == pytest.approx(want), (got, want)
    at.run(timeout=120)  # a rerun: the same report object, not a new run
    assert at.session_state["layer.own.report.moved"][1] is fixed
