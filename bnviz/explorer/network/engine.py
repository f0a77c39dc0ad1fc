"""The network from the question: BatchNorm2d in the conv part, BatchNorm1d in the classifier.

A small CNN — Conv2d → BatchNorm2d → ReLU → MaxPool → Conv2d → BatchNorm2d → ReLU → Flatten →
Linear → BatchNorm1d → ReLU → Linear — is built with the same weights with torch's batch-norm
layers and with bnviz's, and trained with SGD on a synthetic three-class image task (horizontal
stripes, vertical stripes, a centred blob, plus noise).

The verdict tests the implementation one call at a time: at every step, each of bnviz's batch-norm
layers takes the state torch's layer had before the step, and the input and upstream gradient
torch's layer got; their outputs, gradients and running statistics must agree within float32's
tolerance, the backward's sums allowed a few ulps of what they add up (so a step whose backward
cancels almost entirely is judged fairly), or be as close as torch to a float64 run of the same
call. At the end bnviz's network takes torch's final state and both evaluate a fresh batch.
Comparing free-running networks instead would test the training's stability, not the layer: with
few values per statistic, training is chaotic, and a one-ulp difference grows without bound —
between torch in float32 and torch in float64 as much as between bnviz and torch. That
free-running divergence is measured too, apart.

For each batch-norm layer the report gives the shape that arrives, which values share one
statistic there, and what the other layer class says to that shape — which is why the conv
part needs BatchNorm2d and the classifier BatchNorm1d. The report is plain data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

import bnviz
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.network.url import CLASSES, HIDDEN, NetworkConfig
from bnviz.explorer.parity import as_accurate, diff, grad_input_atol, max_abs, normalized, sum_tolerance, tolerance
from bnviz.explorer.picture import Grouping, cube_svg
from bnviz.explorer.theme import BNVIZ_COLOR, INPUT_COLOR, LAYOUT, TORCH_COLOR, log_ticks

BN_KINDS = {"2d": (nn.BatchNorm2d, bnviz.BatchNorm2d), "1d": (nn.BatchNorm1d, bnviz.BatchNorm1d)}


def build(config: NetworkConfig, side: str) -> nn.Sequential:
    """The CNN with ``side``'s batch-norm layers ("bnviz", "torch", or "truth": torch in
    float64); every side gets the same initial weights (seeded)."""
    pick = 1 if side == "bnviz" else 0
    bn2d, bn1d = BN_KINDS["2d"][pick], BN_KINDS["1d"][pick]
    c, half = config.channels, config.image // 2
    model = nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), bn2d(c), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(c, 2 * c, 3, padding=1), bn2d(2 * c), nn.ReLU(), nn.Flatten(),
        nn.Linear(2 * c * half * half, HIDDEN), bn1d(HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES),
    )  # fmt: skip
    # The same weights on every side, from a generator of this call's own (the global RNG is shared
    # with other sessions): uniform in ±1/√fan_in, torch's default bound for conv and linear layers.
    g = torch.Generator().manual_seed(config.seed)
    with torch.no_grad():
        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = 1 / math.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=g)
                m.bias.uniform_(-bound, bound, generator=g)
    return model.double() if side == "truth" else model


def batch(config: NetworkConfig, step: int) -> tuple[Tensor, Tensor]:
    """Images ``(N, 3, H, W)`` and labels of training step ``step`` (the evaluation batch is
    step ``config.steps``): class 0 horizontal stripes, 1 vertical stripes, 2 a centred blob."""
    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    n, h = config.batch, config.image
    labels = torch.randint(0, CLASSES, (n,), generator=g)
    i = torch.arange(h, dtype=torch.float32)
    stripes = torch.sin(i * (2 * math.pi / 4))
    centre = (h - 1) / 2
    r2 = (i.view(-1, 1) - centre) ** 2 + (i.view(1, -1) - centre) ** 2
    patterns = torch.stack(
        [stripes.view(-1, 1).expand(h, h), stripes.view(1, -1).expand(h, h), torch.exp(-r2 / (h * h / 16)) * 2 - 0.5]
    )  # (3, H, W)
    colour = torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
    images = patterns[labels].unsqueeze(1) * colour + 0.5 * torch.randn((n, 3, h, h), generator=g)
    return images, labels


@dataclass(frozen=True)
class LayerCheck:
    """One batch-norm layer checked at every step — or the logits of the evaluation — bnviz against
    torch from the same input and upstream gradient.

    A value matches when ``|bnviz − torch| ≤ allowance``: torch.testing's float32 tolerance, with
    the sums of the backward allowed a few ulps of their summands (``parity.grad_input_atol``,
    ``sum_tolerance``) — so a step whose backward cancels almost entirely (a statistic over two
    values) is judged by the size of what cancels, not of what is left — or, failing that, when
    bnviz is no further than 8× torch from a float64 run of the same call (``as_accurate``)."""

    name: str
    kind: str
    calls: int  # forward and backward calls compared (one per step; one for the logits)
    max_abs: float  # the largest |bnviz − torch| over every value of every call
    worst: float  # the largest |bnviz − torch| / allowance: ≤ 1 is within tolerance
    ok: bool


_QUANTITIES = ("output", "grad input", "grad weight", "grad bias", "running_mean", "running_var")


def _call(module: nn.Module, x: Tensor, g: Tensor) -> dict[str, Tensor]:
    """One training forward and backward of a batch-norm layer: its output, ∂L/∂x, ∂L/∂γ, ∂L/∂β
    and its running statistics after the update."""
    xr = x.detach().clone().requires_grad_()
    y = module(xr)
    grad_x, grad_w, grad_b = torch.autograd.grad(y, [xr, module.weight, module.bias], g)
    return {"output": y.detach(), "grad input": grad_x, "grad weight": grad_w, "grad bias": grad_b,
            "running_mean": module.running_mean.detach().clone(), "running_var": module.running_var.detach().clone()}


def _check_call(
    ours: nn.Module, theirs: nn.Module, truth: nn.Module, x: Tensor, g: Tensor
) -> tuple[float, float, bool]:
    """bnviz's layer against torch's on one call, from the same state: ``(max |difference|, the
    largest difference over its allowance, ok)``."""
    a, b = _call(ours, x, g), _call(theirs, x, g)
    rtol, atol = tolerance(x.dtype)
    x_hat, inv_std = normalized(x, theirs.eps)
    allowances = {
        "grad input": grad_input_atol(x_hat, inv_std, g, theirs.weight, rtol, atol),
        "grad weight": sum_tolerance(g.double() * x_hat, rtol, atol),
        "grad bias": sum_tolerance(g.double(), rtol, atol),
    }
    truth_run: dict[str, Tensor] | None = None
    max_abs = worst = 0.0
    ok = True
    for name in _QUANTITIES:
        allowed = allowances.get(name, atol)
        d = diff(a[name], b[name], rtol, allowed)
        over = (a[name].double() - b[name].double()).abs() / (torch.as_tensor(allowed) + rtol * b[name].double().abs())
        max_abs, worst = max(max_abs, d.max_abs), max(worst, float(over.max()) if over.numel() else 0.0)
        if not d.ok:  # past the tolerance: as accurate as torch against float64?
            truth_run = truth_run or _call(truth, x.double(), g.double())
            t = truth_run[name]
            ok = ok and as_accurate(diff(a[name], t, 0.0, 0.0).max_abs, diff(b[name], t, 0.0, 0.0).max_abs)
    return max_abs, worst, ok


class _Checks:
    """One layer's calls, as they come: the largest difference, the largest over its allowance."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind
        self.calls, self.max_abs, self.worst, self.ok = 0, 0.0, 0.0, True

    def add(self, max_abs: float, worst: float, ok: bool) -> None:
        self.calls += 1
        self.max_abs, self.worst, self.ok = max(self.max_abs, max_abs), max(self.worst, worst), self.ok and ok

    def check(self) -> LayerCheck:
        return LayerCheck(self.name, self.kind, self.calls, self.max_abs, self.worst, self.ok)


