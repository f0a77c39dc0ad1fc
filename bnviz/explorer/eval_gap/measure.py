r"""What the ``/eval-gap`` sections measure alike: accuracy in either mode, minibatches sorted or
shuffled, the running statistics held and the exact population ones, their errors, layer inputs,
and running statistics at other momenta carried beside a training (``ShadowStats``).

Definitions used throughout. *Exact population statistics* of a layer: the mean and unbiased
variance of everything that reaches it when the whole training split (1,438 images) runs through
the network in eval mode with every batch norm before it holding its own exact statistics —
``recompute_batch_norm_stats(model, [train_x], mode="exact")``: the statistics the layer sees in
eval mode once every layer holds them. *Live units*: units whose population variance is above
``LIVE`` (a ReLU unit that never fires has none, and no ratio); averages over units are over live
units. *Train-mode accuracy*: the network in training mode — batch statistics, dropout on — over
minibatches of a given make-up, its buffers restored after.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

import bnviz
from bnviz.explorer.eval_gap.url import (
    AnyConfig,
)
from bnviz.explorer.mlp import (
    generator,
)

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




def _check(config: AnyConfig) -> None:
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
