"""The layer page's URL (``/``): its frozen ``Config`` — what one view compares, its limits, memory
estimate and refusal, all checked on plain numbers before anything is allocated — and the
``QuerySpec`` that maps it to the query string. What other pages and the question index import
to link here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch

from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.query import MAX_RANK, Param, QuerySpec, boolean, choice, float_in, int_in, parse_shape
from bnviz.hosting.memory import BASE, MB

LAYERS = ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNorm")
MODES = ("train", "eval")
LAYOUTS = ("channels-first", "features-last")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICES = ("cpu", "cuda")
MAX_ELEMENTS = 2_000_000  # per batch
MAX_STEPS = 100
MAX_WORK = 16_000_000  # values of every batch together: bounds the time of one comparison (3 sides)
MAX_TRAIN_BATCH = 4096
LAYER_RANKS = {"BatchNorm1d": (2, 3), "BatchNorm2d": (4,), "BatchNorm3d": (5,)}  # BatchNorm: any rank ≥ 2
# Memory (``Config.estimate_bytes``). The displayed batch, bytes per value (measured at 2,000,000
# values: float64 82, float32 74, bfloat16 68), with 10% on top: both sides' outputs and
# gradients, the batch and its upstream gradient, the float64 truth's (when the dtype is not
# float64), x̂ and the gradient's allowance; differences are taken in blocks of rows.
COMPARE_PER_VALUE = {"float64": 90, "float32": 81, "bfloat16": 75, "float16": 75}
SMALL_BLOCKS = 64  # bytes per value up to 2**18 values: blocks under the mmap threshold stay in the heap
COMPARE_PER_CHANNEL = 176  # running statistics, their copies, per-channel sums and statistics (measured ≤ 151)
# A training batch, bytes per value: drawn in float64 with its temporaries, cast, and its float64
# copy (measured at 2,000,000 values: normal 24, bimodal 30, heavy-tailed — four normal draws — 56).
TRAIN_PER_VALUE = {"heavy-tailed": 64, "bimodal": 40}
TRAIN_PER_VALUE_ELSE = 32
ITEMSIZE = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
SPEED_PER_CHANNEL = 200
# A forked process that starts inductor and compiles two layers, with the C++ compiler processes
# it runs (measured 414 MB at a tiny shape: the process 190 MB, the compiler the rest).
COMPILE_PROCESS_BYTES = 430 * MB


@dataclass(frozen=True)
class Config:
    """Everything that defines one view; hashable, so it keys the app's cache."""

    layer: str = "BatchNorm2d"
    shape: tuple[int, ...] = (8, 3, 16, 16)
    mode: str = "train"
    momentum: float | None = 0.1
    eps: float = 1e-5
    affine: bool = True
    track_running_stats: bool = True
    dtype: str = "float32"
    device: str = "cpu"
    dist: str = "normal"
    seed: int = 0
    steps: int = 5
    train_batch: int = 8
    layout: str = "channels-first"
    own: str = ""  # the digest of the visitor's own tensor (``own.OwnTensor``); "" is ``dist``. Never in a URL.

    @property
    def features_last(self) -> bool:
        """The shape lists its features last, ``(N, L…, C)``, as a transformer's tensors do."""
        return self.layout == "features-last" and len(self.shape) >= 3

    @property
    def num_features(self) -> int:
        """C: dim 1 of the shape — the last dim for a features-last layout (the layer is built for
        the features, and torch then checks them against dim 1) — and dim 0 for a rank-1 shape, so
        that torch gets to reject the rank."""
        if self.features_last:
            return self.shape[-1]
        if len(self.shape) >= 2:
            return self.shape[1]
        return self.shape[0] if self.shape else 1

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def train_shape(self) -> tuple[int, ...]:
        """The shape of the training batches before the displayed one: ``train_batch`` samples
        (the visitor's own tensor, whole, when there is one)."""
        if self.own:
            return self.shape
        return (self.train_batch, *self.shape[1:]) if len(self.shape) >= 2 else self.shape

    @property
    def work(self) -> int:
        """Values processed: every training batch and the displayed one."""
        return math.prod(self.train_shape) * self.steps + self.numel

    @property
    def rank_refused(self) -> bool:
        """Both layers refuse this rank at the first batch they see (torch's "expected 4D input"):
        nothing after that batch runs."""
        return len(self.shape) not in LAYER_RANKS.get(self.layer, range(2, MAX_RANK + 1))

    def estimate_bytes(self) -> int:
        """The peak memory ``engine.run`` adds: the larger of the displayed batch's phase and a
        training batch's (one at a time), plus what grows with the channels. A rank both layers
        refuse stops at the first batch: a training batch's draw, or with no training steps the
        displayed batch's and its upstream gradient's (a draw's bytes per value, once: those of the
        training batch's float64 copy are not needed)."""
        n, c = self.numel, max(self.num_features, 1)
        per_train = TRAIN_PER_VALUE.get(self.dist, TRAIN_PER_VALUE_ELSE)
        train = per_train * math.prod(self.train_shape) if self.steps else 0
        if self.rank_refused:
            first = train if self.steps else per_train * n  # (measured: 23 bytes per value, normal)
            return BASE + first + SMALL_BLOCKS * min(n, 2**18) + COMPARE_PER_CHANNEL * c
        shown = COMPARE_PER_VALUE.get(self.dtype, 90) * n
        own = ITEMSIZE.get(self.dtype, 8) * n if self.own else 0  # the visitor's tensor, held beside the run
        return BASE + own + max(shown, train) + SMALL_BLOCKS * min(n, 2**18) + COMPARE_PER_CHANNEL * c

    def speed_bytes(self) -> int:
        """The peak of ``timing.measure_config``: the batch (drawn in float64), its upstream
        gradient, the output and the gradient of each side; per channel, the statistics
        (measured: float32 26, float64 52 bytes per value; 150 per channel)."""
        e = ITEMSIZE.get(self.dtype, 8)
        return BASE + math.ceil((24 + 4.5 * e) * self.numel) + SPEED_PER_CHANNEL * max(self.num_features, 1)

    def compiled_speed_bytes(self) -> int:
        """``timing.measure_config_compiled``: the forked process and its compilers, and the
        timing's own data as ``speed_bytes`` counts it (measured 478 MB at 2000×1000 float64)."""
        return COMPILE_PROCESS_BYTES + self.speed_bytes() - BASE

    def channels_first(self) -> Config:
        """The same view with the features moved to dim 1: the fix for a features-last tensor."""
        if not self.features_last:
            return self
        s = self.shape
        return replace(self, shape=(s[0], s[-1], *s[1:-1]), layout="channels-first")

    def refusal(self) -> str | None:
        """Why this self is not run at all (too big, unknown option, no GPU), or None.

        Checked on plain integers, before anything is allocated.
        """
        checks = [
            (self.layer not in LAYERS, f"unknown layer; choose one of {', '.join(LAYERS)}"),
            (self.mode not in MODES, "mode must be train or eval"),
            (self.dtype not in DTYPES, f"unknown dtype; choose one of {', '.join(DTYPES)}"),
            (self.dist not in DISTRIBUTIONS, f"unknown distribution; choose one of {', '.join(DISTRIBUTIONS)}"),
            (self.device not in DEVICES, "device must be cpu or cuda"),
            (not 1 <= len(self.shape) <= MAX_RANK, f"the shape needs 1 to {MAX_RANK} dimensions"),
            (any(d < 0 for d in self.shape), "dimensions cannot be negative"),
            (self.numel > MAX_ELEMENTS, f"{self.numel:,} elements is over the limit of {MAX_ELEMENTS:,} per batch"),
            (self.layout not in LAYOUTS, f"layout must be {' or '.join(LAYOUTS)}"),
            (not 0 <= self.steps <= MAX_STEPS, f"steps must be between 0 and {MAX_STEPS}"),
            (not 1 <= self.train_batch <= MAX_TRAIN_BATCH, f"the training batch size is 1 to {MAX_TRAIN_BATCH:,}"),
            (
                math.prod(self.train_shape) > MAX_ELEMENTS,
                f"training batches of {math.prod(self.train_shape):,} elements are over the limit of {MAX_ELEMENTS:,}",
            ),
            (
                self.work > MAX_WORK,
                f"{self.steps} training batches and the displayed one hold {self.work:,} elements, over the limit "
                f"of {MAX_WORK:,}; use fewer steps or a smaller shape",
            ),
            (
                self.device == "cuda" and not torch.cuda.is_available(),
                "device cuda was asked for, but this server has no CUDA GPU; use cpu",
            ),
        ]
        return next((message for failed, message in checks if failed), None)


