r"""What batch norm does to training: four small experiments on scikit-learn's digits, live.

Every experiment trains multilayer perceptrons — 64 pixels → 3 hidden layers of ``width`` units →
10 logits, cross-entropy, plain SGD on minibatches of ``batch`` — that differ only where batch norm
sits (``Placement``): nowhere, before each hidden activation (``Linear → BN → act``, Ioffe &
Szegedy's), or after it (``Linear → act → BN``), optionally with noise after each batch norm (or
where it would be). The networks of one comparison start from identical weights (one seeded draw
of the linear layers; batch norm starts at γ = 1, β = 0), see the same minibatches in the same
order, and are trained in lockstep by one loop (``train_group``); batch norm is
``bnviz.BatchNorm1d``.

1. ``DriftConfig`` — Ioffe & Szegedy 2015, Figure 1: sigmoid units, small Gaussian weights; test
   accuracy and the 15th/50th/85th percentiles of one last-layer sigmoid's input over training.
2. ``SweepConfig`` — higher learning rates (Ioffe & Szegedy §3.3, Bjorck et al. 2018): final test
   accuracy over a learning-rate sweep, several seeds.
3. ``NoiseConfig`` — Santurkar et al. 2018: "noisy" batch norm, and the loss's range along the
   gradient (their smoothness measure).
4. ``PlacementConfig`` — batch norm before or after the ReLU, several seeds.

Each config has ``estimate_bytes()`` (peak memory the run adds, an upper bound) and is checked by
``config.refusal()`` before anything is allocated; ``run(config, stopped, progress)`` returns a
plain, picklable report. Evaluation is on the held-out test split, every network in ``eval()``
mode (batch norm with its running statistics). Percentiles are linear interpolation between
order statistics: over the sorted test values :math:`v_0 \le \dots \le v_{n-1}`,

.. math::
    p_q = v_{\lfloor r \rfloor} + (r - \lfloor r \rfloor)\,(v_{\lfloor r \rfloor + 1} - v_{\lfloor r \rfloor}),
    \qquad r = \tfrac{q}{100}\,(n - 1)

(``torch.quantile``'s default, numpy's too).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bnviz.explorer.contract import ignore, never
from bnviz.explorer.digits import load_digits
from bnviz.explorer.mlp import (
    Curve,
    Ticker,
    train_group,
)
from bnviz.explorer.training.url import (
    AnyConfig,
    DriftConfig,
    NoiseConfig,
    PlacementConfig,
    SweepConfig,
    config_schedule,
)

CSV_COLUMNS = ("variant", "step", "loss", "test_accuracy", "p15", "p50", "p85")

# --- the four experiments --------------------------------------------------------------------------


# --- memory ----------------------------------------------------------------------------------------

# --- refusals --------------------------------------------------------------------------------------


def command_line(config: DriftConfig) -> str:
    """The terminal command that runs experiment 1 as ``config`` and prints its table
    (``python -m bnviz.training``)."""
    init = "default" if config.init_std is None else f"{config.init_std:g}"
    return (f"python -m bnviz.training --lr {config.lr:g} --steps {config.steps} --seed {config.seed} "
            f"--init-std {init} --eval-every {config.eval_every} --width {config.width} "
            f"--batch {config.batch}")  # fmt: skip


# --- reports and runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    """Experiment 1: one curve per variant, ``"bn"`` and ``"plain"``."""

    config: DriftConfig
    curves: dict[str, Curve] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepReport:
    """Experiment 2: ``accuracy[variant][i][k]`` and ``loss[variant][i][k]`` are the final test
    accuracy and the last minibatch loss at ``config.lrs[i]`` and ``config.seeds[k]``."""

    config: SweepConfig
    accuracy: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    loss: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)

    def summary(self, variant: str) -> tuple[tuple[float, float, float], ...]:
        """Per learning rate: mean, min and max of the final test accuracy over the seeds."""
        return tuple((sum(a) / len(a), min(a), max(a)) for a in self.accuracy[variant])


@dataclass(frozen=True)
class SeedsReport:
    """Experiments 3 and 4: ``curves[variant][k]`` is the training with ``config.seeds[k]``."""

    config: NoiseConfig | PlacementConfig
    curves: dict[str, tuple[Curve, ...]] = field(default_factory=dict)

    def finals(self, variant: str) -> tuple[float, ...]:
        """Final test accuracy per seed."""
        return tuple(c.final_accuracy for c in self.curves[variant])


def _check(config: AnyConfig) -> None:
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)




def run_drift(config: DriftConfig, stopped: Callable[[], bool] = never,
              progress: Callable[[float], None] = ignore) -> DriftReport:  # fmt: skip
    """Experiment 1: train both networks; ``Cancelled`` when ``stopped()`` turns True."""
    _check(config)
    ticker = Ticker(config.network_steps(), stopped, progress)
    curves = train_group(config.archs(), config_schedule(config), load_digits(), ticker)
    ticker.finish()
    return DriftReport(config, curves)


def run_sweep(config: SweepConfig, stopped: Callable[[], bool] = never,
              progress: Callable[[float], None] = ignore) -> SweepReport:  # fmt: skip
    """Experiment 2: every learning rate × seed, both networks, evaluated at the end only."""
    _check(config)
    ticker = Ticker(config.network_steps(), stopped, progress)
    data = load_digits()
    names = tuple(config.archs())
    acc: dict[str, list[tuple[float, ...]]] = {n: [] for n in names}
    loss: dict[str, list[tuple[float, ...]]] = {n: [] for n in names}
    for lr in config.lrs:
        runs = [train_group(config.archs(), config_schedule(config, seed, lr), data, ticker) for seed in config.seeds]
        for n in names:
            acc[n].append(tuple(r[n].final_accuracy for r in runs))
            loss[n].append(tuple(r[n].final_loss for r in runs))
    ticker.finish()
    return SweepReport(config, {n: tuple(v) for n, v in acc.items()}, {n: tuple(v) for n, v in loss.items()})


def _run_seeds(config: NoiseConfig | PlacementConfig, stopped: Callable[[], bool],
               progress: Callable[[float], None]) -> SeedsReport:  # fmt: skip
    _check(config)
    ticker = Ticker(config.network_steps(), stopped, progress)
    data = load_digits()
    runs = [train_group(config.archs(), config_schedule(config, seed), data, ticker) for seed in config.seeds]
    ticker.finish()
    return SeedsReport(config, {n: tuple(r[n] for r in runs) for n in config.archs()})


def run_noise(config: NoiseConfig, stopped: Callable[[], bool] = never,
              progress: Callable[[float], None] = ignore) -> SeedsReport:  # fmt: skip
    """Experiment 3: the four variants for every seed."""
    return _run_seeds(config, stopped, progress)


def run_placement(config: PlacementConfig, stopped: Callable[[], bool] = never,
                  progress: Callable[[float], None] = ignore) -> SeedsReport:  # fmt: skip
    """Experiment 4: batch norm before and after the ReLU, for every seed."""
    return _run_seeds(config, stopped, progress)


RUNS: dict[type, Callable[..., Any]] = {
    DriftConfig: run_drift, SweepConfig: run_sweep, NoiseConfig: run_noise, PlacementConfig: run_placement,
}  # fmt: skip


def run(config: AnyConfig, stopped: Callable[[], bool] = never,
        progress: Callable[[float], None] = ignore) -> DriftReport | SweepReport | SeedsReport:  # fmt: skip
    """Run the experiment ``config`` describes."""
    return RUNS[type(config)](config, stopped, progress)


# --- CSV -------------------------------------------------------------------------------------------


def _number(v: float) -> str:
    return f"{v:.6g}"


def to_csv(report: DriftReport) -> str:
    """Experiment 1 as CSV: one row per variant (``bn``, then ``plain``) and evaluation step, the
    columns ``CSV_COLUMNS``: ``variant,step,loss,test_accuracy,p15,p50,p85``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for variant in ("bn", "plain"):
        c = report.curves[variant]
        for i, step in enumerate(c.steps):
            writer.writerow([variant, step, *(_number(v[i]) for v in (c.loss, c.test_accuracy, c.p15, c.p50, c.p85))])
    return out.getvalue()
