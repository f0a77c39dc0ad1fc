"""``python -m bnviz.training``: the training page's experiments on scikit-learn's digits, over seeds —
the numbers and verdicts the page shows.

``--experiment drift`` (the default) is Ioffe & Szegedy's Figure 1: the same sigmoid network (3
hidden layers of 100, Gaussian initial weights, batch 60, plain SGD) trained from the same weights
on the same minibatches, once plain and once with ``bnviz.BatchNorm1d`` before each sigmoid.
``lr-sweep`` sweeps the learning rate, ``noise`` runs Santurkar et al.'s noisy batch norm, and
``placement`` batch norm before or after the ReLU. Each runs seeds 0 to N − 1 (``--seeds N``,
default 5) or one seed (``--seed S``). A short table gives each network's final test accuracy over
the seeds, then each claim's verdict (how many seeds it holds on). ``--csv FILE`` writes one row per
variant, seed and evaluation step (per learning rate and seed for the sweep):
``experiment,variant,seed,learning_rate,step,loss,test_accuracy,p15,p50,p85,dead_units``.

Example: ``python -m bnviz.training --experiment drift --lr 8 --steps 2000 --seeds 5 --csv lr8.csv``
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from bnviz._extra import require_app

if __name__ == "__main__":  # run as a tool: one line on what is missing rather than a traceback
    require_app("python -m bnviz.training")

from bnviz.explorer.claims import verdict_word
from bnviz.explorer.training.engine import EXPERIMENT_NAMES, SeedsReport, SweepReport, run, to_csv
from bnviz.explorer.training.url import DriftConfig, NoiseConfig, PlacementConfig, SweepConfig

EXPERIMENTS = {name: cls for cls, name in EXPERIMENT_NAMES.items()}  # "drift" -> DriftConfig, …


def init_std(text: str) -> float | None:
    """A standard deviation, or ``default`` for torch's default initialisation."""
    if text.strip().lower() == "default":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'default'") from None


def parser() -> argparse.ArgumentParser:
    d = DriftConfig()
    p = argparse.ArgumentParser(prog="python -m bnviz.training", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--experiment", choices=list(EXPERIMENTS), default="drift", help="which experiment")
    p.add_argument("--lr", type=float, help="SGD learning rate (default: the experiment's; the sweep has its own)")
    p.add_argument("--steps", type=int, help="SGD steps (default: the experiment's)")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", type=int, metavar="N", help="seeds 0 to N − 1 (default 5)")
    seeds.add_argument("--seed", type=int, help="one seed only (no verdict: 3 seeds or more give one)")
    p.add_argument("--init-std", type=init_std, default=d.init_std,
                   help="drift: std of the Gaussian initial weights, or 'default' for torch's init")  # fmt: skip
    p.add_argument("--eval-every", type=int, help="steps between evaluations (default: the experiment's)")
    p.add_argument("--width", type=int, default=d.width, help="units per hidden layer")
    p.add_argument("--batch", type=int, default=d.batch, help="minibatch size")
    p.add_argument("--csv", metavar="FILE", help="write one row per variant, seed and evaluation step to FILE")
    return p


def config_of(args: argparse.Namespace) -> DriftConfig | SweepConfig | NoiseConfig | PlacementConfig:
    """The experiment's default config with the arguments given."""
    config = EXPERIMENTS[args.experiment]()
    changes: dict = {"width": args.width, "batch": args.batch}
    if args.seed is not None:
        changes["seeds"] = (args.seed,)
    elif args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds)) if args.seeds >= 1 else ()
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.lr is not None:
        if isinstance(config, SweepConfig):
            changes["lrs"] = (args.lr,)
        else:
            changes["lr"] = args.lr
    if args.eval_every is not None and not isinstance(config, SweepConfig):
        changes["eval_every"] = args.eval_every
    if isinstance(config, DriftConfig):
        changes["init_std"] = args.init_std
    return replace(config, **changes)


def _spread(values: tuple[float, ...] | list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "—"
    mean = sum(finite) / len(finite)
    return f"{100 * mean:5.1f} %" + (f" ({100 * min(finite):.1f}–{100 * max(finite):.1f})" if len(finite) > 1 else "")


def table(report: SeedsReport | SweepReport, seconds: float) -> str:
    """The short table: one line per network (per learning rate for the sweep), then the verdicts."""
    c = report.config
    seeds = f"seed {c.seeds[0]}" if len(c.seeds) == 1 else f"seeds {c.seeds[0]}–{c.seeds[-1]}"
    head = f"{EXPERIMENT_NAMES[type(c)]}: {c.steps:,} steps, {seeds}, width {c.width}, batch {c.batch}"
    if isinstance(c, DriftConfig):
        init = "torch's default init" if c.init_std is None else f"init std {c.init_std:g}"
        head = (f"Ioffe & Szegedy 2015, Figure 1, on digits: lr {c.lr:g}, {c.steps:,} steps, {seeds}, {init}, "
                f"eval every {c.eval_every}, width {c.width}, batch {c.batch}")  # fmt: skip
    lines = [f"{head} ({seconds:.1f} s, torch {torch.__version__})", ""]
    if isinstance(report, SweepReport):
        lines.append(f"{'learning rate':>13s} {'with batch norm':>24s} {'plain':>24s}")
        for i, lr in enumerate(c.lrs):
            bn, plain = _spread(report.accuracy["bn"][i]), _spread(report.accuracy["plain"][i])
            lines.append(f"{lr:13g} {bn:>24s} {plain:>24s}")
        lines += ["", f"verdict: {report.verdict}"]
        return "\n".join(lines)
    lines.append(f"{'variant':16s} {'test accuracy':>24s} {'final loss':>11s} {'median moved':>13s}")
    for variant, curves in report.curves.items():
        loss = sum(cv.final_loss for cv in curves) / len(curves)
        moved = sum(cv.moved for cv in curves) / len(curves)
        lines.append(f"{variant:16s} {_spread(report.finals(variant)):>24s} {loss:11.4g} {moved:13.2f}")
    lines += ["", f"verdict: {report.verdict}"]
    if isinstance(c, DriftConfig):
        lines.append(f"verdict: the median drifts further without batch norm: {verdict_word(report.drifts_further())}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds {args.seeds}: give 1 or more")
    config = config_of(args)
    reason = config.refusal()
    if reason is not None:
        p.error(reason)
    if args.csv and not Path(args.csv).resolve().parent.is_dir():
        p.error(f"cannot write {args.csv}: its folder does not exist")
    start = time.perf_counter()
    report = run(config)
    print(table(report, time.perf_counter() - start))
    if args.csv:
        text = to_csv(report)
        try:
            Path(args.csv).write_text(text)
        except OSError as exc:
            p.exit(1, f"{p.prog}: error: cannot write {args.csv}: {exc.strerror}\n")
        print(f"\nwrote {text.count(chr(10)) - 1} rows to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
