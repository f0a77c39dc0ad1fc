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

Definitions used throughout. *Exact population statistics* of a layer: the mean and unbiased
variance of everything that reaches it when the whole training split (1,438 images) runs through
the network in eval mode with every batch norm before it holding its own exact statistics —
``recompute_batch_norm_stats(model, [train_x], mode="exact")``: the statistics the layer sees in
eval mode once every layer holds them. *Live units*: units whose
population variance is above ``LIVE`` (a ReLU unit that never fires has none, and no ratio);
averages over units are over live units. *Train-mode accuracy*: the network in training mode —
batch statistics, dropout on — over minibatches of a given make-up, its buffers restored after.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

import bnviz
from bnviz.explorer import mlp
from bnviz.explorer.digits import Digits, load_digits
from bnviz.explorer.eval_gap.url import (
    CHECKPOINT_REFERENCE,
    CHECKPOINT_VARIANTS,
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
    build,
    generator,
    one_thread,
    train_group,
)
from bnviz.hosting.serve import Cancelled

LIVE = 1e-6  # a unit whose population variance is at most this is dead: left out of ratios
TABLE_UNITS = 4  # units of the first batch norm shown side by side in section 6
SCATTER_IMAGES = 20  # section 5: images whose logits the report keeps (× 10 classes)
VIEW_NOISE = 0.1  # section 5's views: Gaussian pixel noise of this std (pixels are in [0, 1])


# --- shared measurements ---------------------------------------------------------------------------


def batch_norms(model: nn.Module) -> list[nn.Module]:
    """The batch norms with running statistics, bnviz's and torch's, in forward order."""
    return [m for m in model.modules() if isinstance(m, bnviz.BatchNorm | _BatchNorm) and m.running_mean is not None]


@contextlib.contextmanager
def kept(model: nn.Module) -> Iterator[nn.Module]:
    """Every buffer's value and every module's mode put back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    saved = [(b, b.clone()) for b in model.buffers()]
    try:
        yield model
    finally:
        with torch.no_grad():
            for b, copy in saved:
                b.copy_(copy)
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def eval_accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    """Accuracy in eval mode (running statistics, dropout off), mode put back."""
    with kept(model):
        model.eval()
        return float((model(x).argmax(1) == y).double().mean())


@torch.no_grad()
def train_accuracy(model: nn.Module, x: Tensor, y: Tensor, batches: Sequence[Tensor]) -> float:
    """Accuracy in training mode over the minibatches ``batches`` (row indices of ``x``), each
    normalized with its own statistics; the buffers and modes put back."""
    correct = total = 0
    with kept(model):
        model.train()
        for idx in batches:
            correct += int((model(x[idx]).argmax(1) == y[idx]).sum())
            total += len(idx)
    return correct / max(total, 1)


def cut(order: Tensor, batch: int) -> list[Tensor]:
    """``order`` cut into full minibatches of ``batch`` (the rest dropped), as training cuts it."""
    return [order[s : s + batch] for s in range(0, len(order) - batch + 1, batch)]


def sorted_batches(y: Tensor, batch: int) -> list[Tensor]:
    """Minibatches of rows sorted by class (ties in data order): ``training``'s ``sorted`` order."""
    return cut(torch.argsort(y, stable=True), batch)


def shuffled_batches(n: int, batch: int, seed: int, stream: int = 5) -> list[Tensor]:
    """Minibatches of one seeded permutation of the ``n`` rows."""
    return cut(torch.randperm(n, generator=generator(seed, stream)), batch)


@dataclass(frozen=True)
class Stats:
    """Per batch norm, per unit: a mean and an unbiased variance (float64 numbers)."""

    mean: tuple[tuple[float, ...], ...]
    var: tuple[tuple[float, ...], ...]


def buffers(model: nn.Module) -> Stats:
    """The running statistics every batch norm holds now."""
    layers = batch_norms(model)
    return Stats(tuple(tuple(m.running_mean.double().tolist()) for m in layers),
                 tuple(tuple(m.running_var.double().tolist()) for m in layers))  # fmt: skip


