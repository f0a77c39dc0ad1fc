"""The /inference page's URL: its frozen InferenceConfig (folding and the four ways of
freezing, its limits, memory estimate and refusal) and the QuerySpec that maps it to the query string."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bnviz.explorer.query import Param, QuerySpec, choice, float_in, int_in
from bnviz.hosting.memory import BASE

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CLASSES = 3  # = input channels: class k brightens input channel k
TIMING_REPEATS = 11  # interleaved forward timings per network
MAX_BATCH = 256
MAX_CHANNELS = 64
MAX_IMAGE = 32
MAX_STEPS = 200
MAX_FINETUNE_STEPS = 100  # x 24 traces: keeps the running-statistics figure under 100 KB
MAX_BATCH_VALUES = 32_768  # one conv layer's activations: batch × channels × image²
MAX_WORK = 1_100_000  # activation values over every forward pass of a run (four freezing variants)
VARIANTS = {
    "requires_grad": "requires_grad=False on γ, β",
    "bn_eval": "bn.eval(), then model.train()",
    "eval_after_train": "bn.eval() after every model.train()",
    "freeze": "bnviz.freeze_batch_norm",
}


@dataclass(frozen=True)
class InferenceConfig:
    """Everything that defines one run; hashable, so it keys the app's cache."""

    batch_size: int = 16
    channels: int = 4
    image_size: int = 8
    train_steps: int = 15
    finetune_steps: int = 8
    lr: float = 0.05
    shift: float = 2.0  # added to the fine-tuning inputs (after scaling them by SHIFT_SCALE)
    channel: int = 0  # the channel whose fold is spelled out
    seed: int = 0
    dtype: str = "float32"

    @property
    def batch_values(self) -> int:
        """One conv layer's activations for one batch: N · C · H · W."""
        return self.batch_size * max(self.channels, CLASSES) * self.image_size**2

    @property
    def passes(self) -> int:
        """Forward passes of a run: training, 4 variants × (fine-tuning steps + 2 probes per
        recorded step), timings, and the few probes of the folding section."""
        per_variant = self.finetune_steps + 2 * (self.finetune_steps + 1)
        return self.train_steps + len(VARIANTS) * per_variant + 2 * TIMING_REPEATS + 6

    @property
    def work(self) -> int:
        return self.batch_values * self.passes

    def estimate_bytes(self) -> int:
        """The peak memory ``engine.run`` adds: a small network and its batches (capped at
        32,768 activation values per batch)."""
        itemsize = DTYPES[self.dtype].itemsize if self.dtype in DTYPES else 8
        return BASE + 64 * itemsize * self.batch_values

    def refusal(self) -> str | None:
        """Why this self is not run (too big, out of range, unknown option), or None.

        Checked on plain numbers, before anything is allocated.
        """
        checks = [
            (self.dtype not in DTYPES, f"unknown dtype; choose one of {', '.join(DTYPES)}"),
            (not 2 <= self.batch_size <= MAX_BATCH, f"batch size must be between 2 and {MAX_BATCH}"),
            (not 1 <= self.channels <= MAX_CHANNELS, f"channels must be between 1 and {MAX_CHANNELS}"),
            (not 3 <= self.image_size <= MAX_IMAGE, f"image size must be between 3 and {MAX_IMAGE}"),
            (not 0 <= self.train_steps <= MAX_STEPS, f"training steps must be between 0 and {MAX_STEPS}"),
            (
                not 1 <= self.finetune_steps <= MAX_FINETUNE_STEPS,
                f"fine-tuning steps must be between 1 and {MAX_FINETUNE_STEPS}",
            ),
            (not 0.0 < self.lr <= 1.0, "the learning rate must be in (0, 1]"),
            (not math.isfinite(self.shift) or abs(self.shift) > 100, "the shift must be between -100 and 100"),
            (not 0 <= self.channel < self.channels, f"channel must be between 0 and {self.channels - 1}"),
            (
                self.batch_values > MAX_BATCH_VALUES,
                f"{self.batch_values:,} activation values per batch is over the limit of {MAX_BATCH_VALUES:,}; "
                "use a smaller batch, fewer channels or smaller images",
            ),
            (
                self.work > MAX_WORK,
                f"{self.batch_values:,} values × {self.passes} forward passes is over the limit of {MAX_WORK:,}; "
                "use fewer steps or a smaller batch",
            ),
        ]
        return next((message for failed, message in checks if failed), None)


INFERENCE = QuerySpec[InferenceConfig](
    [
        Param("batch", "batch_size", int_in(2, MAX_BATCH)),
        Param("channels", "channels", int_in(1, MAX_CHANNELS)),
        Param("image", "image_size", int_in(3, MAX_IMAGE)),
        Param("steps", "train_steps", int_in(0, MAX_STEPS)),
        Param("finetune", "finetune_steps", int_in(1, MAX_FINETUNE_STEPS)),
        Param("lr", "lr", float_in(1e-6, 1.0)),
        Param("shift", "shift", float_in(-100.0, 100.0)),
        Param("channel", "channel", int_in(0, MAX_CHANNELS - 1)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("dtype", "dtype", choice(tuple(DTYPES))),
    ]
)
