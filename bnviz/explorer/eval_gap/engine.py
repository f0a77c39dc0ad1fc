r"""Why a batch-norm network is worse in eval() than in train(): six causes, each with its fix, measured.

Every section trains (or runs) the multilayer perceptrons of the training page on scikit-learn's
digits — ``mlp.build``, trained in lockstep by ``mlp.train_group``, batch norm
``bnviz.BatchNorm1d`` unless a section compares torch's — and measures what its cause does:

1. ``BatchesConfig`` — non-i.i.d. batches: minibatches sorted by class against shuffled ones.
2. ``LagConfig`` — running statistics that lag the weights: eval accuracy with exponential moving
   averages (EMAs) at several momenta, carried side by side in one training (``ShadowStats``),
   against the exact population statistics (``bnviz.recompute_batch_norm_stats``, PreciseBN) at
   the same checkpoints (Wu & Johnson 2021, arXiv 2105.07576).
3. ``DropoutConfig`` — dropout right before batch norm: the variance shift (Li et al. 2019)
   against its prediction, the accuracy drop, and two fixes.
4. ``AccumulationConfig`` — gradient accumulation: k micro-batches of n are not one batch of k·n.
5. ``PassesConfig`` — two forward passes (real and fake batches, or two views) against one
   concatenated forward.
6. ``CheckpointConfig`` — activation checkpointing: torch's batch norm counts each step twice,
   bnviz's once.

Each config has ``estimate_bytes()`` and is checked by ``config.refusal()`` before anything is
allocated; ``run(config, stopped, progress)`` returns a plain, picklable report of numbers.

Sections 1–3 run here, 4–6 in ``steps``; what they measure alike is in ``measure`` (with the
definitions they share: exact population statistics, live units, train-mode accuracy).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnviz.explorer import mlp
from bnviz.explorer.claims import ONE_IMAGE, SAME, Verdict, paired, verdict_word
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.digits import Digits, load_digits
from bnviz.explorer.eval_gap.measure import (
    LIVE,
    ShadowStats,
    Stats,
    _check,
    _mean,
    _Models,
    batch_variances,
    buffers,
    eval_accuracy,
    exact_stats,
    holding,
    kept,
    layer_inputs,
    mean_error,
    shuffled_batches,
    sorted_batches,
    train_accuracy,
    var_error,
    var_ratio,
)
from bnviz.explorer.eval_gap.steps import (
    AccumulationReport,
    CheckpointReport,
    PassesReport,
    run_accumulation,
    run_checkpoint,
    run_passes,
)
from bnviz.explorer.eval_gap.url import (
    DROPOUT_VARIANTS,
    SECTIONS,
    AccumulationConfig,
    AnyConfig,
    BatchesConfig,
    CheckpointConfig,
    DropoutConfig,
    LagConfig,
    PassesConfig,
    _relu,
)
from bnviz.explorer.mlp import (
    Curve,
    Schedule,
    Ticker,
    one_thread,
    train_group,
)
from bnviz.explorer.stored import Store

# --- 1. non-i.i.d. batches -------------------------------------------------------------------------

ORDERS = ("sorted", "shuffled")  # the cause, then the fix
COLLAPSE = 0.3  # a gap of this much (30 points) between train and eval mode is a collapse


@dataclass(frozen=True)
class OrderResult:
    """One order's training (``sorted`` or ``shuffled``) and what its final network does.

    ``curve``: eval-mode test accuracy over training (``mlp.Curve``); ``train_mode``: at the
    same steps, train-mode accuracy on the training split cut into minibatches the way training
    cut them. At the end: ``train_mode_other``, train-mode accuracy on the training split cut the
    other way (sorted ↔ shuffled); ``eval_train``, eval-mode accuracy on the training split;
    ``exact_test``, eval-mode test accuracy with the exact population statistics in the buffers.
    Per layer: ``mean_error``/``var_ratio`` of the running statistics against the exact ones, and
    ``batch_var_ratio``, the mean of the minibatches' unbiased variances (minibatches made this
    order's way) over the population variance."""

    curve: Curve
    train_mode: tuple[float, ...]
    train_mode_other: float
    eval_train: float
    exact_test: float
    mean_error: tuple[float, ...]
    var_ratio: tuple[float, ...]
    batch_var_ratio: tuple[float, ...]

    @property
    def eval_test(self) -> float:
        return self.curve.final_accuracy

    @property
    def train_mode_final(self) -> float:
        return self.train_mode[-1]


