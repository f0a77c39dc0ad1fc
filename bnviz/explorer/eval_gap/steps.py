r"""``/eval-gap`` sections 4–6: what batch norm sees, and updates, inside one training step —
k micro-batches against one batch (gradient accumulation), two forward passes against one
concatenated batch, and activation checkpointing (torch's layer counts each step twice, bnviz's
once). The shared measurements are in ``measure``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bnviz.explorer import mlp
from bnviz.explorer.contract import check_stop, ignore, never
from bnviz.explorer.digits import load_digits
from bnviz.explorer.eval_gap.measure import (
    SCATTER_IMAGES,
    TABLE_UNITS,
    VIEW_NOISE,
    Stats,
    _avg,
    _check,
    _Models,
    batch_norms,
    buffers,
    eval_accuracy,
    exact_stats,
    holding,
    kept,
    layer_inputs,
    live,
    mean_error,
    shuffled_batches,
    var_error,
)
from bnviz.explorer.eval_gap.url import (
    CHECKPOINT_REFERENCE,
    CHECKPOINT_VARIANTS,
    AccumulationConfig,
    CheckpointConfig,
    PassesConfig,
    _relu,
)
from bnviz.explorer.mlp import (
    Schedule,
    Ticker,
    build,
    generator,
    one_thread,
    train_group,
)

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

    @property
    def verdict(self) -> str:
        c = self.counted
        return f"k micro-batches count as k batches: {c.get('micro', 0):,} updates against {c.get('big', 0):,}"


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


def run_accumulation(config: AccumulationConfig, stopped: Callable[[], bool] = never,
                     progress: Callable[[float], None] = ignore) -> AccumulationReport:  # fmt: skip
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
    check_stop(stopped)
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

    @property
    def verdict(self) -> str:
        return f"two passes are not one: {100 * self.changed:.1f} % of A's predicted classes change"


def make_pair(x: Tensor, kind: str, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """(A, B) from the images ``x``: real and pixel-shuffled fakes, or two augmented views."""
    if kind == "real-fake":
        order = torch.argsort(torch.rand(x.shape, generator=g), dim=1)  # a permutation of pixels per image
        return x, torch.gather(x, 1, order)
    views = [(x + VIEW_NOISE * torch.randn(x.shape, generator=g)).clamp(0, 1) for _ in range(2)]
    return views[0], views[1]


def run_passes(config: PassesConfig, stopped: Callable[[], bool] = never,
               progress: Callable[[float], None] = ignore) -> PassesReport:  # fmt: skip
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
                check_stop(stopped)
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

    @property
    def verdict(self) -> str:
        steps = self.config.steps
        twice = all(n == 2 * steps for n in self.counted.get("torch-non-reentrant", ()))
        once = all(n == steps for n in self.counted.get("bnviz-non-reentrant", ()))
        return "torch counts each checkpointed step twice, bnviz once" if twice and once else \
            "the counts are not torch's twice and bnviz's once"


def _largest(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    return max(float((x.detach().double() - y.detach().double()).abs().max()) for x, y in zip(a, b, strict=True))


def run_checkpoint(config: CheckpointConfig, stopped: Callable[[], bool] = never,
                   progress: Callable[[float], None] = ignore) -> CheckpointReport:  # fmt: skip
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
