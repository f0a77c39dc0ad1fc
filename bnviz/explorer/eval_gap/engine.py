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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bnviz.explorer import mlp
from bnviz.explorer.contract import check_stop, ignore, never
from bnviz.explorer.digits import Digits, load_digits
from bnviz.explorer.eval_gap.measure import (
    LIVE,
    ShadowStats,
    Stats,
    _avg,
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

# --- 1. non-i.i.d. batches -------------------------------------------------------------------------

ORDERS = ("sorted", "shuffled")  # the cause, then the fix


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
class BatchesReport:
    config: BatchesConfig
    orders: dict[str, OrderResult] = field(default_factory=dict)


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


def run_batches(config: BatchesConfig, stopped: Callable[[], bool] = never,
                progress: Callable[[float], None] = ignore) -> BatchesReport:  # fmt: skip
    """Section 1: train on sorted and on shuffled minibatches; measure both modes."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.network_steps(), stopped, progress)
    made = {"sorted": sorted_batches(data.train_y, config.batch),
            "shuffled": shuffled_batches(len(data.train_y), config.batch, config.seed)}  # fmt: skip
    results = {}
    for order in ORDERS:
        probe = _TrainModeProbe(data, made[order])
        schedule = Schedule(config.lr, config.steps, config.batch, config.seed, config.eval_every, order=order)
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
    ticker.finish()
    return BatchesReport(config, results)


# --- 2. running statistics that lag ----------------------------------------------------------------


@dataclass(frozen=True)
class LagReport:
    """``steps``: the checkpoints. ``accuracy[m][t]``: test accuracy at ``steps[t]`` with the
    running statistics of momentum ``m`` (in ``config.momenta`` order); ``exact[t]``: with the
    exact population statistics of that checkpoint's weights (PreciseBN). ``mean_error[m][t]`` and
    ``var_error[m][t]``: how far the running statistics are from the exact ones then (averaged
    over layers and live units: ``mean_error``/``var_error``).

    At the end, per layer (ratios to the population variance, averaged over live units):
    ``batch_var``/``biased_batch_var``, the mean over one epoch of shuffled minibatches of their
    unbiased / biased variances; ``ema_var[m]``, the running variance at momentum ``m``."""

    config: LagConfig
    steps: tuple[int, ...] = ()
    accuracy: dict[float, tuple[float, ...]] = field(default_factory=dict)
    exact: tuple[float, ...] = ()
    mean_error: dict[float, tuple[float, ...]] = field(default_factory=dict)
    var_error: dict[float, tuple[float, ...]] = field(default_factory=dict)
    batch_var: tuple[float, ...] = ()
    biased_batch_var: tuple[float, ...] = ()
    ema_var: dict[float, tuple[float, ...]] = field(default_factory=dict)

    def gap(self, momentum: float) -> tuple[float, ...]:
        """Exact minus running-statistics accuracy at each checkpoint."""
        return tuple(e - a for e, a in zip(self.exact, self.accuracy[momentum], strict=True))


class _LagProbe:
    """Section 2's probe: the shadows, and at each checkpoint every momentum's accuracy and the exact one."""

    def __init__(self, data: Digits, momenta: tuple[float, ...]) -> None:
        self.data, self.momenta = data, momenta
        self.rows: list[tuple[int, dict[float, float], float, dict[float, float], dict[float, float]]] = []
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
            acc, merr, verr = {}, {}, {}
            for m in self.momenta:
                s = self.shadows.stats(m)
                with holding(model, s):
                    acc[m] = eval_accuracy(model, d.test_x, d.test_y)
                merr[m], verr[m] = _mean(mean_error(s, pop)), _mean(var_error(s, pop))
        self.rows.append((step, acc, exact, merr, verr))


def run_lag(config: LagConfig, stopped: Callable[[], bool] = never,
            progress: Callable[[float], None] = ignore) -> LagReport:  # fmt: skip
    """Section 2: one training, its running averages at several momenta against PreciseBN."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.steps, stopped, progress)
    probe = _LagProbe(data, config.momenta)
    schedule = Schedule(config.lr, config.steps, config.batch, config.seed, config.eval_every)
    train_group({"bn": _relu(config.width)}, schedule, data, ticker, probe)
    assert probe.model is not None and probe.shadows is not None
    model, shadows = probe.model, probe.shadows
    with one_thread(), shadows.paused():
        pop = exact_stats(model, data.train_x)
        epoch = shuffled_batches(len(data.train_y), config.batch, config.seed)
        unbiased = batch_variances(model, data.train_x, epoch)
        n = config.batch
        biased = tuple(tuple(v * (n - 1) / n for v in layer) for layer in unbiased)
        ema_var = {m: var_ratio(shadows.stats(m), pop) for m in config.momenta}
    shadows.remove()
    ticker.finish()
    rows = probe.rows
    return LagReport(
        config=config,
        steps=tuple(r[0] for r in rows),
        accuracy={m: tuple(r[1][m] for r in rows) for m in config.momenta},
        exact=tuple(r[2] for r in rows),
        mean_error={m: tuple(r[3][m] for r in rows) for m in config.momenta},
        var_error={m: tuple(r[4][m] for r in rows) for m in config.momenta},
        batch_var=var_ratio(Stats(pop.mean, unbiased), pop),
        biased_batch_var=var_ratio(Stats(pop.mean, biased), pop),
        ema_var=ema_var,
    )


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
class DropoutReport:
    """``train_mode[v]``/``eval_mode[v]``: test accuracy of network ``v`` in training mode (dropout
    on; minibatches of ``config.batch`` of a seeded shuffle of the test split) and eval mode.
    ``exact_eval``: the ``before-bn`` network in eval mode after ``recompute_batch_norm_stats``
    with the model in eval mode (dropout off) over the training split (fix 2). ``layers``: one
    ``ShiftLayer`` per batch norm."""

    config: DropoutConfig
    train_mode: dict[str, float] = field(default_factory=dict)
    eval_mode: dict[str, float] = field(default_factory=dict)
    exact_eval: float = math.nan
    layers: tuple[ShiftLayer, ...] = ()


def _shift(real: Sequence[float], running: Sequence[float], units: list[int]) -> float:
    return _avg([max(real[j] / running[j], running[j] / real[j]) for j in units if running[j] > 0])


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
                predicted=_avg([float(formula[j]) for j in units]),
                simple=1 / (1 - p),
                c2_over_v=_avg([float(c[j] ** 2 / v[j]) for j in units]),
                isolated=_avg([float(draws[j] / vt[j]) for j in units_t]),
                isolated_predicted=_avg([float(formula_t[j]) for j in units_t]),
                centred=_avg([float(centred[j] / vt[j]) for j in units_t]),
                shift_exact=_shift(exact_real[k], exact.var[k], units),
                shift_head=_shift(head_real[k], head_running.var[k],
                                  [j for j in range(len(head_real[k])) if head_real[k][j] > LIVE]),
            ))  # fmt: skip
    return tuple(out)


