"""The /inference engine: plain-data report, folding numbers, the three freezing variants, refusals, figures."""

from __future__ import annotations

import ast
import dataclasses
import math
import pickle
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest
import torch

from bnviz.explorer.inference import engine as inference
from bnviz.explorer.inference import figures, words
from bnviz.explorer.inference import url as inference_url
from bnviz.explorer.inference.engine import run as run_inference
from bnviz.explorer.inference.figures import all_figures
from bnviz.explorer.inference.url import InferenceConfig
from bnviz.explorer.layer.figures import figure_bytes
from bnviz.explorer.parity import tolerance


@pytest.fixture(scope="module")
def report():
    return run_inference(InferenceConfig())


def plain(value, where="report"):
    """Fail on anything but plain data: no tensor, module, array or generator hides inside."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            plain(v, f"{where}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where}: key {k!r} is a {type(k).__name__}"
            plain(v, f"{where}.{k}")
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            plain(getattr(value, f.name), f"{where}.{f.name}")
    else:
        raise AssertionError(f"{where} is a {type(value).__module__}.{type(value).__name__}")


def test_report_is_plain_data(report):
    plain(report)
    again = pickle.loads(pickle.dumps(report))
    assert again == report
    assert hash(report.config) == hash(InferenceConfig())


def test_engine_never_imports_streamlit():
    tree = ast.parse(Path(inference.__file__).read_text())
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    assert imported and not [name for name in imported if name.split(".")[0] == "streamlit"], imported


def test_run_is_deterministic_apart_from_timings(report):
    again = run_inference(InferenceConfig())
    assert again.pairs == report.pairs and again.freezing == report.freezing
    assert again.train_losses == report.train_losses


def test_the_global_random_generator_is_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_inference(InferenceConfig(train_steps=1, finetune_steps=1))
    assert torch.equal(torch.rand(3), expected)


def test_folding_matches_the_unfolded_network(report):
    out = report.outputs
    assert out["max_abs"] < 1e-5, out["max_abs"]
    assert out["mean_abs"] <= out["max_abs"]
    for a, b in zip(out["folded"], out["unfolded"], strict=True):
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), (a, b)
    h = out["histogram"]
    assert sum(h["counts"]) + h["exact"] == h["total"] == InferenceConfig().batch_size * inference_url.CLASSES
    assert report.layers_after.count("1: Identity") == 1 and report.layers_after.count("4: Identity") == 1
    assert "1: BatchNorm2d" in report.layers_before


def test_folding_a_training_mode_network_is_wrong(report):
    wrong = report.train_mode
    assert wrong["max_abs"] > 1e-2, wrong
    assert wrong["max_abs"] > 1e4 * report.outputs["max_abs"]
    assert wrong["folded"] == report.outputs["folded"]
    assert wrong["train_output"] != report.outputs["unfolded"]


@pytest.mark.parametrize("index", [0, 1], ids=["conv-with-bias", "conv-without-bias"])
def test_formula_numbers(report, index):
    """W' = W · γ/√(σ̂²+ε) and b' = (b − μ̂) · γ/√(σ̂²+ε) + β, recomputed from the reported inputs."""
    p = report.pairs[index]
    scale = p["gamma"] / math.sqrt(p["running_var"] + p["eps"])
    assert math.isclose(p["scale"], scale, rel_tol=1e-12)
    assert len(p["w_before"]) == len(p["w_after"]) == inference.WEIGHT_VALUES
    for w, w_folded in zip(p["w_before"], p["w_after"], strict=True):
        assert math.isclose(w * scale, w_folded, rel_tol=1e-6, abs_tol=1e-7), (w * scale, w_folded)
    expected_b = (p["b_before"] - p["running_mean"]) * scale + p["beta"]
    assert math.isclose(p["b_after"], expected_b, rel_tol=1e-5, abs_tol=1e-6), (p["b_after"], expected_b)
    assert p["has_bias"] == (index == 0)
    if index == 1:
        assert p["b_before"] == 0.0


def test_timing(report):
    t = report.timing
    assert t["unfolded_ms"] > 0 and t["folded_ms"] > 0 and t["repeats"] == inference_url.TIMING_REPEATS
    assert math.isclose(t["speedup"], t["unfolded_ms"] / t["folded_ms"])


def test_freezing_variants(report):
    fr = report.freezing
    steps = InferenceConfig().finetune_steps
    assert fr["steps"] == list(range(steps + 1))
    v = fr["variants"]
    assert list(v) == list(inference_url.VARIANTS)
    for name, rec in v.items():
        for key in ("running_mean", "running_var", "weight", "output_drift", "bn_drift"):
            assert len(rec[key]) == steps + 1, f"{name}.{key}"
        assert len(rec["losses"]) == len(rec["bn_training"]) == steps
        assert rec["output_drift"][0] == rec["bn_drift"][0] == 0.0
    # requires_grad=False: γ stays, the running statistics move
    rg = v["requires_grad"]
    assert all(w == rg["weight"][0] for w in rg["weight"])
    assert rg["running_mean"][-1] != rg["running_mean"][0] and rg["running_var"][-1] != rg["running_var"][0]
    assert rg["bn_drift"][-1] > 1e-2
    # bn.eval() is undone by model.train(): the batch norm trains, statistics and γ both move
    ev = v["bn_eval"]
    assert all(ev["bn_training"]), "model.train() did not put the batch norm back in training mode"
    assert ev["running_mean"][-1] != ev["running_mean"][0] and ev["weight"][-1] != ev["weight"][0]
    assert ev["bn_drift"][-1] > 1e-2
    # the plain-PyTorch fix: the batch norms back in eval after every model.train(): nothing moves either
    fix = v["eval_after_train"]
    assert not any(fix["bn_training"]), "the batch norm stepped in training mode"
    for key in ("running_mean", "running_var", "weight"):
        assert all(s == fix[key][0] for s in fix[key]), key
    assert all(d == 0.0 for d in fix["bn_drift"])
    # freeze_batch_norm: exactly step 0's values, every step, although the model is in train mode
    fz = v["freeze"]
    assert all(fz["bn_training"]), "the frozen layer should see train mode, and ignore it"
    for key in ("running_mean", "running_var", "weight"):
        assert all(s == fz[key][0] for s in fz[key]), key
    assert all(d == 0.0 for d in fz["bn_drift"])
    assert fz["output_drift"][-1] > 0, "the rest of the network did not fine-tune: the test proves nothing"
    # all three start from the same trained state
    assert rg["running_mean"][0] == ev["running_mean"][0] == fz["running_mean"][0]


REFUSED = {
    "dtype": dict(dtype="float16"),
    "batch-of-one": dict(batch_size=1),
    "batch": dict(batch_size=inference_url.MAX_BATCH + 1),
    "no-channels": dict(channels=0),
    "channels": dict(channels=inference_url.MAX_CHANNELS + 1),
    "image": dict(image_size=2),
    "train-steps": dict(train_steps=-1),
    "finetune-steps": dict(finetune_steps=0),
    "finetune-steps-max": dict(finetune_steps=inference_url.MAX_FINETUNE_STEPS + 1),
    "lr": dict(lr=0.0),
    "shift": dict(shift=float("nan")),
    "channel": dict(channel=4),
    "batch-values": dict(batch_size=64, channels=16, image_size=8),
    "work": dict(train_steps=200, finetune_steps=100),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals(case, monkeypatch):
    config = InferenceConfig(**REFUSED[case])
    reason = config.refusal()
    assert reason, f"{case}: not refused"
    # refused before anything is built
    monkeypatch.setattr(inference, "build_network", lambda config: pytest.fail("built a network"))
    with pytest.raises(ValueError, match=r"\w"):
        run_inference(config)


def test_default_is_small_and_accepted():
    config = InferenceConfig()
    assert config.refusal() is None
    assert config.work < inference_url.MAX_WORK


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(InferenceConfig(), id="default"),
        pytest.param(
            InferenceConfig(finetune_steps=100, train_steps=0, batch_size=2, image_size=3, channels=8), id="longest"
        ),
        pytest.param(InferenceConfig(channels=1, channel=0, dtype="float64", seed=3), id="one-channel-float64"),
    ],
)
def test_figures_are_drawn_and_small(config):
    figs = all_figures(run_inference(config))
    running = {f"running_stats_{key}" for key in inference_url.VARIANTS}
    assert set(figs) == {"fold_difference", "output_drift", *running}
    for name, fig in figs.items():
        size = figure_bytes(fig)
        assert size <= 100_000, f"{name}: {size} bytes"
        assert fig.data, f"{name} has no trace"
        assert len(fig.layout.title.text) <= 35, f"{name}: {fig.layout.title.text!r} would clip at 390 px"
        assert fig.layout.legend.yref == "container", f"{name}: not the shared LAYOUT (legend at the bottom edge)"


def test_figure_contents(report):
    figs = all_figures(report)
    diff = figs["fold_difference"]
    assert len(diff.data) == 2 and all(sum(t.y) > 0 for t in diff.data)
    channels = min(InferenceConfig().channels, inference.PLOT_CHANNELS)
    ranges = []
    for key in inference_url.VARIANTS:
        running = figs[f"running_stats_{key}"]
        assert len(running.data) == 2 * channels
        assert [a.text for a in running.layout.annotations] == ["running_mean", "running_var"]
        assert {t.line.color for t in running.data} == {inference.VARIANT_STYLE[key][0]}
        ranges.append((running.layout.yaxis.range, running.layout.yaxis2.range))
    assert ranges[0] == ranges[1] == ranges[2], "every variant's chart should share the y ranges"
    freeze = figs["running_stats_freeze"]
    assert all(len(set(t.y)) == 1 for t in freeze.data), "the frozen statistics should be flat lines"
    drift = figs["output_drift"]
    labels = enumerate(inference_url.VARIANTS.values(), 1)
    assert {t.name for t in drift.data} == {f"{i}. {label}" for i, label in labels}
    for fig in (figs["running_stats_freeze"], drift):
        for axis in ("xaxis", "xaxis2"):
            assert fig.layout[axis].tickformat == "d", f"{axis}: a step axis should have integer ticks"
    colors = {t.line.color for t in drift.data}
    assert colors == {inference.BNVIZ_COLOR, inference.TORCH_COLOR}


@pytest.mark.parametrize("steps, dtick", [(1, 1), (6, 1), (8, 2), (30, 5), (100, 20)])
def test_step_axis_has_a_few_round_ticks(steps, dtick):
    fig = go.Figure()
    figures._step_axis(fig, steps)
    assert fig.layout.xaxis.dtick == dtick and fig.layout.xaxis.tickformat == "d"


def test_verdict_is_the_folds_exactness(report):
    out = report.outputs
    assert report.verdict == "match" and out["ok"] is True
    assert (out["rtol"], out["atol"]) == tolerance(torch.float32)
    broken = dataclasses.replace(report, outputs={**out, "ok": False})
    assert broken.verdict == "mismatch"
    assert "Folding is exact" in words.verdict_detail(report)
    assert "Folding is exact" not in words.verdict_detail(broken)


def test_fold_of_a_training_mode_network_is_refused(report):
    refused = report.train_mode["refused"]
    assert refused.startswith("ValueError: fold_batch_norms needs a model in eval mode"), refused


def test_moved_summarises_every_channel(report):
    for key, rec in report.freezing["variants"].items():
        shown = {
            stat: max(abs(a - b) for a, b in zip(rec[stat][-1], rec[stat][0], strict=True)) for stat in inference.MOVED
        }
        for stat in inference.MOVED:  # over all channels, so at least as far as over the channels drawn
            assert rec["moved"][stat] >= shown[stat] - 1e-12, (key, stat)
    moved = {key: rec["moved"] for key, rec in report.freezing["variants"].items()}
    assert moved["freeze"] == {stat: 0.0 for stat in inference.MOVED}
    assert moved["requires_grad"]["weight"] == 0.0 and moved["requires_grad"]["running_mean"] > 0
    assert moved["bn_eval"]["weight"] > 0 and moved["bn_eval"]["running_var"] > 0


def test_pair_words_carry_the_reports_numbers(report):
    first, second = report.pairs
    text = words.pair_text(first)
    for value in ("gamma", "beta", "running_mean", "running_var", "scale", "b_before", "b_after"):
        assert f"{first[value]:.6g}".replace("-", "−") in text, value
    assert f"{first['weights']} weights" in text and first["weights"] == inference_url.CLASSES * 9
    assert "no bias, so b = 0" in words.pair_text(second) and second["weights"] == InferenceConfig().channels * 9
    rows = words.weight_rows(first)
    assert len(rows) == inference.WEIGHT_VALUES and list(rows[0]) == ["W", "W′ = W · s"]


def test_words_for_the_page(report):
    texts = {
        "network": words.network_text(report),
        "difference": words.difference_text(report),
        "timing": words.timing_text(report),
        "train_mode": words.train_mode_text(report),
        "finetune": words.finetune_text(report),
        "drift": words.drift_text(report),
        **{key: words.variant_text(report, key) for key in inference_url.VARIANTS},
    }
    steps = InferenceConfig().finetune_steps
    assert f"{len(report.train_losses)} SGD steps" in texts["network"]
    assert f"{report.outputs['histogram']['exact']} of them are bit-identical" in texts["difference"]
    assert "as fast" in texts["timing"]
    assert texts["train_mode"].startswith("**Folding a network in training mode gives the wrong answer.**")
    assert f"for {steps} SGD steps" in texts["finetune"]
    assert f"at {steps} of {steps} steps" in texts["bn_eval"] and "silently undone" in texts["bn_eval"]
    assert "nothing moved" in texts["freeze"] and "γ moved by 0" in texts["requires_grad"]
    assert "3: 0, 4: 0; 3 and 4 keep it at zero" in texts["drift"], texts["drift"]
    assert "at 0 of" in texts["eval_after_train"] and "nothing moved" in texts["eval_after_train"]
    for name, text in texts.items():  # Markdown-safe: fixed words and numbers only
        assert not re.search(r"[<>$]|:\w+\[", text), name
    assert len(words.output_rows(report)) == inference_url.CLASSES


def test_words_when_training_mode_happens_to_agree(report):
    same = dataclasses.replace(report, train_mode={**report.train_mode, "max_abs": 0.0})
    assert "happen to equal" in words.train_mode_text(same)
