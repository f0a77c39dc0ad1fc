"""The eval-gap page's engine: the claims that must hold at the default seeds, the shadow running
statistics against real layers, every section's shapes at a tiny size, figures and words,
refusals, determinism, stopping, progress and memory."""

from __future__ import annotations

import itertools
import json
import math
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import bnviz
from bnviz.explorer import mlp
from bnviz.explorer.claims import SAME
from bnviz.explorer.digits import load_digits
from bnviz.explorer.eval_gap import engine as eval_gap
from bnviz.explorer.eval_gap import measure, steps
from bnviz.explorer.eval_gap import url as eval_gap_url
from bnviz.explorer.eval_gap.engine import run
from bnviz.explorer.eval_gap.figures import checkpoint_table, figures
from bnviz.explorer.eval_gap.measure import ShadowStats
from bnviz.explorer.eval_gap.steps import adjusted_momentum
from bnviz.explorer.eval_gap.url import (
    CHECKPOINT_VARIANTS,
    DEFAULT_SECTIONS,
    SECTIONS,
    AccumulationConfig,
    BatchesConfig,
    CheckpointConfig,
    DropoutConfig,
    LagConfig,
    PassesConfig,
    twice_momentum,
)
from bnviz.explorer.eval_gap.words import section
from bnviz.hosting import serve
from bnviz.hosting.serve import Cancelled

ROOT = Path(__file__).resolve().parents[3]
MB = 2**20
TINY = {  # the smallest run of each section that still has every part
    "batches": BatchesConfig(steps=12, eval_every=6, width=8, seeds=(0, 1)),
    "lag": LagConfig(steps=12, eval_every=6, width=8, seeds=(0, 1)),
    "dropout": DropoutConfig(steps=12, width=8, seeds=(0, 1)),
    "accumulation": AccumulationConfig(steps=6, width=8, micro=2, micro_batch=4),
    "passes": PassesConfig(steps=6, pairs=3, width=8, batch=10),
    "checkpoint": CheckpointConfig(steps=3, width=8, batch=10),
}


# --- the claims, at the defaults (computed ahead over five seeds: see test_stored.py) ----------------


@pytest.fixture(scope="module")
def defaults() -> dict[str, object]:
    """The sections whose claims are tested, at their default views."""
    return {name: run(eval_gap.CONFIGS[name]()) for name in ("batches", "lag", "dropout", "checkpoint")}


def test_sorted_batches_look_fine_in_train_mode_and_collapse_in_eval_mode_on_every_seed(defaults):
    report = defaults["batches"]
    assert len(report.runs) == 5 and report.collapse().holds, report.collapse()
    assert all(abs(d) <= SAME for d in report.shuffled_gap()), report.shuffled_gap()
    for r in report.runs:
        s, h = r.orders["sorted"], r.orders["shuffled"]
        assert s.train_mode_final >= 0.9 and s.eval_test <= 0.35, (r.seed, s.train_mode_final, s.eval_test)
        assert s.train_mode_other <= 0.35, (r.seed, s.train_mode_other)  # the same weights, shuffled: the leak
        assert h.eval_test >= 0.95, (r.seed, h.eval_test)
        assert s.batch_var_ratio[0] < 0.7 < 0.95 < h.batch_var_ratio[0], (r.seed, s.batch_var_ratio, h.batch_var_ratio)
    words = section(report)
    assert "Eval mode falls 30.0 points or more below train mode on all 5 seeds." in words.measured, words.measured
    assert "Eval mode collapses on all 5 seeds." in words.gap, words.gap


def test_the_running_averages_lag_the_exact_statistics_most_at_the_smallest_momentum(defaults):
    report = defaults["lag"]
    assert report.lags(0.001).holds and report.lags(0.01).holds, (report.lags(0.001), report.lags(0.01))
    for r in report.runs:
        assert r.steps == tuple(range(0, 201, 20)) and r.exact[-1] >= 0.95, (r.seed, r.exact)
        # for shuffled minibatches the mean of unbiased minibatch variances is the population's, within 2 %
        assert all(abs(v - 1) < 0.02 for v in r.batch_var), (r.seed, r.batch_var)
        n = report.config.batch
        for unbiased, biased in zip(r.batch_var, r.biased_batch_var, strict=True):
            assert biased == pytest.approx(unbiased * (n - 1) / n, rel=1e-9)
    # most of momentum 0.001's shortfall is the initial buffers, which the Adam-style correction takes out
    lag, unbiased = report.lags(0.001), report.lags_unbiased(0.001)
    assert unbiased.mean < 0.5 * lag.mean, (unbiased.differences, lag.differences)
    assert "most of it was the initial values" in section(report).measured