def run_dropout(config: DropoutConfig, stopped: Callable[[], bool] = never,
                progress: Callable[[float], None] = ignore) -> DropoutReport:  # fmt: skip
    """Section 3: the three networks; the variance shift per layer; fix 2 on the first's weights."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.network_steps(), stopped, progress)
    probe = _Models()
    schedule = Schedule(config.lr, config.steps, config.batch, config.seed, config.steps)
    curves = train_group(config.archs(), schedule, data, ticker, probe)
    check_stop(stopped)
    with one_thread():
        test_batches = shuffled_batches(len(data.test_y), config.batch, config.seed)
        models = probe.models
        train_mode = {v: train_accuracy(models[v], data.test_x, data.test_y, test_batches) for v in DROPOUT_VARIANTS}
        model = models["before-bn"]
        with kept(model):
            model.eval()  # dropout off: the statistics eval mode will see (fix 2)
            exact = exact_stats(model, data.train_x)
        with holding(model, exact):
            exact_eval = eval_accuracy(model, data.test_x, data.test_y)
        layers = _shift_layers(model, models["head"], config.p, data, exact)
    ticker.finish()
    eval_mode = {v: curves[v].final_accuracy for v in DROPOUT_VARIANTS}
    return DropoutReport(config, train_mode, eval_mode, exact_eval, layers)


# --- running ---------------------------------------------------------------------------------------

AnyReport = BatchesReport | LagReport | DropoutReport | AccumulationReport | PassesReport | CheckpointReport

RUNS: dict[type, Callable[..., Any]] = {
    BatchesConfig: run_batches, LagConfig: run_lag, DropoutConfig: run_dropout,
    AccumulationConfig: run_accumulation, PassesConfig: run_passes, CheckpointConfig: run_checkpoint,
}  # fmt: skip
CONFIGS: dict[str, type] = dict(zip(SECTIONS, RUNS, strict=True))  # section name → its config class


def run(config: AnyConfig, stopped: Callable[[], bool] = never,
        progress: Callable[[float], None] = ignore) -> AnyReport:  # fmt: skip
    """Run the section ``config`` describes."""
    return RUNS[type(config)](config, stopped, progress)

