"""The ``/eval-gap`` page's URL: the frozen configs of its six sections (what each runs, its limits,
memory estimate and refusal, checked on plain numbers before anything is allocated) and one
``QuerySpec`` per section."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

from bnviz.explorer import mlp
from bnviz.explorer.digits import CLASSES, PIXELS
from bnviz.explorer.mlp import (
    DEPTH,
    MAX_LR,
    MAX_SEED,
    MAX_SEEDS,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_WIDTH,
    Arch,
    Schedule,
    range_check,
    seeds_refusal,
)
from bnviz.explorer.query import Param, QuerySpec, choice, float_in, int_in, number_list, whole_list

SECTIONS = ("batches", "lag", "dropout", "accumulation", "passes", "checkpoint")
DEFAULT_SECTIONS = ("batches", "lag")  # run on navigation (≈ 3 s together here); the others on a button
MAX_MOMENTA = 6
SEEDS = (0, 1, 2, 3, 4)  # sections 1–3 run five seeds by default: their claims' verdicts (claims.py) count them
MAX_PAIRS = 200
MAX_MICRO = 16  # micro-batches per step (k)
MIN_MICRO_BATCH, MAX_MICRO_BATCH = 2, 128  # values per micro-batch (n): batch norm needs 2 or more
MAX_P = 0.9
MAX_BATCH = mlp.MAX_BATCH
MAX_EVALS = 100  # evaluations after step 0 in sections 1 and 2 (each costs a pass over the data)
TRAIN_ROWS = 1438
TEST_ROWS = mlp.TEST_ROWS
PAIRS = ("real-fake", "views")
DROPOUT_INPUTS = ("after", "before")  # dropout's input: a ReLU's output, or the Linear's


def _relu(width: int, **kw: Any) -> Arch:
    """``Linear → BN → ReLU`` three times, torch's default initialisation."""
    return Arch(width, "relu", "before", None, None, **kw)


@dataclass(frozen=True)
class BatchesConfig:
    """Section 1: the same network (``Linear → BN → ReLU`` ×3, torch's initialisation) trained
    from the same weights on minibatches sorted by class (the training split read in class order,
    the same every epoch: ``DataLoader(shuffle=False)`` on a sorted dataset) and on shuffled ones
    (a fresh permutation each epoch)."""

    lr: float = 0.3
    steps: int = 500
    batch: int = 72  # about half a class (each has 143–146 training images): most minibatches hold one
    width: int = 100
    eval_every: int = 50
    seeds: tuple[int, ...] = SEEDS

    def network_steps(self) -> int:
        return 2 * self.steps * len(self.seeds)

    def evaluations(self) -> int:
        return len(Schedule(self.lr, self.steps, self.batch, self.seeds[0], self.eval_every).eval_steps())

    def estimate_bytes(self) -> int:
        # one order's network at a time
        return _estimate(self.width, self.batch, 2, 6 * self.evaluations() * len(self.seeds))

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        checks = (*_trainer(self), range_check(self.eval_every, 1, MAX_STEPS, "the evaluation interval (steps)"))
        return _first(self, *checks) if any(checks) else _first(self, _evals(self))


