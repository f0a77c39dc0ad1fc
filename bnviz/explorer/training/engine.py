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
``refusal(config)`` before anything is allocated; ``run(config, stopped, progress)`` returns a
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
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bnviz.explorer.digits import load_digits
from bnviz.explorer.mlp import (
    ACTIVATIONS,
    MAX_BATCH,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_BATCH,
    MIN_WIDTH,
    Arch,
    Curve,
    Schedule,
    Ticker,
    estimate,
    lr_check,
    range_check,
    train_group,
    work_refusal,
)

CSV_COLUMNS = ("variant", "step", "loss", "test_accuracy", "p15", "p50", "p85")
MAX_INIT_STD = 10.0
MAX_SEEDS = 10
MAX_LRS = 12
MAX_EVALS = 200  # evaluations of one training after step 0 (a chart needs no more points)
MAX_NOISE = 10.0
MAX_PROBES = 10

# --- the four experiments --------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftConfig:
    """Experiment 1, Ioffe & Szegedy 2015, Figure 1: the same sigmoid network with and without
    batch norm (before each sigmoid), from the same small Gaussian weights. ``init_std`` None:
    torch's default initialisation instead."""

    lr: float = 0.5
    steps: int = 2000
    seed: int = 0
    init_std: float | None = 0.01
    eval_every: int = 100
    width: int = 100
    batch: int = 60

    def archs(self) -> dict[str, Arch]:
        """The two networks, by CSV variant name."""
        return {
            "bn": Arch(self.width, "sigmoid", "before", None, self.init_std),
            "plain": Arch(self.width, "sigmoid", "none", None, self.init_std),
        }

    def network_steps(self) -> int:
        return 2 * self.steps

    def estimate_bytes(self) -> int:
        """Peak bytes the run adds (an upper bound; see ``estimate``)."""
        return estimate(self.width, self.batch, 2, 2 * len(config_schedule(self).eval_steps()))


@dataclass(frozen=True)
class SweepConfig:
    """Experiment 2: final test accuracy with and without batch norm over learning rates ×
    seeds. The network is experiment 1's; ``init_std`` None (the default): torch's
    initialisation, with which the plain network can learn, so that the learning rate alone
    tells them apart."""

    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 500
    init_std: float | None = None
    activation: str = "relu"
    width: int = 100
    batch: int = 60

    def archs(self) -> dict[str, Arch]:
        return {
            "bn": Arch(self.width, self.activation, "before", None, self.init_std),
            "plain": Arch(self.width, self.activation, "none", None, self.init_std),
        }

    def network_steps(self) -> int:
        return 2 * self.steps * len(self.lrs) * len(self.seeds)

    def estimate_bytes(self) -> int:
        return estimate(self.width, self.batch, 2, 2 * 2 * len(self.lrs) * len(self.seeds))


NOISE_VARIANTS = ("bn", "noisy-bn", "noise", "plain")  # batch norm, + noise, noise alone, neither


@dataclass(frozen=True)
class NoiseConfig:
    """Experiment 3, Santurkar et al. 2018: ReLU networks with torch's initialisation — batch
    norm, batch norm followed by noise (``Noise``: ``noise_mean`` is n_μ, ``noise_std`` n_σ),
    the same noise without batch norm, and neither; each seed a group from the same weights.
    The loss's range along the gradient is probed at ``probes`` points of training for the
    networks with and without batch norm (no noise)."""

    lr: float = 0.1
    steps: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2)
    noise_mean: float = 1.0
    noise_std: float = 2.0
    probes: int = 5
    eval_every: int = 50
    width: int = 100
    batch: int = 60

    def archs(self) -> dict[str, Arch]:
        noise = (self.noise_mean, self.noise_std)
        return {
            "bn": Arch(self.width, "relu", "before", None, None),
            "noisy-bn": Arch(self.width, "relu", "before", noise, None),
            "noise": Arch(self.width, "relu", "none", noise, None),
            "plain": Arch(self.width, "relu", "none", None, None),
        }

    def network_steps(self) -> int:
        return len(NOISE_VARIANTS) * self.steps * len(self.seeds)

    def estimate_bytes(self) -> int:
        evals = len(config_schedule(self).eval_steps())
        return estimate(self.width, self.batch, 4, 4 * evals * len(self.seeds))


PLACEMENT_VARIANTS = ("before", "after")  # Linear → BN → ReLU, Linear → ReLU → BN


@dataclass(frozen=True)
class PlacementConfig:
    """Experiment 4: ``Linear → BN → ReLU`` against ``Linear → ReLU → BN``, torch's
    initialisation, the same weights and minibatches for both within each seed."""

    lr: float = 0.1
    steps: int = 1000
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    eval_every: int = 100
    width: int = 100
    batch: int = 60

    def archs(self) -> dict[str, Arch]:
        return {p: Arch(self.width, "relu", p, None, None) for p in PLACEMENT_VARIANTS}

    def network_steps(self) -> int:
        return len(PLACEMENT_VARIANTS) * self.steps * len(self.seeds)

    def estimate_bytes(self) -> int:
        evals = len(config_schedule(self).eval_steps())
        return estimate(self.width, self.batch, 2, 2 * evals * len(self.seeds))


AnyConfig = DriftConfig | SweepConfig | NoiseConfig | PlacementConfig

# --- memory ----------------------------------------------------------------------------------------

# --- refusals --------------------------------------------------------------------------------------


