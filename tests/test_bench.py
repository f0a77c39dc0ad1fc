"""The benchmark runs on tiny shapes and prints its table (timings are not asserted)."""

from __future__ import annotations

import csv

from bnviz import bench
from bnviz.explorer.compare import Config


def test_bench_runs_tiny_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert bench.main(["--tiny", "--rounds", "2", "--warmup", "1", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("train fwd", "train fwd+bwd", "eval fwd", "peak MiB fwd+bwd", "bnviz/torch", "textbook/torch"):
        assert word in printed, word
    rows = list(csv.DictReader(out.open()))
    assert {r["shape"] for r in rows} == set(bench.TINY_SHAPES)
    timed = [r for r in rows if r["mode"] != "peak MiB fwd+bwd"]
    assert len(timed) == len(bench.TINY_SHAPES) * len(bench.MODES)
    assert all(float(r["bnviz ms"]) > 0 and float(r["torch ms"]) > 0 for r in timed)


def test_peak_memory_is_measured():
    """The profiler sees torch's own allocations: output and grad input at least."""
    size = 8 * 16 * 32 * 32 * 4
    assert bench.peak_extra_bytes("torch", (8, 16, 32, 32), "cpu") >= 2 * size
    assert bench.peak_extra_bytes("bnviz", (8, 16, 32, 32), "cpu") >= 2 * size


def test_textbook_matches_torch():
    """The textbook reference is a correct batch norm (else its timing means nothing)."""
    import torch

    x = torch.randn(8, 3, 5, 5)
    assert torch.allclose(bench.Textbook(3)(x), torch.nn.BatchNorm2d(3)(x), atol=1e-5)


def test_measure_config():
    for mode in ("train", "eval"):
        speed = bench.measure_config(Config(mode=mode, shape=(4, 3, 4, 4)), repeats=2)
        assert speed["bnviz"] > 0 and speed["torch"] > 0 and speed["ratio"] > 0
