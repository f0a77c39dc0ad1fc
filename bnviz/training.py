"""``python -m bnviz.training``: Ioffe & Szegedy's Figure 1 on scikit-learn's digits, the numbers
the training page shows.

The same sigmoid network (3 hidden layers of 100, Gaussian initial weights, batch 60, plain SGD)
is trained twice from the same weights on the same minibatches, once plain and once with
``bnviz.BatchNorm1d`` before each sigmoid; a short table gives each one's final test accuracy, its
last minibatch loss, and how far the median of one last-layer sigmoid's input moved over training
(largest minus smallest over the evaluations, test split, eval mode). ``--csv FILE`` writes one
row per variant and evaluation step: ``variant,step,loss,test_accuracy,p15,p50,p85``.

Example: ``python -m bnviz.training --lr 8 --steps 2000 --seed 0 --csv lr8.csv``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from bnviz._extra import require_app

if __name__ == "__main__":  # run as a tool: one line on what is missing rather than a traceback
    require_app("python -m bnviz.training")

from bnviz.explorer.training.engine import run_drift, to_csv
from bnviz.explorer.training.url import DriftConfig

DEFAULTS = DriftConfig()


def init_std(text: str) -> float | None:
    """A standard deviation, or ``default`` for torch's default initialisation."""
    if text.strip().lower() == "default":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'default'") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bnviz.training", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--lr", type=float, default=DEFAULTS.lr, help="SGD learning rate")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help="SGD steps")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help="initial weights and minibatch order")
    p.add_argument("--init-std", type=init_std, default=DEFAULTS.init_std,
                   help="std of the Gaussian initial weights, or 'default' for torch's initialisation")  # fmt: skip
    p.add_argument("--eval-every", type=int, default=DEFAULTS.eval_every, help="steps between evaluations")
    p.add_argument("--width", type=int, default=DEFAULTS.width, help="units per hidden layer")
    p.add_argument("--batch", type=int, default=DEFAULTS.batch, help="minibatch size")
    p.add_argument("--csv", metavar="FILE", help="write one row per variant and evaluation step to FILE")
    return p


def table(report_config: DriftConfig, curves: dict, seconds: float) -> str:
    """The short table: one line per variant."""
    c = report_config
    init = "torch's default init" if c.init_std is None else f"init std {c.init_std:g}"
    lines = [
        f"Ioffe & Szegedy 2015, Figure 1, on digits: lr {c.lr:g}, {c.steps:,} steps, seed {c.seed}, {init}, "
        f"eval every {c.eval_every}, width {c.width}, batch {c.batch} ({seconds:.1f} s, torch {torch.__version__})",
        "",
        f"{'variant':8s} {'test accuracy':>13s} {'final loss':>11s} {'median moved':>13s}",
    ]
    for variant in ("bn", "plain"):
        v = curves[variant]
        lines.append(f"{variant:8s} {100 * v.final_accuracy:11.1f} % {v.final_loss:11.4g} {v.moved:13.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    config = DriftConfig(lr=args.lr, steps=args.steps, seed=args.seed, init_std=args.init_std,
                         eval_every=args.eval_every, width=args.width, batch=args.batch)  # fmt: skip
    reason = config.refusal()
    if reason is not None:
        p.error(reason)
    if args.csv and not Path(args.csv).resolve().parent.is_dir():
        p.error(f"cannot write {args.csv}: its folder does not exist")
    start = time.perf_counter()
    report = run_drift(config)
    print(table(config, report.curves, time.perf_counter() - start))
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
