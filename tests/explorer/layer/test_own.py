"""Your own tensor on ``/``: every format read back equal, refusals (pickles, ranks, dtypes,
non-finite values with their count, sizes) clear and in a worker where nothing runs; the engine on
the tensor equals the engine on the same values, and its script reruns the page's numbers."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bnviz.explorer import workers
from bnviz.explorer.layer import engine
from bnviz.explorer.layer.own import MAX_BYTES, OwnTensorError, own_tensor, read_in_worker, read_tensor, unpack
from bnviz.explorer.layer.url import MAX_ELEMENTS, Config
from bnviz.explorer.layer.words import code_snippet, explorer_note
from bnviz.explorer.text import sci
from bnviz.safe_load import write_safetensors


def _files(x: torch.Tensor) -> dict[str, bytes]:
    out = {"x.safetensors": write_safetensors({"x": x})}
    buf = io.BytesIO()
    torch.save(x, buf)
    out["x.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save({"activations": x}, buf)
    out["x.pth"] = buf.getvalue()
    if x.dtype != torch.bfloat16:
        buf = io.BytesIO()
        np.save(buf, x.numpy())
        out["x.npy"] = buf.getvalue()
        buf = io.BytesIO()
        np.save(buf, x.numpy().astype(x.numpy().dtype.newbyteorder(">")))  # big-endian, as some machines write
        out["big-endian.npy"] = buf.getvalue()
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 4), (2, 2, 2, 3, 3)], ids=str)
def test_every_format_reads_back_the_same_values(dtype, shape):
    x = (torch.randn(shape) * 2 + 1).to(dtype)
    for name, data in _files(x).items():
        got = read_tensor(name, data)
        assert got.dtype == dtype and torch.equal(got, x), (name, got, x)


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


REFUSED = {  # name: (file name, bytes, words in the refusal)
    "rank 1": ("x.pt", _saved(torch.ones(5)), "rank 1"),
    "rank 6": ("x.pt", _saved(torch.ones(1, 1, 1, 1, 1, 2)), "rank 6"),
    "integers": ("x.pt", _saved(torch.ones(2, 3, dtype=torch.int64)), "dtype int64"),
    "NaN and inf": ("x.safetensors", write_safetensors({"x": torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])}),
                    "2 of 4 values are NaN or infinite"),
    "two tensors": ("x.pt", _saved({"a": torch.ones(2, 2), "b": torch.ones(2, 2)}), "holds 2 tensors"),
    "empty": ("x.pt", _saved(torch.ones(0, 3)), "empty"),
    "object array": ("x.npy", _npy(np.array([{"a": 1}], dtype=object), allow_pickle=True), "numpy refused"),
    "integer npy": ("x.npy", _npy(np.ones((2, 3), dtype=np.int32)), "dtype int32"),
    "too many values": ("x.pt", _saved(torch.ones(MAX_ELEMENTS + 1, 1)), "over the limit"),
    "a list": ("x.pt", _saved([1, 2]), "not a tensor"),
    "text file": ("x.txt", b"1,2,3", "not '.txt'"),
    "too many bytes": ("x.npy", b"\0" * (MAX_BYTES + 1), "over the limit"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_say_why(case):
    name, data, words = REFUSED[case]
    with pytest.raises(OwnTensorError) as info:
        read_tensor(name, data)
    assert words in str(info.value), str(info.value)


def test_a_code_running_pickle_is_refused_in_the_worker_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    data = _saved({"x": torch.ones(2, 3), "y": _Payload(str(marker))})
    status, reason = workers.run_in_fork(workers.read_upload, (read_in_worker, "x.pt", data, 2**30), 60.0)
    assert status == "refused" and "weights_only" in reason, (status, reason)
    assert not marker.exists()
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        x = torch.randn(4, 2, 3).to(dtype)
        args = (read_in_worker, "x.safetensors", write_safetensors({"x": x}), 2**30)
        status, packed = workers.run_in_fork(workers.read_upload, args, 60.0)
        assert status == "ok" and torch.equal(unpack(packed), x), (dtype, packed)


CONFIGS = [Config(), Config(mode="eval", steps=3), Config(layer="BatchNorm1d")]


@pytest.mark.parametrize("base", CONFIGS, ids=range(len(CONFIGS)))
def test_the_engine_on_your_tensor_is_the_engine_on_those_values(base):
    """The own-tensor view equals a view whose every batch is the same values: checked against
    a direct run of both layers on the tensor."""
    shape = (8, 5, 4) if base.layer == "BatchNorm1d" else (8, 3, 6, 6)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 4 - 1
    own = own_tensor("mine.pt", x)
    config = replace(base, shape=own.shape, dtype=own.dtype, own=own.digest)
    report = engine.run(config, own=own.values)
    assert report.verdict == "match", report.verdict
    layer = torch.nn.BatchNorm1d(shape[1]) if base.layer == "BatchNorm1d" else torch.nn.BatchNorm2d(shape[1])
    layer.train()
    inputs = x
    for _ in range(config.steps):
        layer(inputs)
    assert torch.allclose(torch.tensor(report.history["torch"][-1 if config.mode == "eval" else -2]["running_mean"]),
                          layer.running_mean[: len(report.history["torch"][-1]["running_mean"])], atol=1e-6)
    mean = inputs.double().transpose(0, 1).reshape(inputs.shape[1], -1).mean(1)
    assert report.history["population_mean"] == pytest.approx(mean[:len(report.history["population_mean"])].tolist())
    assert "your" in explorer_note(config) and "cannot carry a file" in explorer_note(config)
    with pytest.raises(ValueError, match="pass it as own="):
        engine.run(config)


def test_the_script_for_your_tensor_reruns_the_page_numbers(tmp_path):
    x = torch.randn(6, 3, 4, 4) * 3
    own = own_tensor("mine.pt", x)
    config = replace(Config(), shape=own.shape, own=own.digest)
    torch.save(x, tmp_path / "my_tensor.pt")
    root = Path(__file__).resolve().parents[3]  # bnviz itself, not installed in CI's venv: on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code_snippet(config)], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    printed = dict(re.findall(r"^(\S+(?: \S+)?)\s+max \|bnviz - torch\| = (\S+)$", done.stdout, re.M))
    shown = {q.name: sci(q.max_abs) for q in engine.run(config, own=own.values).quantities if not q.absent}
    assert printed == shown, (printed, shown)
    assert Path(tmp_path / "my_tensor.pt").exists()


def test_a_features_last_tensor_is_refused_by_both_and_its_fix_runs_on_the_moved_values():
    x = torch.randn(8, 6, 4)
    own = own_tensor("tokens.pt", x)
    config = replace(Config(layer="BatchNorm1d", layout="features-last"), shape=own.shape, own=own.digest)
    report = engine.run(config, own=own.values)
    assert report.error is not None and report.error.agree, report.error
    fixed = config.channels_first()
    assert fixed.own == own.digest and fixed.shape == (8, 4, 6)
    assert engine.run(fixed, own=own.values.movedim(-1, 1)).verdict == "match"
