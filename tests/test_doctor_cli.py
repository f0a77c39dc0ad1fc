"""Reading checkpoints without running them (``bnviz.safe_load``) and ``python -m bnviz.doctor``:
round trips of every dtype against torch's own save, hostile files refused with nothing run, the
exit statuses, and the same findings from the command line as from the library."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import bnviz
from bnviz.doctor import main
from bnviz.safe_load import (
    MAX_HEADER_BYTES,
    CheckpointError,
    load_state_dict_bytes,
    load_state_dict_file,
    read_safetensors,
    write_safetensors,
)

ROOT = Path(__file__).resolve().parents[1]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool]


def _state(nan: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU())
    net.train()
    for _ in range(3):
        net(torch.randn(8, 1, 6, 6))
    if nan:
        net[1].running_var[1] = float("nan")
    return net.state_dict()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_safetensors_round_trip_of_every_dtype(dtype):
    t = (torch.randn(3, 4, 2) * 50).to(dtype)
    back = read_safetensors(write_safetensors({"a": t, "empty": torch.zeros(0, 3, dtype=dtype)}))
    assert back["a"].dtype == dtype and torch.equal(back["a"], t), (back["a"], t)
    assert back["empty"].shape == (0, 3)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_a_state_dict_reads_back_equal_from_each_format(tmp_path, suffix):
    state = _state()
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        path.write_bytes(write_safetensors(state))
    else:
        torch.save(state, path)
    back = load_state_dict_file(path)
    assert back.keys() == state.keys()
    for k in state:
        assert torch.equal(back[k], state[k]), k


def test_a_checkpoint_dict_is_unwrapped(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": _state(), "optimizer": {"lr": 0.1}}, path)
    assert set(load_state_dict_file(path)) == set(_state())


class _Payload:
    """A pickle that would write a file when loaded."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _hostile(tmp_path: Path) -> dict[str, tuple[str, bytes]]:
    marker = tmp_path / "ran"
    pt_pickle = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _Payload(str(marker))}, pt_pickle)
    big_header = struct.pack("<Q", 10 * 2**30) + b"{}"
    short_header = struct.pack("<Q", 1000) + b'{"a": 1}'
    good = write_safetensors(_state())
    return {
        "code-running pickle in a torch archive": ("evil.pt", pt_pickle.read_bytes()),
        "raw pickle": ("evil.pth", pickle.dumps(_Payload(str(marker)))),
        "10 GB header claim": ("big.safetensors", big_header),
        "header past the end": ("short.safetensors", short_header),
        "truncated safetensors": ("cut.safetensors", good[: len(good) - 20]),
        "truncated torch archive": ("cut.pt", (tmp_path / "evil.pt").read_bytes()[:200]),
        "not JSON": ("junk.safetensors", struct.pack("<Q", 4) + b"\xff\xfe{]"),
        "offsets outside": ("off.safetensors", _with_header({"a": {"dtype": "F32", "shape": [4],
                                                                       "data_offsets": [0, 4096]}})),
        "unknown dtype": ("dt.safetensors", _with_header({"a": {"dtype": "C64", "shape": [1],
                                                                "data_offsets": [0, 8]}})),
        "a model pickled whole": ("model.pt", _saved(nn.BatchNorm1d(3), tmp_path)),
        "empty file": ("empty.safetensors", b""),
        "no suffix we read": ("weights.bin", b"0" * 16),
    }


def _with_header(header: dict) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"\0" * 8


def _saved(obj: object, tmp_path: Path) -> bytes:
    path = tmp_path / "whole.pt"
    torch.save(obj, path)
    return path.read_bytes()


HOSTILE = ["code-running pickle in a torch archive", "raw pickle", "10 GB header claim", "header past the end",
           "truncated safetensors", "truncated torch archive", "not JSON", "offsets outside", "unknown dtype",
           "a model pickled whole", "empty file", "no suffix we read"]


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_files_are_refused_and_nothing_runs(tmp_path, case):
    name, data = _hostile(tmp_path)[case]
    with pytest.raises(CheckpointError) as info:
        load_state_dict_bytes(name, data)
    assert str(info.value) and "\n" not in str(info.value), str(info.value)
    path = tmp_path / name
    path.write_bytes(data)
    assert main([str(path)]) == 2
    assert not (tmp_path / "ran").exists(), "the pickle's code ran"


def test_a_10gb_header_claim_is_refused_before_reading_it():
    data = struct.pack("<Q", 10 * 2**30)
    with pytest.raises(CheckpointError, match=f"over bnviz's cap of {MAX_HEADER_BYTES:,}"):
        read_safetensors(data)


def test_exit_status_and_the_same_findings_as_the_library(tmp_path, capsys):
    clean, poisoned = tmp_path / "clean.safetensors", tmp_path / "nan.pt"
    clean.write_bytes(write_safetensors(_state()))
    torch.save(_state(nan=True), poisoned)
    assert main([str(clean)]) == 0
    text = capsys.readouterr().out
    assert "No findings." in text and "not checked: tf-momentum" in text, text
    assert main([str(poisoned), "--json"]) == 1
    cli = json.loads(capsys.readouterr().out)
    library = bnviz.diagnose(_state(nan=True)).to_dict()
    assert cli["findings"] == library["findings"] and cli["layers"] == library["layers"], (cli, library)
    assert [f["check"] for f in cli["findings"]] == ["nonfinite-stats"]


def test_the_module_runs_from_the_command_line(tmp_path):
    path = tmp_path / "nan.safetensors"
    path.write_bytes(write_safetensors(_state(nan=True)))
    run = subprocess.run([sys.executable, "-m", "bnviz.doctor", str(path)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert run.returncode == 1 and "nonfinite-stats" in run.stdout and run.stderr == "", (run.stdout, run.stderr)
    missing = subprocess.run([sys.executable, "-m", "bnviz.doctor", str(tmp_path / "none.pt")], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert missing.returncode == 2 and "cannot read it" in missing.stderr, missing.stderr
