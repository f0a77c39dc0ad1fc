"""The comparison engine: report fields, verdicts, injected discrepancies, error capture, refusals."""

from __future__ import annotations

import pickle
import random
from dataclasses import replace

import pytest
import torch
from torch import nn

import bnviz
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.layer import engine as compare
from bnviz.explorer.layer import url as layer_url
from bnviz.explorer.layer.engine import run as run_comparison
from bnviz.explorer.layer.url import Config
from bnviz.explorer.query import MAX_RANK
from tests.conftest import assert_close

LAYER_SHAPES = {
    "BatchNorm1d": (16, 4, 5),
    "BatchNorm2d": (4, 3, 6, 6),
    "BatchNorm3d": (2, 3, 3, 4, 4),
    "BatchNorm": (2, 3, 2, 3, 2, 2),
}
QUANTITIES = ["output", "running_mean", "running_var", "num_batches_tracked", "grad input", "grad weight", "grad bias"]

MATCH_CASES = [
    pytest.param(Config(layer=layer, shape=shape, mode=mode), id=f"{layer}-{mode}")
    for layer, shape in LAYER_SHAPES.items()
    for mode in ("train", "eval")
] + [
    pytest.param(Config(momentum=None, steps=7), id="cumulative"),
    pytest.param(Config(momentum=0.0), id="momentum0"),
    pytest.param(Config(momentum=1.0, eps=1e-3), id="momentum1"),
    pytest.param(Config(affine=False, track_running_stats=False, mode="eval"), id="plain-untracked-eval"),
    pytest.param(Config(dtype="float64"), id="float64"),
    pytest.param(Config(dtype="bfloat16", mode="eval"), id="bfloat16"),
    pytest.param(Config(dtype="float16"), id="float16"),
    pytest.param(Config(layer="BatchNorm1d", shape=(4096, 64)), id="long-batch-2d"),
    pytest.param(Config(shape=(0, 3, 4, 4)), id="empty-batch"),
    pytest.param(Config(steps=0), id="no-steps"),
    *[pytest.param(Config(dist=d, seed=3), id=f"dist-{d}") for d in DISTRIBUTIONS],
]


@pytest.mark.parametrize("config", MATCH_CASES)
def test_reports_match_with_every_field(config):
    r = run_comparison(config)
    assert r.error is None, r.error
    assert [q.name for q in r.quantities] == QUANTITIES
    assert r.verdict == "match", [(q.name, q.max_abs, q.err_bnviz, q.err_torch) for q in r.quantities if not q.ok]
    assert len(r.history["bnviz"]) == len(r.history["torch"]) == config.steps + 2  # step 0: the initial values
    assert len(r.history["population_mean"]) == min(config.num_features, compare.PLOT_CHANNELS)
    assert (r.rtol, r.atol) == bnviz.explorer.parity.tolerance(layer_url.DTYPES[config.dtype])
    if config.numel:
        assert r.histograms["channels"] and r.histograms["diffs"]


def test_report_is_plain_data():
    """Cacheable and shareable: it pickles, and holds no module (buffers would leak between users)."""
    r = run_comparison(Config())
    clone = pickle.loads(pickle.dumps(r))
    assert clone.verdict == r.verdict

    def walk(v):
        assert not isinstance(v, (nn.Module, torch.Tensor)), type(v)
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk([r.history, r.channels, r.histograms, r.modes, r.cells])


def test_shown_numbers_equal_torch():
    """The numbers of the "which axes" panel and the history come from torch's own module too."""
    config = Config(shape=(6, 3, 4, 4), steps=3, momentum=0.25, train_batch=5)
    r = run_comparison(config)
    ref = nn.BatchNorm2d(3, momentum=0.25)
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 1.5, 3))
        ref.bias.copy_(torch.linspace(-0.5, 0.5, 3))
    training, shown, _ = compare.config_batches(config)
    assert [t.shape[0] for t in training] == [5, 5, 5] and shown.shape == (6, 3, 4, 4)
    assert_close(torch.tensor(r.history["torch"][0]["running_mean"]), torch.zeros(3), "step 0: initial running_mean")
    for step, x in enumerate([*training, shown], start=1):
        if step == config.steps + 1:
            before = ref.running_mean.clone()
        ref(x)
        assert_close(
            torch.tensor(r.history["torch"][step]["running_mean"], dtype=torch.float64),
            ref.running_mean.double(),
            f"history {step}",
        )
        assert_close(
            torch.tensor(r.history["bnviz"][step]["running_var"], dtype=torch.float64),
            ref.running_var.double(),
            f"bnviz history {step}",
        )
    var, mean = torch.var_mean(x.double(), (0, 2, 3), correction=0)
    ch = r.channels
    assert_close(torch.tensor(ch["mean"], dtype=torch.float64), mean, "batch mean")
    assert_close(torch.tensor(ch["var_biased"], dtype=torch.float64), var, "biased variance")
    assert_close(torch.tensor(ch["var_unbiased"], dtype=torch.float64), var * 96 / 95, "unbiased variance")
    assert_close(torch.tensor(ch["running_mean_before"], dtype=torch.float64), before.double(), "running_mean before")
    assert_close(
        torch.tensor(ch["running_mean_after"], dtype=torch.float64), ref.running_mean.double(), "running_mean after"
    )
    assert ch["n"] == 96 and ch["reduced_dims"] == [0, 2, 3]