LAYER = QuerySpec[Config](
    [
        Param("layer", "layer", choice(LAYERS)),
        Param("shape", "shape", parse_shape),
        Param("layout", "layout", choice(LAYOUTS)),
        Param("mode", "mode", choice(MODES)),
        Param("momentum", "momentum", float_in(0.0, 1.0, allow_none=True)),
        Param("eps", "eps", float_in(-1.0, 1.0)),
        Param("affine", "affine", boolean),
        Param("track", "track_running_stats", boolean),
        Param("dtype", "dtype", choice(tuple(DTYPES))),
        Param("device", "device", choice(DEVICES)),
        Param("dist", "dist", choice(DISTRIBUTIONS)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("steps", "steps", int_in(0, MAX_STEPS)),
        Param("train_n", "train_batch", int_in(1, MAX_TRAIN_BATCH)),
    ]
)


PARAMS = LAYER.names
FIELD_OF = {name: p.field for name, p in LAYER.params.items()}


def parse_query(params: Mapping[str, str | list[str]], base: Config | None = None) -> tuple[Config, list[str]]:
    """The layer page's config from a query (over ``base``, default ``Config()``), and warnings."""
    return LAYER.parse(params, base or Config())


def to_query(config: Config) -> dict[str, str]:
    """Every parameter of the layer page's ``config`` as URL text."""
    return LAYER.to_query(config)


def format_value(name: str, config: Config) -> str:
    """The URL text of one parameter of the layer page."""
    return LAYER.format_value(name, config)


@dataclass(frozen=True)
class Focus:
    """What a page looks at closely without recomputing anything: the channel in focus, and
    whether the standalone script is shown."""

    channel: int = 0
    code: bool = False


FOCUS = QuerySpec[Focus]([Param("channel", "channel", int_in(0, 4095)), Param("code", "code", boolean)])


@dataclass(frozen=True)
class LayerFocus(Focus):
    """The layer page's ``Focus``, and whether the proof's comparison is unfolded."""

    proof: bool = False


LAYER_FOCUS = QuerySpec[LayerFocus]([*FOCUS.params.values(), Param("proof", "proof", boolean)])