def _seeds(seeds: Any) -> str | None:
    if not isinstance(seeds, tuple) or not 1 <= len(seeds) <= MAX_SEEDS:
        return f"{len(seeds) if isinstance(seeds, tuple) else seeds!r} seeds were given; give 1 to {MAX_SEEDS}"
    if len(set(seeds)) != len(seeds):
        return f"the seeds {', '.join(map(str, seeds))} repeat one; give each once"
    return next((r for s in seeds if (r := range_check(s, 0, MAX_SEED, "a seed"))), None)


def refusal(config: AnyConfig) -> str | None:
    """Why ``config`` is not run (a value out of range, or too much work), or None — checked
    before anything is allocated. The message names the value given and the range allowed."""
    checks = [
        range_check(config.steps, 1, MAX_STEPS, "the number of steps"),
        range_check(config.width, MIN_WIDTH, MAX_WIDTH, "the width (units per hidden layer)"),
        range_check(config.batch, MIN_BATCH, MAX_BATCH, "the batch size"),
    ]
    if isinstance(config, (DriftConfig, SweepConfig)) and config.init_std is not None:
        std = config.init_std
        if not isinstance(std, (int, float)) or isinstance(std, bool) or not 0 < std <= MAX_INIT_STD:
            checks.append(f"the initial weights' standard deviation is {std!r}; it must be above 0 and at most "
                          f"{MAX_INIT_STD:g} (or torch's default initialisation)")  # fmt: skip
    if isinstance(config, SweepConfig):
        if config.activation not in ACTIVATIONS:
            checks.append(f"the activation is {config.activation!r}; it must be one of {', '.join(ACTIVATIONS)}")
        lrs = config.lrs
        if not isinstance(lrs, tuple) or not 1 <= len(lrs) <= MAX_LRS:
            checks.append(f"{len(lrs) if isinstance(lrs, tuple) else lrs!r} learning rates were given; give 1 to "
                          f"{MAX_LRS}")  # fmt: skip
        else:
            checks += [lr_check(v, f"the learning rate {k + 1} of the sweep") for k, v in enumerate(lrs)]
            if len(set(lrs)) != len(lrs):
                checks.append("the sweep's learning rates repeat one; give each once")
    else:
        checks.append(lr_check(config.lr))
    if isinstance(config, DriftConfig):
        checks.append(range_check(config.seed, 0, MAX_SEED, "the seed"))
    else:
        checks.append(_seeds(config.seeds))
    if not isinstance(config, SweepConfig):
        checks.append(range_check(config.eval_every, 1, MAX_STEPS, "the evaluation interval (steps)"))
        if not any(checks) and len(config_schedule(config).eval_steps()) > MAX_EVALS + 1:
            least = math.ceil(config.steps / MAX_EVALS)
            checks.append(f"evaluating every {config.eval_every} steps over {config.steps:,} steps is more than "
                          f"{MAX_EVALS} evaluations; evaluate every {least} steps or more")  # fmt: skip
    if isinstance(config, NoiseConfig):
        checks += [
            range_check(config.noise_mean, 0, MAX_NOISE, "the noise's mean range n_μ", integer=False),
            range_check(config.noise_std, 1, MAX_NOISE, "the noise's standard deviation range n_σ", integer=False),
            range_check(config.probes, 0, MAX_PROBES, "the number of smoothness probes"),
        ]
    if not any(checks):
        checks.append(work_refusal(config))
    return next((c for c in checks if c), None)


def config_schedule(config: AnyConfig, seed: int = 0, lr: float | None = None) -> Schedule:
    """The schedule the networks of ``config`` are trained with (for ``seed``, and ``lr`` in a sweep)."""
    if isinstance(config, SweepConfig):
        return Schedule(config.lrs[0] if lr is None else lr, config.steps, config.batch, seed, config.steps)
    probes = config.probes if isinstance(config, NoiseConfig) else 0
    seed = config.seed if isinstance(config, DriftConfig) else seed
    return Schedule(config.lr, config.steps, config.batch, seed, config.eval_every, probes)


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
    reason = refusal(config)
    if reason is not None:
        raise ValueError(reason)


def _noop_progress(fraction: float) -> None:
    return None


def _never() -> bool:
    return False


def run_drift(config: DriftConfig, stopped: Callable[[], bool] = _never,
              progress: Callable[[float], None] = _noop_progress) -> DriftReport:  # fmt: skip
    """Experiment 1: train both networks; ``Cancelled`` when ``stopped()`` turns True."""
    _check(config)
    ticker = Ticker(config.network_steps(), stopped, progress)
    curves = train_group(config.archs(), config_schedule(config), load_digits(), ticker)
    ticker.finish()
    return DriftReport(config, curves)


def run_sweep(config: SweepConfig, stopped: Callable[[], bool] = _never,
              progress: Callable[[float], None] = _noop_progress) -> SweepReport:  # fmt: skip
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


def run_noise(config: NoiseConfig, stopped: Callable[[], bool] = _never,
              progress: Callable[[float], None] = _noop_progress) -> SeedsReport:  # fmt: skip
    """Experiment 3: the four variants for every seed."""
    return _run_seeds(config, stopped, progress)


def run_placement(config: PlacementConfig, stopped: Callable[[], bool] = _never,
                  progress: Callable[[float], None] = _noop_progress) -> SeedsReport:  # fmt: skip
    """Experiment 4: batch norm before and after the ReLU, for every seed."""
    return _run_seeds(config, stopped, progress)


RUNS: dict[type, Callable[..., Any]] = {
    DriftConfig: run_drift, SweepConfig: run_sweep, NoiseConfig: run_noise, PlacementConfig: run_placement,
}  # fmt: skip


def run(config: AnyConfig, stopped: Callable[[], bool] = _never,
        progress: Callable[[float], None] = _noop_progress) -> DriftReport | SweepReport | SeedsReport:  # fmt: skip
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