@dataclass(frozen=True)
class BatchesRun:
    """One seed of section 1: each order's result."""

    seed: int
    orders: dict[str, OrderResult] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchesReport:
    """Section 1 over the seeds: ``runs[k]`` is ``config.seeds[k]``'s."""

    config: BatchesConfig
    runs: tuple[BatchesRun, ...] = ()

    def collapse(self) -> Verdict:
        """"Sorted minibatches: train mode fine, eval mode collapses": train-mode minus eval-mode
        test accuracy, seed by seed, beyond ``COLLAPSE``."""
        s = [r.orders["sorted"] for r in self.runs]
        return Verdict(tuple(o.train_mode_final - o.eval_test for o in s), COLLAPSE)

    def shuffled_gap(self) -> tuple[float, ...]:
        """Shuffled minibatches: train-mode minus eval-mode test accuracy, seed by seed."""
        return tuple(r.orders["shuffled"].train_mode_final - r.orders["shuffled"].eval_test for r in self.runs)

    @property
    def verdict(self) -> str:
        return f"eval collapses with sorted minibatches: {verdict_word(self.collapse())}"


class _TrainModeProbe:
    """Section 1's probe: train-mode accuracy on the training split, cut like training's minibatches."""

    def __init__(self, data: Digits, batches: list[Tensor]) -> None:
        self.data, self.batches = data, batches
        self.models: dict[str, nn.Sequential] = {}
        self.accuracy: list[float] = []

    def attach(self, name: str, model: nn.Sequential) -> None:
        self.models[name] = model

    def at(self, name: str, model: nn.Sequential, step: int) -> None:
        self.accuracy.append(train_accuracy(model, self.data.train_x, self.data.train_y, self.batches))


def _batches_seed(config: BatchesConfig, seed: int, data: Digits, ticker: Ticker) -> BatchesRun:
    """Section 1, one seed: train on sorted and on shuffled minibatches; measure both modes."""
    made = {"sorted": sorted_batches(data.train_y, config.batch),
            "shuffled": shuffled_batches(len(data.train_y), config.batch, seed)}  # fmt: skip
    results = {}
    for order in ORDERS:
        probe = _TrainModeProbe(data, made[order])
        schedule = Schedule(config.lr, config.steps, config.batch, seed, config.eval_every, order=order)
        curve = train_group({"bn": _relu(config.width)}, schedule, data, ticker, probe)["bn"]
        model = probe.models["bn"]
        with one_thread():
            other = made["shuffled" if order == "sorted" else "sorted"]
            pop = exact_stats(model, data.train_x)
            running = buffers(model)
            with holding(model, pop):
                exact_test = eval_accuracy(model, data.test_x, data.test_y)
            batch_vars = batch_variances(model, data.train_x, made[order])
            results[order] = OrderResult(
                curve=curve,
                train_mode=tuple(probe.accuracy),
                train_mode_other=train_accuracy(model, data.train_x, data.train_y, other),
                eval_train=eval_accuracy(model, data.train_x, data.train_y),
                exact_test=exact_test,
                mean_error=mean_error(running, pop),
                var_ratio=var_ratio(running, pop),
                batch_var_ratio=var_ratio(Stats(pop.mean, batch_vars), pop),
            )
    return BatchesRun(seed, results)


def run_batches(config: BatchesConfig, stopped: Stopped = never, progress: Progress = ignore) -> BatchesReport:
    """Section 1, every seed."""
    return BatchesReport(config, _over_seeds(config, _batches_seed, stopped, progress))