def exact_stats(model: nn.Module, x: Tensor) -> Stats:
    """Exact population statistics over ``x``: ``recompute_batch_norm_stats`` in exact mode (each
    layer what it receives in eval mode once the ones before it hold theirs), every other module
    in its current mode; the model's buffers are put back afterwards."""
    with kept(model):
        bnviz.recompute_batch_norm_stats(model, [x], mode="exact")
        return buffers(model)


@contextlib.contextmanager
def holding(model: nn.Module, stats: Stats) -> Iterator[nn.Module]:
    """The model with ``stats`` in its batch norms' running buffers, put back afterwards."""
    with kept(model):
        with torch.no_grad():
            for m, mean, var in zip(batch_norms(model), stats.mean, stats.var, strict=True):
                m.running_mean.copy_(torch.tensor(mean, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.tensor(var, dtype=m.running_var.dtype))
        yield model


def live(pop: Stats, layer: int) -> list[int]:
    """The live units of ``layer``: population variance above ``LIVE``."""
    return [j for j, v in enumerate(pop.var[layer]) if v > LIVE]


def mean_error(stats: Stats, pop: Stats) -> tuple[float, ...]:
    r"""Per layer, how far ``stats``' means are from the population's, in its standard deviations:
    :math:`\frac{1}{|J|}\sum_{j \in J} |\mu_j - \hat\mu_j| / \hat\sigma_j` over the live units J."""
    out = []
    for k in range(len(pop.mean)):
        units = live(pop, k)
        out.append(_avg([abs(stats.mean[k][j] - pop.mean[k][j]) / math.sqrt(pop.var[k][j]) for j in units]))
    return tuple(out)


def var_ratio(stats: Stats, pop: Stats) -> tuple[float, ...]:
    r"""Per layer, :math:`\frac{1}{|J|}\sum_{j \in J} \sigma^2_j / \hat\sigma^2_j` over the live units J."""
    return tuple(_avg([stats.var[k][j] / pop.var[k][j] for j in live(pop, k)]) for k in range(len(pop.var)))


def var_error(stats: Stats, pop: Stats) -> tuple[float, ...]:
    r"""Per layer, :math:`\frac{1}{|J|}\sum_{j \in J} |\sigma^2_j / \hat\sigma^2_j - 1|` over the live units J."""
    return tuple(_avg([abs(stats.var[k][j] / pop.var[k][j] - 1) for j in live(pop, k)]) for k in range(len(pop.var)))


def _avg(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _mean(values: Sequence[float]) -> float:
    """The mean of the finite values (nan if none)."""
    return _avg([v for v in values if math.isfinite(v)])


@torch.no_grad()
def layer_inputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """What reaches each batch norm when ``model(x)`` runs in its current mode (the model's
    buffers are updated as that mode does: call it under ``kept`` in training mode)."""
    layers, seen = batch_norms(model), []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone())) for m in layers]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def batch_variances(model: nn.Module, x: Tensor, batches: Sequence[Tensor]) -> tuple[tuple[float, ...], ...]:
    """Per layer and unit: the mean over ``batches`` of each batch's *unbiased* variance of the
    layer's input, in training mode (what the running average averages); buffers put back."""
    sums: list[Tensor] | None = None
    with kept(model):
        model.train()
        for idx in batches:
            vs = [h.double().var(0) for h in layer_inputs(model, x[idx])]  # (batch, C) -> (C,)
            sums = vs if sums is None else [s + v for s, v in zip(sums, vs, strict=True)]
    assert sums is not None
    return tuple(tuple((s / len(batches)).tolist()) for s in sums)


