"""``bnviz.diagnose``: each check finds its planted fault and nothing else in a healthy model; the
report's JSON, text and HTML; bad input refused; the caller's model untouched.

The healthy model is a small conv net trained a few steps on structured data; each case plants one
fault in a copy (or builds the model with it) and names the check ids it must raise."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

import bnviz
from bnviz.diagnosis import CHECKS, MISMATCH_Z, Report


def _data(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g) * 2 + 0.5


def _net(momentum: float = 0.1, eps: float = 1e-5, bias: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, bias=bias), nn.BatchNorm2d(6, momentum=momentum, eps=eps), nn.ReLU(),
        nn.Conv2d(6, 8, 3, bias=False), nn.BatchNorm2d(8, momentum=momentum, eps=eps), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    )


def _trained(net: nn.Module, steps: int = 30) -> nn.Module:
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    net.train()
    for i in range(steps):
        x = _data(32, i)
        loss = net(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


HEALTHY = _trained(_net())
BATCHES = [_data(32, 1000 + i) for i in range(4)]


def _plant(fn: Callable[[nn.Module], None], base: nn.Module | None = None) -> nn.Module:
    net = copy.deepcopy(base if base is not None else HEALTHY)
    with torch.no_grad():
        fn(net)
    return net


def _frozen_training(net: nn.Module) -> None:
    net.train()
    for p in net[1].parameters():
        p.requires_grad_(False)


CASES: dict[str, tuple[Callable[[], nn.Module], set[str], bool]] = {  # model, check ids raised, with batches
    "never updated": (lambda: _net().eval(), {"stats-never-updated"}, False),
    "num_batches_tracked 0": (lambda: _plant(lambda n: n[4].num_batches_tracked.zero_()),
                              {"stats-never-updated"}, False),
    "NaN in running_var": (lambda: _plant(lambda n: n[1].running_var.__setitem__(2, math.nan)),
                           {"nonfinite-stats"}, False),
    "inf in running_mean": (lambda: _plant(lambda n: n[4].running_mean.__setitem__(0, math.inf)),
                            {"nonfinite-stats"}, False),
    "tiny running_var": (lambda: _plant(lambda n: n[4].running_var.__setitem__(3, 1e-9)), {"tiny-running-var"}, False),
    "dead channels": (lambda: _plant(lambda n: n[1].weight[:2].zero_()), {"dead-channels"}, False),
    "Keras momentum": (lambda: _trained(_net(momentum=0.99)), {"tf-momentum"}, False),
    "Keras eps": (lambda: _trained(_net(eps=1e-3)), {"tf-eps"}, False),
    "bias before norm": (lambda: _trained(_net(bias=True)), {"bias-before-norm"}, False),
    "batch norm left in train": (lambda: _plant(lambda n: n[4].train()), {"train-mode-at-eval"}, False),
    "frozen but updating": (lambda: _plant(_frozen_training), {"frozen-but-updating"}, False),
    "shifted data": (lambda: _plant(lambda n: n[1].running_mean.add_(3.0)), {"stats-mismatch"}, True),
}


def _ids(report: Report, severities: tuple[str, ...] = ("error", "warning")) -> set[str]:
    return {f.check for f in report.findings if f.severity in severities}


def test_the_healthy_model_has_no_error_or_warning():
    report = bnviz.diagnose(HEALTHY, BATCHES)
    assert _ids(report) == set(), [f.message for f in report.findings]
    assert _ids(report, ("note",)) == {"foldable"}, report.findings  # conv → BN pairs, a remark


@pytest.mark.parametrize("name", list(CASES))
def test_each_check_finds_its_planted_fault(name):
    build, expected, with_batches = CASES[name]
    model = build()
    report = bnviz.diagnose(model, BATCHES if with_batches else None)
    found = _ids(report, ("error", "warning", "note")) - {"foldable"}
    assert expected <= found, f"{name}: expected {expected}, found {found}: {[f.message for f in report.findings]}"
    assert found - expected <= {"stats-mismatch", "dead-channels", "train-mode-at-eval"}, (name, found - expected)
    for f in report.findings:
        assert f.check in CHECKS and f.severity in ("error", "warning", "note") and f.message and f.fix, f
        assert f.link.startswith("/"), f


def test_every_check_id_is_planted_somewhere():
    covered = set().union(*(ids for _, ids, _ in CASES.values())) | {"foldable", "batch-too-small"}
    assert covered == set(CHECKS), set(CHECKS) - covered


def test_batch_too_small_counts_values_per_channel():
    report = bnviz.diagnose(HEALTHY, [_data(1, 7), _data(1, 8)])  # 36 values at layer 1, 16 at layer 4
    small = {f.layer for f in report.findings if f.check == "batch-too-small"}
    assert small == set(), small
    one_by_one = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4)).eval()
    one_by_one(torch.zeros(1, 1, 8, 8))
    report = bnviz.diagnose(one_by_one, [_data(2, 1), _data(3, 2)])
    rows = [f for f in report.findings if f.check == "batch-too-small"]
    assert [f.layer for f in rows] == ["2"] and "2 values per channel" in rows[0].message, rows


def test_the_zero_initialised_last_norm_of_a_residual_block_is_a_note():
    net = _net().eval()
    nn.init.zeros_(net[4].weight)
    report = bnviz.diagnose(net)
    dead = [f for f in report.findings if f.check == "dead-channels"]
    assert [(f.layer, f.severity) for f in dead] == [("4", "note")], dead
    trained = _plant(lambda n: n[4].weight.zero_())
    dead = [f for f in bnviz.diagnose(trained).findings if f.check == "dead-channels"]
    assert [(f.layer, f.severity) for f in dead] == [("4", "error")], dead


def test_tiny_running_var_reports_the_gain_and_the_assumed_eps_for_a_state_dict():
    net = _plant(lambda n: n[4].running_var.__setitem__(3, 0.0))
    [finding] = [f for f in bnviz.diagnose(net.state_dict()).findings if f.check == "tiny-running-var"]
    assert f"{1 / math.sqrt(1e-5):.4g}" in finding.message and "assumed" in finding.message, finding.message


def test_stats_mismatch_names_the_first_layer_off_and_the_recalibration_closes_it():
    net = _plant(lambda n: n[1].running_mean.add_(3.0))
    report = bnviz.diagnose(net, BATCHES)
    mismatch = [f for f in report.findings if f.check == "stats-mismatch"]
    assert mismatch[0].layer == "1" and "eval gap starts here" in mismatch[0].message, mismatch
    assert report.before is not None and report.after is not None
    assert report.before[0].mean_z > MISMATCH_Z, report.before
    for shift in report.after:  # exact recalibration: the statistics are those of what reaches each layer
        assert shift.mean_z < 1e-6 and shift.log_var_ratio < 1e-6, shift


def test_the_callers_model_and_state_are_unchanged():
    net = _plant(lambda n: n[1].running_mean.add_(3.0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    bnviz.diagnose(net, BATCHES)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [m.training for m in net.modules()] == modes


def test_a_batch_with_a_nan_poisons_its_layers_yet_every_batch_is_counted():
    """A NaN in one batch of four: every batch norm's shift is non-finite (stats-mismatch says so),
    each still counts 4 batches, and the recalibration, which refuses non-finite batches, is said
    to be unavailable rather than raised."""
    poisoned = [b.clone() for b in BATCHES]
    poisoned[1][0, 0, 0, 0] = math.nan
    report = bnviz.diagnose(HEALTHY, poisoned)
    got = [(s.layer, math.isnan(s.mean_z), s.batches) for s in report.before]
    assert got == [("1", True, 4), ("4", True, 4)], got
    assert "stats-mismatch" in _ids(report) and "recalibration" in report.unavailable, report.unavailable


def test_a_state_dict_gives_the_state_checks_and_says_which_it_cannot_give():
    net = _plant(lambda n: n[1].running_var.__setitem__(2, math.nan))
    report = bnviz.diagnose(net.state_dict())
    assert report.source == "state_dict" and _ids(report) == {"nonfinite-stats"}
    model_only = {c.id for c in CHECKS.values() if c.needs != "state"}
    assert set(report.unavailable) == model_only, report.unavailable
    assert [r.name for r in report.layers] == ["1", "4"] and report.layers[0].eps is None
    assert report.exit_status() == 1 and bnviz.diagnose(HEALTHY.state_dict()).exit_status() == 0


def test_the_report_is_json_ready_and_shows_as_text_and_escaped_html():
    net = nn.Sequential()
    net.add_module("<b>x</b>", nn.BatchNorm1d(3))
    net.eval()
    net[0].running_var[0] = math.nan
    report = bnviz.diagnose(net)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["schema"] == 1 and data["source"] == "model" and data["layers"][0]["name"] == "<b>x</b>"
    assert {"check", "severity", "layer", "message", "fix", "link"} == set(data["findings"][0])
    assert set(data["layers"][0]["running_var"]) == {"min", "q25", "median", "q75", "max"}
    assert "<b>x</b>" not in report._repr_html_() and "&lt;b&gt;x&lt;/b&gt;" in report._repr_html_()
    assert "nonfinite-stats" in str(report)


BAD = [
    (lambda: bnviz.diagnose([1, 2, 3]), TypeError, "expected an nn.Module or a state dict"),
    (lambda: bnviz.diagnose({"w": torch.ones(3)}), ValueError, "holds no batch norm"),
    (lambda: bnviz.diagnose(nn.Linear(3, 3)), ValueError, "no batch norm with running statistics"),
    (lambda: bnviz.diagnose({"a.running_mean": torch.zeros(3), "a.running_var": torch.ones(4)}), ValueError,
     "running_mean (3,) and running_var (4,)"),
    (lambda: bnviz.diagnose({"a.running_mean": torch.zeros(3), "a.running_var": torch.ones(3),
                             "a.weight": torch.ones(2)}),
     ValueError, "weight (2,) but 3 channels"),
    (lambda: bnviz.diagnose(HEALTHY.state_dict(), BATCHES), TypeError, "batches need a model"),
]


@pytest.mark.parametrize("call, error, words", BAD, ids=range(len(BAD)))
def test_bad_input_gets_a_clear_error(call, error, words):
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value), str(info.value)


def test_links_open_views_of_the_app():
    from urllib.parse import parse_qsl

    from bnviz.explorer.layer.url import LAYER, Config

    pages = {"", "network", "training", "eval-gap", "family", "data-parallel", "inference", "doctor"}
    for check in CHECKS.values():
        path, _, query = check.link.partition("?")
        assert path.strip("/") in pages, check
        if path == "/" and query:
            _, warnings = LAYER.parse(dict(parse_qsl(query)), Config())
            assert warnings == [], (check.id, warnings)