def test_unbias_takes_the_initial_buffers_share_out():
    """After t updates at momentum m from (0, 1) towards a constant batch mean μ and variance σ², the
    running statistics are (1 − (1 − m)^t)·μ and (1 − m)^t + (1 − (1 − m)^t)·σ²; unbias gives μ, σ²."""
    m, t, mu, var = 0.01, 37, 2.5, 0.3
    left = (1 - m) ** t
    running = measure.Stats(((0.0 * left + (1 - left) * mu,),), ((left + (1 - left) * var,),))
    got = eval_gap.unbias(running, m, t)
    assert got.mean[0][0] == pytest.approx(mu, rel=1e-12) and got.var[0][0] == pytest.approx(var, rel=1e-12), got
    assert eval_gap.unbias(running, m, 0) == running


def test_dropout_alone_shifts_the_variance_as_the_arithmetic_predicts_on_every_seed(defaults):
    report = defaults["dropout"]
    p = report.config.p
    for r in report.runs:
        for k, layer in enumerate(r.layers):
            where = (r.seed, k, layer)
            assert layer.simple == pytest.approx(1 / (1 - p))
            assert layer.centred == pytest.approx(1 / (1 - p), rel=0.03), where  # zero mean: 1/(1 − p)
            assert layer.isolated == pytest.approx(layer.isolated_predicted, rel=0.05), where
            assert layer.isolated > layer.centred, where  # after a ReLU the input is not zero-mean: a larger shift
            assert layer.shift > 2 and layer.shift_exact < 1.2 and layer.shift_head < 1.4, where


def test_dropout_before_batch_norm_costs_accuracy_and_fix_1_recovers_it_on_every_seed(defaults):
    report = defaults["dropout"]
    for name, v in (("drop", report.drop()), ("eval above train", report.eval_above_train()),
                    ("fix 1", report.fix_head())):  # fmt: skip
        assert v.holds, (name, v)
    # fix 2 (the statistics recomputed with dropout off) is not a general fix here: 3 of 5 seeds
    # better, 2 worse. The page says "mixed" and counts them.
    fix2 = report.fix_exact()
    words = section(report).fix
    assert "Fix 1" in words and "Fix 2" in words and "bnviz.recompute_batch_norm_stats(model.eval()" in words
    assert ("is mixed" in words) == (fix2.kind == "mixed"), (fix2, words)
    assert "Hendrycks & Gimpel" in words and "variance moving averages with dropout off" in words


def test_under_checkpointing_torch_counts_each_step_twice_and_bnviz_once(defaults):
    r = defaults["checkpoint"]
    k = r.config.steps
    for v in CHECKPOINT_VARIANTS:
        expected = 2 * k if v.startswith("torch-") else k
        assert r.counted[v] == (expected,) * 3, (v, r.counted[v])
    for v in ("bnviz-reentrant", "bnviz-non-reentrant"):
        assert r.mean_difference[v] == r.var_difference[v] == 0.0, v  # bit for bit the unchecked network's
    for v in ("torch-reentrant", "torch-non-reentrant"):
        assert r.var_difference[v] > 1e-3, (v, r.var_difference[v])
    assert max(r.mean_difference["torch-fix"], r.var_difference["torch-fix"]) < 1e-5
    assert all(d == 0.0 for d in r.weight_difference.values()), r.weight_difference
    assert r.first_var["bnviz"] == pytest.approx(r.first_var["torch"], rel=1e-5)  # parity without checkpointing
    table = checkpoint_table(r)
    assert table[0]["network"] == "torch, no checkpointing" and len(table) == len(CHECKPOINT_VARIANTS)


# --- the shadow running statistics are a real layer's ----------------------------------------------


