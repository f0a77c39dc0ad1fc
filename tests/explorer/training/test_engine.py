"""The training page's engine: the two claims that must hold on digits, the CSV, every
experiment's shapes at a tiny size, refusals, determinism, stopping, progress and memory."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import pickle
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bnviz
from bnviz.explorer import mlp
from bnviz.explorer.digits import load_digits
from bnviz.explorer.mlp import Arch, Curve, build, last_activation, loss_range
from bnviz.explorer.training import url as training_url
from bnviz.explorer.training.engine import CSV_COLUMNS, DEAD_INIT, TEN_SEEDS, TRAINS, SeedsReport, run, to_csv
from bnviz.explorer.training.figures import drift_figures, noise_figures, placement_figures, sweep_figure
from bnviz.explorer.training.url import DriftConfig, NoiseConfig, PlacementConfig, SweepConfig
from bnviz.explorer.training.words import (
    NEAR_CHANCE,
    drift_sentences,
    noise_sentences,
    placement_sentences,
    sweep_sentences,
)
from bnviz.hosting import serve
from bnviz.hosting.serve import Cancelled

ROOT = Path(__file__).resolve().parents[3]
MB = 2**20
TINY = {  # the smallest run of each experiment that still has every part
    "drift": DriftConfig(steps=30, eval_every=10, seeds=(0, 1)),
    "sweep": SweepConfig(lrs=(0.1, 1.0, 10.0), seeds=(0, 1), steps=10),
    "noise": NoiseConfig(steps=20, seeds=(0, 1), probes=3, eval_every=5),
    "placement": PlacementConfig(steps=20, seeds=(0, 1, 2), eval_every=10),
}


# --- the claims, at the default views (computed ahead: see test_stored.py) ------------------------


def test_figure_1_both_networks_learn_and_batch_norm_ends_ahead_and_steadier_on_every_seed():
    report = run(DriftConfig())
    assert len(report.config.seeds) == 5
    for name, v in (("ahead", report.ahead("bn", "plain")), ("drifts", report.drifts_further())):
        assert v.holds, (name, v)
    assert min(report.finals("plain")) >= TRAINS and min(report.finals("bn")) >= TRAINS, report.finals("plain")
    words = drift_sentences(report).shows
    assert "Batch norm ends ahead on all 5 seeds, as in the paper." in words, words


def test_with_the_papers_smallest_weights_the_plain_network_never_learns_and_the_page_says_so():
    report = run(DEAD_INIT)
    assert max(report.finals("plain")) <= NEAR_CHANCE and min(report.finals("bn")) >= TRAINS, report.finals("plain")
    words = drift_sentences(report)
    assert "never learns" in words.shows and "as in the paper" not in words.shows.split("never learns")[0], words.shows
    assert "In the paper the plain network learns" in words.differs, words.differs


@pytest.mark.parametrize("config", [SweepConfig(), NoiseConfig()], ids=type)
def test_every_default_views_main_claim_holds_on_every_seed(config):
    report = run(config)
    assert len(report.config.seeds) == 5 and "holds on 5 of 5 seeds" in report.verdict, report.verdict


def test_before_or_after_the_relu_is_a_lead_on_most_seeds_and_no_difference_over_ten():
    five, ten = run(PlacementConfig()), run(TEN_SEEDS)
    assert (five.ahead("before", "after").kind, five.ahead("before", "after").against) == ("mixed", 0)
    assert ten.ahead("before", "after").kind == "no difference", ten.ahead("before", "after")
    assert "not a consistent difference" in placement_sentences(five).shows
    assert "does not tell the two orders apart" in placement_sentences(ten).shows


def test_the_papers_noise_without_batch_norm_trains_here_and_the_page_says_it_disagrees():
    report = run(NoiseConfig())
    assert min(report.finals("noise")) >= TRAINS, report.finals("noise")
    assert "unlike the §2.1 sentence" in noise_sentences(report).shows


@pytest.fixture(scope="module")
def one_seed() -> SeedsReport:
    return run(DriftConfig(steps=200, eval_every=100, seeds=(0,)))


def test_one_seed_gives_the_numbers_and_no_verdict(one_seed):
    words = drift_sentences(one_seed)
    assert "With 1 seed there is no verdict" in words.shows and "as in the paper" not in words.shows, words.shows


def test_csv_has_the_columns_and_one_row_per_variant_seed_and_evaluation(one_seed):
    rows = list(csv.reader(io.StringIO(to_csv(one_seed))))
    assert tuple(rows[0]) == CSV_COLUMNS == ("experiment", "variant", "seed", "learning_rate", "step", "loss",
                                             "test_accuracy", "p15", "p50", "p85", "dead_units")  # fmt: skip
    body = rows[1:]
    steps = [0, 100, 200]
    assert [(r[0], r[1], int(r[2]), int(r[4])) for r in body] == [("drift", v, 0, s) for v in ("bn", "plain")
                                                                  for s in steps]  # fmt: skip
    for r in body:
        values = [float(v) for v in r[5:]]
        assert 0 <= values[1] <= 1 and values[2] <= values[3] <= values[4] and 0 <= values[5] <= 1, r
    last_bn = body[len(steps) - 1]
    assert float(last_bn[6]) == pytest.approx(one_seed.curves["bn"][0].final_accuracy, abs=1e-6)


def test_the_csv_of_several_seeds_and_of_the_sweep():
    rows = list(csv.reader(io.StringIO(to_csv(run(TINY["drift"])))))
    assert {(r[1], r[2]) for r in rows[1:]} == {(v, s) for v in ("bn", "plain") for s in ("0", "1")}
    sweep = TINY["sweep"]
    rows = list(csv.reader(io.StringIO(to_csv(run(sweep)))))
    assert len(rows) - 1 == 2 * len(sweep.lrs) * len(sweep.seeds) and {r[0] for r in rows[1:]} == {"lr-sweep"}


@pytest.mark.parametrize("name", list(TINY))
def test_every_experiment_runs_at_a_tiny_size_with_the_right_shapes(name):
    config = TINY[name]
    report = run(config)
    assert pickle.loads(pickle.dumps(report)) == report
    if name == "drift":
        assert set(report.curves) == {"bn", "plain"}
        for curves in report.curves.values():
            assert len(curves) == len(config.seeds)
            for c in curves:
                assert c.steps == (0, 10, 20, 30)
                assert len(c.loss) == len(c.test_accuracy) == len(c.p15) == len(c.p50) == len(c.p85) == len(c.dead) == 4
        figures, words = drift_figures(report), drift_sentences(report)
    elif name == "sweep":
        for v in ("bn", "plain"):
            assert len(report.accuracy[v]) == 3 and all(len(row) == 2 for row in report.accuracy[v])
            assert all(len(row) == 2 and all(0 <= d <= 1 for d in row) for row in report.dead[v])
            assert len(report.summary(v)) == 3
        figures, words = {"sweep": sweep_figure(report)}, sweep_sentences(report)
    else:
        variants = ("bn", "noisy-bn", "noise", "plain", "noisy-bn-strong") if name == "noise" else ("before", "after")
        assert tuple(report.curves) == variants
        for v in variants:
            assert len(report.curves[v]) == len(config.seeds) and len(report.finals(v)) == len(config.seeds)
            assert report.curves[v][0].steps == tuple(range(0, config.steps + 1, config.eval_every))
        if name == "noise":
            for v in variants:  # probed: the networks without noise, at steps 1 to 20 evenly
                expected = (1, 11, 20) if v in ("bn", "plain") else ()
                assert all(c.probe_steps == expected and len(c.smoothness) == len(expected) for c in report.curves[v])
                assert all(len(losses) == len(mlp.PROBE_MULTIPLES) for c in report.curves[v]
                           for losses in c.probe_losses)  # fmt: skip
            figures, words = noise_figures(report), noise_sentences(report)
        else:
            figures, words = placement_figures(report), placement_sentences(report)
    for key, fig in figures.items():
        assert fig.data and fig.layout.title.text, key
        assert len(fig.to_json()) <= 60_000, key
    for text in (words.claim, words.shows, words.differs):
        assert text and "<" not in text and "nan" not in text.lower().split(), text


def test_the_figures_of_the_most_evaluations_allowed_stay_small():
    config = DriftConfig(steps=5000, eval_every=25)
    assert config.refusal() is None
    n = len(training_url.config_schedule(config).eval_steps())
    curve = _curve(0.9, tuple(math.sin(k / 7) for k in range(n)))
    report = SeedsReport(replace(config, seeds=(0, 1, 2, 3, 4)), {"bn": (curve,) * 5, "plain": (curve,) * 5})
    for key, fig in drift_figures(report).items():
        assert len(fig.to_json()) <= 100_000, key


@pytest.mark.parametrize("name", list(TINY))
def test_the_same_seed_gives_the_same_report_and_another_seed_another(name):
    config = TINY[name]
    assert run(config) == run(config)
    other = replace(config, seeds=tuple(s + 5 for s in config.seeds))
    assert run(other) != run(config)


def test_the_pair_starts_from_the_same_weights_and_differs_only_in_batch_norm():
    config = DriftConfig()
    archs = config.archs()
    bn, plain = build(archs["bn"], 3), build(archs["plain"], 3)
    linears = [[m for m in model if isinstance(m, nn.Linear)] for model in (bn, plain)]
    for a, b in zip(*linears, strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert float(linears[0][0].weight.detach().std()) == pytest.approx(config.init_std, rel=0.05)
    norms = [m for m in bn if isinstance(m, nn.modules.batchnorm._NormBase) or "BatchNorm" in type(m).__name__]
    assert len(norms) == 3 and all(isinstance(m, bnviz.BatchNorm1d) for m in norms)
    assert not any("BatchNorm" in type(m).__name__ for m in plain)
    assert [type(m).__name__ for m in bn][:3] == ["Linear", "BatchNorm1d", "Sigmoid"]
    after = build(Arch(8, "relu", "after"), 0)
    assert [type(m).__name__ for m in after][:3] == ["Linear", "ReLU", "BatchNorm1d"]


def test_the_percentiles_are_numpys_linear_percentiles_of_the_last_activations_input():
    model = build(Arch(16, "sigmoid", "before", None, 0.5), 1)
    data = load_digits()
    cut = last_activation(model)
    acc, q, dead = mlp.evaluate(model, cut, data)
    model.eval()
    with torch.no_grad():
        inputs = model[:cut](data.test_x)
        h = inputs[:, mlp.UNIT].double().numpy()
        logits = model(data.test_x)
    assert np.allclose(q, np.percentile(h, [15, 50, 85]), rtol=0, atol=1e-12)
    assert acc == pytest.approx(float((logits.argmax(1) == data.test_y).double().mean()))
    never_positive = sum(bool((inputs[:, j] <= 0).all()) for j in range(inputs.shape[1]))
    assert dead == never_positive / inputs.shape[1], (dead, never_positive)


def test_the_smoothness_probe_measures_the_loss_along_the_gradient_and_restores_everything():
    model = build(Arch(8, "relu", "before", None, None), 0)
    data = load_digits()
    x, y = data.train_x[:32], data.train_y[:32]
    nn.functional.cross_entropy(model(x), y).backward()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    spread, losses = loss_range(model, x, y, (0.1, 1.0))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    twin = build(Arch(8, "relu", "before", None, None), 0)
    twin.load_state_dict(state)
    with torch.no_grad():
        for p, g in zip(twin.parameters(), grads, strict=True):
            p -= 1.0 * g
    assert losses[1] == pytest.approx(float(nn.functional.cross_entropy(twin(x), y).detach()), rel=1e-6)
    assert spread == pytest.approx(max(losses) - min(losses))


def test_the_noisy_networks_of_one_seed_draw_the_same_noise():
    archs = NoiseConfig(width=8).archs()
    noisy_bn, noise = build(archs["noisy-bn"], 4), build(archs["noise"], 4)
    layers = [[m for m in model if isinstance(m, mlp.Noise)] for model in (noisy_bn, noise)]
    assert len(layers[0]) == len(layers[1]) == 3
    x = torch.zeros(5, 8)
    for a, b in zip(*layers, strict=True):
        assert torch.equal(a(x), b(x))


NOISES = [  # (spec, the per-unit mean's bound, the per-unit standard deviation's range) for x ~ N(0, 1)
    (mlp.NoiseSpec(), 0.5 + 0.1, (0.97, 1.27)),  # Santurkar et al.'s values: s·x + m, σ in [1, 1.25]
    (mlp.NoiseSpec("additive", 1.0, 2.0), 1.0, (1.38, 2.27)),  # x + ε: std √(1 + σ²), σ in [1, 2]
]


@pytest.mark.parametrize("spec, mean_bound, std_range", NOISES, ids=["paper", "additive"])
def test_noise_moves_each_unit_in_training_only_and_is_seeded(spec, mean_bound, std_range):
    x = torch.randn(8000, 6, generator=torch.Generator().manual_seed(1))
    noise = mlp.Noise(spec, torch.Generator().manual_seed(0))
    y = noise(x)
    mean, std = y.mean(0), y.std(0)
    assert (mean.abs() <= mean_bound + 0.05).all() and (mean.abs() > 0).all(), mean
    assert ((std >= std_range[0]) & (std <= std_range[1])).all(), std
    assert not torch.equal(noise(x), y)  # a new distribution at the next step
    assert torch.equal(mlp.Noise(spec, torch.Generator().manual_seed(0))(x), y)
    noise.eval()
    assert torch.equal(noise(x), x)


def test_the_papers_noise_is_their_algorithm_draw_by_draw():
    """Algorithm 1 of Santurkar et al., written out with the same generator: per unit μ ~ U(−n_μ, n_μ),
    σ ~ U(1, n_σ); per value m ~ U(μ − r_μ, μ + r_μ), s ~ N(σ, r_σ²); a ← s·a + m."""
    spec, x = mlp.NoiseSpec(), torch.randn(7, 4)
    g = torch.Generator().manual_seed(3)
    mu = (torch.rand(4, generator=g) * 2 - 1) * spec.mu
    sigma = 1 + torch.rand(4, generator=g) * (spec.sigma - 1)
    m = mu + (torch.rand(7, 4, generator=g) * 2 - 1) * spec.r_mu
    s = sigma + torch.randn(7, 4, generator=g) * spec.r_sigma
    got = mlp.Noise(spec, torch.Generator().manual_seed(3))(x)
    assert torch.equal(got, s * x + m), (got - (s * x + m)).abs().max()


# --- the options the eval-gap page uses -------------------------------------------------------------


def test_dropout_keeps_with_probability_1_minus_p_scales_by_its_inverse_and_is_seeded():
    x = torch.ones(4000, 5)
    drop = mlp.Dropout(0.6, torch.Generator().manual_seed(0))
    y = drop(x)
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.4)]
    assert float((y == 0).double().mean()) == pytest.approx(0.6, abs=0.02)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.05)  # the mean kept, as torch's Dropout keeps it
    assert torch.equal(mlp.Dropout(0.6, torch.Generator().manual_seed(0))(x), y)
    drop.eval()
    assert torch.equal(drop(x), x)
    with pytest.raises(ValueError, match="dropout probability"):
        mlp.Dropout(1.0, torch.Generator())


@pytest.mark.parametrize("placement, at, names", [
    ("after", "bn", ["Linear", "ReLU", "Dropout", "BatchNorm1d", "Linear"]),
    ("before", "bn", ["Linear", "Dropout", "BatchNorm1d", "ReLU", "Linear"]),
    ("before", "head", ["Linear", "BatchNorm1d", "ReLU", "Linear"]),
])  # fmt: skip
def test_dropout_sits_right_before_each_batch_norm_or_once_before_the_output_layer(placement, at, names):
    model = build(Arch(8, "relu", placement, None, None, dropout=0.5, dropout_at=at), 0)
    kinds = [type(m).__name__ for m in model]
    assert kinds[: len(names)] == names, kinds
    assert kinds.count("Dropout") == (3 if at == "bn" else 1)
    if at == "head":
        assert kinds[-2:] == ["Dropout", "Linear"]
    plain = build(Arch(8, "relu", placement, None, None), 0)
    assert "Dropout" not in [type(m).__name__ for m in plain]
    linears = [[m.weight for m in net if isinstance(m, nn.Linear)] for net in (model, plain)]
    assert all(torch.equal(a, b) for a, b in zip(*linears, strict=True))  # the same weights with or without


def test_the_batch_norms_momentum_and_kind_are_the_archs():
    model = build(Arch(8, "relu", "before", None, None, momentum=0.3, norm="torch"), 0)
    norms = [m for m in model if "BatchNorm" in type(m).__name__]
    assert len(norms) == 3 and all(type(m) is nn.BatchNorm1d and m.momentum == 0.3 for m in norms)
    with pytest.raises(ValueError, match="checkpointing"):
        build(Arch(8, "relu", "before", None, None, dropout=0.5, checkpoint="reentrant"), 0)


@pytest.mark.parametrize("checkpoint", ["reentrant", "non-reentrant"])
def test_checkpointed_blocks_give_the_same_outputs_and_gradients(checkpoint):
    data = load_digits()
    x, y = data.train_x[:20], data.train_y[:20]
    plain = build(Arch(8, "relu", "before", None, None), 0)
    checked = build(Arch(8, "relu", "before", None, None, checkpoint=checkpoint), 0)
    losses = [mlp.step_loss(m, x, y, c) for m, c in ((plain, "none"), (checked, checkpoint))]
    assert torch.equal(losses[0], losses[1])
    for a, b in zip(plain.parameters(), checked.parameters(), strict=True):
        assert torch.equal(a.grad, b.grad)
    for a, b in zip(plain.buffers(), checked.buffers(), strict=True):  # bnviz counts the step once
        assert torch.equal(a, b)
    assert len(mlp.hidden_blocks(checked)) == 4


def test_gradient_accumulation_sums_the_micro_batches_gradients_over_k():
    data = load_digits()
    x, y = data.train_x[:24], data.train_y[:24]
    model, twin = build(Arch(8, "relu", "before", None, None), 0), build(Arch(8, "relu", "before", None, None), 0)
    loss = mlp.step_loss(model, x, y, micro=3)
    total = 0.0
    for xc, yc in zip(x.chunk(3), y.chunk(3), strict=True):
        part = nn.functional.cross_entropy(twin(xc), yc) / 3
        part.backward()
        total += float(part.detach())
    assert float(loss) == pytest.approx(total, rel=1e-6)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert int(model[1].num_batches_tracked) == 3


REFUSED = [
    (DriftConfig(steps=0), "the number of steps is 0"),
    (DriftConfig(steps=5001), "from 1 to 5000"),
    (DriftConfig(lr=0.0), "the learning rate is 0.0"),
    (DriftConfig(lr=math.inf), "at most 100"),
    (DriftConfig(lr=math.nan), "the learning rate is nan"),
    (DriftConfig(width=1), "the width (units per hidden layer) is 1"),
    (DriftConfig(width=257), "from 2 to 256"),
    (DriftConfig(batch=1), "the batch size is 1"),
    (DriftConfig(init_std=0.0), "standard deviation is 0.0"),
    (DriftConfig(init_std=math.nan), "standard deviation is nan"),
    (DriftConfig(seeds=(-1,)), "a seed is -1"),
    (DriftConfig(seeds=()), "0 seeds were given; give 1 to 10"),
    (DriftConfig(eval_every=0), "the evaluation interval (steps) is 0"),
    (DriftConfig(steps=5000, eval_every=10), "evaluate every 25 steps or more"),
    (PlacementConfig(steps=5000, seeds=tuple(range(6))), "60,000 training steps of all its networks"),
    (SweepConfig(lrs=()), "0 learning rates were given; give 1 to 12"),
    (SweepConfig(lrs=tuple(0.1 * (k + 1) for k in range(13))), "13 learning rates"),
    (SweepConfig(lrs=(0.1, -1.0)), "the learning rate 2 of the sweep is -1.0"),
    (SweepConfig(lrs=(0.1, 0.1)), "repeat"),
    (SweepConfig(seeds=()), "0 seeds were given; give 1 to 10"),
    (SweepConfig(seeds=tuple(range(11))), "11 seeds"),
    (SweepConfig(seeds=(1, 1)), "repeat"),
    (SweepConfig(seeds=(0, 2_000_000)), "a seed is 2000000"),
    (SweepConfig(steps=3000, seeds=tuple(range(10))), "over the limit of 50,000"),
    (SweepConfig(steps=1000, lrs=(0.1, 1.0), seeds=(0, 1, 2, 3, 4), width=256, batch=256), "multiply-adds"),
    (NoiseConfig(noise_std=0.5), "n_σ is 0.5"),
    (NoiseConfig(noise_mean=-1.0), "n_μ is -1.0"),
    (NoiseConfig(probes=11), "probes is 11"),
    (PlacementConfig(seeds=tuple(range(12))), "12 seeds"),
]


@pytest.mark.parametrize("config, words", REFUSED, ids=[w for _, w in REFUSED])
def test_refusals_name_the_value_and_the_range_before_anything_is_allocated(config, words, monkeypatch):
    reason = config.refusal()
    assert reason is not None and words in reason, reason
    monkeypatch.setattr(mlp, "build", lambda *a, **k: pytest.fail("built a network for a refused config"))
    with pytest.raises(ValueError, match=r".+"):
        run(config)


def test_the_defaults_and_the_tiny_configs_are_allowed():
    for config in (DriftConfig(), SweepConfig(), NoiseConfig(), PlacementConfig(), *TINY.values(),
                   DriftConfig(init_std=None), DriftConfig(steps=5000, eval_every=25)):  # fmt: skip
        assert config.refusal() is None, (config, config.refusal())


@pytest.mark.parametrize("name", list(TINY))
def test_stopped_raises_cancelled_between_steps(name):
    calls = []

    def stopped() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        run(TINY[name], stopped=stopped)
    assert len(calls) == 4


@pytest.mark.parametrize("name", list(TINY))
def test_progress_rises_to_one(name):
    seen: list[float] = []
    run(TINY[name], progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert all(0 <= a <= b <= 1 for a, b in itertools.pairwise(seen)), seen
    assert len(seen) >= 2


def test_one_thread_is_the_calling_threads_own_and_is_restored():
    """A thread that has used torch keeps its thread count while another trains. (A thread that
    first touches torch during a training starts with 1: torch copies a process-wide value then.)"""
    before = torch.get_num_threads()
    inside, other = [], []
    started, entered, checked = threading.Event(), threading.Event(), threading.Event()

    def elsewhere() -> None:
        other.append(torch.get_num_threads())
        started.set()
        entered.wait(10)
        other.append(torch.get_num_threads())
        checked.set()

    t = threading.Thread(target=elsewhere)
    t.start()
    started.wait(10)
    with mlp.one_thread():
        inside.append(torch.get_num_threads())
        entered.set()
        checked.wait(10)
    t.join()
    assert inside == [1] and torch.get_num_threads() == before
    assert other[0] == other[1] == before


# --- words: computed from the report, never fixed outcomes -----------------------------------------


def _curve(acc: float, medians: tuple[float, ...]) -> Curve:
    n = len(medians)
    return Curve(steps=tuple(range(0, 100 * n, 100)), loss=(2.3,) * n, test_accuracy=(0.1,) * (n - 1) + (acc,),
                 p15=tuple(m - 1 for m in medians), p50=medians, p85=tuple(m + 1 for m in medians))  # fmt: skip


def _seeds(**curves: tuple[Curve, ...]) -> SeedsReport:
    n = len(next(iter(curves.values())))
    return SeedsReport(DriftConfig(steps=200, seeds=tuple(range(n))), curves)


def test_a_run_that_disagrees_with_the_paper_says_so_and_counts_the_seeds():
    bad, good = _curve(0.4, (-5.0, 0.0, 3.0, 1.0)), _curve(0.9, (0.0, 0.0, 0.5, 1.0))
    shows = drift_sentences(_seeds(bn=(bad,) * 3, plain=(good,) * 3)).shows
    assert "Whether batch norm ends ahead: the other way on all 3 seeds, unlike the paper." in shows, shows
    assert "as in the paper" not in shows, shows
    assert "moved by 3.00 with batch norm and 1.00 plain" in shows  # step 0 (−5) left out of the drift
    mixed = drift_sentences(_seeds(bn=(bad, good, good), plain=(good, bad, bad))).shows
    assert "Whether batch norm ends ahead is mixed: it holds on 2 of 3 seeds, goes the other way on 1" in mixed
    dead = drift_sentences(_seeds(bn=(good,) * 3, plain=(_curve(0.1, (0, 0, 4, 2)),) * 3)).shows
    assert "Batch norm ends ahead on all 3 seeds." in dead and "compares batch norm against a dead network" in dead
    assert "as in the paper" not in dead, "a dead plain network is not the paper's comparison"
    agree = drift_sentences(_seeds(bn=(good,) * 3, plain=(_curve(0.5, (0, 0, 4, 2)),) * 3)).shows
    assert "Batch norm ends ahead on all 3 seeds, as in the paper." in agree
    assert "The median drifts further without batch norm on all 3 seeds, as in the paper." in agree


# --- memory ----------------------------------------------------------------------------------------

MEMORY_CASES = {  # the largest of each page's caps among them
    "experiment 1, defaults": DriftConfig(steps=100),
    "experiment 1, width 256, batch 256, every step evaluated": DriftConfig(
        width=256, batch=256, steps=40, eval_every=1),
    "experiment 1, most evaluations": DriftConfig(steps=400, eval_every=2, width=2, batch=2),
    "sweep, 12 learning rates x 10 seeds, width 256, batch 256": SweepConfig(
        lrs=tuple(0.1 * (k + 1) for k in range(12)), seeds=tuple(range(10)), steps=1, width=256, batch=256),
    "noise, 5 networks of width 256, batch 256, 10 probes": NoiseConfig(
        steps=40, seeds=(0,), probes=10, eval_every=1, width=256, batch=256),
    "placement, 10 seeds, every step evaluated": PlacementConfig(
        steps=50, seeds=tuple(range(10)), eval_every=1, width=2, batch=2),
}  # fmt: skip


def measure_all() -> dict[str, int]:
    """Each case's measured peak, after a warm-up run (as the server, whose other views have run)."""
    from bnviz.hosting.memory import measure_peak

    run(NoiseConfig(steps=4, seeds=(0,), probes=2))
    return {name: measure_peak(lambda config=config: run(config))[1] for name, config in MEMORY_CASES.items()}


@pytest.fixture(scope="module")
def measured() -> dict[str, int]:
    """In a fresh process with the server's allocator settings."""
    code = "import json; from tests.explorer.training.test_engine import measure_all; print(json.dumps(measure_all()))"
    env = {**os.environ, **serve.ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(MEMORY_CASES))
def test_the_memory_estimate_covers_the_measured_peak(measured, name):
    config = MEMORY_CASES[name]
    assert config.refusal() is None, config.refusal()
    est, peak = config.estimate_bytes(), measured[name]
    numbers = f"{name}: estimate {est / MB:.1f} MiB, measured {peak / MB:.1f} MiB"
    assert est >= peak, numbers
    assert est <= 3 * peak + 24 * MB, "too loose: " + numbers