class _UnbiasedNormalizer(bnviz.BatchNorm2d):
    """A classic home-made bug: normalizing with the unbiased variance."""

    def forward(self, x):
        y = super().forward(x)
        n = x.numel() // x.size(1)
        return y * ((n - 1) / n) ** 0.5 if self.training else y


class _BiasedRunningVar(bnviz.BatchNorm2d):
    """Another one: storing the biased variance in running_var."""

    def forward(self, x):
        y = super().forward(x)
        if self.training and self.running_var is not None:
            n = x.numel() // x.size(1)
            m = self.momentum
            with torch.no_grad():
                batch_unbiased = x.var((0, 2, 3), correction=1)
                self.running_var.add_(m * batch_unbiased * (1 / n - 1) * 1 + m * batch_unbiased * 0)
        return y


class _OffByTiny(bnviz.BatchNorm2d):
    def forward(self, x):
        return super().forward(x) + 1e-4


@pytest.mark.parametrize(
    "bug, failing",
    [(_UnbiasedNormalizer, {"output", "grad input", "grad weight"}), (_BiasedRunningVar, {"running_var"}),
     (_OffByTiny, {"output"})],
    ids=["unbiased-normalizer", "biased-running-var", "off-by-1e-4"],
)  # fmt: skip
def test_injected_discrepancy_is_a_mismatch(monkeypatch, bug, failing):
    monkeypatch.setitem(compare.BNVIZ_LAYERS, "BatchNorm2d", bug)
    r = run_comparison(Config(shape=(4, 3, 5, 5)))
    assert r.verdict == "mismatch"
    bad = {q.name for q in r.quantities if not q.ok}
    assert failing <= bad, f"expected {failing} among failing, got {bad}"


