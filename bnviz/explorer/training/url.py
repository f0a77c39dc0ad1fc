"""The ``/training`` page's URL: the frozen configs of its four experiments (``DriftConfig``,
``SweepConfig``, ``NoiseConfig``, ``PlacementConfig``) with their limits, memory estimates and
refusals, and one ``QuerySpec`` per experiment."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bnviz.explorer.mlp import (
    ACTIVATIONS,
    MAX_BATCH,
    MAX_LR,
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_BATCH,
    MIN_WIDTH,
    Arch,
    NoiseSpec,
    Schedule,
    estimate,
    lr_check,
    range_check,
    seeds_refusal,
    work_refusal,
)
from bnviz.explorer.query import Param, QuerySpec, choice, float_in, int_in, number_list, std_or_default, whole_list

MAX_INIT_STD = 10.0
MAX_LRS = 12
MAX_EVALS = 200  # evaluations of one training after step 0 (a chart needs no more points)
MAX_NOISE = 10.0
MAX_PROBES = 10
SEEDS = (0, 1, 2, 3, 4)  # every experiment's default: five seeds, and a verdict over them (claims.py)
PAPER_NOISE = NoiseSpec()  # Santurkar et al.'s noise model and values (mlp.NoiseSpec)


@dataclass(frozen=True)
class DriftConfig:
    """Experiment 1, Ioffe & Szegedy 2015, Figure 1: the same sigmoid network with and without
    batch norm (before each sigmoid), from the same small Gaussian weights, for every seed.
    ``init_std`` None: torch's default initialisation instead. The default std, 0.1, is one with
    which the plain network learns too (as in the paper); at 0.01 it never does (``DEAD_INIT``)."""

    lr: float = 0.5
    steps: int = 2000
    seeds: tuple[int, ...] = SEEDS
    init_std: float | None = 0.1
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
        return 2 * self.steps * len(self.seeds)

    def estimate_bytes(self) -> int:
        """Peak bytes the run adds (an upper bound; see ``estimate``)."""
        return estimate(self.width, self.batch, 2, 2 * len(config_schedule(self).eval_steps()) * len(self.seeds))

    def refusal(self) -> str | None:
        """Why this run is not made (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        return _first(self, *_trainer(self), _init_std(self.init_std), lr_check(self.lr), seeds_refusal(self.seeds),
                      *_evaluations(self))  # fmt: skip


@dataclass(frozen=True)
class SweepConfig:
    """Experiment 2: final test accuracy with and without batch norm over learning rates ×
    seeds. The network is experiment 1's; ``init_std`` None (the default): torch's
    initialisation, with which the plain network can learn, so that the learning rate alone
    tells them apart."""

    lrs: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    seeds: tuple[int, ...] = SEEDS
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

    def refusal(self) -> str | None:
        """Why this run is not made (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        lrs = self.lrs
        if not isinstance(lrs, tuple) or not 1 <= len(lrs) <= MAX_LRS:
            return f"{len(lrs) if isinstance(lrs, tuple) else lrs!r} learning rates were given; give 1 to {MAX_LRS}"
        activation = None if self.activation in ACTIVATIONS else (
            f"the activation is {self.activation!r}; it must be one of {', '.join(ACTIVATIONS)}")  # fmt: skip
        repeat = "the sweep's learning rates repeat one; give each once" if len(set(lrs)) != len(lrs) else None
        return _first(self, *_trainer(self), _init_std(self.init_std), activation,
                      *(lr_check(v, f"the learning rate {k + 1} of the sweep") for k, v in enumerate(lrs)), repeat,
                      seeds_refusal(self.seeds))  # fmt: skip


# batch norm; + the paper's noise; the paper's noise alone; neither; batch norm + the stronger additive noise
NOISE_VARIANTS = ("bn", "noisy-bn", "noise", "plain", "noisy-bn-strong")


@dataclass(frozen=True)
class NoiseConfig:
    """Experiment 3, Santurkar et al. 2018: ReLU networks with torch's initialisation — batch
    norm, batch norm followed by the paper's noise (``PAPER_NOISE``), the same noise without batch
    norm, neither, and batch norm followed by a stronger additive Gaussian noise (``noise_mean`` is
    its n_μ, ``noise_std`` its n_σ); each seed a group from the same weights. The loss's range
    along the gradient is probed at ``probes`` points of training for the networks with and
    without batch norm (no noise)."""

    lr: float = 0.1
    steps: int = 1000
    seeds: tuple[int, ...] = SEEDS
    noise_mean: float = 1.0
    noise_std: float = 2.0
    probes: int = 5
    eval_every: int = 50
    width: int = 100
    batch: int = 60

    def archs(self) -> dict[str, Arch]:
        strong = NoiseSpec("additive", self.noise_mean, self.noise_std)
        return {
            "bn": Arch(self.width, "relu", "before", None, None),
            "noisy-bn": Arch(self.width, "relu", "before", PAPER_NOISE, None),
            "noise": Arch(self.width, "relu", "none", PAPER_NOISE, None),
            "plain": Arch(self.width, "relu", "none", None, None),
            "noisy-bn-strong": Arch(self.width, "relu", "before", strong, None),
        }

    def network_steps(self) -> int:
        return len(NOISE_VARIANTS) * self.steps * len(self.seeds)

    def estimate_bytes(self) -> int:
        evals = len(config_schedule(self).eval_steps())
        n = len(NOISE_VARIANTS)
        return estimate(self.width, self.batch, n, n * evals * len(self.seeds))

    def refusal(self) -> str | None:
        """Why this run is not made (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        return _first(self, *_trainer(self), lr_check(self.lr), seeds_refusal(self.seeds), *_evaluations(self)[:1],
                      range_check(self.noise_mean, 0, MAX_NOISE, "the noise's mean range n_μ", integer=False),
                      range_check(self.noise_std, 1, MAX_NOISE, "the noise's standard deviation range n_σ",
                                  integer=False),
                      range_check(self.probes, 0, MAX_PROBES, "the number of smoothness probes"),
                      *_evaluations(self)[1:])  # fmt: skip


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

    def refusal(self) -> str | None:
        """Why this run is not made (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        return _first(self, *_trainer(self), lr_check(self.lr), seeds_refusal(self.seeds), *_evaluations(self))


AnyConfig = DriftConfig | SweepConfig | NoiseConfig | PlacementConfig


def _first(config: AnyConfig, *checks: str | Callable[[], str | None] | None) -> str | None:
    """The first failed check, in order (a callable is asked only once the checks before it
    passed: it may rely on them), then the run's work (``work_refusal``); None when all pass."""
    for check in checks:
        reason = check() if callable(check) else check
        if reason:
            return reason
    return work_refusal(config)


def _trainer(config: AnyConfig) -> tuple[str | None, ...]:
    """The checks every experiment shares: steps, width, batch."""
    return (range_check(config.steps, 1, MAX_STEPS, "the number of steps"),
            range_check(config.width, MIN_WIDTH, MAX_WIDTH, "the width (units per hidden layer)"),
            range_check(config.batch, MIN_BATCH, MAX_BATCH, "the batch size"))  # fmt: skip


def _init_std(std: Any) -> str | None:
    if std is not None and (not isinstance(std, (int, float)) or isinstance(std, bool) or not 0 < std <= MAX_INIT_STD):
        return (f"the initial weights' standard deviation is {std!r}; it must be above 0 and at most "
                f"{MAX_INIT_STD:g} (or torch's default initialisation)")  # fmt: skip
    return None


def _evaluations(config: DriftConfig | NoiseConfig | PlacementConfig) -> tuple[Any, ...]:
    """The evaluation interval, then (once every other check passed) at most ``MAX_EVALS``
    evaluations."""

    def count() -> str | None:
        if len(config_schedule(config).eval_steps()) > MAX_EVALS + 1:
            least = math.ceil(config.steps / MAX_EVALS)
            return (f"evaluating every {config.eval_every} steps over {config.steps:,} steps is more than "
                    f"{MAX_EVALS} evaluations; evaluate every {least} steps or more")  # fmt: skip
        return None

    return range_check(config.eval_every, 1, MAX_STEPS, "the evaluation interval (steps)"), count


def config_schedule(config: AnyConfig, seed: int = 0, lr: float | None = None) -> Schedule:
    """The schedule the networks of ``config`` are trained with (for ``seed``, and ``lr`` in a sweep)."""
    if isinstance(config, SweepConfig):
        return Schedule(config.lrs[0] if lr is None else lr, config.steps, config.batch, seed, config.steps)
    probes = config.probes if isinstance(config, NoiseConfig) else 0
    return Schedule(config.lr, config.steps, config.batch, seed, config.eval_every, probes)


def _init(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


SEED_LIST = whole_list(0, MAX_SEED, MAX_SEEDS)


def one_seed(text: str) -> tuple[int, ...]:
    """The old single ``seed`` of a link: that seed alone."""
    return (int_in(0, MAX_SEED)(text),)


TRAINING_DRIFT = QuerySpec[DriftConfig](
    [
        Param("lr", "lr", float_in(1e-6, MAX_LR)),
        Param("steps", "steps", int_in(1, MAX_STEPS)),
        Param("seed", "seeds", one_seed, write=False),  # a link from before the seeds: its one seed
        Param("seeds", "seeds", SEED_LIST),
        Param("init", "init_std", std_or_default),
        Param("every", "eval_every", int_in(1, MAX_STEPS)),
        Param("width", "width", int_in(MIN_WIDTH, MAX_WIDTH)),
        Param("batch", "batch", int_in(MIN_BATCH, MAX_BATCH)),
    ],
    {"init": _init},
)


TRAINING_SWEEP = QuerySpec[SweepConfig](
    [
        Param("sweep_lrs", "lrs", number_list(1e-6, MAX_LR, MAX_LRS)),
        Param("sweep_seeds", "seeds", SEED_LIST),
        Param("sweep_steps", "steps", int_in(1, MAX_STEPS)),
        Param("sweep_act", "activation", choice(tuple(ACTIVATIONS))),
        Param("sweep_init", "init_std", std_or_default),
    ],
    {"sweep_init": _init},
)


TRAINING_NOISE = QuerySpec[NoiseConfig](
    [
        Param("noise_lr", "lr", float_in(1e-6, MAX_LR)),
        Param("noise_steps", "steps", int_in(1, MAX_STEPS)),
        Param("noise_seeds", "seeds", SEED_LIST),
        Param("noise_mean", "noise_mean", float_in(0.0, MAX_NOISE)),
        Param("noise_std", "noise_std", float_in(1.0, MAX_NOISE)),
    ]
)


TRAINING_PLACEMENT = QuerySpec[PlacementConfig](
    [
        Param("relu_lr", "lr", float_in(1e-6, MAX_LR)),
        Param("relu_steps", "steps", int_in(1, MAX_STEPS)),
        Param("relu_seeds", "seeds", SEED_LIST),
    ]
)
