"""Every heavy call's memory estimate (its config's ``estimate_bytes()``), against the peak its run
really adds (``bnviz.hosting.memory.measure_peak``:
the resident set's high-water mark, in a fresh process with the allocator tuned as the server's),
over a table of configs of every engine — the largest each page allows among them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnviz.explorer import workers
from bnviz.explorer.data_parallel.url import DataParallelConfig
from bnviz.explorer.doctor.url import DoctorConfig
from bnviz.explorer.family.url import FamilyConfig
from bnviz.explorer.inference.url import InferenceConfig
from bnviz.explorer.layer.url import Config
from bnviz.explorer.network.url import NetworkConfig
from bnviz.hosting import memory, serve

ROOT = Path(__file__).resolve().parents[2]
MB = 2**20
B1 = "BatchNorm1d"
CASES = {  # id: (what runs, config)
    "layer default": ("report", Config()),
    "layer 2000x1000 float64, 7 training batches of 2000": (
        "report", Config(layer=B1, shape=(2000, 1000), steps=7, train_batch=2000, dtype="float64")),
    "layer 2000x1000 float32 eval": ("report", Config(layer=B1, shape=(2000, 1000), steps=3, mode="eval")),
    "layer 2000x1000 bfloat16": ("report", Config(layer=B1, shape=(2000, 1000), steps=2, dtype="bfloat16")),
    "layer 2x1000000 float64 (a million channels)": (
        "report", Config(layer=B1, shape=(2, 1_000_000), steps=1, train_batch=2, dtype="float64")),
    "layer 1x2000000 eval (two million channels)": (
        "report", Config(layer=B1, shape=(1, 2_000_000), mode="eval", steps=0, train_batch=1)),
    "layer features-last 200x100x100": ("report", Config(layer=B1, shape=(200, 100, 100), layout="features-last")),
    "layer rank 6 heavy-tailed": (
        "report", Config(layer="BatchNorm", shape=(4, 8, 16, 16, 16, 8), dist="heavy-tailed", train_batch=4)),
    "layer 4096-sample training batches": ("report", Config(layer=B1, shape=(8, 488), train_batch=4096, steps=7)),
    "layer 4096-sample heavy-tailed training batches": (
        "report", Config(layer=B1, shape=(8, 488), train_batch=4096, steps=2, dist="heavy-tailed")),
    "layer 2d 16x8x32x32, 10 steps": ("report", Config(shape=(16, 8, 32, 32), steps=10, train_batch=16)),
    "layer both refuse (2-D into BatchNorm2d)": ("report", Config(shape=(2000, 1000))),
    "layer both refuse the displayed batch (no training steps)": ("report", Config(shape=(2000, 1000), steps=0)),
    "speed 2000x1000 float64": ("speed", Config(layer=B1, shape=(2000, 1000), dtype="float64")),
    "speed 2x1000000": ("speed", Config(layer=B1, shape=(2, 1_000_000), train_batch=2)),
    "compiled speed default": ("compiled", Config()),
    "compiled speed 2000x1000 float64": ("compiled", Config(layer=B1, shape=(2000, 1000), dtype="float64")),
    "network default": ("report", NetworkConfig()),
    "network 256 images of 64x64": ("report", NetworkConfig(batch=256, image=64, channels=4, steps=0)),
    "network 32 channels, 2M classifier weights": ("report", NetworkConfig(batch=2, image=64, channels=32, steps=5)),
    "network 64x64x8, 1 step": ("report", NetworkConfig(batch=64, image=64, channels=8, steps=1)),
    "family default": ("report", FamilyConfig()),
    "family 16x64x32x30": ("report", FamilyConfig(shape=(16, 64, 32, 30), groups=8)),
    "family 8x125x1000 over the last dim": ("report", FamilyConfig(shape=(8, 125, 1000), ln_over="last", groups=5)),
    "inference default": ("report", InferenceConfig()),
    "inference 64x4x8x8": ("report", InferenceConfig(batch_size=64, channels=4, image_size=8, train_steps=5,
                                                     finetune_steps=1)),
    "layer on your own 2000x1000 float64 tensor, 7 steps": (
        "own", Config(layer=B1, shape=(2000, 1000), steps=7, dtype="float64", own="digest")),
    "doctor default": ("report", DoctorConfig()),
    "doctor keras-momentum": ("report", DoctorConfig("keras-momentum")),
    "data parallel default": ("report", DataParallelConfig()),
    "data parallel 8 ranks of 2": ("report", DataParallelConfig(world=8, per_rank=2)),
    "data parallel 8x64 samples of 6x8x8 (200,000 values)": (
        "report", DataParallelConfig(world=8, per_rank=64, sample=(6, 8, 8))),
    "data parallel 8x6 samples of 4096 channels": ("report", DataParallelConfig(world=8, per_rank=6, sample=(4096,))),
    "data parallel 2x24 samples of 1x4096": ("report", DataParallelConfig(world=2, per_rank=24, sample=(1, 4096))),
    "data parallel uneven 64,64,0,1 heavy-tailed": (
        "report", DataParallelConfig(world=4, batches="64,64,0,1", sample=(3, 8, 8), dist="heavy-tailed")),
}  # fmt: skip
FORK_SERVER = "the data-parallel fork server (once per server)"


def _run(what: str, config):
    from bnviz.explorer.data_parallel.engine import run as run_data_parallel
    from bnviz.explorer.doctor.engine import run as run_doctor
    from bnviz.explorer.family.engine import run as run_family
    from bnviz.explorer.inference.engine import run as run_inference
    from bnviz.explorer.layer.engine import run as run_comparison
    from bnviz.explorer.layer.timing import measure_config, measure_config_compiled
    from bnviz.explorer.network.engine import run as run_network

    if what == "speed":
        return measure_config(config)
    if what == "compiled":
        return measure_config_compiled(config)
    if what == "own":  # the visitor's tensor is made here, so it counts too (it lives in their session)
        import torch

        own = torch.randn(config.shape, dtype=torch.float64)
        return run_comparison(config, own=own)
    run = {Config: run_comparison, NetworkConfig: run_network, FamilyConfig: run_family, InferenceConfig: run_inference,
           DataParallelConfig: run_data_parallel, DoctorConfig: run_doctor}  # fmt: skip
    return run[type(config)](config)


def measure_all() -> dict[str, list]:
    """Each case's measured peak (bytes) and method, after one small run of every engine (lazy
    imports, thread pools). Processes a run starts count too (their private memory); the fork
    server the data-parallel ranks come from is measured on its own, first."""
    out = {FORK_SERVER: list(memory.measure_peak(workers.start, children=True)[1:])}
    for what, config in (("report", Config(steps=1)), ("speed", Config()), ("report", NetworkConfig(steps=1)),
                         ("report", FamilyConfig()), ("report", InferenceConfig(train_steps=1, finetune_steps=1)),
                         ("report", DataParallelConfig(world=1, per_rank=2))):
        _run(what, config)  # fmt: skip
    for name, (what, config) in CASES.items():
        compiled = what == "compiled"  # a process of its own: sampled, and what it reports at its end
        report, peak, method = memory.measure_peak(lambda what=what, config=config: _run(what, config), compiled)
        if compiled:
            peak = max(peak, int(report["process bytes"]))
        if isinstance(config, DataParallelConfig):  # and each rank's own (a process sampled might be missed)
            peak, method = peak + sum(r.private_bytes for r in report.ranks), method + "+ranks"
        out[name] = [peak, method]
    return out


@pytest.fixture(scope="module")
def measured() -> dict[str, list]:
    """Measured in one fresh process, so that the allocator's tuning and the high-water-mark
    resets touch nothing else."""
    code = "import json; from tests.explorer.test_memory import measure_all; print(json.dumps(measure_all()))"
    env = {**os.environ, **serve.ALLOCATOR_ENV}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def estimate(what: str, config) -> int:
    return {"speed": config.speed_bytes, "compiled": config.compiled_speed_bytes}[what]() \
        if what not in ("report", "own") else config.estimate_bytes()


def _within(est: int, peak: int, numbers: str) -> None:
    assert est >= peak, numbers
    assert est <= 3 * peak + 24 * MB, "too loose: the budget would turn visitors away for nothing — " + numbers


def test_every_case_is_a_view_its_page_runs():
    for name, (_, config) in CASES.items():
        assert config.refusal() is None, (name, config.refusal())


@pytest.mark.parametrize("name", list(CASES))
def test_the_estimate_covers_the_measured_peak_and_is_not_far_above(measured, name):
    what, config = CASES[name]
    peak, method = measured[name]
    est = estimate(what, config)
    _within(est, peak, f"{name}: estimate {est / MB:.1f} MiB, measured peak {peak / MB:.1f} MiB ({method})")


def test_the_fork_server_is_within_its_allowance(measured):
    peak, method = measured[FORK_SERVER]
    est = workers.FORK_SERVER_BYTES
    _within(est, peak, f"fork server: allowance {est / MB:.1f} MiB, measured {peak / MB:.1f} MiB ({method})")


def own_estimate(config) -> int:
    return config.estimate_bytes()


def test_the_default_budget_runs_the_largest_views_but_two_million_channels():
    """What the pages allow, a server with the default budget runs — queued, never refused — but
    for a batch of one with two million channels (every per-channel tensor as large as the batch)
    and the compiled timing of the largest shapes (the compiler alone takes 220 MB)."""
    largest = {  # name: (its page's caps, its estimate, config, fits the default budget)
        "layer, 2000x1000 float64 after 7 batches as large": (own_estimate, Config(
            layer=B1, shape=(2000, 1000), dtype="float64", steps=7, train_batch=2000), True),
        "layer, a million channels in float64": (own_estimate, Config(
            layer=B1, shape=(2, 1_000_000), dtype="float64", steps=1, train_batch=2), True),
        "layer, its timing": (Config.speed_bytes, Config(
            layer=B1, shape=(2, 1_000_000), dtype="float64", steps=1, train_batch=2), True),
        "network": (own_estimate, NetworkConfig(batch=256, image=64, channels=4, steps=0),
                    True),
        "family": (own_estimate, FamilyConfig(shape=(10, 100, 1000), groups=4), True),
        "inference": (own_estimate, InferenceConfig(
            batch_size=64, channels=4, image_size=8, train_steps=5, finetune_steps=1, dtype="float64"), True),
        "data parallel, 8 ranks, 200,000 values": (own_estimate, DataParallelConfig(
            world=8, per_rank=64, sample=(6, 8, 8)), True),
        "data parallel, its fork server": (lambda c: workers.FORK_SERVER_BYTES,
                                           DataParallelConfig(), True),
        "layer, the compiled timing of 2000x1000 float32": (Config.compiled_speed_bytes, Config(
            layer=B1, shape=(2000, 1000)), True),
        "layer, the compiled timing of 2000x1000 float64": (Config.compiled_speed_bytes, Config(
            layer=B1, shape=(2000, 1000), dtype="float64"), False),
        "layer, two million channels": (own_estimate, Config(
            layer=B1, shape=(1, 2_000_000), mode="eval", steps=0, train_batch=1), False),
    }  # fmt: skip
    budget = serve.DEFAULT_BUDGET_MB * MB
    for name, (estimate_of, config, fits) in largest.items():
        assert config.refusal() is None, (name, config.refusal())
        est = estimate_of(config)
        assert (est <= budget) == fits, f"{name}: {est / MB:.0f} MiB, the default budget {budget / MB:.0f} MiB"


def test_workers_add_their_own_start_and_data():
    assert memory.with_workers(3, 10 * MB) == 3 * (memory.PROCESS_BYTES + 10 * MB)
    assert memory.with_workers(2, 5 * MB, 30 * MB) == 2 * 35 * MB
