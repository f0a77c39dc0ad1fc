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
   accuracy over a learning-rate sweep, and the share of dead ReLUs.
3. ``NoiseConfig`` — Santurkar et al. 2018: "noisy" batch norm with their noise model (and a
   stronger one), and the loss's range along the gradient (their smoothness measure).
4. ``PlacementConfig`` — batch norm before or after the ReLU.

Every experiment runs each of its seeds (five by default), and its report holds every seed's
numbers: a claim's verdict counts the seeds it holds on (``bnviz.explorer.claims``). The default
views are computed ahead (``STORE``, ``python scripts/store_defaults.py``); any other runs live.

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
from dataclasses import dataclass, field, replace
from pathlib import Path

from bnviz.explorer.claims import ONE_IMAGE, Verdict, paired, verdict_word
from bnviz.explorer.contract import Progress, Stopped, ignore, never
from bnviz.explorer.digits import Digits, load_digits
from bnviz.explorer.mlp import Curve, Ticker, train_group
from bnviz.explorer.stored import Store
from bnviz.explorer.training.url import (
    AnyConfig,
    DriftConfig,
    NoiseConfig,
    PlacementConfig,
    SweepConfig,
    config_schedule,
)

CSV_COLUMNS = ("experiment", "variant", "seed", "learning_rate", "step", "loss", "test_accuracy", "p15", "p50",
               "p85", "dead_units")  # fmt: skip
TRAINS = 0.8  # a final test accuracy at least this is "trains"
DRIFT_MARGIN = 0.05  # a difference in how far a sigmoid's median input moved (its units) that counts
DEAD_INIT = DriftConfig(init_std=0.01)  # Figure 1 with the paper's smallest weights: the plain network never learns
TEN_SEEDS = PlacementConfig(seeds=tuple(range(10)))  # before or after the ReLU over twice the seeds


def command_line(config: AnyConfig) -> str:
    """The terminal command that runs ``config``'s experiment and prints its table
    (``python -m bnviz.training``)."""
    seeds = config.seeds
    seeds_arg = f"--seeds {len(seeds)}" if seeds == tuple(range(len(seeds))) else f"--seed {seeds[0]}"
    if isinstance(config, DriftConfig):
        init = "default" if config.init_std is None else f"{config.init_std:g}"
        return (f"python -m bnviz.training --experiment drift --lr {config.lr:g} --steps {config.steps} "
                f"{seeds_arg} --init-std {init}")  # fmt: skip
    name = {SweepConfig: "lr-sweep", NoiseConfig: "noise", PlacementConfig: "placement"}[type(config)]
    steps = f" --steps {config.steps}"
    lr = "" if isinstance(config, SweepConfig) else f" --lr {config.lr:g}"
    return f"python -m bnviz.training --experiment {name}{lr}{steps} {seeds_arg}"


# --- reports and runs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedsReport:
    """Experiments 1, 3 and 4: ``curves[variant][k]`` is the training with ``config.seeds[k]``."""

    config: DriftConfig | NoiseConfig | PlacementConfig
    curves: dict[str, tuple[Curve, ...]] = field(default_factory=dict)

    def finals(self, variant: str) -> tuple[float, ...]:
        """Final test accuracy per seed."""
        return tuple(c.final_accuracy for c in self.curves[variant])

    def ahead(self, claimed: str, other: str) -> Verdict:
        """"``claimed`` ends with a higher test accuracy than ``other``", seed by seed."""
        return paired(self.finals(claimed), self.finals(other), ONE_IMAGE)

    def drifts_further(self) -> Verdict:
        """Experiment 1: "the median drifts further without batch norm", seed by seed."""
        return paired([c.moved for c in self.curves["plain"]], [c.moved for c in self.curves["bn"]], DRIFT_MARGIN)

    def seed(self, k: int) -> SeedsReport:
        """The report of seed ``config.seeds[k]`` alone."""
        return SeedsReport(replace(self.config, seeds=(self.config.seeds[k],)),
                           {v: (cs[k],) for v, cs in self.curves.items()})  # fmt: skip

    @property
    def verdict(self) -> str:
        """The experiment's main claim, over the seeds."""
        if isinstance(self.config, PlacementConfig):
            return f"before ahead: {verdict_word(self.ahead('before', 'after'))}"
        return f"batch norm ahead: {verdict_word(self.ahead('bn', 'plain'))}"


