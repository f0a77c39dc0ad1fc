"""The network page's engine: the question's CNN with torch's and bnviz's layers, in lockstep."""

from __future__ import annotations

import pickle
from dataclasses import replace

import pytest
import torch
from torch import nn

from bnviz.explorer.network import engine as network
from bnviz.explorer.network.engine import all_figures, build, stop_pictures, stop_text
from bnviz.explorer.network.engine import run as run_network
from bnviz.explorer.network.url import NetworkConfig

CASES = [
    pytest.param(NetworkConfig(), id="default-eval"),
    pytest.param(NetworkConfig(mode="train", steps=3), id="train-mode"),
    pytest.param(NetworkConfig(batch=4, image=8, channels=2, steps=0), id="no-steps"),
    pytest.param(NetworkConfig(batch=8, image=12, channels=5, steps=5, lr=0.5, seed=3), id="odd-sizes"),
    # two samples per statistic in the classifier: chaotic training (the free-running paths part ways), yet
    # every step from the same state agrees — the newcomer's link, then the extremes of every control
    pytest.param(NetworkConfig(batch=2, image=16, channels=8, steps=10, lr=0.1, seed=0, mode="eval"), id="chaos-link"),
    pytest.param(NetworkConfig(batch=2, image=4, channels=1, steps=50, lr=1.0, seed=1), id="batch-2-lr-1-50-steps"),
    pytest.param(NetworkConfig(batch=2, image=4, channels=32, steps=20, lr=1.0, seed=2, mode="train"),
                 id="batch-2-32ch"),
    pytest.param(NetworkConfig(batch=3, image=6, channels=3, steps=30, lr=1.0, seed=5), id="batch-3"),
    pytest.param(NetworkConfig(batch=2, image=8, channels=2, steps=25, lr=1e-6, seed=7), id="tiny-lr"),
]


@pytest.mark.parametrize("config", CASES)
def test_every_layer_agrees_after_training(config):
    r = run_network(config)
    assert r.verdict == "match", [(x.name, x.max_abs, x.worst) for x in r.layers if not x.ok]
    assert len(r.losses["torch"]) == len(r.losses["bnviz free-running"]) == config.steps
    assert [x.kind for x in r.layers] == ["BatchNorm2d", "BatchNorm2d", "BatchNorm1d", "output"]
    assert [x.calls for x in r.layers] == [config.steps] * 3 + [1], "every batch norm, every step"
    assert all(x.worst <= 1 for x in r.layers if x.kind != "BatchNorm1d" or config.batch > 3), r.layers


def test_each_batch_norm_sees_the_shape_its_class_fits_and_the_other_refuses():
    config = NetworkConfig(batch=16, image=8, channels=4)
    stops = run_network(config).stops
    assert [(s.layer, s.shape) for s in stops] == [
        ("BatchNorm2d", (16, 4, 8, 8)), ("BatchNorm2d", (16, 8, 4, 4)), ("BatchNorm1d", (16, 32))]  # fmt: skip
    assert stops[0].other_error == stops[0].other_error_bnviz == "ValueError: expected 2D or 3D input (got 4D input)"
    assert stops[2].other_error == stops[2].other_error_bnviz == "ValueError: expected 4D input (got 2D input)"
    assert [s.grouping.group_size() for s in stops] == [16 * 8 * 8, 16 * 4 * 4, 16]
    assert "N·H·W = 16·8·8 = 1,024 values per statistic" in stop_text(stops[0])
    assert "N = 16 values per statistic" in stop_text(stops[2])


def test_the_two_networks_start_from_the_same_weights_and_only_their_batch_norms_differ():
    config = NetworkConfig(channels=3)
    ours, ref = build(config, "bnviz"), build(config, "torch")
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k
    assert type(ours[1]).__module__ == "bnviz.modules" and isinstance(ref[1], nn.BatchNorm2d)


