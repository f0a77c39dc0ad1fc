"""Every page folder keeps the contract of ``bnviz.explorer.contract``: frozen, hashable configs with
``estimate_bytes()`` and ``refusal()`` in its ``url.py``; ``run(config, stopped, progress)`` in its
``engine.py``, stopping when asked; reports that hold their config and a verdict."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pickle

import pytest

from bnviz.explorer.contract import PageConfig, PageReport
from bnviz.explorer.doctor.url import DoctorConfig
from bnviz.explorer.family.url import FamilyConfig
from bnviz.explorer.layer.url import Config
from bnviz.explorer.network.url import NetworkConfig
from bnviz.hosting.serve import Cancelled

PAGES = {  # page folder: its config classes
    "layer": ["Config"],
    "network": ["NetworkConfig"],
    "inference": ["InferenceConfig"],
    "family": ["FamilyConfig"],
    "data_parallel": ["DataParallelConfig"],
    "doctor": ["DoctorConfig"],
    "training": ["DriftConfig", "SweepConfig", "NoiseConfig", "PlacementConfig"],
    "eval_gap": ["BatchesConfig", "LagConfig", "DropoutConfig", "AccumulationConfig", "PassesConfig",
                 "CheckpointConfig"],
}  # fmt: skip
CONFIGS = [pytest.param(page, name, id=f"{page}.{name}") for page, names in PAGES.items() for name in names]


@pytest.mark.parametrize("page, name", CONFIGS)
def test_configs_are_frozen_hashable_sized_and_vetted(page, name):
    cls = getattr(importlib.import_module(f"bnviz.explorer.{page}.url"), name)
    config = cls()
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, f"{name} is not a frozen dataclass"
    assert isinstance(config, PageConfig), f"{name} lacks estimate_bytes() or refusal()"
    assert hash(config) == hash(cls()) and config == cls(), f"{name}: equal configs must hash alike"
    assert config.refusal() is None, f"{name}'s default is refused: {config.refusal()}"
    assert isinstance(config.estimate_bytes(), int) and config.estimate_bytes() > 0, name
    assert pickle.loads(pickle.dumps(config)) == config


@pytest.mark.parametrize("page", PAGES)
def test_every_engine_runs_a_config_with_stopped_and_progress(page):
    run = importlib.import_module(f"bnviz.explorer.{page}.engine").run
    params = list(inspect.signature(run).parameters.values())
    assert [p.name for p in params[:3]] == ["config", "stopped", "progress"], f"{page}.run{inspect.signature(run)}"
    assert all(p.default is not inspect.Parameter.empty for p in params[1:]), "stopped and progress have defaults"


CHEAP = [  # a small view of each engine that runs in a moment
    pytest.param("layer", Config(shape=(4, 3, 2, 2), steps=1), id="layer"),
    pytest.param("family", FamilyConfig(shape=(2, 4, 3, 3)), id="family"),
    pytest.param("network", NetworkConfig(batch=4, image=4, channels=2, steps=1), id="network"),
    pytest.param("doctor", DoctorConfig("dead-channels"), id="doctor"),
]


@pytest.mark.parametrize("page, config", CHEAP)
def test_reports_hold_their_config_and_a_verdict_and_a_run_stops_when_asked(page, config):
    run = importlib.import_module(f"bnviz.explorer.{page}.engine").run
    seen: list[float] = []
    report = run(config, lambda: False, seen.append)
    assert isinstance(report, PageReport) and report.config == config
    assert isinstance(report.verdict, str) and report.verdict, report.verdict
    assert pickle.loads(pickle.dumps(report)) == report
    assert all(0.0 <= f <= 1.0 for f in seen), seen
    with pytest.raises(Cancelled):
        run(config, lambda: True)