class ShadowStats:
    """Running statistics at other momenta, carried beside a network's training.

    Momentum changes no weight (training mode normalizes with batch statistics), so one training
    can hold several running averages: for each batch norm of ``model`` and each momentum m, a
    ``bnviz.BatchNorm1d(C, momentum=m, affine=False)`` of its own is fed — by a forward pre-hook,
    under ``no_grad`` — the very input the layer gets in each training-mode forward. Its buffers
    are then exactly those the layer would hold with momentum m:

    .. math::
        \\hat\\mu \\leftarrow (1 - m)\\,\\hat\\mu + m\\,\\mu_B, \\qquad
        \\hat\\sigma^2 \\leftarrow (1 - m)\\,\\hat\\sigma^2 + m\\,\\tfrac{n}{n-1}\\sigma_B^2

    (``m`` None: the cumulative average). ``paused()`` stops the feeding while a measurement runs
    the model in training mode.
    """

    def __init__(self, model: nn.Module, momenta: Sequence[float | None]) -> None:
        self.momenta = tuple(momenta)
        self.layers = batch_norms(model)
        self.shadows = {m: [bnviz.BatchNorm1d(layer.num_features, momentum=m, affine=False) for layer in self.layers]
                        for m in self.momenta}  # fmt: skip
        self.active = True
        self.hooks = [layer.register_forward_pre_hook(self._feeder(k)) for k, layer in enumerate(self.layers)]

    def _feeder(self, k: int) -> Callable[[nn.Module, tuple], None]:
        def feed(module: nn.Module, args: tuple) -> None:
            if self.active and module.training:
                with torch.no_grad():
                    for m in self.momenta:
                        self.shadows[m][k](args[0].detach())

        return feed

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.active = False
        try:
            yield
        finally:
            self.active = True

    def stats(self, momentum: float | None) -> Stats:
        """The running statistics the layers would hold with ``momentum``."""
        return buffers(nn.Sequential(*self.shadows[momentum]))

    def counts(self, momentum: float | None) -> tuple[int, ...]:
        """``num_batches_tracked`` per layer, at ``momentum``."""
        return tuple(int(s.num_batches_tracked) for s in self.shadows[momentum])

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


class _Models:
    """A probe that keeps the built networks, by name, and measures nothing during training;
    with ``momenta``, it attaches ``ShadowStats`` at them to the (one) network."""

    def __init__(self, momenta: tuple[float, ...] = ()) -> None:
        self.models: dict[str, nn.Sequential] = {}
        self.momenta = momenta
        self.shadows: ShadowStats | None = None

    def attach(self, name: str, model: nn.Sequential) -> None:
        self.models[name] = model
        if self.momenta:
            self.shadows = ShadowStats(model, self.momenta)

    def at(self, name: str, model: nn.Sequential, step: int) -> None:
        return None


def _noop_progress(fraction: float) -> None:
    return None


def _never() -> bool:
    return False


def _check(config: AnyConfig) -> None:
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)


def _check_stop(stopped: Callable[[], bool]) -> None:
    if stopped():
        raise Cancelled("stopped: the view is no longer wanted")


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


def run_batches(config: BatchesConfig, stopped: Callable[[], bool] = _never,
                progress: Callable[[float], None] = _noop_progress) -> BatchesReport:  # fmt: skip
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


def run_lag(config: LagConfig, stopped: Callable[[], bool] = _never,
            progress: Callable[[float], None] = _noop_progress) -> LagReport:  # fmt: skip
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


def run_dropout(config: DropoutConfig, stopped: Callable[[], bool] = _never,
                progress: Callable[[float], None] = _noop_progress) -> DropoutReport:  # fmt: skip
    """Section 3: the three networks; the variance shift per layer; fix 2 on the first's weights."""
    _check(config)
    data = load_digits()
    ticker = Ticker(config.network_steps(), stopped, progress)
    probe = _Models()
    schedule = Schedule(config.lr, config.steps, config.batch, config.seed, config.steps)
    curves = train_group(config.archs(), schedule, data, ticker, probe)
    _check_stop(stopped)
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


# --- 4. micro-batches and gradient accumulation ----------------------------------------------------

ACCUMULATION_VARIANTS = ("big", "micro", "micro-adjusted")
GRADIENT_BATCHES = 10


def adjusted_momentum(momentum: float, k: int) -> float:
    r"""The momentum m′ whose k updates decay the old running value as one update of ``momentum``
    m does: :math:`(1 - m')^k = 1 - m`, so :math:`m' = 1 - (1 - m)^{1/k}`."""
    return 1 - (1 - momentum) ** (1 / k)