def _over_seeds(config: Any, one_seed: Callable[..., Any], stopped: Stopped, progress: Progress) -> tuple:
    """``one_seed(config, seed, data, ticker)`` for each of the config's seeds, one ticker for all."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.network_steps(), stopped, progress)
    runs = tuple(one_seed(config, seed, data, ticker) for seed in config.seeds)
    ticker.finish()
    return runs


# --- 2. running statistics that lag ----------------------------------------------------------------


@dataclass(frozen=True)
class LagRun:
    """One seed of section 2. ``steps``: the checkpoints. ``accuracy[m][t]``: test accuracy at
    ``steps[t]`` with the running statistics of momentum ``m`` (in ``config.momenta`` order);
    ``unbiased[m][t]``: with the same running statistics once the initial buffers' share is taken
    out (``unbias``); ``exact[t]``: with the exact population statistics of that checkpoint's
    weights (PreciseBN). ``mean_error[m][t]`` and ``var_error[m][t]``: how far the running
    statistics are from the exact ones then (averaged over layers and live units).

    At the end, per layer (ratios to the population variance, averaged over live units):
    ``batch_var``/``biased_batch_var``, the mean over one epoch of shuffled minibatches of their
    unbiased / biased variances; ``ema_var[m]``, the running variance at momentum ``m``."""

    seed: int
    steps: tuple[int, ...] = ()
    accuracy: dict[float, tuple[float, ...]] = field(default_factory=dict)
    exact: tuple[float, ...] = ()
    mean_error: dict[float, tuple[float, ...]] = field(default_factory=dict)
    var_error: dict[float, tuple[float, ...]] = field(default_factory=dict)
    batch_var: tuple[float, ...] = ()
    biased_batch_var: tuple[float, ...] = ()
    ema_var: dict[float, tuple[float, ...]] = field(default_factory=dict)
    unbiased: dict[float, tuple[float, ...]] = field(default_factory=dict)

    def gap(self, momentum: float) -> tuple[float, ...]:
        """Exact minus running-statistics accuracy at each checkpoint."""
        return tuple(e - a for e, a in zip(self.exact, self.accuracy[momentum], strict=True))

    def unbiased_gap(self, momentum: float) -> tuple[float, ...]:
        """Exact minus accuracy with the initial buffers' share taken out, at each checkpoint."""
        return tuple(e - a for e, a in zip(self.exact, self.unbiased[momentum], strict=True))


@dataclass(frozen=True)
class LagReport:
    """Section 2 over the seeds: ``runs[k]`` is ``config.seeds[k]``'s."""

    config: LagConfig
    runs: tuple[LagRun, ...] = ()

    def lags(self, momentum: float) -> Verdict:
        """"Momentum m lags": the largest shortfall against the exact statistics after step 0,
        seed by seed, beyond ``SAME``."""
        return Verdict(tuple(max((g for s, g in zip(r.steps, r.gap(momentum), strict=True) if s > 0),
                                 default=math.nan) for r in self.runs), SAME)  # fmt: skip

    def lags_unbiased(self, momentum: float) -> Verdict:
        """The same once the initial buffers' share is taken out of the running statistics."""
        return Verdict(tuple(max((g for s, g in zip(r.steps, r.unbiased_gap(momentum), strict=True) if s > 0),
                                 default=math.nan) for r in self.runs), SAME)  # fmt: skip

    @property
    def verdict(self) -> str:
        m = min(self.config.momenta)
        return f"momentum {m:g} lags: {verdict_word(self.lags(m))}"


def unbias(stats: Stats, momentum: float, updates: int) -> Stats:
    r"""Running statistics with the initial buffers' share taken out. After t updates at momentum
    m from the initial values (mean 0, variance 1) the running mean is
    :math:`(1 - m)^t \cdot 0 + (1 - (1 - m)^t)\,ar\mu` — :math:`ar\mu` the average of the batch
    statistics it has seen — so :math:`ar\mu = \hat\mu / (1 - (1-m)^t)` and
    :math:`ar\sigma^2 = (\hat\sigma^2 - (1 - m)^t) / (1 - (1-m)^t)` (the same correction as
    Adam's first step). Unchanged at t = 0."""
    left = (1 - momentum) ** updates
    if updates == 0 or left >= 1:
        return stats
    return Stats(tuple(tuple(v / (1 - left) for v in layer) for layer in stats.mean),
                 tuple(tuple(max((v - left) / (1 - left), 0.0) for v in layer) for layer in stats.var))  # fmt: skip


class _LagProbe:
    """Section 2's probe: the shadows, and at each checkpoint every momentum's accuracy and the exact one."""

    def __init__(self, data: Digits, momenta: tuple[float, ...]) -> None:
        self.data, self.momenta = data, momenta
        self.rows: list[tuple[int, dict[float, float], float, dict[float, float], dict[float, float],
                              dict[float, float]]] = []  # fmt: skip
        self.shadows: ShadowStats | None = None
        self.model: nn.Sequential | None = None

    def attach(self, name: str, model: nn.Sequential) -> None:
        self.model, self.shadows = model, ShadowStats(model, self.momenta)

    def at(self, name: str, model: nn.Sequential, step: int) -> None:
        assert self.shadows is not None
        d = self.data
        with self.shadows.paused():
            pop = exact_stats(model, d.train_x)
            with holding(model, pop):
                exact = eval_accuracy(model, d.test_x, d.test_y)
            acc, merr, verr, unbiased = {}, {}, {}, {}
            for m in self.momenta:
                s = self.shadows.stats(m)
                with holding(model, s):
                    acc[m] = eval_accuracy(model, d.test_x, d.test_y)
                with holding(model, unbias(s, m, step)):
                    unbiased[m] = eval_accuracy(model, d.test_x, d.test_y)
                merr[m], verr[m] = _mean(mean_error(s, pop)), _mean(var_error(s, pop))
        self.rows.append((step, acc, exact, merr, verr, unbiased))


