"""The /network page's URL: its frozen NetworkConfig (the small CNN trained three ways, its
limits, memory estimate and refusal) and the QuerySpec that maps it to the query string."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnviz.explorer.query import Param, QuerySpec, choice, float_in, int_in
from bnviz.hosting.memory import BASE

MODES = ("train", "eval")
CLASSES = 3
HIDDEN = 32
MAX_BATCH = 256
MAX_IMAGE = 64
MAX_CHANNELS = 32
MAX_STEPS = 50
MAX_MACS = 3_000_000_000  # multiply-adds of every step, both directions, three networks
NETWORKS = 3  # trained: torch's, and bnviz's and float64's on their own paths


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
        """The peak memory ``engine.run`` adds. Three networks (bnviz, torch, float64): per image
        pixel, the float64 conv's unfolded input (27 values) and every layer's activations
        (∝ channels), twice that with training's saved activations and gradients; per parameter
        of the classifier's first linear layer (2c·(H/2)²·32), the weights and gradients of the
        three networks and the float64 copies that compare them. 15% on top."""
        pixels = self.batch * self.image**2
        per_pixel = 260 + 12 * self.channels + (16 * self.channels + 16 if self.steps else 0)
        params = 16 * self.channels * self.image**2
        return BASE + math.ceil(1.15 * (pixels * per_pixel + 72 * params))

    def refusal(self) -> str | None:
        """Why this self is not run (too big, out of range), or None — checked before allocating."""
        cost = NETWORKS * 3 * (self.steps + 1) * self.macs()  # forward + backward ≈ 3 forwards
        checks = [
            (not 2 <= self.batch <= MAX_BATCH,
             f"the batch size is {self.batch}; it must be 2 to {MAX_BATCH} (training needs 2 or more)"),
            (not 4 <= self.image <= MAX_IMAGE, f"the image size is {self.image}; it must be 4 to {MAX_IMAGE}"),
            (self.image % 2 == 1, f"the image size is {self.image}, an odd number; it must be even (the max-pool "
                                    "halves it)"),
            (not 1 <= self.channels <= MAX_CHANNELS, f"{self.channels} channels; they must be 1 to {MAX_CHANNELS}"),
            (not 0 <= self.steps <= MAX_STEPS, f"{self.steps} steps; they must be 0 to {MAX_STEPS}"),
            (not (0 < self.lr <= 1 and math.isfinite(self.lr)),
             f"the learning rate is {self.lr:g}; it must be above 0 and at most 1"),
            (self.mode not in MODES, "mode must be train or eval"),
            (cost > MAX_MACS, f"{cost:,} multiply-adds is over the limit of {MAX_MACS:,}; use fewer steps, a smaller "
                              "batch, image or channel count"),
        ]  # fmt: skip
        return next((message for failed, message in checks if failed), None)


NETWORK = QuerySpec[NetworkConfig](
    [
        Param("batch", "batch", int_in(2, MAX_BATCH)),
        Param("image", "image", int_in(4, MAX_IMAGE)),
        Param("channels", "channels", int_in(1, MAX_CHANNELS)),
        Param("steps", "steps", int_in(0, MAX_STEPS)),
        Param("lr", "lr", float_in(1e-6, 1.0)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("mode", "mode", choice(MODES)),
    ]
)