def test_shadow_running_statistics_equal_real_layers_with_that_momentum():
    """One training carries shadows at several momenta; each equals, bit for bit, the buffers of
    the same network trained with that momentum in its own layers."""
    momenta = (0.01, 0.3, None)
    data = load_digits()
    schedule = mlp.Schedule(0.3, 15, 20, 2, 15)
    archs = {"shadowed": eval_gap_url._relu(8), **{f"m={m}": eval_gap_url._relu(8, momentum=m) for m in momenta}}
    probe = measure._Models()
    shadows: dict[str, ShadowStats] = {}

    class Attach(measure._Models):
        def attach(self, name: str, model: nn.Sequential) -> None:
            probe.attach(name, model)
            if name == "shadowed":
                shadows[name] = ShadowStats(model, momenta)

    mlp.train_group(archs, schedule, data, mlp.Ticker(1, lambda: False, lambda f: None), Attach())
    for m in momenta:
        real = measure.batch_norms(probe.models[f"m={m}"])
        shadow = shadows["shadowed"].shadows[m]
        for a, b in zip(real, shadow, strict=True):
            assert torch.equal(a.running_mean, b.running_mean) and torch.equal(a.running_var, b.running_var), m
            assert int(a.num_batches_tracked) == int(b.num_batches_tracked) == 15


def test_paused_shadows_and_kept_buffers_see_nothing_of_a_measurement():
    model = mlp.build(eval_gap_url._relu(8), 0)
    shadows = ShadowStats(model, (0.1,))
    x = load_digits().train_x[:30]
    with torch.no_grad():
        model(x)
    before = [b.clone() for b in model.buffers()], shadows.stats(0.1)
    with shadows.paused(), measure.kept(model):
        model(x + 1)
        model.eval()
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before[0], strict=True)) and model.training
    assert shadows.stats(0.1) == before[1]
    shadows.remove()
    with torch.no_grad():
        model(x)
    assert shadows.counts(0.1) == (1, 1, 1)


def test_exact_statistics_are_the_population_mean_and_unbiased_variance_of_the_first_layers_input():
    model = mlp.build(eval_gap_url._relu(8), 1)
    x = load_digits().train_x
    pop = measure.exact_stats(model, x)
    with torch.no_grad():
        h = model[0](x).double()  # the first batch norm's input
    assert torch.allclose(torch.tensor(pop.mean[0], dtype=torch.float64), h.mean(0), atol=1e-6)
    assert torch.allclose(torch.tensor(pop.var[0], dtype=torch.float64), h.var(0), rtol=1e-5)
    assert all(int(m.num_batches_tracked) == 0 for m in measure.batch_norms(model))  # put back


def test_sorted_batches_are_the_minibatches_training_sorts():
    data = load_digits()
    ours = measure.sorted_batches(data.train_y, 72)
    theirs = mlp.minibatches(len(data.train_y), 72, torch.Generator(), data.train_y)
    for idx in ours:
        assert torch.equal(idx, next(theirs))
    labels = torch.cat([data.train_y[i] for i in ours])
    assert bool((labels[1:] >= labels[:-1]).all())
    one_class = sum(len(set(data.train_y[i].tolist())) == 1 for i in ours)
    assert one_class >= len(ours) // 2, one_class


