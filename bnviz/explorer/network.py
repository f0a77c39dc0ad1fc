"""The network from the question: BatchNorm2d in the conv part, BatchNorm1d in the classifier.

A small CNN — Conv2d → BatchNorm2d → ReLU → MaxPool → Conv2d → BatchNorm2d → ReLU → Flatten →
Linear → BatchNorm1d → ReLU → Linear — is built twice with the same weights, once with torch's
batch-norm layers and once with bnviz's, and trained in lockstep with SGD on a synthetic
three-class image task (horizontal stripes, vertical stripes, a centred blob, plus noise). A
third copy in float64 (torch's layers) is the truth: a difference between bnviz and torch is
float32 rounding when it is no larger than torch's own distance from the float64 run.

For each batch-norm layer the report gives the shape that arrives, which values share one
statistic there, and what the other layer class says to that shape — which is why the conv
part needs BatchNorm2d and the classifier BatchNorm1d. The report is plain data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import plotly.graph_objects as go
import torch
from torch import Tensor, nn

import bnviz
from bnviz.explorer.parity import as_accurate
from bnviz.explorer.picture import Grouping, cube_svg
from bnviz.explorer.plots import BNVIZ_COLOR, DIFF_COLORS, INPUT_COLOR, LAYOUT, TORCH_COLOR
from bnviz.hosting.memory import BASE
from bnviz.hosting.serve import Cancelled

MODES = ("train", "eval")
CLASSES = 3
HIDDEN = 32
MAX_BATCH = 256
MAX_IMAGE = 64
MAX_CHANNELS = 32
MAX_STEPS = 50
MAX_MACS = 3_000_000_000  # multiply-adds of every step, both directions, three networks
BN_KINDS = {"2d": (nn.BatchNorm2d, bnviz.BatchNorm2d), "1d": (nn.BatchNorm1d, bnviz.BatchNorm1d)}


@dataclass(frozen=True)
class NetworkConfig:
    """One view of the network page; hashable, so it keys the app's cache."""

    batch: int = 32
    image: int = 16
    channels: int = 8
    steps: int = 10
    lr: float = 0.1
    seed: int = 0
    mode: str = "eval"

    def macs(self) -> int:
        """Multiply-adds of one forward pass of one network (convolutions and linear layers)."""
        n, h, c = self.batch, self.image, self.channels
        half = h // 2
        conv1 = n * c * h * h * 3 * 9
        conv2 = n * 2 * c * half * half * c * 9
        linear = n * (2 * c * half * half * HIDDEN + HIDDEN * CLASSES)
        return conv1 + conv2 + linear

    def estimate_bytes(self) -> int:
        """The peak memory ``run_network`` adds. Three networks (bnviz, torch, float64): per image
        pixel, the float64 conv's unfolded input (27 values) and every layer's activations
        (∝ channels), twice that with training's saved activations and gradients; per parameter
        of the classifier's first linear layer (2c·(H/2)²·32), the weights and gradients of the
        three networks and the float64 copies that compare them. 15% on top."""
        pixels = self.batch * self.image**2
        per_pixel = 260 + 12 * self.channels + (16 * self.channels + 16 if self.steps else 0)
        params = 16 * self.channels * self.image**2
        return BASE + math.ceil(1.15 * (pixels * per_pixel + 72 * params))


def refusal(config: NetworkConfig) -> str | None:
    """Why this config is not run (too big, out of range), or None — checked before allocating."""
    cost = 3 * 3 * (config.steps + 1) * config.macs()  # forward + backward ≈ 3 forwards, 3 networks
    checks = [
        (not 2 <= config.batch <= MAX_BATCH, f"the batch size is 2 to {MAX_BATCH} (training needs 2 or more)"),
        (not 4 <= config.image <= MAX_IMAGE or config.image % 2, f"the image size is even, 4 to {MAX_IMAGE}"),
        (not 1 <= config.channels <= MAX_CHANNELS, f"channels are 1 to {MAX_CHANNELS}"),
        (not 0 <= config.steps <= MAX_STEPS, f"steps are 0 to {MAX_STEPS}"),
        (not (0 < config.lr <= 1 and math.isfinite(config.lr)), "the learning rate is above 0 and at most 1"),
        (config.mode not in MODES, "mode must be train or eval"),
        (cost > MAX_MACS, f"{cost:,} multiply-adds is over the limit of {MAX_MACS:,}; use fewer steps, a smaller "
                          "batch, image or channel count"),
    ]  # fmt: skip
    return next((message for failed, message in checks if failed), None)


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
    """One layer's parameters and gradients, bnviz against torch (and each against float64)."""

    name: str
    kind: str
    max_abs: float  # max |bnviz − torch| over its parameters, gradients and buffers
    err_bnviz: float  # max |bnviz − float64|
    err_torch: float  # max |torch − float64|
    scale: float  # max |torch value|

    @property
    def ok(self) -> bool:
        """Within 1e-5 of the values' scale, or no further from float64 than torch's own rounding."""
        return self.max_abs <= 1e-5 * max(self.scale, 1.0) or as_accurate(self.err_bnviz, self.err_torch)


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

    @property
    def verdict(self) -> str:
        """``"match"`` when every layer agrees and both sides refuse the wrong class alike."""
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


