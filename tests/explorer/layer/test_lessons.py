"""The layer page's lessons: the gradient through batch norm (its closed form against both layers,
and the two projections it makes in train mode), what eps changes, why a float32 difference counts
as agreement, and the timing's words."""

from __future__ import annotations

import math

import pytest
import torch

from bnviz.explorer.data import upstream_gradient
from bnviz.explorer.layer import engine
from bnviz.explorer.layer.lessons import EPS_SHRINK, closed_form_grad_input
from bnviz.explorer.layer.url import Config
from bnviz.explorer.layer.words import agreement_note, eps_rows, eps_text, gradient_text, speed_text

CONFIGS = [  # (config, normalized with the batch's statistics)
    (Config(), True),
    (Config(mode="eval"), False),
    (Config(mode="eval", track_running_stats=False), True),
    (Config(affine=False, eps=1e-3), True),
    (Config(layer="BatchNorm1d", shape=(4, 3), steps=0), True),
    (Config(layer="BatchNorm1d", shape=(16, 5, 7), dtype="float64", steps=3), True),
    (Config(layer="BatchNorm3d", shape=(2, 4, 3, 3, 3), mode="eval", steps=2), False),
    (Config(layer="BatchNorm1d", shape=(8, 10, 10), layout="features-last"), True),  # the wrong axis, run
]


@pytest.mark.parametrize("config, batch_stats", CONFIGS, ids=range(len(CONFIGS)))
def test_the_closed_form_gradient_is_both_layers_and_projects_out_what_it_says(config, batch_stats):
    report = engine.run(config)
    lesson = report.gradients
    assert lesson is not None and lesson.batch_stats == batch_stats
    rounding = 1e-12 if config.dtype == "float64" else 1e-5
    scale = lesson.closed_scale
    assert lesson.closed_vs_bnviz <= rounding * max(scale, 1) * 10, (lesson.closed_vs_bnviz, scale)
    assert lesson.closed_vs_torch <= rounding * max(scale, 1) * 10, (lesson.closed_vs_torch, scale)
    for c, (g, b, t) in enumerate(zip(lesson.mean_upstream, lesson.mean_bnviz, lesson.mean_torch, strict=True)):
        if batch_stats:  # sums to zero over the channel; the cosine with x̂ is what eps leaves
            assert abs(b) <= rounding * scale and abs(t) <= rounding * scale, (c, b, t)
            assert abs(lesson.cos_bnviz[c] - lesson.cos_closed[c]) <= 10 * rounding, (c, lesson.cos_bnviz[c])
            assert abs(lesson.cos_closed[c]) <= abs(lesson.cos_upstream[c]) * 0.01 + 1e-12, c
        else:  # the upstream gradient rescaled: its cosine with x̂ kept
            assert lesson.cos_bnviz[c] == pytest.approx(lesson.cos_upstream[c], rel=1e-4, abs=1e-7), c
            assert (b > 0) == (g > 0) or abs(g) < 1e-9, (c, g, b)
    words = gradient_text(report, 0)
    assert ("In train mode" in words) == batch_stats and ("In eval mode" in words) != batch_stats