@pytest.mark.parametrize("kind", eval_gap_url.PAIRS)
def test_the_pairs_are_fakes_with_real_pixels_or_two_noisy_views(kind):
    x = load_digits().train_x[:16]
    a, b = steps.make_pair(x, kind, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == x.shape
    if kind == "real-fake":
        assert torch.equal(a, x) and torch.equal(b.sort(1).values, x.sort(1).values) and not torch.equal(b, x)
    else:
        assert float((a - x).std()) == pytest.approx(measure.VIEW_NOISE, rel=0.3) and not torch.equal(a, b)
        assert float(a.min()) >= 0 and float(a.max()) <= 1


@pytest.mark.parametrize("m, k", [(0.1, 4), (0.01, 16), (0.5, 2), (1.0, 1)])
def test_the_adjusted_momenta_make_k_updates_one(m, k):
    assert (1 - adjusted_momentum(m, k)) ** k == pytest.approx(1 - m, abs=1e-12)
    assert (1 - twice_momentum(m)) ** 2 == pytest.approx(1 - m, abs=1e-12)


# --- every section at a tiny size ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> dict[str, object]:
    return {name: run(config) for name, config in TINY.items()}


def test_the_sections_and_the_default_view():
    assert SECTIONS == tuple(eval_gap.CONFIGS) and set(DEFAULT_SECTIONS) <= set(SECTIONS)
    for name, cls in eval_gap.CONFIGS.items():
        assert cls().refusal() is None, (name, cls().refusal())
        assert eval_gap.RUNS[cls].__name__ == f"run_{name}"


@pytest.mark.parametrize("name", list(TINY))
def test_every_section_runs_at_a_tiny_size_with_the_right_shapes(name, tiny):
    report, config = tiny[name], TINY[name]
    assert report.config == config
    assert pickle.loads(pickle.dumps(report)) == report
    if name in ("batches", "lag", "dropout"):
        assert tuple(r.seed for r in report.runs) == config.seeds
    if name == "batches":
        for r in (o for run_ in report.runs for o in run_.orders.values()):
            assert r.curve.steps == (0, 6, 12) and len(r.train_mode) == 3
            assert len(r.mean_error) == len(r.var_ratio) == len(r.batch_var_ratio) == 3
    elif name == "lag":
        for r in report.runs:
            assert r.steps == (0, 6, 12)
            for m in config.momenta:
                assert len(r.accuracy[m]) == len(r.unbiased[m]) == len(r.mean_error[m]) == len(r.var_error[m]) == 3
                assert r.mean_error[m][0] == r.mean_error[config.momenta[0]][0]  # all start at 0 and 1
                assert r.unbiased[m][0] == r.accuracy[m][0]  # nothing to take out at step 0
            assert len(r.batch_var) == len(r.biased_batch_var) == 3
    elif name == "dropout":
        for r in report.runs:
            assert set(r.train_mode) == set(r.eval_mode) == set(eval_gap_url.DROPOUT_VARIANTS)
            assert len(r.layers) == 3 and all(0 < s.live <= s.units == config.width for s in r.layers)
    elif name == "accumulation":
        assert report.counted == {"big": 6, "micro": 12, "micro-adjusted": 12}
        assert set(report.mean_spread) == {config.micro_batch, config.batch}
        assert math.isfinite(report.grad_difference) and -1 <= report.grad_cosine <= 1
    elif name == "passes":
        assert report.counted == {"separate": 6, "together": 3}
        assert set(report.eval_accuracy) == {"trained", "separate", "together"}
        assert len(report.logits) == measure.SCATTER_IMAGES * 10 or len(report.logits) == config.batch * 10
    else:
        assert set(report.counted) == set(CHECKPOINT_VARIANTS)
        assert all(len(v) == measure.TABLE_UNITS for v in report.first_var.values())
    for key, fig in figures(report).items():
        assert fig.data and fig.layout.title.text, key
        assert len(fig.to_json()) <= 60_000, key
    words = section(report)
    for text in (words.symptom, words.measured, words.fix):
        assert text and "<" not in text and "nan" not in text.lower().split(), text
    assert words.symptom.count(". ") == 0, words.symptom  # one sentence
    compile(words.code, f"{name}.py", "exec")  # the fix's code is Python
    assert "import torch" in words.code or "from torch" in words.code
    exec(words.code, snippet_names())  # and runs as written, on the names a reader's script has


def snippet_names() -> dict[str, object]:
    """What a reader's training script has when the pages' fix code is pasted in: a digits-sized
    batch-norm network, its data set, loader and optimizer, a batch, two halves, a block."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))
    data = torch.utils.data.TensorDataset(torch.randn(40, 64), torch.randint(0, 10, (40,)))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    x, y = data.tensors[0][:8], data.tensors[1][:8]
    return {
        "model": model, "train_set": data, "train_loader": loader, "real_loader": loader, "x": x, "y": y,
        "x_a": x[:4], "x_b": x[4:], "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "block": nn.Sequential(nn.Linear(64, 64), bnviz.BatchNorm1d(64), nn.ReLU()),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(TINY))
def test_the_same_seed_gives_the_same_report_and_another_seed_another(name, tiny):
    config = TINY[name]
    assert run(config) == tiny[name]
    other = replace(config, seeds=(5,)) if hasattr(config, "seeds") else replace(config, seed=5)
    assert run(other) != tiny[name]


# --- words: computed from the report ---------------------------------------------------------------


def test_words_say_when_a_run_disagrees_with_the_claim(tiny):
    batches = tiny["batches"]

    def flat(r: eval_gap.BatchesRun) -> eval_gap.BatchesRun:
        orders = {o: replace(x, train_mode=(0.5,) * len(x.train_mode),
                             curve=replace(x.curve, test_accuracy=(0.5,) * len(x.curve.steps)))
                  for o, x in r.orders.items()}  # fmt: skip
        return replace(r, orders=orders)

    three = replace(batches, config=replace(batches.config, seeds=(0, 1, 2)),
                    runs=tuple(flat(batches.runs[0]) for _ in range(3)))  # fmt: skip
    words = section(three)
    assert "Whether eval mode collapses: no difference beyond the margin" in words.gap, words.gap
    assert "on all 3 seeds" not in words.measured.split("Shuffled")[0], words.measured
    assert "no verdict" in section(batches).gap, "two seeds: the numbers and no verdict"
    check = tiny["checkpoint"]
    same = {v: (3, 3, 3) for v in CHECKPOINT_VARIANTS}
    assert "unlike the claim" in section(replace(check, counted=same)).measured


# --- refusals --------------------------------------------------------------------------------------

REFUSED = [
    (BatchesConfig(steps=0), "the number of steps is 0"),
    (BatchesConfig(batch=1), "the batch size is 1"),
    (BatchesConfig(lr=-1.0), "the learning rate is -1.0"),
    (BatchesConfig(lr=math.nan), "the learning rate is nan"),
    (BatchesConfig(width=300), "the width (units per hidden layer) is 300"),
    (BatchesConfig(seeds=(0, -2)), "a seed is -2"),
    (BatchesConfig(seeds=()), "0 seeds were given; give 1 to 10"),
    (LagConfig(seeds=(1, 1)), "the seeds 1, 1 repeat one"),
    (DropoutConfig(seeds=tuple(range(11))), "11 seeds were given; give 1 to 10"),
    (BatchesConfig(steps=5000, eval_every=10), "evaluate every 50 steps or more"),
    (LagConfig(momenta=()), "0 momenta were given; give 1 to 6"),
    (LagConfig(momenta=(0.1, 0.0)), "the momentum 2 is 0.0"),
    (LagConfig(momenta=(0.1, 1.5)), "the momentum 2 is 1.5"),
    (LagConfig(momenta=(0.1, 0.1)), "repeat"),
    (LagConfig(eval_every=0), "the evaluation interval (steps) is 0"),
    (DropoutConfig(p=0.95), "the dropout probability p is 0.95"),
    (DropoutConfig(p=0.0), "above 0"),
    (DropoutConfig(placement="middle"), "the dropout's input is 'middle'"),
    (AccumulationConfig(micro=17), "micro-batches per step (k) is 17"),
    (AccumulationConfig(micro_batch=1), "the micro-batch size (n) is 1"),
    (AccumulationConfig(micro=16, micro_batch=32), "k × n is 16 × 32 = 512"),
    (AccumulationConfig(momentum=0.0), "the momentum is 0.0"),
    (AccumulationConfig(steps=5000, micro=16, micro_batch=16), "training steps of all its networks"),
    (PassesConfig(pair="cats"), "the pair of batches is 'cats'"),
    (PassesConfig(pairs=0), "the number of pairs is 0"),
    (CheckpointConfig(momentum=2.0), "the momentum is 2.0"),
    (CheckpointConfig(steps=4000), "training steps of all its networks"),
]


@pytest.mark.parametrize("config, words", REFUSED, ids=[w for _, w in REFUSED])
def test_refusals_name_the_value_and_the_range_before_anything_is_allocated(config, words, monkeypatch):
    reason = config.refusal()
    assert reason is not None and words in reason, reason
    monkeypatch.setattr(mlp, "build", lambda *a, **k: pytest.fail("built a network for a refused config"))
    with pytest.raises(ValueError, match=r".+"):
        run(config)


# --- stopping and progress -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TINY))
def test_stopped_raises_cancelled(name):
    calls = []

    def stopped() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run(TINY[name], stopped=stopped)
    assert len(calls) == 3


@pytest.mark.parametrize("name", list(TINY))
def test_progress_rises_to_one(name):
    seen: list[float] = []
    run(TINY[name], progress=seen.append)
    assert seen and seen[-1] == 1.0 and len(seen) >= 2
    assert all(0 <= a <= b <= 1 for a, b in itertools.pairwise(seen)), seen


# --- memory ----------------------------------------------------------------------------------------

MEMORY_CASES = {  # the defaults (fewer steps: memory does not grow with them) and the caps
    "batches": BatchesConfig(steps=60, eval_every=10),
    "batches, width 256, batch 256, every step evaluated": BatchesConfig(steps=20, eval_every=1, width=256, batch=256),
    "lag, 6 momenta, width 256, batch 256": LagConfig(steps=20, eval_every=1, width=256, batch=256,
                                                      momenta=(0.001, 0.01, 0.1, 0.2, 0.5, 0.9)),
    "dropout": DropoutConfig(steps=40),
    "dropout, width 256, batch 256": DropoutConfig(steps=20, width=256, batch=256),
    "accumulation, k 16, n 16, width 256": AccumulationConfig(steps=10, width=256, micro=16, micro_batch=16),
    "passes, 200 pairs of 256, width 256": PassesConfig(steps=10, width=256, batch=256, pairs=200),
    "checkpoint, width 256, batch 256": CheckpointConfig(steps=10, width=256, batch=256),
}  # fmt: skip


def measure_all() -> dict[str, list[int]]:
    """Each case's (estimate, measured peak): first a checkpoint run in a process that has
    trained but never checkpointed (the estimate counts torch._dynamo's import), then every case
    after a warm-up of each section."""
    from bnviz.hosting.memory import measure_peak

    run(TINY["lag"])  # the first training of a process sets torch up (about 15 MB, once: see training)
    first = CheckpointConfig(steps=2)
    out = {"checkpoint, first in the process": [first.estimate_bytes(), measure_peak(lambda: run(first))[1]]}
    for config in TINY.values():
        run(config)
    for name, config in MEMORY_CASES.items():
        out[name] = [config.estimate_bytes(), measure_peak(lambda config=config: run(config))[1]]
    return out


@pytest.fixture(scope="module")
def measured() -> dict[str, list[int]]:
    """In a fresh process with the server's allocator settings."""
    code = "import json; from tests.explorer.eval_gap.test_engine import measure_all; print(json.dumps(measure_all()))"
    env = {**os.environ, **serve.ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["checkpoint, first in the process", *MEMORY_CASES])
def test_the_memory_estimate_covers_the_measured_peak(measured, name):
    if name in MEMORY_CASES:
        assert MEMORY_CASES[name].refusal() is None, MEMORY_CASES[name].refusal()
    est, peak = measured[name]
    numbers = f"{name}: estimate {est / MB:.1f} MiB, measured {peak / MB:.1f} MiB"
    assert est >= peak, numbers
    assert est <= 4 * peak + 24 * MB, "too loose: " + numbers


def test_no_module_of_the_page_imports_streamlit():
    code = ("import sys; import bnviz.explorer.eval_gap.engine, bnviz.explorer.eval_gap.figures, "
            "bnviz.explorer.eval_gap.words; print('streamlit' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_bnviz_batch_norm_is_the_layer_of_every_section_but_the_checkpoint_comparison():
    model = mlp.build(eval_gap_url._relu(8), 0)
    assert all(isinstance(m, bnviz.BatchNorm1d) for m in measure.batch_norms(model))
    torch_model = mlp.build(CheckpointConfig(width=8).archs()["torch-fix"], 0)
    assert all(type(m) is nn.BatchNorm1d for m in measure.batch_norms(torch_model))
    assert measure.batch_norms(torch_model)[0].momentum == pytest.approx(twice_momentum(0.1))