def _lag_seed(config: LagConfig, seed: int, data: Digits, ticker: Ticker) -> LagRun:
    """Section 2, one seed: one training, its running averages at several momenta against PreciseBN."""
    probe = _LagProbe(data, config.momenta)
    schedule = Schedule(config.lr, config.steps, config.batch, seed, config.eval_every)
    train_group({"bn": _relu(config.width)}, schedule, data, ticker, probe)
    assert probe.model is not None and probe.shadows is not None
    model, shadows = probe.model, probe.shadows
    with one_thread(), shadows.paused():
        pop = exact_stats(model, data.train_x)
        epoch = shuffled_batches(len(data.train_y), config.batch, seed)
        unbiased = batch_variances(model, data.train_x, epoch)
        n = config.batch
        biased = tuple(tuple(v * (n - 1) / n for v in layer) for layer in unbiased)
        ema_var = {m: var_ratio(shadows.stats(m), pop) for m in config.momenta}
    shadows.remove()
    rows = probe.rows
    return LagRun(
        seed=seed,
        steps=tuple(r[0] for r in rows),
        accuracy={m: tuple(r[1][m] for r in rows) for m in config.momenta},
        exact=tuple(r[2] for r in rows),
        mean_error={m: tuple(r[3][m] for r in rows) for m in config.momenta},
        var_error={m: tuple(r[4][m] for r in rows) for m in config.momenta},
        batch_var=var_ratio(Stats(pop.mean, unbiased), pop),
        biased_batch_var=var_ratio(Stats(pop.mean, biased), pop),
        ema_var=ema_var,
        unbiased={m: tuple(r[5][m] for r in rows) for m in config.momenta},
    )


