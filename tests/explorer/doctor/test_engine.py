"""/doctor's engine: each sample shows its planted fault and the healthy one none; an upload is
read in a worker process, where a code-running pickle is refused and runs nothing, and where the
findings are those the command line gives for the same file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bnviz.doctor import main as doctor_main
from bnviz.explorer import workers
from bnviz.explorer.doctor import engine
from bnviz.explorer.doctor.url import DOCTOR, MAX_UPLOAD_MB, SAMPLES, DoctorConfig, upload_bytes
from bnviz.hosting import serve
from bnviz.hosting.memory import MB
from bnviz.safe_load import write_safetensors

PLANTED = {  # sample -> (the check it must raise, its severity)
    "never-updated": ("stats-never-updated", "error"),
    "nan": ("nonfinite-stats", "error"),
    "keras-momentum": ("tf-momentum", "error"),
    "dead-channels": ("dead-channels", "warning"),
    "redundant-bias": ("bias-before-norm", "note"),
}
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def reports() -> dict[str, engine.DoctorReport]:
    return {name: engine.run(DoctorConfig(name)) for name in SAMPLES}


def _found(report: dict) -> set[tuple[str, str]]:
    return {(f["check"], f["severity"]) for f in report["findings"]}


def test_the_healthy_sample_learns_and_has_no_error_or_warning(reports):
    healthy = reports["healthy"]
    assert healthy.accuracy > 0.95, healthy.accuracy
    assert {s for _, s in _found(healthy.report)} <= {"note"}, healthy.report["findings"]
    assert healthy.verdict == "clean"


@pytest.mark.parametrize("sample", list(PLANTED))
def test_each_sample_shows_its_planted_fault(reports, sample):
    found = _found(reports[sample].report)
    assert PLANTED[sample] in found, (sample, found)
    others = {c for c, s in found if s in ("error", "warning")} - {PLANTED[sample][0], "stats-mismatch"}
    assert others == set(), (sample, others)


def test_the_nan_sample_is_what_one_nan_does(reports):
    assert reports["nan"].accuracy == pytest.approx(0.1, abs=0.02), reports["nan"].accuracy


def test_every_sample_is_a_link_and_an_unknown_one_is_refused():
    for name in SAMPLES:
        config, warnings = DOCTOR.parse({"sample": name}, DoctorConfig())
        assert config == DoctorConfig(name) and warnings == []
    config, warnings = DOCTOR.parse({"sample": "<script>"}, DoctorConfig())
    assert config == DoctorConfig() and warnings, warnings
    assert DoctorConfig("nope").refusal() is not None


def test_the_upload_limit_fits_a_resnet50_and_the_budget():
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    assert f"maxUploadSize = {MAX_UPLOAD_MB}\n" in config
    resnet50 = 102_530_333  # bytes of torchvision's resnet50 state dict
    assert resnet50 <= MAX_UPLOAD_MB * MB
    assert upload_bytes(MAX_UPLOAD_MB * MB) <= serve.budget_bytes({}), (upload_bytes(MAX_UPLOAD_MB * MB),
                                                                         serve.budget_bytes({}))


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _in_worker(name: str, data: bytes) -> dict:
    status, answer = workers.run_in_fork(workers.read_upload, (engine.diagnose_upload, name, data, 2**30), 60.0)
    return answer if status == "ok" else {"refused": answer}


def test_an_upload_in_a_worker_gives_the_command_lines_findings(reports, tmp_path, capsys):
    data = reports["nan"].file
    assert data is not None
    path = tmp_path / "sample.safetensors"
    path.write_bytes(data)
    assert doctor_main([str(path), "--json"]) == 1
    cli = json.loads(capsys.readouterr().out)
    page = _in_worker("sample.safetensors", data)
    assert page["findings"] == cli["findings"] and page["layers"] == cli["layers"], (page, cli)


def test_hostile_uploads_are_refused_in_the_worker_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _Payload(str(marker))}, evil)
    answer = _in_worker("evil.pt", evil.read_bytes())
    assert "weights_only" in answer["refused"], answer
    assert not marker.exists(), "the pickle's code ran"
    huge = (10 * 2**30).to_bytes(8, "little")
    assert "over bnviz's cap" in _in_worker("big.safetensors", huge)["refused"]
    nan = write_safetensors({"bn.running_mean": torch.full((4,), float("nan")), "bn.running_var": torch.ones(4)})
    report = _in_worker("nan.safetensors", nan)
    assert [f["check"] for f in report["findings"]] == ["nonfinite-stats"], report
    assert report["layers"][0]["running_mean"]["median"] is None  # inert: NaN becomes null, nothing is drawn from it