@dataclass(frozen=True)
class AccumulationReport:
    """Per variant (``ACCUMULATION_VARIANTS``): ``counted``, ``num_batches_tracked`` of the first
    batch norm; ``eval_running``/``eval_exact``, test accuracy with the running / exact population
    statistics; ``mean_error``/``var_error`` per layer, the running statistics against the exact
    ones of the same weights (``micro-adjusted`` shares ``micro``'s weights).

    ``mean_spread[size][k]``/``var_spread[size][k]``: at ``micro``'s final weights, over one epoch
    of shuffled minibatches of ``size`` (``micro_batch`` and ``batch``), the standard deviation of
    the minibatch means of layer k's input in units of the population σ, and of the unbiased
    minibatch variances in units of the population variance (averaged over live units).
    ``grad_difference``/``grad_cosine``: at the initial weights (where the gradient is large:
    at the end it is near 0 and a ratio to it means little), the mean over ``GRADIENT_BATCHES``
    batches of ``batch`` training images of ‖g_acc − g_big‖/‖g_big‖ and of the cosine between
    the accumulated gradient and the big batch's."""

    config: AccumulationConfig
    counted: dict[str, int] = field(default_factory=dict)
    eval_running: dict[str, float] = field(default_factory=dict)
    eval_exact: dict[str, float] = field(default_factory=dict)
    mean_error: dict[str, tuple[float, ...]] = field(default_factory=dict)
    var_error: dict[str, tuple[float, ...]] = field(default_factory=dict)
    mean_spread: dict[int, tuple[float, ...]] = field(default_factory=dict)
    var_spread: dict[int, tuple[float, ...]] = field(default_factory=dict)
    grad_difference: float = math.nan
    grad_cosine: float = math.nan


def _spread(model: nn.Module, x: Tensor, batches: list[Tensor], pop: Stats) -> tuple[tuple[float, ...], ...]:
    """Per layer: the standard deviation over ``batches`` of the batch means (in population σ)
    and of the unbiased batch variances (in population variance), averaged over live units."""
    means: list[list[Tensor]] = []
    variances: list[list[Tensor]] = []
    with kept(model), torch.no_grad():
        model.train()
        for idx in batches:
            inputs = layer_inputs(model, x[idx])
            means.append([h.double().mean(0) for h in inputs])  # (n, C) -> (C,)
            variances.append([h.double().var(0) for h in inputs])
    mean_sd, var_sd = [], []
    for k in range(len(pop.mean)):
        units = live(pop, k)
        m = torch.stack([row[k] for row in means]).std(0)  # (batches, C) -> (C,)
        v = torch.stack([row[k] for row in variances]).std(0)
        mean_sd.append(_avg([float(m[j]) / math.sqrt(pop.var[k][j]) for j in units]))
        var_sd.append(_avg([float(v[j]) / pop.var[k][j] for j in units]))
    return tuple(mean_sd), tuple(var_sd)


def _gradient(model: nn.Module, x: Tensor, y: Tensor, micro: int) -> Tensor:
    """The flattened gradient of one step (``mlp.step_loss``), buffers and grads put back."""
    params = list(model.parameters())
    with kept(model):
        model.train()
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        mlp.step_loss(model, x, y, micro=micro)
        g = torch.cat([p.grad.reshape(-1) for p in params]).double()
        for p, s in zip(params, saved, strict=True):
            p.grad = s
    return g


