"""``python -m bnviz.training``: its table, its CSV, and argparse's messages for bad arguments."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from bnviz import training

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnviz.training", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_prints_the_table_and_writes_one_csv_row_per_variant_and_evaluation(tmp_path):
    out = tmp_path / "run.csv"
    done = cli("--lr", "8", "--steps", "40", "--seed", "1", "--init-std", "0.01", "--eval-every", "10",
               "--csv", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Ioffe & Szegedy 2015, Figure 1, on digits: lr 8, 40 steps, seed 1, init std 0.01, "
                               "eval every 10")  # fmt: skip
    assert lines[2].split() == ["variant", "test", "accuracy", "final", "loss", "median", "moved"]
    assert [line.split()[0] for line in lines[3:5]] == ["bn", "plain"]
    assert "verdict: batch norm ahead: 1 seed: too few for a verdict" in lines  # one seed: no verdict
    assert f"wrote 10 rows to {out}" in done.stdout
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["experiment", "variant", "seed", "learning_rate", "step", "loss", "test_accuracy", "p15",
                       "p50", "p85", "dead_units"]  # fmt: skip
    assert [(r[0], r[1], r[2], r[3], int(r[4])) for r in rows[1:]] == [
        ("drift", v, "1", "8", s) for v in ("bn", "plain") for s in (0, 10, 20, 30, 40)]  # fmt: skip
    final = {r[1]: r for r in rows[1:] if r[4] == "40"}
    for line in lines[3:5]:  # the table's accuracy is the CSV's last row's
        variant, accuracy = line.split()[0], float(line.split()[1])
        assert accuracy == pytest.approx(100 * float(final[variant][6]), abs=0.051)
    assert not done.stderr


EXPERIMENTS = [  # (arguments, the table's first words, its rows' first words, the verdict line's start)
    (["--steps", "20", "--seeds", "3", "--eval-every", "10"], "Ioffe & Szegedy 2015, Figure 1",
     ["bn", "plain"], "verdict: batch norm ahead: "),
    (["--experiment", "lr-sweep", "--steps", "10", "--seeds", "3"], "lr-sweep: 10 steps, seeds 0–2",
     ["0.01", "0.03", "0.1", "0.3", "1", "3", "10"], "verdict: batch norm trains at a higher learning rate: "),
    (["--experiment", "noise", "--steps", "10", "--seeds", "3", "--eval-every", "5"], "noise: 10 steps, seeds 0–2",
     ["bn", "noisy-bn", "noise", "plain", "noisy-bn-strong"], "verdict: batch norm ahead: "),
    (["--experiment", "placement", "--steps", "10", "--seeds", "3", "--eval-every", "5"],
     "placement: 10 steps, seeds 0–2", ["before", "after"], "verdict: before ahead: "),
]  # fmt: skip


@pytest.mark.parametrize("args, head, rows, verdict", EXPERIMENTS, ids=["drift", "lr-sweep", "noise", "placement"])
def test_every_experiment_prints_its_table_and_a_verdict_over_the_seeds(args, head, rows, verdict, tmp_path):
    out = tmp_path / "run.csv"
    done = cli(*args, "--csv", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(head), lines[0]
    assert [line.split()[0] for line in lines[3:3 + len(rows)]] == rows, lines
    assert any(line.startswith(verdict) and "seeds" in line for line in lines), lines
    body = list(csv.reader(out.open()))[1:]
    assert {r[2] for r in body} == {"0", "1", "2"}, "one row per seed"
    assert not done.stderr


def test_torchs_default_initialisation_by_name():
    done = cli("--steps", "5", "--init-std", "default")
    assert done.returncode == 0, done.stderr
    assert "torch's default init" in done.stdout


def test_a_bad_argument_exits_2_with_a_message_and_no_traceback():
    done = cli("--steps", "100000")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("usage: python -m bnviz.training") and "Traceback" not in done.stderr
    assert "error: the number of steps is 100000; it must be a whole number from 1 to 5000" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [(["--lr", "0"], "the learning rate is 0.0; it must be above 0 and at most 100"),
     (["--steps", "ten"], "argument --steps: invalid int value: 'ten'"),
     (["--init-std", "wide"], "argument --init-std: 'wide' is neither a number nor 'default'"),
     (["--eval-every", "0"], "the evaluation interval (steps) is 0"),
     (["--width", "1000"], "the width (units per hidden layer) is 1000; it must be a whole number from 2 to 256"),
     (["--csv", "/no/such/folder/x.csv", "--steps", "5"], "its folder does not exist"),
     (["--seed", "1", "--seeds", "3"], "argument --seeds: not allowed with argument --seed"),
     (["--seeds", "0"], "--seeds 0: give 1 or more"),
     (["--seeds", "11"], "11 seeds were given; give 1 to 10"),
     (["--experiment", "chaos"], "argument --experiment: invalid choice: 'chaos'"),
     (["--bogus"], "unrecognized arguments: --bogus")],
)  # fmt: skip
def test_every_bad_argument_is_an_argparse_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        training.main(args)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