def run_lag(config: LagConfig, stopped: Stopped = never, progress: Progress = ignore) -> LagReport:
    """Section 2, every seed."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.steps * len(config.seeds), stopped, progress)
    runs = tuple(_lag_seed(config, seed, data, ticker) for seed in config.seeds)
    ticker.finish()
    return LagReport(config, runs)


# --- 3. dropout before batch norm ------------------------------------------------------------------


@dataclass(frozen=True)
class ShiftLayer:
    r"""One batch norm of the ``before-bn`` network, its dropout's input in eval mode having per
    unit a mean c and a variance v. Li et al.'s variance shift of unit j is
    :math:`\max(\sigma^2_{real}/\sigma^2_{run}, \sigma^2_{run}/\sigma^2_{real})`, with
    :math:`\sigma^2_{real}` the variance of the layer's input in eval mode over the test split and
    :math:`\sigma^2_{run}` the running variance. Dropout (keep with probability 1 − p, scale
    1/(1 − p)) of an input of mean c and variance v has, in training,

    .. math::
        \mathrm{E}[d] = c, \quad \mathrm{E}[d^2] = \frac{v + c^2}{1 - p}, \quad
        \mathrm{Var}[d] = \frac{v + c^2}{1 - p} - c^2, \quad
        \frac{\mathrm{Var}[d]}{v} = \frac{1}{1 - p} + \frac{p}{1 - p}\,\frac{c^2}{v},

    which is 1/(1 − p) only for a zero-mean input. Averages are over the live units:

    - ``shift``: the network's shift, running vs real (test split); ``predicted``: the formula
      with c and v of that layer's input over the test split; ``simple``: 1/(1 − p);
      ``c2_over_v``: the mean of c²/v.
    - ``isolated``/``isolated_predicted``: the dropout alone, on the same inputs — its training
      variance over ``ISOLATED_DRAWS`` masks of the training split's eval-mode inputs, over their
      variance — and the formula for them; ``centred``: the same for the inputs minus their mean
      (the zero-mean case: 1/(1 − p) expected).
    - ``shift_exact``: the network's shift once ``recompute_batch_norm_stats`` has run with the
      model in eval mode (fix 2); ``shift_head``: the shift of the ``head`` network's same layer (fix 1).
    """

    units: int
    live: int
    shift: float
    predicted: float
    simple: float
    c2_over_v: float
    isolated: float
    isolated_predicted: float
    centred: float
    shift_exact: float
    shift_head: float


ISOLATED_DRAWS = 4


@dataclass(frozen=True)
class DropoutRun:
    """One seed of section 3. ``train_mode[v]``/``eval_mode[v]``: test accuracy of network ``v`` in
    training mode (dropout on; minibatches of ``config.batch`` of a seeded shuffle of the test
    split) and eval mode. ``exact_eval``: the ``before-bn`` network in eval mode after
    ``recompute_batch_norm_stats`` with the model in eval mode (dropout off) over the training split
    (fix 2). ``layers``: one ``ShiftLayer`` per batch norm."""

    seed: int
    train_mode: dict[str, float] = field(default_factory=dict)
    eval_mode: dict[str, float] = field(default_factory=dict)
    exact_eval: float = math.nan
    layers: tuple[ShiftLayer, ...] = ()


@dataclass(frozen=True)
class DropoutReport:
    """Section 3 over the seeds: ``runs[k]`` is ``config.seeds[k]``'s. Each claim a ``Verdict``
    over the seeds (margin: one test image)."""

    config: DropoutConfig
    runs: tuple[DropoutRun, ...] = ()

    def _eval(self, variant: str) -> tuple[float, ...]:
        return tuple(r.eval_mode[variant] for r in self.runs)

    def drop(self) -> Verdict:
        """"Dropout before batch norm does worse in eval mode than the same network without dropout"."""
        return paired(self._eval("none"), self._eval("before-bn"), ONE_IMAGE)

    def eval_above_train(self) -> Verdict:
        """"The dropout network scores higher in eval mode than in train mode" (the same network)."""
        return paired(self._eval("before-bn"), tuple(r.train_mode["before-bn"] for r in self.runs), ONE_IMAGE)

    def fix_head(self) -> Verdict:
        """Fix 1 against the broken network, in eval mode."""
        return paired(self._eval("head"), self._eval("before-bn"), ONE_IMAGE)

    def fix_exact(self) -> Verdict:
        """Fix 2 (the statistics recomputed with dropout off) against the broken network, in eval mode."""
        return paired(tuple(r.exact_eval for r in self.runs), self._eval("before-bn"), ONE_IMAGE)

    @property
    def verdict(self) -> str:
        return f"dropout before BN drops eval accuracy: {verdict_word(self.drop())}"


def _median(values: Sequence[float]) -> float:
    """The median over units (NaN for none): one near-dead unit, whose ratio can be 1e17, moves a
    mean over units anywhere; it does not move the median."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def _shift(real: Sequence[float], running: Sequence[float], units: list[int]) -> float:
    """Li et al.'s shift of a layer, the median over its live units of max(real/running, running/real)."""
    return _median([max(real[j] / running[j], running[j] / real[j]) for j in units if running[j] > 0])


@torch.no_grad()
def _shift_layers(model: nn.Sequential, head: nn.Sequential, p: float, data: Digits,
                  exact: Stats) -> tuple[ShiftLayer, ...]:  # fmt: skip
    """Section 3's per-layer measurements (see ``ShiftLayer``), ``exact`` the statistics of fix 2;
    buffers and modes put back."""
    with kept(model), kept(head):
        model.eval()
        head.eval()
        real_in = layer_inputs(model, data.test_x)  # eval mode: each BN's input = its dropout's input
        train_in = layer_inputs(model, data.train_x)
        head_real = [h.double().var(0).tolist() for h in layer_inputs(head, data.test_x)]
        running = buffers(model)
        head_running = buffers(head)
        with holding(model, exact):
            exact_real = [h.double().var(0).tolist() for h in layer_inputs(model, data.test_x)]
        drops = [m for m in model if isinstance(m, mlp.Dropout)]
        out = []
        for k, (h, ht, drop) in enumerate(zip(real_in, train_in, drops, strict=True)):
            h64 = h.double()
            c, v = h64.mean(0), h64.var(0)  # (N, C) -> (C,)
            units = [j for j in range(h.shape[1]) if float(v[j]) > LIVE]
            ct, vt = ht.double().mean(0), ht.double().var(0)
            units_t = [j for j in units if float(vt[j]) > LIVE]
            drop.train()
            draws = torch.cat([drop(ht) for _ in range(ISOLATED_DRAWS)]).double().var(0)  # (4·N, C) -> (C,)
            centred = torch.cat([drop(ht - ct.float()) for _ in range(ISOLATED_DRAWS)]).double().var(0)
            drop.eval()
            formula = 1 / (1 - p) + p / (1 - p) * c.square() / v
            formula_t = 1 / (1 - p) + p / (1 - p) * ct.square() / vt
            out.append(ShiftLayer(
                units=h.shape[1],
                live=len(units),
                shift=_shift(v.tolist(), running.var[k], units),
                predicted=_median([float(formula[j]) for j in units]),
                simple=1 / (1 - p),
                c2_over_v=_median([float(c[j] ** 2 / v[j]) for j in units]),
                isolated=_median([float(draws[j] / vt[j]) for j in units_t]),
                isolated_predicted=_median([float(formula_t[j]) for j in units_t]),
                centred=_median([float(centred[j] / vt[j]) for j in units_t]),
                shift_exact=_shift(exact_real[k], exact.var[k], units),
                shift_head=_shift(head_real[k], head_running.var[k],
                                  [j for j in range(len(head_real[k])) if head_real[k][j] > LIVE]),
            ))  # fmt: skip
    return tuple(out)