def run_accumulation(config: AccumulationConfig, stopped: Callable[[], bool] = _never,
                     progress: Callable[[float], None] = _noop_progress) -> AccumulationReport:  # fmt: skip
    """Section 4: one batch against accumulated micro-batches; spreads, buffers and gradients."""
    _check(config)
    c = config
    data = load_digits()
    ticker = Ticker(2 * c.steps, stopped, progress)
    arch = _relu(c.width, momentum=c.momentum)
    adjusted = adjusted_momentum(c.momentum, c.micro)
    big, micro = _Models(), _Models((adjusted,))
    train_group({"big": arch}, Schedule(c.lr, c.steps, c.batch, c.seed, c.steps), data, ticker, big)
    train_group({"micro": arch}, Schedule(c.lr, c.steps, c.batch, c.seed, c.steps, micro=c.micro), data, ticker, micro)
    _check_stop(stopped)
    assert micro.shadows is not None
    micro.shadows.remove()
    with one_thread():
        models = {"big": big.models["big"], "micro": micro.models["micro"]}
        pops = {v: exact_stats(m, data.train_x) for v, m in models.items()}
        runnings = {"big": buffers(models["big"]), "micro": buffers(models["micro"]),
                    "micro-adjusted": micro.shadows.stats(adjusted)}  # fmt: skip
        weights = {"big": "big", "micro": "micro", "micro-adjusted": "micro"}
        eval_running, eval_exact, merr, verr = {}, {}, {}, {}
        for v, w in weights.items():
            model, pop = models[w], pops[w]
            with holding(model, runnings[v]):
                eval_running[v] = eval_accuracy(model, data.test_x, data.test_y)
            with holding(model, pop):
                eval_exact[v] = eval_accuracy(model, data.test_x, data.test_y)
            merr[v], verr[v] = mean_error(runnings[v], pop), var_error(runnings[v], pop)
        counted = {"big": int(batch_norms(models["big"])[0].num_batches_tracked),
                   "micro": int(batch_norms(models["micro"])[0].num_batches_tracked),
                   "micro-adjusted": micro.shadows.counts(adjusted)[0]}  # fmt: skip
        spreads = {size: _spread(models["micro"], data.train_x,
                                 shuffled_batches(len(data.train_y), size, c.seed), pops["micro"])
                   for size in (c.micro_batch, c.batch)}  # fmt: skip
        start = build(arch, c.seed)  # the initial weights both trainings start from
        differences, cosines = [], []
        for idx in shuffled_batches(len(data.train_y), c.batch, c.seed, stream=6)[:GRADIENT_BATCHES]:
            x, y = data.train_x[idx], data.train_y[idx]
            g_big, g_acc = _gradient(start, x, y, 1), _gradient(start, x, y, c.micro)
            differences.append(float((g_acc - g_big).norm() / g_big.norm()))
            cosines.append(float(F.cosine_similarity(g_acc, g_big, dim=0)))
    ticker.finish()
    return AccumulationReport(
        config=c,
        counted=counted,
        eval_running=eval_running,
        eval_exact=eval_exact,
        mean_error=merr,
        var_error=verr,
        mean_spread={size: s[0] for size, s in spreads.items()},
        var_spread={size: s[1] for size, s in spreads.items()},
        grad_difference=_avg(differences),
        grad_cosine=_avg(cosines),
    )


# --- 5. two forward passes against one concatenated batch ------------------------------------------


@dataclass(frozen=True)
class PassesReport:
    """Outputs, over the ``pairs`` pairs, for A's images in training mode — separately against
    as the first half of the concatenated batch: ``max_logit_difference`` (largest |Δ| of a logit),
    ``mean_logit_difference`` (mean |Δ|) and ``logit_scale`` (mean |logit| of the separate pass),
    ``changed`` (fraction of A's images whose predicted class differs) and ``accuracy_separate``/
    ``accuracy_together`` (A's accuracy each way). Running statistics, starting from the trained
    network's: ``counted`` (``num_batches_tracked`` added by the pairs, per way),
    ``between_mean``/``between_var`` per layer (the two ways' running statistics against each
    other: ``mean_error`` and ``var_error`` with the concatenated way's as reference),
    ``real_mean_error`` per way and layer (against the exact statistics of the real training
    images), and ``eval_accuracy`` per way: test accuracy with those running statistics (and
    ``"trained"``: with the trained network's own). ``logits``: (separate, together) for every
    logit of the first pair's first ``SCATTER_IMAGES`` images of A, for a scatter plot."""

    config: PassesConfig
    max_logit_difference: float = math.nan
    mean_logit_difference: float = math.nan
    logit_scale: float = math.nan
    changed: float = math.nan
    accuracy_separate: float = math.nan
    accuracy_together: float = math.nan
    counted: dict[str, int] = field(default_factory=dict)
    between_mean: tuple[float, ...] = ()
    between_var: tuple[float, ...] = ()
    real_mean_error: dict[str, tuple[float, ...]] = field(default_factory=dict)
    eval_accuracy: dict[str, float] = field(default_factory=dict)
    logits: tuple[tuple[float, float], ...] = ()


