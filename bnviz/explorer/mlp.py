r"""The small trainer two pages share (``/training`` and ``/eval-gap``): multilayer perceptrons on
scikit-learn's digits — 64 pixels → ``DEPTH`` hidden layers of ``width`` units → 10 logits,
cross-entropy, plain SGD on minibatches — that differ only where batch norm sits (``Arch``), built
from one seeded draw of the linear layers (``build``), trained in lockstep on the same minibatches
(``train_group``), evaluated on the test split in eval mode, with the run's limits, memory estimate
and progress (``Ticker``). Percentiles are linear interpolation between order statistics: over the
sorted test values :math:`v_0 \le \dots \le v_{n-1}`,

.. math::
    p_q = v_{\lfloor r \rfloor} + (r - \lfloor r \rfloor)\,(v_{\lfloor r \rfloor + 1} - v_{\lfloor r \rfloor}),
    \qquad r = \tfrac{q}{100}\,(n - 1)

(``torch.quantile``'s default, numpy's too).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.utils.checkpoint
from torch import Tensor, nn
from torch.nn import functional as F

import bnviz
from bnviz.explorer.contract import check_stop
from bnviz.explorer.digits import CLASSES, PIXELS, Digits

DEPTH = 3  # hidden layers, as in Ioffe & Szegedy's Figure 1
ACTIVATIONS: dict[str, type[nn.Module]] = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
UNIT = 0  # the last hidden layer's unit whose activation input experiment 1 follows
PERCENTILES = (15, 50, 85)
PROBE_MULTIPLES = (0.5, 1.0, 2.0, 3.0, 4.0)  # the smoothness probe's step sizes, × the learning rate
PROGRESS_EVERY = 25  # steps between progress calls

# Caps, checked before anything is allocated.
MAX_STEPS = 5000
MIN_WIDTH, MAX_WIDTH = 2, 256
MIN_BATCH, MAX_BATCH = 2, 256  # batch norm in training needs 2 or more values per unit
MAX_LR = 100.0
MAX_SEED = 1_000_000
MAX_SEEDS = 10  # seeds of one experiment (/training, /eval-gap)
# Work of a whole run: SGD steps of all its networks together, and their multiply-adds (forward
# and backward ≈ 3 forwards). A step costs about 0.9 ms plus 1 ms per 3.5e10 multiply-adds here
# (measured, one thread; 1.0 ms at width 100 and batch 60, 4.3 ms at 256 and 256), so either cap
# is about a minute. The default sweep is 21,000 network-steps and 1.0e11 multiply-adds.
MAX_NETWORK_STEPS = 50_000
MAX_MACS = 2e12
STEP_SECONDS, MACS_PER_SECOND = 0.9e-3, 3.5e13  # the measured cost of one network's step, above


# --- networks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseSpec:
    """Santurkar et al.'s "noisy BatchNorm" noise (``kind="paper"``, their Appendix A.2.1 and
    Algorithm 1, with their values: n_μ = 0.5, n_σ = 1.25, r_μ = r_σ = 0.1), or this page's earlier,
    stronger additive Gaussian noise (``kind="additive"``: ``mu`` is n_μ, ``sigma`` n_σ). See ``Noise``."""

    kind: str = "paper"
    mu: float = 0.5
    sigma: float = 1.25
    r_mu: float = 0.1
    r_sigma: float = 0.1


@dataclass(frozen=True)
class Arch:
    """One network of a comparison: where batch norm sits, the activation, and noise (a
    ``NoiseSpec`` after each batch norm or where it would be, or None). The rest serve the eval-gap
    page: ``dropout`` p (torch's convention: drop with probability p, scale what is kept by
    1/(1 − p); 0: no dropout layer) right before every batch norm (``dropout_at="bn"``) or once,
    before the output layer (``"head"``); the batch norms' ``momentum``; whose batch norm
    (``norm``: ``"bnviz"`` or ``"torch"``); and ``checkpoint``: in training, each hidden block
    run under ``torch.utils.checkpoint`` (``"reentrant"`` or ``"non-reentrant"``) or not
    (``"none"``)."""

    width: int
    activation: str = "sigmoid"
    placement: str = "before"  # batch norm: "none", "before" (Linear → BN → act) or "after" (Linear → act → BN)
    noise: NoiseSpec | None = None
    init_std: float | None = 0.01  # None: torch's default initialisation
    dropout: float = 0.0
    dropout_at: str = "bn"
    momentum: float | None = 0.1
    norm: str = "bnviz"
    checkpoint: str = "none"


class Noise(nn.Module):
    r"""Noise after a batch norm (Santurkar et al.'s "noisy BatchNorm"), in training only.

    At every training step each unit :math:`j` gets a new noise distribution, its parameters drawn
    uniformly: :math:`\mu_j \sim U(-n_\mu, n_\mu)`, :math:`\sigma_j \sim U(1, n_\sigma)`. Then every
    sample's activation gets its own draw from it, i.i.d. over the batch —

    - ``kind="paper"`` (their Algorithm 1): :math:`a_{ij} \leftarrow s_{ij}\, a_{ij} + m_{ij}` with
      :math:`m_{ij} \sim U(\mu_j - r_\mu, \mu_j + r_\mu)` and :math:`s_{ij} \sim N(\sigma_j, r_\sigma^2)`
      (their :math:`N(\sigma, r_\sigma)` read with :math:`r_\sigma` as the standard deviation: the paper
      does not say). A zero-mean, unit-variance batch-norm output leaves with mean :math:`\approx
      \mu_j` and variance :math:`\approx \sigma_j^2`;
    - ``kind="additive"`` (stronger): :math:`a_{ij} \leftarrow a_{ij} + \varepsilon_{ij}`,
      :math:`\varepsilon_{ij} \sim N(\mu_j, \sigma_j^2)`: variance :math:`1 + \sigma_j^2`.

    Either way the distribution differs at every step: internal covariate shift put back on
    purpose. In eval mode it is the identity (as dropout is). Draws come from the module's own
    generator.
    """

    def __init__(self, spec: NoiseSpec, generator: torch.Generator) -> None:
        super().__init__()
        self.spec, self.generator = spec, generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        s, g, c = self.spec, self.generator, x.shape[1]
        mu = (torch.rand(c, generator=g) * 2 - 1) * s.mu  # (C,)
        sigma = 1 + torch.rand(c, generator=g) * (s.sigma - 1)  # (C,)
        if s.kind == "additive":
            return x + mu + sigma * torch.randn(x.shape, generator=g)  # (N, C) + (C,) + (N, C)
        m = mu + (torch.rand(x.shape, generator=g) * 2 - 1) * s.r_mu  # (N, C): U(μ − r_μ, μ + r_μ)
        scale = sigma + torch.randn(x.shape, generator=g) * s.r_sigma  # (N, C): N(σ, r_σ²)
        return scale * x + m

    def extra_repr(self) -> str:
        return f"{self.spec}"


class Dropout(nn.Module):
    r"""``torch.nn.Dropout(p)`` drawing its masks from its own generator (torch's draws from the
    global one, which other visitors' threads share). In training each value is kept with
    probability 1 − p and scaled by 1/(1 − p), else zeroed:

    .. math::
        y = \frac{m \, x}{1 - p}, \qquad m \sim \mathrm{Bernoulli}(1 - p)

    so :math:`\mathrm{E}[y] = \mathrm{E}[x]`; in eval mode it is the identity.
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability has to be from 0 up to (not including) 1, but got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator) >= self.p  # (N, C): True with probability 1 − p
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def generator(seed: int, stream: int) -> torch.Generator:
    """A generator of this run's own (the global RNG is shared with other visitors' threads)."""
    return torch.Generator().manual_seed(seed * 1009 + stream)


NORMS: dict[str, type[nn.Module]] = {"bnviz": bnviz.BatchNorm1d, "torch": nn.BatchNorm1d}


def build(arch: Arch, seed: int) -> nn.Sequential:
    """``Linear → [BN] → [noise] → act`` (placement ``before``), ``Linear → [noise] → act``
    (``none``) or ``Linear → act → BN → [noise]`` (``after``), three times, then ``Linear`` to
    the logits. Weights: N(0, init_std²) with zero biases, or torch's default U(±1/√fan_in) when
    ``init_std`` is None — drawn from ``seed`` alone, so every ``Arch`` of one width starts from
    the same linear weights, and every noisy one draws the same noise. With ``dropout`` p > 0, a
    ``Dropout`` right before each batch norm (or where it would be; ``dropout_at="bn"``), or one
    before the output ``Linear`` (``"head"``), every one of them drawing from one generator of
    ``seed``."""
    if arch.dropout > 0 and arch.checkpoint != "none":
        raise ValueError("dropout under checkpointing is not supported here: the recomputation would draw new masks")
    act = ACTIVATIONS[arch.activation]
    norm = NORMS[arch.norm]
    noise_gen, drop_gen = generator(seed, 2), generator(seed, 3)

    def noise() -> list[nn.Module]:
        return [Noise(arch.noise, noise_gen)] if arch.noise is not None else []

    def drop(at: str) -> list[nn.Module]:
        return [Dropout(arch.dropout, drop_gen)] if arch.dropout > 0 and arch.dropout_at == at else []

    layers: list[nn.Module] = []
    fan_in = PIXELS
    for _ in range(DEPTH):
        layers.append(nn.Linear(fan_in, arch.width))
        if arch.placement == "before":
            layers += [*drop("bn"), norm(arch.width, momentum=arch.momentum), *noise(), act()]
        elif arch.placement == "after":
            layers += [act(), *drop("bn"), norm(arch.width, momentum=arch.momentum), *noise()]
        else:
            layers += [*drop("bn"), *noise(), act()]
        fan_in = arch.width
    layers += [*drop("head"), nn.Linear(fan_in, CLASSES)]
    model = nn.Sequential(*layers)
    g = generator(seed, 0)
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                if arch.init_std is None:
                    bound = 1 / math.sqrt(m.in_features)
                    m.weight.uniform_(-bound, bound, generator=g)
                    m.bias.uniform_(-bound, bound, generator=g)
                else:
                    m.weight.normal_(0.0, arch.init_std, generator=g)
                    m.bias.zero_()
    return model


def hidden_blocks(model: nn.Sequential) -> list[nn.Sequential]:
    """The hidden layers' blocks — each from one ``Linear`` up to the next — and the output
    ``Linear`` last, as views sharing ``model``'s modules: ``model(x)`` is the blocks in turn."""
    starts = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    return [model[a:b] for a, b in itertools.pairwise([*starts, len(model)])]


def forward(model: nn.Sequential, x: Tensor, checkpoint: str = "none") -> Tensor:
    """``model(x)``; in training with ``checkpoint`` ``"reentrant"`` or ``"non-reentrant"``, each
    hidden block under ``torch.utils.checkpoint`` (its activations recomputed during backward),
    the output layer not. The input is made to require a gradient, so that the reentrant form
    recomputes the first block too (without it, that block's output needs no backward)."""
    if checkpoint == "none" or not model.training:
        return model(x)
    blocks = hidden_blocks(model)
    h = x.detach().requires_grad_()
    for block in blocks[:-1]:
        h = torch.utils.checkpoint.checkpoint(block, h, use_reentrant=checkpoint == "reentrant")
    return blocks[-1](h)


def last_activation(model: nn.Sequential) -> int:
    """Index of the last hidden activation: ``model[:i](x)`` is its input."""
    acts = tuple(ACTIVATIONS.values())
    return max(i for i, m in enumerate(model) if isinstance(m, acts))


def macs_per_sample(width: int) -> int:
    """Multiply-adds of one forward pass of one sample through the network."""
    return PIXELS * width + (DEPTH - 1) * width * width + width * CLASSES


# --- the one training loop -------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One network's training, measured at ``steps`` (0: the initial weights). ``loss`` is the
    minibatch loss of that SGD step (at step 0 the first minibatch's, before any update);
    ``test_accuracy`` and the percentiles ``p15, p50, p85`` of the last hidden layer's
    activation input (unit ``UNIT``) are over the test split in eval mode after that step;
    ``dead``: the share of the last hidden layer's units whose activation input is ≤ 0 on every
    test image (a ReLU that never fires; for a sigmoid, a unit that never reaches 0.5).
    ``probe_steps``/``smoothness``: the loss's range along the gradient (``loss_range``) at those
    steps, when probed; ``probe_losses`` the losses it is the range of, one row per probe."""

    steps: tuple[int, ...]
    loss: tuple[float, ...]
    test_accuracy: tuple[float, ...]
    p15: tuple[float, ...]
    p50: tuple[float, ...]
    p85: tuple[float, ...]
    probe_steps: tuple[int, ...] = ()
    smoothness: tuple[float, ...] = ()
    probe_losses: tuple[tuple[float, ...], ...] = ()
    dead: tuple[float, ...] = ()

    @property
    def final_accuracy(self) -> float:
        return self.test_accuracy[-1]

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def moved(self) -> float:
        """How far the median moved over training: max − min of ``p50`` over its finite values after
        step 0 (the initial weights' evaluation uses the initial buffers: not training's drift; nan if none)."""
        finite = [v for s, v in zip(self.steps, self.p50, strict=True) if s > 0 and math.isfinite(v)]
        return max(finite) - min(finite) if finite else math.nan

    @property
    def final_dead(self) -> float:
        """The share of the last hidden layer's units that never fire on the test split, at the end."""
        return self.dead[-1] if self.dead else math.nan


@dataclass(frozen=True)
class Schedule:
    """How one group of networks is trained: the same for each of them."""

    lr: float
    steps: int
    batch: int
    seed: int
    eval_every: int
    probes: int = 0  # points in training where the smoothness is probed (networks without noise)
    order: str = "shuffled"  # "shuffled": a fresh permutation each epoch; "sorted": by class (see minibatches)
    micro: int = 1  # gradient accumulation: each minibatch as this many micro-batches, one SGD step

    def eval_steps(self) -> list[int]:
        """0, every ``eval_every`` steps, and the last step."""
        return sorted({*range(0, self.steps + 1, max(self.eval_every, 1)), self.steps})

    def probe_steps(self) -> list[int]:
        """``probes`` steps spread evenly from the first to the last step of training."""
        if self.probes <= 0:
            return []
        if self.probes == 1:
            return [1]
        return sorted({1 + round(k * (self.steps - 1) / (self.probes - 1)) for k in range(self.probes)})


ORDERS = ("shuffled", "sorted")


def minibatches(n: int, batch: int, generator: torch.Generator, labels: Tensor | None = None) -> Iterator[Tensor]:
    """Row indices: a fresh permutation each epoch, cut into full minibatches (the rest dropped).
    With ``labels``: the rows sorted by class (ties in their order in the data), the same order
    every epoch — a class-sorted dataset read without shuffling (``DataLoader(shuffle=False)``):
    each minibatch holds one class, or two where the classes meet."""
    while True:
        order = torch.randperm(n, generator=generator) if labels is None else torch.argsort(labels, stable=True)
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


class Probe(Protocol):
    """What a page measures beyond test accuracy, during one group's training: ``attach`` once
    per network after it is built, ``at`` after each evaluation (the network in training mode;
    whatever the probe changes — modes, buffers — it puts back)."""

    def attach(self, name: str, model: nn.Sequential) -> None: ...

    def at(self, name: str, model: nn.Sequential, step: int) -> None: ...


def step_loss(model: nn.Sequential, x: Tensor, y: Tensor, checkpoint: str = "none", micro: int = 1) -> Tensor:
    r"""Forward (``forward``, with ``checkpoint``) and backward of one SGD step; returns the
    minibatch loss (detached when ``micro`` > 1). With ``micro`` = k > 1, gradient accumulation:
    the minibatch's k equal micro-batches one after another, each loss divided by k, the
    gradients summed —

    .. math::
        g = \sum_{j=1}^{k} \nabla \tfrac{1}{k} L(B_j),

    the big batch's gradient if nothing depended on the batch; batch norm does (each micro-batch
    is normalized with its own statistics, and counted as a batch)."""
    if micro == 1:
        loss = F.cross_entropy(forward(model, x, checkpoint), y)
        loss.backward()
        return loss
    total = torch.zeros(())
    for xc, yc in zip(x.chunk(micro), y.chunk(micro), strict=True):
        part = F.cross_entropy(forward(model, xc, checkpoint), yc) / micro
        part.backward()
        total += part.detach()
    return total


@torch.no_grad()
def evaluate(model: nn.Sequential, cut: int, data: Digits) -> tuple[float, tuple[float, float, float], float]:
    """Test accuracy, the percentiles of unit ``UNIT``'s activation input, and the share of the
    last hidden layer's units whose input is ≤ 0 on every test image, in eval mode."""
    model.eval()
    h = model[:cut](data.test_x)  # (n_test, width): the last activation's input
    logits = model[cut:](h)
    accuracy = float((logits.argmax(1) == data.test_y).double().mean())
    q = torch.quantile(h[:, UNIT].double(), torch.tensor(PERCENTILES, dtype=torch.float64) / 100)  # linear
    dead = float((h <= 0).all(0).double().mean())  # (n_test, width) -> (width,) -> share
    model.train()
    return accuracy, (float(q[0]), float(q[1]), float(q[2])), dead


@torch.no_grad()
def loss_range(model: nn.Module, x: Tensor, y: Tensor, etas: tuple[float, ...]) -> tuple[float, tuple[float, ...]]:
    r"""Santurkar et al.'s loss landscape: from the current weights :math:`w` along the current
    gradient :math:`g = \nabla L(w)` (in ``.grad``) of the minibatch ``(x, y)``,

    .. math::
        \mathrm{range} = \max_{\eta \in E} L(w - \eta g) - \min_{\eta \in E} L(w - \eta g)

    on the same minibatch, in training mode (batch statistics). A smooth loss changes little
    along its gradient. The weights, gradients and running statistics are restored afterwards.
    Returns the range and the losses ``L(w − η g)`` for each η; non-finite losses make it inf.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    weights = [p.detach().clone() for p in params]
    buffers = [b.clone() for b in model.buffers()]
    losses = []
    for eta in etas:
        for p, w in zip(params, weights, strict=True):
            torch.add(w, p.grad, alpha=-eta, out=p)
        losses.append(float(F.cross_entropy(model(x), y)))
    for p, w in zip(params, weights, strict=True):
        p.copy_(w)
    for b, saved in zip(model.buffers(), buffers, strict=True):
        b.copy_(saved)
    spread = max(losses) - min(losses) if all(map(math.isfinite, losses)) else math.inf
    return spread, tuple(losses)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Torch's intra-op threads set to 1 for the calling thread, and restored after. These
    networks are too small to gain from a second thread, and on a loaded 2-core machine OpenMP's
    waiting threads made experiment 1 take 35–60 s instead of 3–5 s (measured). The setting is
    the calling thread's own (OpenMP's and MKL's per-thread values): other visitors' threads keep
    theirs — but a thread that first touches torch while this runs starts with 1, since torch
    copies a process-wide value into each new thread (harmless here: one thread is what these
    small views want on a shared 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class Ticker:
    """Progress over all the networks of a run: ``progress(done / total)`` every few steps, and
    ``Cancelled`` as soon as ``stopped()`` says so."""

    def __init__(self, total: int, stopped: Callable[[], bool], progress: Callable[[float], None]) -> None:
        self.total, self.done, self.stopped, self.progress = max(total, 1), 0, stopped, progress

    def step(self, networks: int, step: int, last: int) -> None:
        check_stop(self.stopped)
        self.done += networks
        if step % PROGRESS_EVERY == 0 or step == last:
            self.progress(min(self.done / self.total, 1.0))

    def finish(self) -> None:
        self.progress(1.0)


def train_group(archs: dict[str, Arch], s: Schedule, data: Digits, ticker: Ticker,
                 probe: Probe | None = None) -> dict[str, Curve]:  # fmt: skip
    """Train each network of ``archs`` from the same initial weights on the same minibatches,
    one SGD step of each in turn; evaluate at ``s.eval_steps()`` (and call ``probe.at`` there),
    probe the smoothness of the networks without noise at ``s.probe_steps()``."""
    with one_thread():
        return lockstep(archs, s, data, ticker, probe)


def lockstep(archs: dict[str, Arch], s: Schedule, data: Digits, ticker: Ticker,
              probe: Probe | None = None) -> dict[str, Curve]:  # fmt: skip
    models = {name: build(arch, s.seed) for name, arch in archs.items()}
    if probe is not None:
        for name, m in models.items():
            probe.attach(name, m)
    params = {name: list(m.parameters()) for name, m in models.items()}
    cuts = {name: last_activation(m) for name, m in models.items()}
    etas = tuple(s.lr * k for k in PROBE_MULTIPLES)
    evals, probes = set(s.eval_steps()), set(s.probe_steps())
    rows: dict[str, dict[str, list]] = {name: {k: [] for k in ("steps", "loss", "acc", "q", "probe", "range",
                                                               "probe_losses", "dead")} for name in archs}  # fmt: skip

    def record(name: str, step: int) -> None:
        acc, q, dead = evaluate(models[name], cuts[name], data)
        r = rows[name]
        r["steps"].append(step)
        r["acc"].append(acc)
        r["q"].append(q)
        r["dead"].append(dead)
        if probe is not None:
            probe.at(name, models[name], step)

    labels = data.train_y if s.order == "sorted" else None
    batches = minibatches(len(data.train_y), s.batch, generator(s.seed, 1), labels)
    for name, m in models.items():
        if 0 in evals:  # the initial weights and running statistics; its loss is the first minibatch's
            record(name, 0)
        m.train()
    for step in range(1, s.steps + 1):
        idx = next(batches)
        x, y = data.train_x[idx], data.train_y[idx]
        for name, model in models.items():
            for p in params[name]:
                p.grad = None
            loss = step_loss(model, x, y, archs[name].checkpoint, s.micro)
            if step == 1 and 0 in evals:
                rows[name]["loss"].append(loss.item())
            if step in probes and archs[name].noise is None:
                spread, losses = loss_range(model, x, y, etas)
                rows[name]["probe"].append(step)
                rows[name]["range"].append(spread)
                rows[name]["probe_losses"].append(losses)
            with torch.no_grad():  # plain SGD: w ← w − lr · ∂L/∂w
                for p in params[name]:
                    p.add_(p.grad, alpha=-s.lr)
            if step in evals:
                rows[name]["loss"].append(loss.item())
                record(name, step)
        ticker.step(len(models), step, s.steps)
    return {name: curve_of(r) for name, r in rows.items()}


def curve_of(r: dict[str, list]) -> Curve:
    q = r["q"]
    return Curve(
        steps=tuple(r["steps"]),
        loss=tuple(r["loss"]),
        test_accuracy=tuple(r["acc"]),
        p15=tuple(v[0] for v in q),
        p50=tuple(v[1] for v in q),
        p85=tuple(v[2] for v in q),
        probe_steps=tuple(r["probe"]),
        smoothness=tuple(r["range"]),
        probe_losses=tuple(r["probe_losses"]),
        dead=tuple(r["dead"]),
    )


# --- limits and memory ----------------------------------------------------------------------------


class Workload(Protocol):
    """A run of the trainer, as the limits see it: its networks' steps together, batch and width."""

    batch: int
    width: int

    def network_steps(self) -> int: ...


def work_refusal(config: Workload) -> str | None:
    """Too much work for one view (all its networks' steps, or their multiply-adds), or None."""
    steps = config.network_steps()
    macs = 3 * steps * config.batch * macs_per_sample(config.width)
    if steps > MAX_NETWORK_STEPS:
        return (f"this run is {steps:,} training steps of all its networks together, over the limit of "
                f"{MAX_NETWORK_STEPS:,}; use fewer steps, seeds or learning rates")  # fmt: skip
    if macs > MAX_MACS:
        return (f"this run is {macs:.2e} multiply-adds, over the limit of {MAX_MACS:.0e}; use fewer steps, "
                f"seeds or learning rates, or a smaller width or batch")  # fmt: skip
    return None


def seconds_estimate(config: Workload) -> float:
    """About how long a run takes here, one thread and no other load: every network's steps at the
    cost measured above (``STEP_SECONDS`` each, plus their multiply-adds)."""
    steps = config.network_steps()
    return steps * (STEP_SECONDS + 3 * config.batch * macs_per_sample(config.width) / MACS_PER_SECOND)


def seeds_refusal(seeds: Any, most: int = MAX_SEEDS) -> str | None:
    """Why a tuple of seeds is refused (too few or many, one repeated, one out of range), or None."""
    if not isinstance(seeds, tuple) or not 1 <= len(seeds) <= most:
        return f"{len(seeds) if isinstance(seeds, tuple) else seeds!r} seeds were given; give 1 to {most}"
    if len(set(seeds)) != len(seeds):
        return f"the seeds {', '.join(map(str, seeds))} repeat one; give each once"
    return next((r for s in seeds if (r := range_check(s, 0, MAX_SEED, "a seed"))), None)


def range_check(value: Any, lo: float, hi: float, what: str, integer: bool = True) -> str | None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or isinstance(value, bool) or not lo <= value <= hi:
        kind = "a whole number" if integer else "a number"
        return f"{what} is {value!r}; it must be {kind} from {lo:g} to {hi:g}"
    return None


def lr_check(value: Any, what: str = "the learning rate") -> str | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 < value <= MAX_LR):
        return f"{what} is {value!r}; it must be above 0 and at most {MAX_LR:g}"
    return None


MB = 2**20
BASE_BYTES = 8 * MB  # any run: the data's copy (0.5 MB), the report's objects, the heap's own growth
PER_PARAMETER = 24  # per parameter of each network: weight and gradient, the probe's copies of both
PER_ACTIVATION = 32  # per hidden value of one minibatch (one network's graph at a time)
PER_EVAL_VALUE = 32  # per hidden value over the test split (one network's evaluation at a time)
PER_POINT = 400  # one evaluation of one network in the report: six numbers, as Python objects
TEST_ROWS = 359


def estimate(width: int, batch: int, networks: int, points: int) -> int:
    """The networks alive together (parameters), one network's minibatch graph or test-split
    evaluation at a time, and the report's ``points`` (evaluations of all networks). Fitted on
    ``measure_peak`` after a warm-up run, as the server runs it (measured 1.2–7.2 MB; the first
    training view of a process adds about 15 MB more, once: the file's parse and torch's lazy
    set-up), and rounded up; tests/explorer/training/test_engine.py holds it above the measured peak."""
    params = macs_per_sample(width) + DEPTH * width * 3  # weights, biases, γ and β
    hidden = width * DEPTH
    return (BASE_BYTES + networks * PER_PARAMETER * params + PER_ACTIVATION * batch * hidden
            + PER_EVAL_VALUE * TEST_ROWS * hidden + PER_POINT * points)  # fmt: skip