def test_an_injected_bug_is_a_mismatch(monkeypatch):
    class Off(network.BN_KINDS["1d"][1]):
        def forward(self, x):
            return super().forward(x) * 1.001

    monkeypatch.setitem(network.BN_KINDS, "1d", (nn.BatchNorm1d, Off))
    r = run_network(NetworkConfig(steps=2))
    assert r.verdict == "mismatch"
    assert not next(x for x in r.layers if x.name == "logits").ok


def test_report_is_plain_data_and_figures_are_small():
    r = run_network(NetworkConfig(steps=2))
    assert pickle.loads(pickle.dumps(r)).verdict == r.verdict
    figs = all_figures(r)
    assert {"loss", "logits", "layers", "divergence"} == set(figs)
    assert all(fig.data and len(fig.to_json()) <= 100_000 for fig in figs.values())
    pictures = stop_pictures(r)
    assert set(pictures) == {"1", "5", "9"} and "32 values per statistic" in pictures["9"]


@pytest.mark.parametrize(
    "change, words",
    [(dict(batch=1), "batch size is 1;"), (dict(image=7), "image size is 7, an odd number"),
     (dict(image=66), "image size is 66; it must be 4 to 64"), (dict(channels=0), "0 channels"),
     (dict(steps=51), "steps"), (dict(lr=0.0), "learning rate"), (dict(mode="x"), "mode"),
     (dict(batch=256, image=64, channels=32, steps=50), "multiply-adds")],
)  # fmt: skip
def test_refusals_before_anything_is_allocated(change, words, monkeypatch):
    config = replace(NetworkConfig(), **change)
    assert words in (config.refusal() or ""), config.refusal()
    monkeypatch.setattr(network, "build", lambda *a: pytest.fail("built a network for a refused config"))
    with pytest.raises(ValueError):
        run_network(config)


def test_chaos_is_measured_apart_next_to_torchs_own_float32_against_float64():
    r = run_network(NetworkConfig(batch=2, image=16, channels=8, steps=10, lr=0.1, seed=0, mode="eval"))
    assert r.verdict == "match"
    div = r.divergence
    assert len(div["bnviz vs torch"]) == len(div["torch float32 vs float64"]) == 10
    assert div["torch float32 vs float64"][-1] > 0.1, "with 2 samples per statistic torch's own paths part"
    assert r.accuracy["bnviz"] == r.accuracy["torch"], "from the same state both predict alike"
    assert set(r.free_accuracy) == {"bnviz", "torch", "float64"}
    text = network.divergence_text(r)
    assert f"{div['torch float32 vs float64'][-1]:.2g}" in text and "chaotic" in text
    assert network.divergence_heading(r) == "On their own paths: training is chaotic here"
    assert "64 fresh samples (32 batches of 2)" in text, "a 2-sample evaluation would give only 0, 50 or 100 %"


def test_a_calm_run_stays_together_on_its_own_paths_too():
    r = run_network(NetworkConfig(steps=5))
    assert max(r.divergence["bnviz vs torch"]) < 1e-5, r.divergence
    assert network.divergence_heading(r) == "On their own paths: training is stable here"
    assert "training is stable" in network.divergence_text(r)


@pytest.mark.parametrize("batch, batches", [(2, 32), (5, 13), (32, 2), (64, 1), (256, 1)])
def test_accuracy_counts_at_least_64_fresh_samples_one_batch_at_a_time(batch, batches):
    config = NetworkConfig(batch=batch, image=8, channels=2, steps=1)
    assert network.eval_batches(config) == batches and batches * batch >= network.EVAL_SAMPLES
    model = network.build(config, "torch").eval()
    right = total = 0
    for k in range(batches):  # the reference: the same fresh batches, counted by hand
        x, y = network.batch(config, config.steps + k)
        with torch.no_grad():
            right += int((model(x).argmax(1) == y).sum())
        total += len(y)
    assert network.accuracy(model, config) == right / total and total == batches * batch