def make_pair(x: Tensor, kind: str, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(A, B) from the images ``x``: real and pixel-shuffled fakes, or two augmented views."""
    if kind == "real-fake":
        order = torch.argsort(torch.rand(x.shape, generator=g), dim=1)  # a permutation of pixels per image
        return x, torch.gather(x, 1, order)
    views = [(x + VIEW_NOISE * torch.randn(x.shape, generator=g)).clamp(0, 1) for _ in range(2)]
    return views[0], views[1]


def run_passes(config: PassesConfig, stopped: Callable[[], bool] = _never,
               progress: Callable[[float], None] = _noop_progress) -> PassesReport:  # fmt: skip
    """Section 5: train, then the pairs both ways; outputs and buffers compared."""
    _check(config)
    c = config
    data = load_digits()
    ticker = Ticker(c.network_steps(), stopped, progress)
    probe = _Models()
    train_group({"bn": _relu(c.width)}, Schedule(c.lr, c.steps, c.batch, c.seed, c.steps), data, ticker, probe)
    model = probe.models["bn"]
    g = generator(c.seed, 7)
    with one_thread(), torch.no_grad():
        rows = [torch.randperm(len(data.train_y), generator=g)[: c.batch] for _ in range(c.pairs)]
        pairs = [(*make_pair(data.train_x[idx], c.pair, g), data.train_y[idx]) for idx in rows]
        diffs, scales, changed, right, points = [], [], [], [0, 0], []
        with kept(model):
            model.train()
            for a, b, y in pairs:
                _check_stop(stopped)
                alone = model(a)
                together = model(torch.cat([a, b]))[: len(a)]
                if not points:
                    points = list(zip(alone[:SCATTER_IMAGES].reshape(-1).tolist(),
                                      together[:SCATTER_IMAGES].reshape(-1).tolist(), strict=True))  # fmt: skip
                diffs.append((alone - together).abs())
                scales.append(alone.abs().mean())
                changed.append((alone.argmax(1) != together.argmax(1)).double().mean())
                right[0] += int((alone.argmax(1) == y).sum())
                right[1] += int((together.argmax(1) == y).sum())
        after: dict[str, Stats] = {}
        counted: dict[str, int] = {}
        for way in ("separate", "together"):
            with kept(model):
                model.train()
                start = int(batch_norms(model)[0].num_batches_tracked)
                for a, b, _ in pairs:
                    if way == "separate":
                        model(a)
                        model(b)
                    else:
                        model(torch.cat([a, b]))
                after[way] = buffers(model)
                counted[way] = int(batch_norms(model)[0].num_batches_tracked) - start
            ticker.step(c.pairs, 0, 0)
        real = exact_stats(model, data.train_x)
        eval_acc = {"trained": eval_accuracy(model, data.test_x, data.test_y)}
        for way, s in after.items():
            with holding(model, s):
                eval_acc[way] = eval_accuracy(model, data.test_x, data.test_y)
    ticker.finish()
    d = torch.cat(diffs)
    n = c.pairs * c.batch
    return PassesReport(
        config=c,
        max_logit_difference=float(d.max()),
        mean_logit_difference=float(d.mean()),
        logit_scale=float(torch.stack(scales).mean()),
        changed=float(torch.stack(changed).mean()),
        accuracy_separate=right[0] / n,
        accuracy_together=right[1] / n,
        counted=counted,
        between_mean=mean_error(after["separate"], after["together"]),
        between_var=var_error(after["separate"], after["together"]),
        real_mean_error={w: mean_error(s, real) for w, s in after.items()},
        eval_accuracy=eval_acc,
        logits=tuple(points),
    )


# --- 6. activation checkpointing -------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointReport:
    """Per variant (``CHECKPOINT_VARIANTS``): ``counted``, ``num_batches_tracked`` per layer;
    ``first_mean``/``first_var``, the first ``TABLE_UNITS`` units of the first batch norm's
    running statistics; ``mean_difference``/``var_difference``, the largest |Δ| over all layers
    and units of ``running_mean``/``running_var`` against the unchecked network of the same
    layer (``CHECKPOINT_REFERENCE``); ``weight_difference``, the largest |Δ| of any parameter
    against it; and ``eval_accuracy``, test accuracy in eval mode."""

    config: CheckpointConfig
    counted: dict[str, tuple[int, ...]] = field(default_factory=dict)
    first_mean: dict[str, tuple[float, ...]] = field(default_factory=dict)
    first_var: dict[str, tuple[float, ...]] = field(default_factory=dict)
    mean_difference: dict[str, float] = field(default_factory=dict)
    var_difference: dict[str, float] = field(default_factory=dict)
    weight_difference: dict[str, float] = field(default_factory=dict)
    eval_accuracy: dict[str, float] = field(default_factory=dict)


def _largest(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b, strict=True))


def run_checkpoint(config: CheckpointConfig, stopped: Callable[[], bool] = _never,
                   progress: Callable[[float], None] = _noop_progress) -> CheckpointReport:  # fmt: skip
    """Section 6: every variant trained in lockstep; buffers side by side."""
    _check(config)
    c = config
    data = load_digits()
    ticker = Ticker(c.network_steps() // 2, stopped, progress)
    probe = _Models()
    curves = train_group(c.archs(), Schedule(c.lr, c.steps, c.batch, c.seed, c.steps), data, ticker, probe)
    models = probe.models
    report: dict[str, dict[str, Any]] = {k: {} for k in ("counted", "first_mean", "first_var", "mean_difference",
                                                         "var_difference", "weight_difference")}  # fmt: skip
    for v, model in models.items():
        layers, ref = batch_norms(model), batch_norms(models[CHECKPOINT_REFERENCE[v]])
        report["counted"][v] = tuple(int(m.num_batches_tracked) for m in layers)
        report["first_mean"][v] = tuple(layers[0].running_mean[:TABLE_UNITS].double().tolist())
        report["first_var"][v] = tuple(layers[0].running_var[:TABLE_UNITS].double().tolist())
        report["mean_difference"][v] = _largest([m.running_mean for m in layers], [m.running_mean for m in ref])
        report["var_difference"][v] = _largest([m.running_var for m in layers], [m.running_var for m in ref])
        report["weight_difference"][v] = _largest(list(model.parameters()),
                                                  list(models[CHECKPOINT_REFERENCE[v]].parameters()))  # fmt: skip
    ticker.finish()
    return CheckpointReport(c, **report, eval_accuracy={v: curves[v].final_accuracy for v in CHECKPOINT_VARIANTS})


# --- memory ----------------------------------------------------------------------------------------


# --- refusals --------------------------------------------------------------------------------------


# --- running ---------------------------------------------------------------------------------------

AnyReport = BatchesReport | LagReport | DropoutReport | AccumulationReport | PassesReport | CheckpointReport

RUNS: dict[type, Callable[..., Any]] = {
    BatchesConfig: run_batches, LagConfig: run_lag, DropoutConfig: run_dropout,
    AccumulationConfig: run_accumulation, PassesConfig: run_passes, CheckpointConfig: run_checkpoint,
}  # fmt: skip
CONFIGS: dict[str, type] = dict(zip(SECTIONS, RUNS, strict=True))  # section name → its config class


def run(config: AnyConfig, stopped: Callable[[], bool] = _never,
        progress: Callable[[float], None] = _noop_progress) -> AnyReport:  # fmt: skip
    """Run the section ``config`` describes."""
    return RUNS[type(config)](config, stopped, progress)