@dataclass(frozen=True)
class SweepReport:
    """Experiment 2: ``accuracy[variant][i][k]``, ``loss[variant][i][k]`` and ``dead[variant][i][k]``:
    the final test accuracy, the last minibatch loss and the share of the last hidden layer's units
    that never fire on the test split, at ``config.lrs[i]`` and ``config.seeds[k]``."""

    config: SweepConfig
    accuracy: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    loss: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)
    dead: dict[str, tuple[tuple[float, ...], ...]] = field(default_factory=dict)

    def summary(self, variant: str) -> tuple[tuple[float, float, float], ...]:
        """Per learning rate: mean, min and max of the final test accuracy over the seeds."""
        return tuple((sum(a) / len(a), min(a), max(a)) for a in self.accuracy[variant])

    def highest_training(self, variant: str) -> tuple[float, ...]:
        """Per seed: the highest learning rate of the sweep at which ``variant`` reaches ``TRAINS``
        (0 when none does)."""
        lrs = self.config.lrs
        return tuple(max((lr for lr, row in zip(lrs, self.accuracy[variant], strict=True) if row[k] >= TRAINS),
                         default=0.0) for k in range(len(self.config.seeds)))  # fmt: skip

    def higher(self) -> Verdict:
        """"batch norm trains at a higher learning rate than the plain network", seed by seed: the
        difference of the highest training learning rates (in the sweep's own values)."""
        return paired(self.highest_training("bn"), self.highest_training("plain"), 0.0)

    def seed(self, k: int) -> SweepReport:
        def one(table: dict[str, tuple[tuple[float, ...], ...]]) -> dict[str, tuple[tuple[float, ...], ...]]:
            return {v: tuple((row[k],) for row in rows) for v, rows in table.items()}

        return SweepReport(replace(self.config, seeds=(self.config.seeds[k],)), one(self.accuracy), one(self.loss),
                           one(self.dead))  # fmt: skip

    @property
    def verdict(self) -> str:
        return f"batch norm trains at a higher learning rate: {verdict_word(self.higher())}"


Report = SeedsReport | SweepReport


def _report_type(config: AnyConfig) -> type:
    return SweepReport if isinstance(config, SweepConfig) else SeedsReport


STORE = Store(Path(__file__).with_name("stored.json"), _report_type)
AHEAD: tuple[AnyConfig, ...] = (DriftConfig(), DEAD_INIT, SweepConfig(), NoiseConfig(), PlacementConfig(), TEN_SEEDS)


def computed_ahead(config: AnyConfig) -> bool:
    """Whether ``config``'s report is one of those computed ahead (``STORE``)."""
    return STORE.has(config)


def _seeds(config: DriftConfig | NoiseConfig | PlacementConfig, data: Digits, ticker: Ticker) -> SeedsReport:
    runs = [train_group(config.archs(), config_schedule(config, seed), data, ticker) for seed in config.seeds]
    return SeedsReport(config, {n: tuple(r[n] for r in runs) for n in config.archs()})


def _sweep(config: SweepConfig, data: Digits, ticker: Ticker) -> SweepReport:
    """Every learning rate × seed, both networks, evaluated at the end only."""
    names = tuple(config.archs())
    tables: dict[str, dict[str, list[tuple[float, ...]]]] = {t: {n: [] for n in names} for t in ("acc", "loss", "dead")}
    for lr in config.lrs:
        runs = [train_group(config.archs(), config_schedule(config, seed, lr), data, ticker) for seed in config.seeds]
        for n in names:
            tables["acc"][n].append(tuple(r[n].final_accuracy for r in runs))
            tables["loss"][n].append(tuple(r[n].final_loss for r in runs))
            tables["dead"][n].append(tuple(r[n].final_dead for r in runs))
    acc, loss, dead = ({n: tuple(v) for n, v in tables[t].items()} for t in ("acc", "loss", "dead"))
    return SweepReport(config, acc, loss, dead)


def run(config: AnyConfig, stopped: Stopped = never, progress: Progress = ignore, live: bool = False) -> Report:
    """Run the experiment ``config`` describes, every seed: from the reports computed ahead when it
    is one of them (unless ``live``), else trained here; ``Cancelled`` when ``stopped()`` turns True."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
    stored = None if live else STORE.get(config)
    if stored is not None:
        progress(1.0)
        return stored
    ticker = Ticker(config.network_steps(), stopped, progress)
    data = load_digits()
    report = _sweep(config, data, ticker) if isinstance(config, SweepConfig) else _seeds(config, data, ticker)
    ticker.finish()
    return report


# --- CSV -------------------------------------------------------------------------------------------


def _number(v: float) -> str:
    return f"{v:.6g}"


EXPERIMENT_NAMES = {DriftConfig: "drift", SweepConfig: "lr-sweep", NoiseConfig: "noise", PlacementConfig: "placement"}


def to_csv(report: Report) -> str:
    """An experiment as CSV, the columns ``CSV_COLUMNS``: one row per variant, seed and evaluation
    step (experiments 1, 3, 4), or per variant, learning rate and seed at the end (experiment 2)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    c = report.config
    name = EXPERIMENT_NAMES[type(c)]
    if isinstance(report, SweepReport):
        for variant, rows in report.accuracy.items():
            for i, lr in enumerate(c.lrs):
                for k, seed in enumerate(c.seeds):
                    writer.writerow([name, variant, seed, _number(lr), c.steps, _number(report.loss[variant][i][k]),
                                     _number(rows[i][k]), "", "", "", _number(report.dead[variant][i][k])])  # fmt: skip
        return out.getvalue()
    for variant, curves in report.curves.items():
        for seed, cv in zip(c.seeds, curves, strict=True):
            dead = cv.dead or (float("nan"),) * len(cv.steps)
            for i, step in enumerate(cv.steps):
                values = (cv.loss[i], cv.test_accuracy[i], cv.p15[i], cv.p50[i], cv.p85[i], dead[i])
                writer.writerow([name, variant, seed, _number(c.lr), step, *(_number(v) for v in values)])
    return out.getvalue()