@dataclass(frozen=True)
class BatchNormStop:
    """What arrives at one batch-norm layer, and why its class fits."""

    name: str
    layer: str  # "BatchNorm2d" / "BatchNorm1d"
    shape: tuple[int, ...]
    grouping: Grouping
    other_layer: str
    other_error: str  # what the other class raises on this shape (torch's words; bnviz's are the same)
    other_error_bnviz: str


@dataclass(frozen=True)
class NetworkReport:
    """Everything the network page shows; plain data only."""

    config: NetworkConfig
    stops: tuple[BatchNormStop, ...]
    losses: dict[str, list[float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    logits: dict[str, list[list[float]]] = field(default_factory=dict)
    labels: list[int] = field(default_factory=list)
    layers: tuple[LayerCheck, ...] = ()
    # free-running: per step, max |parameter difference| between two networks trained on their own
    divergence: dict[str, list[float]] = field(default_factory=dict)  # "bnviz vs torch", "torch float32 vs float64"
    free_accuracy: dict[str, float] = field(default_factory=dict)  # bnviz, torch, float64, each on its own path

    @property
    def verdict(self) -> str:
        """``"match"`` when every batch norm agrees at every step, and the logits, and both sides
        refuse the wrong class alike."""
        same_errors = all(s.other_error == s.other_error_bnviz for s in self.stops)
        return "match" if same_errors and all(layer.ok for layer in self.layers) else "mismatch"


def _stops(config: NetworkConfig) -> tuple[BatchNormStop, ...]:
    """Shapes arriving at each batch-norm layer, found by running the untrained torch network."""
    model = build(config, "torch")
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: shapes.__setitem__(name, tuple(args[0].shape)))
        for name, m in model.named_children()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    with torch.no_grad():
        model(batch(config, 0)[0])
    for h in hooks:
        h.remove()
    stops = []
    for name, shape in shapes.items():
        layer, other = ("BatchNorm2d", "1d") if len(shape) == 4 else ("BatchNorm1d", "2d")
        errors = []
        for cls in BN_KINDS[other]:
            try:
                cls(shape[1])(torch.zeros(shape))
                errors.append("(no error)")
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        stops.append(BatchNormStop(name, layer, shape, Grouping(shape, (0, *range(2, len(shape)))),
                                   f"BatchNorm{other}", errors[0], errors[1]))  # fmt: skip
    return tuple(stops)



def _param_gap(a: nn.Module, b: nn.Module) -> float:
    return max(max_abs(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def _sgd_step(model: nn.Module, x: Tensor, y: Tensor, lr: float) -> float:
    """One plain SGD step (no optimizer state, so a network can take it from any state); the
    gradients stay in ``.grad``. Returns the loss."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x.to(next(model.parameters()).dtype)), y)
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(p.grad, alpha=-lr)
    return loss.item()


def run(config: NetworkConfig, stopped: Stopped = never, progress: Progress = ignore) -> NetworkReport:
    """Train torch's network for ``config.steps`` SGD steps. At every step, each of bnviz's
    batch-norm layers takes the state torch's layer had before the step, and the input and upstream
    gradient torch's layer got; the two layers' outputs, gradients and running statistics are
    compared (``LayerCheck``). Then bnviz's network takes torch's final state, and both evaluate a
    fresh batch in ``config.mode``. Apart, bnviz's network and a float64 one also train on their
    own paths, and their distance from torch's is measured after every step. ``stopped`` is asked
    before each step (``check_stop``), ``progress`` told after it."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
    torch_net = build(config, "torch")
    free = {"bnviz": build(config, "bnviz"), "truth": build(config, "truth")}  # on their own paths
    norms = [name for name, m in torch_net.named_children() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # whose batch norms take, at every step, the state torch's had before it (and the logits' networks)
    layers = {side: build(config, side) for side in ("bnviz", "torch", "truth")}
    checks = {name: _Checks(f"{name}: {type(torch_net.get_submodule(name)).__name__}",
                            type(torch_net.get_submodule(name)).__name__) for name in norms}  # fmt: skip
    losses: dict[str, list[float]] = {"torch": [], "bnviz free-running": [], "float64 free-running": []}
    divergence: dict[str, list[float]] = {"bnviz vs torch": [], "torch float32 vs float64": []}
    seen: dict[str, dict[str, Tensor]] = {}

    def keep(name: str, key: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any = None) -> None:
            value = args[0] if key == "x" else out[0]  # forward pre-hook: its input; backward hook: ∂L/∂y
            seen.setdefault(name, {})[key] = value.detach().clone()

        return hook

    hooks = [torch_net.get_submodule(n).register_forward_pre_hook(keep(n, "x")) for n in norms]
    hooks += [torch_net.get_submodule(n).register_full_backward_hook(
        lambda m, gin, gout, n=n: keep(n, "g")(m, None, gout)) for n in norms]  # fmt: skip
    for step in range(config.steps):
        check_stop(stopped)
        progress(step / max(config.steps, 1))
        x, y = batch(config, step)
        before = {n: copy.deepcopy(torch_net.get_submodule(n).state_dict()) for n in norms}
        seen.clear()
        losses["torch"].append(_sgd_step(torch_net, x, y, config.lr))
        for n in norms:  # each batch norm's call, again in bnviz's layer, from the same state
            ours, truth = layers["bnviz"].get_submodule(n), layers["truth"].get_submodule(n)
            ours.load_state_dict(before[n])
            truth.load_state_dict(before[n])
            theirs = layers["torch"].get_submodule(n)
            theirs.load_state_dict(before[n])
            for m in (ours, theirs, truth):
                m.train()
            checks[n].add(*_check_call(ours, theirs, truth, seen[n]["x"], seen[n]["g"]))
        losses["bnviz free-running"].append(_sgd_step(free["bnviz"], x, y, config.lr))
        losses["float64 free-running"].append(_sgd_step(free["truth"], x, y, config.lr))
        divergence["bnviz vs torch"].append(_param_gap(free["bnviz"], torch_net))
        divergence["torch float32 vs float64"].append(_param_gap(torch_net, free["truth"]))
    for h in hooks:
        h.remove()
    check_stop(stopped)
    x, y = batch(config, config.steps)
    state = torch_net.state_dict()
    for side in ("bnviz", "truth"):
        layers[side].load_state_dict(state)  # copy_ casts to the model's dtype
    logits = {}
    for side, model in (("torch", torch_net), ("bnviz", layers["bnviz"]), ("truth", layers["truth"])):
        model.train(config.mode == "train")
        with torch.no_grad():
            logits[side] = model(x.to(next(model.parameters()).dtype))
    lb, lt, lf = logits["bnviz"], logits["torch"], logits["truth"]
    rtol, atol = tolerance(torch.float32)
    d = diff(lb, lt, rtol, atol)
    out = _Checks("logits", "output")
    out.add(d.max_abs, d.max_abs / (atol + rtol * float(lt.abs().min())),
            d.ok or as_accurate(diff(lb, lf, 0.0, 0.0).max_abs, diff(lt, lf, 0.0, 0.0).max_abs))  # fmt: skip
    final = {"torch": accuracy(torch_net, config), "bnviz": accuracy(layers["bnviz"], config)}  # torch's state
    free_accuracy = {"torch": final["torch"]}
    for side, model in free.items():
        model.train(config.mode == "train")
        free_accuracy["bnviz" if side == "bnviz" else "float64"] = accuracy(model, config)
    shown = min(config.batch, 12)
    return NetworkReport(
        config=config,
        stops=_stops(config),
        losses=losses,
        accuracy=final,
        logits={side: logits[side][:shown].double().tolist() for side in ("bnviz", "torch")},
        labels=y[:shown].tolist(),
        layers=tuple(c.check() for c in [*checks.values(), out]),
        divergence=divergence,
        free_accuracy=free_accuracy,
    )


CHAOS = 1e-3  # a free-running parameter gap this large is no longer rounding: the paths have parted
EVAL_SAMPLES = 64  # accuracy counts at least this many fresh samples: a batch of 2 alone gives 0, 50 or 100 %


def eval_samples(config: NetworkConfig) -> str:
    """``"64 fresh samples (32 batches of 2)"``: how many, and in how many batches."""
    k = eval_batches(config)
    return f"{k * config.batch} fresh samples" + (f" ({k} batches of {config.batch})" if k > 1 else "")


def eval_batches(config: NetworkConfig) -> int:
    """How many evaluation batches of ``config.batch`` make up at least ``EVAL_SAMPLES`` samples."""
    return max(1, math.ceil(EVAL_SAMPLES / config.batch))


@torch.no_grad()
def accuracy(model: nn.Module, config: NetworkConfig) -> float:
    """The share of right predictions over ``eval_batches(config)`` fresh batches of ``config.batch``
    (steps ``config.steps`` onwards of the seeded stream, after training's), one batch at a time in
    the model's current mode — in train mode each normalized with its own statistics, as training did."""
    dtype, right, total = next(model.parameters()).dtype, 0, 0
    for k in range(eval_batches(config)):
        x, y = batch(config, config.steps + k)
        right += int((model(x.to(dtype)).argmax(1) == y).sum())
        total += len(y)
    return right / total


def divergence_heading(report: NetworkReport) -> str:
    """The free-running section's heading: what this run shows, stable or chaotic."""
    div = report.divergence.get("bnviz vs torch") or []
    f64 = report.divergence.get("torch float32 vs float64") or []
    if not div:
        return "On their own paths"
    return ("On their own paths: training is chaotic here" if max(div[-1], f64[-1]) >= CHAOS
            else "On their own paths: training is stable here")  # fmt: skip


def divergence_text(report: NetworkReport) -> str:
    """The free-running networks in words, with their numbers, and — when they parted — why small
    batches make training chaotic."""
    div = report.divergence
    if not report.config.steps or not div.get("bnviz vs torch"):
        return "No training steps: nothing has had a chance to drift apart."
    ours, f64 = div["bnviz vs torch"][-1], div["torch float32 vs float64"][-1]
    acc = report.free_accuracy
    n_stat = report.config.batch  # values per statistic in the classifier's BatchNorm1d
    ends = (
        f"Trained on their own paths, bnviz's network ends {ours:.2g} away from torch's (the largest parameter "
        f"difference), and torch's own float32 network ends {f64:.2g} away from the same network in float64; their "
        f"accuracies on {eval_samples(report.config)}: torch {acc['torch']:.0%}, bnviz "
        f"{acc['bnviz']:.0%}, float64 {acc['float64']:.0%}."
    )
    if max(ours, f64) < CHAOS:
        return (
            f"{ends} The paths stay within rounding of each other: with {n_stat} values per statistic in the "
            "classifier's BatchNorm1d, training is stable. With 2 samples per batch it is not."
        )
    return (
        f"{ends} Rounding differences of one ulp grow with every step, faster the fewer values each statistic has "
        f"(here {n_stat} in the classifier's BatchNorm1d): a statistic over few values moves a lot with each value, "
        "and its gradient divides by a standard deviation that can be tiny — training becomes chaotic, and any two "
        "implementations part ways, torch in float32 and torch in float64 included. That is why the verdict above "
        "compares each batch norm from the same state, step by step."
    )


def stop_text(stop: BatchNormStop) -> str:
    """Why this layer's class fits the tensor that arrives, in one paragraph."""
    shape = stop.shape
    if len(shape) == 4:
        n, c, h, w = shape
        return (
            f"A ({n}, {c}, {h}, {w}) feature map arrives: {c} channels, each a {h}×{w} image for each of the {n} "
            f"samples. A channel is one filter's response everywhere in the image, so its statistic pools the batch "
            f"and every position: N·H·W = {n}·{h}·{w} = {n * h * w:,} values per statistic, {c} statistics. "
            f"BatchNorm2d checks for exactly this rank; {stop.other_layer} refuses it."
        )
    n, f = shape
    return (
        f"After Flatten and Linear a ({n}, {f}) tensor arrives: {f} features per sample, no positions left. Each "
        f"feature's statistic pools the batch only: N = {n} values per statistic, {f} statistics. BatchNorm1d takes "
        f"(N, C) (or (N, C, L)); {stop.other_layer} refuses it."
    )


# --- figures -------------------------------------------------------------------------------------


def loss_figure(report: NetworkReport) -> go.Figure:
    """Training loss per step: torch's (blue), and bnviz's and float64's on their own paths (dotted)."""
    fig = go.Figure()
    steps = list(range(1, len(report.losses.get("torch", [])) + 1))
    styles = (
        ("torch", "torch", TORCH_COLOR, "lines+markers", "solid"),
        ("bnviz free-running", "bnviz, on its own path", BNVIZ_COLOR, "lines", "dot"),
        ("float64 free-running", "torch float64, on its own path", INPUT_COLOR, "lines", "dot"),
    )
    for key, name, color, mode, dash in styles:
        marker = dict(color=color, size=8, symbol="circle-open", line=dict(width=2))
        fig.add_trace(go.Scatter(x=steps, y=report.losses.get(key, []), mode=mode, name=name,
                                 line=dict(color=color, width=2.5 if dash == "solid" else 1.5, dash=dash),
                                 marker=marker))  # fmt: skip
    fig.update_xaxes(title_text="SGD step", tickformat="d", rangemode="tozero")
    fig.update_yaxes(title_text="cross-entropy loss", rangemode="tozero")
    fig.update_layout(height=360, title="Training loss", **LAYOUT)
    return fig


def divergence_figure(report: NetworkReport) -> go.Figure:
    """Free-running networks: per step, the largest parameter difference from torch's float32
    network — bnviz's, and torch's own float64 one — on a log scale."""
    fig = go.Figure()
    steps = list(range(1, len(report.divergence.get("bnviz vs torch", [])) + 1))
    for key, color in (("bnviz vs torch", BNVIZ_COLOR), ("torch float32 vs float64", INPUT_COLOR)):
        values = [max(v, 1e-12) for v in report.divergence.get(key, [])]
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines+markers", name=key,
                                 line=dict(color=color, width=2), marker=dict(size=5)))  # fmt: skip
    fig.update_xaxes(title_text="SGD step", tickformat="d")
    fig.update_yaxes(type="log", title_text="largest parameter difference", exponentformat="e")
    fig.update_layout(height=320, title="On their own paths: how far from torch's network", **LAYOUT)
    return fig


def logits_figure(report: NetworkReport) -> go.Figure:
    """Every evaluated logit: torch's on x, bnviz's on y — on the diagonal when they agree."""
    a = [v for row in report.logits.get("bnviz", []) for v in row]
    b = [v for row in report.logits.get("torch", []) for v in row]
    fig = go.Figure()
    if b:
        lo, hi = min(b), max(b)
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="bnviz = torch",
                                 line=dict(color=INPUT_COLOR, dash="dash", width=1)))  # fmt: skip
    fig.add_trace(go.Scatter(x=b, y=a, mode="markers", name="one logit", marker=dict(color=BNVIZ_COLOR, size=8,
                             line=dict(color=TORCH_COLOR, width=1.5)),
                             hovertemplate="torch %{x:.6g}<br>bnviz %{y:.6g}<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title_text="torch's logit")
    fig.update_yaxes(title_text="bnviz's logit")
    mode = report.config.mode
    fig.update_layout(height=360, title=f"Logits, {mode} mode", **LAYOUT)
    return fig


def layers_figure(report: NetworkReport) -> go.Figure:
    """Per batch-norm layer (and the logits), log scale: the largest |bnviz − torch| over every
    call, as a share of what float32 allows there — under 1 is within tolerance."""
    names = [layer.name for layer in report.layers]
    shares = [max(layer.worst, 1e-6) for layer in report.layers]
    colors = [BNVIZ_COLOR if not layer.ok else TORCH_COLOR for layer in report.layers]
    fig = go.Figure(go.Bar(y=names, x=shares, orientation="h", marker_color=colors, name="largest difference",
                           hovertemplate="%{y}: %{x:.2g} of the allowance<extra></extra>"))  # fmt: skip
    fig.add_vline(x=1, line=dict(color=INPUT_COLOR, dash="dash", width=1))
    ticks, text = log_ticks([*shares, 1.0])
    fig.update_xaxes(type="log", title_text="largest difference ÷ allowed (1: the limit)",
                     tickvals=ticks, ticktext=text)  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 34 * len(names), title="Every batch norm, every step", showlegend=False, **LAYOUT)
    return fig


def all_figures(report: NetworkReport) -> dict[str, go.Figure]:
    """The page's charts by name."""
    return {"loss": loss_figure(report), "logits": logits_figure(report), "layers": layers_figure(report),
            "divergence": divergence_figure(report)}


def stop_pictures(report: NetworkReport) -> dict[str, str]:
    """The statistics picture (an SVG document) of each batch-norm layer, by layer name."""
    return {
        stop.name: cube_svg(stop.grouping, title=f"{stop.grouping.group_size():,} values per statistic")
        for stop in report.stops
    }
