"""The benchmark runs on tiny shapes and prints its table (timings are not asserted)."""

from __future__ import annotations

import csv

import torch

from bnviz import bench


def test_bench_runs_tiny_and_writes_csv(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    assert bench.main(["--tiny", "--rounds", "2", "--warmup", "1", "--no-compile", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    for word in ("train fwd", "train fwd+bwd", "eval fwd", "peak MiB fwd+bwd", "bnviz/torch", "textbook/torch",
                 "LayerNorm", "GroupNorm", "InstanceNorm2d", "RMSNorm"):  # fmt: skip
        assert word in printed, word
    rows = list(csv.DictReader(out.open()))
    assert {r["shape"] for r in rows} == set(bench.TINY_SHAPES) | set(bench.FAMILY)
    timed = [r for r in rows if r["mode"] != "peak MiB fwd+bwd" and r["shape"] in bench.TINY_SHAPES]
    assert len(timed) == len(bench.TINY_SHAPES) * len(bench.MODES)
    assert all(float(r["bnviz ms"]) > 0 and float(r["torch ms"]) > 0 for r in timed)
    family = [r for r in rows if r["shape"] in bench.FAMILY]
    assert all(r["mode"] == "train fwd+bwd" and float(r["bnviz/torch"]) > 0 for r in family), family


def test_bench_compiled_columns_and_compile_times(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    args = ["--shapes", "tiny-2d", "--rounds", "2", "--warmup", "1", "--no-memory", "--no-family", "--csv", str(out)]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "inductor start-up" in printed and "bnviz-c/torch-c" in printed
    for row in csv.DictReader(out.open()):
        assert float(row["bnviz-c ms"]) > 0 and float(row["torch-c ms"]) > 0, row
        assert float(row["bnviz-c/torch-c"]) > 0 and row["bnviz-c compile s"] != "", row


def test_peak_memory_is_measured():
    """The profiler sees torch's own allocations: output and grad input at least; bnviz, eager
    and compiled, peaks at torch's plus at most one input-sized buffer."""
    size = 8 * 16 * 32 * 32 * 4
    peaks = {impl: bench.peak_extra_bytes(impl, (8, 16, 32, 32), "cpu") for impl in ("torch", "bnviz", "bnviz-c")}
    assert all(peak >= 2 * size for peak in peaks.values()), peaks
    assert peaks["bnviz"] <= peaks["torch"] + size and peaks["bnviz-c"] <= peaks["torch"] + size, peaks


def test_textbook_matches_torch():
    """The textbook reference is a correct batch norm (else its timing means nothing)."""
    x = torch.randn(8, 3, 5, 5)
    assert torch.allclose(bench.Textbook(3)(x), torch.nn.BatchNorm2d(3)(x), atol=1e-5)