def test_the_closed_form_against_autograd_in_float64():
    """Written out, not differentiated: it must equal autograd through the textbook formula."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(6, 3, 5, generator=gen, dtype=torch.float64) * 2 + 1).requires_grad_()
    g = torch.randn(6, 3, 5, generator=gen, dtype=torch.float64)
    weight, eps = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), 1e-3
    var, mean = torch.var_mean(x, (0, 2), correction=0, keepdim=True)
    y = (x - mean) / (var + eps).sqrt() * weight.view(1, 3, 1)
    (expected,) = torch.autograd.grad(y, x, g)
    assert torch.allclose(closed_form_grad_input(x.detach(), g, eps, weight), expected, rtol=0, atol=1e-13)
    running_var = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    eval_expected = g * weight.view(1, 3, 1) / (running_var.view(1, 3, 1) + eps).sqrt()
    assert torch.allclose(closed_form_grad_input(x.detach(), g, eps, weight, running_var), eval_expected, rtol=1e-15)


def test_the_upstream_gradient_is_zero_mean_noise_the_same_for_every_distribution():
    shape = (64, 3, 8, 8)
    g = upstream_gradient(shape, seed=0, dtype=torch.float64)
    n = g.numel() // 3
    means = g.transpose(0, 1).reshape(3, -1).mean(1)
    assert (means.abs() < 5 / math.sqrt(n)).all(), means  # N(0, 1): no channel offset
    assert torch.equal(upstream_gradient(shape, 0, torch.float64), g) and not torch.equal(
        upstream_gradient(shape, 1, torch.float64), g)  # fmt: skip
    for dist in ("normal", "large-mean", "bimodal"):
        _, upstream = engine.shown_batch(Config(dist=dist))
        assert torch.equal(upstream, upstream_gradient((8, 3, 16, 16), Config().seed)), dist


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.1])
def test_eps_shrinks_each_channels_spread_to_sqrt_v_over_v_plus_eps(eps):
    report = engine.run(Config(eps=eps))
    effect = report.eps
    assert effect is not None and {1e-5, 1e-3, eps} == set(effect.eps)
    for e in effect.eps:
        for c, v in enumerate(effect.var):
            assert effect.std[e][c] == pytest.approx(math.sqrt(v / (v + e)), rel=1e-9), (e, c)
            quiet = v / EPS_SHRINK**2
            assert effect.quiet_std[e][c] == pytest.approx(math.sqrt(quiet / (quiet + e)), rel=1e-9), (e, c)
    text = eps_text(report, 0)
    assert "torch's default is 1e-5" in text and "Keras' 1e-3" in text, text
    assert ("this view's eps is 0.1" in text) == (eps == 0.1)
    assert len(eps_rows(report)) == 3


def test_a_difference_beyond_float32_tolerance_says_why_it_counts_as_agreement():
    report = engine.run(Config(dist="large-mean"))
    output = next(q for q in report.quantities if q.name == "output")
    assert report.verdict == "match" and not output.within_tolerance and output.ok, output
    note = agreement_note(report)
    assert note is not None and f"{output.max_abs:.2e}" in note and "near 10,000" in note, note
    assert "counts as agreement" in note
    assert agreement_note(engine.run(Config())) is None


SPEED = {"torch": 0.1, "torch q1": 0.09, "torch q3": 0.11, "bnviz": 0.3, "bnviz q1": 0.28, "bnviz q3": 0.33,
         "ratio": 3.0, "ratio q1": 2.9, "ratio q3": 3.2, "cpu per s": 0.98, "load": 0.4, "cores": 2.0,
         "threads": 1.0, "busy": 0.0}  # fmt: skip


@pytest.mark.parametrize("busy", [0.0, 1.0])
def test_the_timing_says_its_thread_count_its_spread_and_whether_the_server_was_busy(busy):
    text = speed_text({**SPEED, "busy": busy, "cpu per s": 1.9 if busy else 0.98})
    assert "both layers with 1 thread" in text and "(0.090–0.110, quartiles)" in text and "(2.90–3.20" in text
    assert ("The server was busy" in text) == bool(busy) and ("The server was quiet" in text) == (not busy), text


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_every_lesson_reads_for_a_channel_of_equal_values(mode):
    """float16 near 10,000 rounds a channel to one value: variance 0, an output of 0 at any eps.
    Every lesson's words and rows are written for it, none divides by it."""
    report = engine.run(Config(dtype="float16", dist="large-mean", mode=mode))
    assert report.eps is not None and report.eps.std[1e-5][0] == 0.0, report.eps
    text = eps_text(report, 0)
    assert "both 0: every value of the channel is the same" in text, text
    gradient_text(report, 0), eps_rows(report), agreement_note(report)