def _max_abs(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def run_network(config: NetworkConfig, should_stop: Callable[[], bool] | None = None) -> NetworkReport:
    """Train the three networks in lockstep for ``config.steps`` SGD steps, then evaluate them
    in ``config.mode`` on a fresh batch; compare every layer at the end. ``should_stop`` is asked
    before each step; when it says yes the run raises ``serve.Cancelled``."""
    reason = refusal(config)
    if reason is not None:
        raise ValueError(reason)
    sides = ("bnviz", "torch", "truth")
    models = {side: build(config, side) for side in sides}
    optims = {side: torch.optim.SGD(m.parameters(), lr=config.lr) for side, m in models.items()}
    losses: dict[str, list[float]] = {side: [] for side in sides}
    for step in range(config.steps + 1):
        if should_stop is not None and should_stop():
            raise Cancelled("stopped: the view is no longer wanted")
        if step == config.steps:
            break
        x, y = batch(config, step)
        for side, model in models.items():
            model.train()
            optims[side].zero_grad()
            loss = nn.functional.cross_entropy(model(x.double() if side == "truth" else x), y)
            loss.backward()
            losses[side].append(loss.item())
            optims[side].step()  # the gradients stay in .grad: the last step's are compared below
    x, y = batch(config, config.steps)
    logits = {}
    for side, model in models.items():
        model.train(config.mode == "train")
        with torch.no_grad():
            logits[side] = model(x.double() if side == "truth" else x)
    layers = []
    for name, module in models["torch"].named_children():
        values = dict(module.named_parameters()) | {k: v for k, v in module.named_buffers() if v.is_floating_point()}
        if not values:
            continue
        got = dict(models["bnviz"].get_submodule(name).named_parameters()) | dict(
            models["bnviz"].get_submodule(name).named_buffers()
        )
        truth = dict(models["truth"].get_submodule(name).named_parameters()) | dict(
            models["truth"].get_submodule(name).named_buffers()
        )
        pairs = [(got[k], v, truth[k]) for k, v in values.items()]
        pairs += [(got[k].grad, v.grad, truth[k].grad) for k, v in module.named_parameters() if v.grad is not None]
        layers.append(
            LayerCheck(
                name=f"{name}: {type(module).__name__}",
                kind=type(module).__name__,
                max_abs=max(_max_abs(a, b) for a, b, _ in pairs),
                err_bnviz=max(_max_abs(a, t) for a, _, t in pairs),
                err_torch=max(_max_abs(b, t) for _, b, t in pairs),
                scale=max(float(b.detach().abs().max()) for _, b, _ in pairs),
            )
        )
    lb, lt, lf = logits["bnviz"], logits["torch"], logits["truth"]
    layers.append(
        LayerCheck("logits", "output", _max_abs(lb, lt), _max_abs(lb, lf), _max_abs(lt, lf), float(lt.abs().max()))
    )
    shown = min(config.batch, 12)
    return NetworkReport(
        config=config,
        stops=_stops(config),
        losses={side: losses[side] for side in ("bnviz", "torch")},
        accuracy={side: float((logits[side].argmax(1) == y).double().mean()) for side in ("bnviz", "torch")},
        logits={side: logits[side][:shown].double().tolist() for side in ("bnviz", "torch")},
        labels=y[:shown].tolist(),
        layers=tuple(layers),
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
    """Training loss per step: bnviz a red line, torch blue markers (on top of each other)."""
    fig = go.Figure()
    steps = list(range(1, len(report.losses.get("bnviz", [])) + 1))
    for side, color, mode in (("bnviz", BNVIZ_COLOR, "lines"), ("torch", TORCH_COLOR, "markers")):
        marker = dict(color=color, size=8, symbol="circle-open", line=dict(width=2))
        fig.add_trace(go.Scatter(x=steps, y=report.losses.get(side, []), mode=mode, name=side,
                                 line=dict(color=color, width=2.5), marker=marker))  # fmt: skip
    fig.update_xaxes(title_text="SGD step", tickformat="d", rangemode="tozero")
    fig.update_yaxes(title_text="cross-entropy loss", rangemode="tozero")
    fig.update_layout(height=360, title="Training loss", **LAYOUT)
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
    """Per layer, log scale: max |bnviz − torch| next to torch's own distance from float64."""
    names = [layer.name for layer in report.layers]
    floor = 1e-12  # a bit-identical layer is drawn at the floor of the axis

    def clip(values: list[float]) -> list[float]:
        return [max(v, floor) for v in values]

    fig = go.Figure()
    fig.add_trace(go.Bar(y=names, x=clip([layer.max_abs for layer in report.layers]), orientation="h",
                         name="|bnviz − torch|", marker_color=DIFF_COLORS[0]))  # fmt: skip
    fig.add_trace(go.Bar(y=names, x=clip([layer.err_torch for layer in report.layers]), orientation="h",
                         name="|torch − float64| (float32 rounding)", marker_color=INPUT_COLOR))  # fmt: skip
    fig.update_xaxes(type="log", title_text="largest difference",
                     exponentformat="e")  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(barmode="group", height=120 + 34 * len(names), title="Every layer", **LAYOUT)
    return fig


def all_figures(report: NetworkReport) -> dict[str, go.Figure]:
    """The page's charts by name."""
    return {"loss": loss_figure(report), "logits": logits_figure(report), "layers": layers_figure(report)}


def stop_pictures(report: NetworkReport) -> dict[str, str]:
    """The statistics picture (an SVG document) of each batch-norm layer, by layer name."""
    return {
        stop.name: cube_svg(stop.grouping, title=f"{stop.grouping.group_size():,} values per statistic")
        for stop in report.stops
    }