ERROR_CASES = {
    "wrong-rank": (Config(layer="BatchNorm2d", shape=(8, 3, 16)), "ValueError: expected 4D input (got 3D input)"),
    "rank-1-in-1d": (Config(layer="BatchNorm1d", shape=(8,)), "ValueError: expected 2D or 3D input (got 1D input)"),
    "rank-1-any": (Config(layer="BatchNorm", shape=(8,)), "ValueError: expected at least 2D input (got 1D input)"),
    "batch-of-one": (
        Config(shape=(1, 3, 1, 1)),
        "ValueError: Expected more than 1 value per channel when training, got input size torch.Size([1, 3, 1, 1])",
    ),
    "eps-zero": (Config(eps=0.0), "ValueError: batch_norm eps must be positive during training, but got 0.0"),
    "zero-channels-affine": (
        Config(layer="BatchNorm1d", shape=(5, 0), mode="eval"),
        "IndexError: select(): index 0 out of range for tensor of size [0] at dimension 0",
    ),
    "eps-negative-eval": (
        Config(eps=-0.5, mode="eval", steps=0),
        "ValueError: batch_norm eps must be non-negative, but got -0.5",
    ),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_errors_are_captured_side_by_side(case):
    config, message = ERROR_CASES[case]
    r = run_comparison(config)
    assert r.error is not None
    assert r.error.torch == message, f"torch: {r.error.torch!r}"
    assert r.error.bnviz == message, f"bnviz: {r.error.bnviz!r}"
    assert r.error.agree and r.verdict == "match"
    assert r.quantities == ()


def test_disagreeing_errors_are_a_mismatch(monkeypatch):
    class Strict(bnviz.BatchNorm2d):
        def _check_input_dim(self, input):
            raise ValueError("something else")

    monkeypatch.setitem(compare.BNVIZ_LAYERS, "BatchNorm2d", Strict)
    r = run_comparison(Config(shape=(8, 3, 16)))
    assert r.error is not None and not r.error.agree and r.verdict == "mismatch"
    assert r.error.bnviz == "ValueError: something else"


REFUSALS = {
    "oversize": (Config(shape=(4000, 4000)), "over the limit"),
    "too-many-steps": (Config(steps=layer_url.MAX_STEPS + 1), "steps must be"),
    "too-much-work": (Config(shape=(1000, 2000), steps=50, train_batch=1000), "fewer steps"),
    "train-batch-oversize": (Config(shape=(1, 1000, 1000), train_batch=3), "training batches of"),
    "train-batch-zero": (Config(train_batch=0), "training batch size"),
    "unknown-layout": (Config(layout="NHWC"), "layout"),
    "rank-too-high": (Config(shape=(1,) * (MAX_RANK + 1)), "dimensions"),
    "unknown-layer": (Config(layer="LayerNorm"), "unknown layer"),
    "negative": (Config(shape=(2, -3)), "negative"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_before_anything_is_allocated(case, monkeypatch):
    config, words = REFUSALS[case]
    assert words in (config.refusal() or ""), config.refusal()

    def boom(*a, **k):
        raise AssertionError("allocated a batch for a refused config")

    monkeypatch.setattr(compare, "sample_batch", boom)
    with pytest.raises(ValueError, match=r"limit|steps|dimensions|unknown|negative|batch size|layout"):
        run_comparison(config)


def test_cuda_without_gpu_is_refused_clearly():
    config = Config(device="cuda")
    if torch.cuda.is_available():
        assert config.refusal() is None
    else:
        assert "no CUDA GPU" in config.refusal()


def test_same_config_same_report():
    a, b = run_comparison(Config(seed=5)), run_comparison(replace(Config(), seed=5))
    assert a.quantities == b.quantities


def _random_configs(count: int, seed: int = 1) -> list[Config]:
    """A seeded table of odd set-ups: empty dims, one channel, rank 1 to 8, every flag and dtype."""
    rnd = random.Random(seed)
    shapes = [(0,), (5, 0), (0, 0, 0), (2, 1), (1, 1), (3,), (1, 2000), (2, 1, 1, 1, 1, 1, 1, 1), (7, 3, 0, 2),
              (4, 1000, 1), (2, 3, 1), (1, 3, 2), (64, 3), (3, 5, 7, 2), (2, 2, 2, 2, 2), (9, 1, 9)]  # fmt: skip
    return [
        Config(
            layer=rnd.choice(layer_url.LAYERS),
            shape=rnd.choice(shapes),
            mode=rnd.choice(layer_url.MODES),
            momentum=rnd.choice([None, 0.0, 0.5, 1.0, 0.01]),
            eps=rnd.choice([1e-5, 0.0, -1e-3, 1.0]),
            affine=rnd.random() < 0.5,
            track_running_stats=rnd.random() < 0.5,
            dtype=rnd.choice(list(layer_url.DTYPES)),
            dist=rnd.choice(DISTRIBUTIONS),
            seed=rnd.randrange(2**31),
            steps=rnd.choice([0, 1, 3]),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("config", _random_configs(120), ids=lambda c: f"{c.layer}-{c.shape}-{c.mode}-{c.dtype}")
def test_odd_set_ups_match_or_raise_alike(config):
    """Whatever the set-up, both sides agree (values, or the same error) and nothing else raises."""
    from bnviz.explorer.layer.figures import all_figures
    from bnviz.explorer.layer.words import channel_table, code_snippet

    r = run_comparison(config)
    assert r.verdict == "match", (r.error, [(q.name, q.max_abs, q.err_bnviz, q.err_torch) for q in r.quantities])
    all_figures(r)
    channel_table(r, 0)
    code_snippet(config)


# --- regressions for what a newcomer found -------------------------------------------------------


def test_batch_of_one_in_eval_works_because_training_has_its_own_batch_size():
    """The hint says "use eval mode": with training batches of their own size, that is true."""
    r = run_comparison(Config(layer="BatchNorm1d", shape=(1, 3), mode="eval"))
    assert r.error is None and r.verdict == "match", r.error
    assert r.modes["errors"]["train"].startswith("ValueError: Expected more than 1 value per channel")
    assert r.modes["errors"]["eval"] is None


@pytest.mark.parametrize(
    "config, stage",
    [(Config(layer="BatchNorm1d", shape=(1, 3)), "at the displayed batch (train mode, batch of 1)"),
     (Config(layer="BatchNorm1d", shape=(4, 3), train_batch=1), "at training step 1 of 5 (train mode, batch of 1)"),
     (Config(layer="BatchNorm2d", shape=(8, 3, 16)), "at training step 1 of 5 (train mode, batch of 8)"),
     (Config(layer="BatchNorm2d", shape=(8, 3, 16), steps=0), "at the displayed batch (train mode, batch of 8)")],
    ids=["displayed", "training", "wrong-rank", "wrong-rank-no-steps"],
)  # fmt: skip
def test_errors_say_which_step_raised(config, stage):
    r = run_comparison(config)
    assert r.error is not None and r.error.stage == stage, (r.error, stage)


def test_features_last_reaches_torchs_real_error_and_its_fix_matches():
    """(N, L, C) with BatchNorm1d(C): torch's "running_mean should contain" error, and the permuted fix."""
    config = Config(layer="BatchNorm1d", shape=(8, 128, 64), layout="features-last")
    assert config.num_features == 64
    r = run_comparison(config)
    assert r.error.torch == r.error.bnviz == "RuntimeError: running_mean should contain 128 elements not 64"
    fixed = config.channels_first()
    assert fixed.shape == (8, 64, 128) and fixed.layout == "channels-first"
    _, shown, _ = compare.config_batches(config)
    _, shown_fixed, _ = compare.config_batches(fixed)
    assert torch.equal(shown.permute(0, 2, 1), shown_fixed), "the fix must see exactly the same values"
    assert run_comparison(fixed).verdict == "match"


def test_untracked_quantities_are_absent_not_zero():
    r = run_comparison(Config(track_running_stats=False, mode="eval"))
    absent = {q.name: q.absent for q in r.quantities if q.absent}
    assert set(absent) == {"running_mean", "running_var", "num_batches_tracked"}, absent
    assert all("not tracked" in v for v in absent.values())
    plain = run_comparison(Config(affine=False))
    assert {q.name for q in plain.quantities if q.absent} == {"grad weight", "grad bias"}


def test_train_and_eval_probes_equal_torch_and_no_grad_still_updates():
    """The same batch from the same state: train mode (batch statistics) and eval mode (running
    ones), each checked against torch's own module; no_grad in train mode still moves running_mean."""
    config = Config(shape=(6, 3, 4, 4), steps=2)
    r = run_comparison(config)
    assert r.modes["agree"]
    training, shown, _ = compare.config_batches(config)
    ref = compare.make_module(config, "torch")
    for x in training:
        with torch.no_grad():
            ref(x)
    before = ref.running_mean.clone()
    with torch.no_grad():
        y_eval = ref.eval()(shown)
        y_train = ref.train()(shown)
    ng = r.modes["no_grad"]
    assert_close(torch.tensor(ng["running_mean_before"], dtype=torch.float64), before.double(), "before no_grad")
    assert_close(torch.tensor(ng["running_mean_after"], dtype=torch.float64), ref.running_mean.double(), "after")
    assert ng["num_batches_tracked_after"] == ng["num_batches_tracked_before"] + 1 == 3
    for c, entry in enumerate(r.modes["channels"]):
        for mode, y in (("train", y_train), ("eval", y_eval)):
            mean = y[:, c].double().mean()
            assert abs(entry[f"{mode}_mean"] - float(mean)) < 1e-5, (mode, c, entry[f"{mode}_mean"], float(mean))


def test_cells_carry_each_groups_statistics_over_the_whole_tensor():
    config = Config(shape=(10, 3, 5, 5))
    r = run_comparison(config)
    _, shown, _ = compare.config_batches(config)
    var, mean = torch.var_mean(shown.double(), (0, 2, 3), correction=0)
    cells = r.cells
    assert (cells.samples, cells.channels, cells.positions) == (6, 3, 12) and cells.capped
    for c in range(3):
        i = c * cells.positions
        assert cells.groups[0][i] == c
        assert abs(cells.means[3][i] - float(mean[c])) < 1e-5 * max(1, abs(float(mean[c]))), (cells.means[3][i], mean)
        assert abs(cells.variances[0][i] - float(var[c])) < 1e-5 * float(var[c]), (cells.variances[0][i], var)
        assert abs(cells.values[1][i + 2] - float(shown[1, c, 0, 2])) < 1e-5


def test_empty_batch_keeps_the_running_statistics_and_counts_it():
    r = run_comparison(Config(shape=(0, 3, 4, 4)))
    assert r.verdict == "match"
    last, before = r.history["bnviz"][-1], r.history["bnviz"][-2]
    assert last["running_mean"] == before["running_mean"] and last["num_batches_tracked"] == 6