@dataclass(frozen=True)
class LagConfig:
    """Section 2: one training (``Linear → BN → ReLU`` ×3, shuffled minibatches) carrying the
    running averages of every momentum in ``momenta`` (``ShadowStats``); at every ``eval_every``
    steps, test accuracy with each of them and with the exact population statistics."""

    lr: float = 0.3
    steps: int = 200
    batch: int = 60
    width: int = 100
    momenta: tuple[float, ...] = (0.001, 0.01, 0.1)
    eval_every: int = 20
    seeds: tuple[int, ...] = SEEDS

    def network_steps(self) -> int:
        # a shadow costs about a third of a step
        return (self.steps + self.steps * len(self.momenta) // 3) * len(self.seeds)

    def evaluations(self) -> int:
        return len(Schedule(self.lr, self.steps, self.batch, self.seeds[0], self.eval_every).eval_steps())

    def estimate_bytes(self) -> int:
        points = (4 + 4 * len(self.momenta)) * self.evaluations()
        return _estimate(self.width, self.batch, 1, points * len(self.seeds))  # a shadow is 3 small batch norms

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        checks = (*_trainer(self), range_check(self.eval_every, 1, MAX_STEPS, "the evaluation interval (steps)"),
                  *_momenta(self.momenta))  # fmt: skip
        return _first(self, *checks) if any(checks) else _first(self, _evals(self))


DROPOUT_VARIANTS = ("before-bn", "head", "none")  # dropout right before each BN; after the last BN; none


@dataclass(frozen=True)
class DropoutConfig:
    r"""Section 3: dropout with probability ``p`` right before every batch norm, against the same
    network with one dropout after the last batch norm (before the output layer: Li et al.'s
    fix) and without dropout, from the same weights on the same minibatches. ``placement``
    ``"after"``: ``Linear → ReLU → Dropout → BN`` (dropout's input is a ReLU's output, not
    zero-mean); ``"before"``: ``Linear → Dropout → BN → ReLU`` (the Linear's output)."""

    p: float = 0.6
    placement: str = "after"
    lr: float = 0.1
    steps: int = 600
    batch: int = 60
    width: int = 64
    seeds: tuple[int, ...] = SEEDS

    def archs(self) -> dict[str, Arch]:
        kw = dict(activation="relu", placement=self.placement, init_std=None)
        return {
            "before-bn": Arch(self.width, dropout=self.p, dropout_at="bn", **kw),  # type: ignore[arg-type]
            "head": Arch(self.width, dropout=self.p, dropout_at="head", **kw),  # type: ignore[arg-type]
            "none": Arch(self.width, **kw),  # type: ignore[arg-type]
        }

    def network_steps(self) -> int:
        return 3 * self.steps * len(self.seeds)

    def estimate_bytes(self) -> int:
        return _estimate(self.width, self.batch, 3, 60, rows=2 * TRAIN_ROWS)  # inputs kept, masks drawn

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        placement = None if self.placement in DROPOUT_INPUTS else (
            f"the dropout's input is {self.placement!r}; it must be one of {', '.join(DROPOUT_INPUTS)}")  # fmt: skip
        return _first(self, *_trainer(self), _number(self.p, 0, MAX_P, "the dropout probability p", open_low=True),
                      placement)  # fmt: skip


@dataclass(frozen=True)
class AccumulationConfig:
    """Section 4: the same network trained from the same weights on the same samples, one SGD
    step per ``micro`` × ``micro_batch`` samples: as one batch (``big``), or as ``micro``
    micro-batches of ``micro_batch`` with their gradients accumulated (``micro``). The micro
    network also carries running statistics at the adjusted momentum (``adjusted_momentum``:
    ``micro-adjusted``) beside its own, at ``momentum``."""

    micro: int = 4
    micro_batch: int = 8
    momentum: float = 0.1
    lr: float = 0.1
    steps: int = 500
    width: int = 100
    seed: int = 0

    @property
    def batch(self) -> int:
        return self.micro * self.micro_batch

    def network_steps(self) -> int:
        return self.steps * (1 + self.micro)  # a micro-batched step costs about k small steps

    def estimate_bytes(self) -> int:
        return _estimate(self.width, self.batch, 3, 40, rows=TRAIN_ROWS)

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        checks = (*_trainer(self, batch=False),
                  range_check(self.micro, 1, MAX_MICRO, "the number of micro-batches per step (k)"),
                  range_check(self.micro_batch, MIN_MICRO_BATCH, MAX_MICRO_BATCH, "the micro-batch size (n)"),
                  _number(self.momentum, 0, 1, "the momentum", open_low=True))  # fmt: skip
        if not any(checks) and self.batch > MAX_BATCH:
            return f"k × n is {self.micro} × {self.micro_batch} = {self.batch}; it must be at most {MAX_BATCH}"
        return _first(self, *checks)


@dataclass(frozen=True)
class PassesConfig:
    """Section 5: a network trained on shuffled real digits, then ``pairs`` pairs of batches
    (A, B) of ``batch`` images each, run in training mode as two forward passes (A, then B) or
    as one forward of ``cat([A, B])``. ``pair``: ``"real-fake"`` — A real training images, B
    "fakes" (each a real image with its 64 pixels shuffled: the same intensities, no digit), as
    in a GAN's discriminator; ``"views"`` — A and B two augmented views of the same images (each
    with its own Gaussian pixel noise of std ``VIEW_NOISE``, clipped to [0, 1]), as in
    contrastive learning."""

    pair: str = "real-fake"
    pairs: int = 20
    lr: float = 0.1
    steps: int = 300
    batch: int = 60
    width: int = 100
    seed: int = 0

    def network_steps(self) -> int:
        return self.steps + 2 * self.pairs  # each pair runs twice, each way once

    def estimate_bytes(self) -> int:
        pairs = self.pairs * self.batch * PAIR_ROW  # the pairs' images, kept, and A's logit differences
        return _estimate(self.width, 2 * self.batch, 1, 20) + pairs

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        pair = None if self.pair in PAIRS else (
            f"the pair of batches is {self.pair!r}; it must be one of {', '.join(PAIRS)}")  # fmt: skip
        return _first(self, *_trainer(self), pair, range_check(self.pairs, 1, MAX_PAIRS, "the number of pairs"))


def twice_momentum(momentum: float) -> float:
    r"""The momentum m′ whose two updates with the same batch statistics make one of ``momentum``
    m: :math:`(1 - m')^2 = 1 - m`, so :math:`m' = 1 - \sqrt{1 - m}` — torch's layer under
    checkpointing updates twice per step (pytorch#96136)."""
    return 1 - math.sqrt(1 - momentum)


CHECKPOINT_VARIANTS = (
    "torch", "torch-reentrant", "torch-non-reentrant", "torch-fix",
    "bnviz", "bnviz-reentrant", "bnviz-non-reentrant",
)  # fmt: skip
CHECKPOINT_REFERENCE = {v: v.split("-")[0] for v in CHECKPOINT_VARIANTS}  # the unchecked network of the same layer


@dataclass(frozen=True)
class CheckpointConfig:
    """Section 6: ``Linear → BN → ReLU`` ×3 with torch's ``nn.BatchNorm1d`` and with bnviz's,
    each unchecked and with every hidden block under ``torch.utils.checkpoint`` (reentrant and
    non-reentrant), plus torch's under non-reentrant checkpointing with the momentum
    ``twice_momentum(momentum)`` (``torch-fix``); all from the same weights on the same
    minibatches for ``steps`` SGD steps."""

    steps: int = 50
    momentum: float = 0.1
    lr: float = 0.1
    batch: int = 60
    width: int = 100
    seed: int = 0

    def archs(self) -> dict[str, Arch]:
        out = {}
        for v in CHECKPOINT_VARIANTS:
            norm, _, mode = v.partition("-")
            m = twice_momentum(self.momentum) if mode == "fix" else self.momentum
            ck = "non-reentrant" if mode == "fix" else mode or "none"
            out[v] = _relu(self.width, momentum=m, norm=norm, checkpoint=ck)
        return out

    def network_steps(self) -> int:
        return 2 * len(CHECKPOINT_VARIANTS) * self.steps  # a checkpointed step runs the forward twice

    def estimate_bytes(self) -> int:
        return _estimate(self.width, self.batch, len(CHECKPOINT_VARIANTS), 40, rows=0) + dynamo_import_bytes()

    def refusal(self) -> str | None:
        """Why this section is not run (a value out of range, or too much work), or None — checked
        before anything is allocated. The message names the value given and the range allowed."""
        return _first(self, *_trainer(self), _number(self.momentum, 0, 1, "the momentum", open_low=True))


MB = 2**20
PER_ROW_VALUE = 12  # per hidden value of a pass over whole splits (each batch norm's input: float32, a float64 copy)
PAIR_ROW = 8 * PIXELS + 4 * CLASSES + 16  # section 5, per image of A: A's and B's pixels, its logit differences
DYNAMO_IMPORT_BYTES = 80 * MB  # torch.utils.checkpoint's first call imports torch._dynamo (measured 71 MB)


def dynamo_import_bytes() -> int:
    """What the first checkpointed backward of a process adds, once: torch's reentrant
    checkpoint imports ``torch._dynamo`` (and sympy with it: 823 modules, measured 71 MB) —
    ``DYNAMO_IMPORT_BYTES`` while it is not imported yet, 0 after."""
    return 0 if "torch._dynamo" in sys.modules else DYNAMO_IMPORT_BYTES


def _estimate(width: int, batch: int, networks: int, points: int, rows: int = TRAIN_ROWS) -> int:
    """``mlp.estimate`` (the networks alive together, one minibatch's graph, the test
    split's evaluation, the report's points) plus passes over ``rows`` rows with every batch
    norm's input kept (the exact statistics over the training split as one batch, the layer
    inputs measured). Fitted on ``measure_peak`` after a warm-up, as the server runs it
    (measured 3.2–7.3 MB at the defaults, up to 36 MB at the caps), and rounded up;
    tests/explorer/eval_gap/test_engine.py holds it above the measured peak."""
    return mlp.estimate(width, batch, networks, points) + PER_ROW_VALUE * rows * width * DEPTH


AnyConfig = BatchesConfig | LagConfig | DropoutConfig | AccumulationConfig | PassesConfig | CheckpointConfig


def _number(value: Any, lo: float, hi: float, what: str, open_low: bool = False) -> str | None:
    """A real number in [lo, hi] (or (lo, hi] with ``open_low``), not a bool, finite."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (lo < value <= hi if open_low else lo <= value <= hi):
        low = f"above {lo:g}" if open_low else f"from {lo:g}"
        return f"{what} is {value!r}; it must be a number {low} {'and at most' if open_low else 'to'} {hi:g}"
    return None


def _lr(value: Any) -> str | None:
    return _number(value, 0, MAX_LR, "the learning rate", open_low=True)


def _evals(config: BatchesConfig | LagConfig) -> str | None:
    if config.evaluations() > MAX_EVALS + 1:
        least = math.ceil(config.steps / MAX_EVALS)
        return (f"evaluating every {config.eval_every} steps over {config.steps:,} steps is more than {MAX_EVALS} "
                f"evaluations; evaluate every {least} steps or more")  # fmt: skip
    return None


def _momenta(momenta: Any) -> list[str | None]:
    if not isinstance(momenta, tuple) or not 1 <= len(momenta) <= MAX_MOMENTA:
        given = len(momenta) if isinstance(momenta, tuple) else repr(momenta)
        return [f"{given} momenta were given; give 1 to {MAX_MOMENTA}"]
    checks = [_number(m, 0, 1, f"the momentum {k + 1}", open_low=True) for k, m in enumerate(momenta)]
    if not any(checks) and len(set(momenta)) != len(momenta):
        checks.append(f"the momenta {', '.join(f'{m:g}' for m in momenta)} repeat one; give each once")
    return checks


def _first(config: AnyConfig, *checks: str | None) -> str | None:
    """The first failed check, then the run's work (``mlp.work_refusal``); None when all pass."""
    return next((c for c in checks if c), None) or mlp.work_refusal(config)  # type: ignore[arg-type]


def _trainer(config: AnyConfig, batch: bool = True) -> tuple[str | None, ...]:
    """The checks every section shares: steps, width, seed(s), learning rate (and the batch size)."""
    seeds = (seeds_refusal(config.seeds) if hasattr(config, "seeds")
             else range_check(config.seed, 0, MAX_SEED, "the seed"))  # fmt: skip
    shared = (range_check(config.steps, 1, MAX_STEPS, "the number of steps"),
              range_check(config.width, MIN_WIDTH, MAX_WIDTH, "the width (units per hidden layer)"),
              seeds, _lr(config.lr))  # fmt: skip
    return (*shared, range_check(config.batch, mlp.MIN_BATCH, MAX_BATCH, "the batch size")) if batch else shared



STEPS = int_in(1, mlp.MAX_STEPS)


SEED = int_in(0, mlp.MAX_SEED)
SEED_LIST = whole_list(0, mlp.MAX_SEED, MAX_SEEDS)


def ONE_SEED(text: str) -> tuple[int, ...]:
    """A link's old single seed: that seed alone."""
    return (SEED(text),)


EVAL_GAP = {  # section: its URL, one QuerySpec per config of bnviz.explorer.engine
    "batches": QuerySpec[BatchesConfig](
        [Param("order_lr", "lr", float_in(1e-6, mlp.MAX_LR)), Param("order_steps", "steps", STEPS),
         Param("order_batch", "batch", int_in(2, MAX_BATCH)), Param("order_seed", "seeds", ONE_SEED, write=False),
         Param("order_seeds", "seeds", SEED_LIST)]
    ),
    "lag": QuerySpec[LagConfig](
        [Param("lag_momenta", "momenta", number_list(1e-6, 1.0, MAX_MOMENTA)),
         Param("lag_lr", "lr", float_in(1e-6, mlp.MAX_LR)), Param("lag_steps", "steps", STEPS),
         Param("lag_seed", "seeds", ONE_SEED, write=False), Param("lag_seeds", "seeds", SEED_LIST)]
    ),
    "dropout": QuerySpec[DropoutConfig](
        [Param("p", "p", float_in(1e-6, MAX_P)), Param("dropout_input", "placement",
         choice(DROPOUT_INPUTS)), Param("dropout_steps", "steps", STEPS),
         Param("dropout_seed", "seeds", ONE_SEED, write=False), Param("dropout_seeds", "seeds", SEED_LIST)]
    ),
    "accumulation": QuerySpec[AccumulationConfig](
        [Param("micro", "micro", int_in(1, MAX_MICRO)), Param("micro_batch", "micro_batch", int_in(2, 128)),
         Param("accum_momentum", "momentum", float_in(1e-6, 1.0)), Param("accum_steps", "steps", STEPS)]
    ),
    "passes": QuerySpec[PassesConfig](
        [Param("pair", "pair", choice(PAIRS)), Param("pairs", "pairs", int_in(1, MAX_PAIRS)),
         Param("passes_steps", "steps", STEPS)]
    ),
    "checkpoint": QuerySpec[CheckpointConfig](
        [Param("ckpt_steps", "steps", STEPS), Param("ckpt_momentum", "momentum", float_in(1e-6, 1.0))]
    ),
}  # fmt: skip