def _dropout_seed(config: DropoutConfig, seed: int, data: Digits, ticker: Ticker) -> DropoutRun:
    """Section 3, one seed: the three networks; the variance shift per layer; fix 2 on the first's weights."""
    probe = _Models()
    schedule = Schedule(config.lr, config.steps, config.batch, seed, config.steps)
    curves = train_group(config.archs(), schedule, data, ticker, probe)
    check_stop(ticker.stopped)
    with one_thread():
        test_batches = shuffled_batches(len(data.test_y), config.batch, seed)
        models = probe.models
        train_mode = {v: train_accuracy(models[v], data.test_x, data.test_y, test_batches) for v in DROPOUT_VARIANTS}
        model = models["before-bn"]
        with kept(model):
            model.eval()  # dropout off: the statistics eval mode will see (fix 2)
            exact = exact_stats(model, data.train_x)
        with holding(model, exact):
            exact_eval = eval_accuracy(model, data.test_x, data.test_y)
        layers = _shift_layers(model, models["head"], config.p, data, exact)
    eval_mode = {v: curves[v].final_accuracy for v in DROPOUT_VARIANTS}
    return DropoutRun(seed, train_mode, eval_mode, exact_eval, layers)


def run_dropout(config: DropoutConfig, stopped: Stopped = never, progress: Progress = ignore) -> DropoutReport:
    """Section 3, every seed."""
    return DropoutReport(config, _over_seeds(config, _dropout_seed, stopped, progress))


# --- running ---------------------------------------------------------------------------------------

AnyReport = BatchesReport | LagReport | DropoutReport | AccumulationReport | PassesReport | CheckpointReport

RUNS: dict[type, Callable[..., Any]] = {
    BatchesConfig: run_batches, LagConfig: run_lag, DropoutConfig: run_dropout,
    AccumulationConfig: run_accumulation, PassesConfig: run_passes, CheckpointConfig: run_checkpoint,
}  # fmt: skip
CONFIGS: dict[str, type] = dict(zip(SECTIONS, RUNS, strict=True))  # section name → its config class


REPORTS: dict[type, type] = {
    BatchesConfig: BatchesReport, LagConfig: LagReport, DropoutConfig: DropoutReport,
    AccumulationConfig: AccumulationReport, PassesConfig: PassesReport, CheckpointConfig: CheckpointReport,
}  # fmt: skip
STORE = Store(Path(__file__).with_name("stored.json"), lambda config: REPORTS[type(config)])
AHEAD: tuple[AnyConfig, ...] = tuple(cls() for cls in RUNS)  # every section's default view


def computed_ahead(config: AnyConfig) -> bool:
    """Whether ``config``'s report is one of those computed ahead (``STORE``)."""
    return STORE.has(config)


def run(config: AnyConfig, stopped: Stopped = never, progress: Progress = ignore, live: bool = False) -> AnyReport:
    """Run the section ``config`` describes: from the reports computed ahead when it is one of them
    (unless ``live``), else here."""
    stored = None if live else STORE.get(config)
    if stored is not None:
        _check(config)
        progress(1.0)
        return stored
    return RUNS[type(config)](config, stopped, progress)
