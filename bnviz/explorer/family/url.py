"""The /family page's URL: its frozen FamilyConfig (one tensor through the five members, its
limits, memory estimate and refusal), the focus (channel and member drawn), and their QuerySpecs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.query import Param, QuerySpec, choice, float_in, int_in, parse_shape
from bnviz.hosting.memory import BASE

MEMBERS = ("BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm", "RMSNorm")
LN_OVER = ("sample", "last")  # LayerNorm/RMSNorm over every per-sample dim, or over the last dim only
MAX_ELEMENTS = 1_000_000
MAX_RANK = 6


@dataclass(frozen=True)
class FamilyConfig:
    """One view of the family page; hashable, so it keys the app's cache."""

    shape: tuple[int, ...] = (8, 6, 8, 8)
    groups: int = 2
    dist: str = "normal"
    seed: int = 0
    ln_over: str = "sample"
    eps: float = 1e-5

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def normalized_shape(self) -> tuple[int, ...]:
        """LayerNorm's and RMSNorm's trailing dims: every per-sample dim, or the last one."""
        return self.shape[1:] if self.ln_over == "sample" else self.shape[-1:]

    def estimate_bytes(self) -> int:
        """The peak memory ``engine.run`` adds: five members, each bnviz, torch and float64 with
        gradients, one member at a time (measured 110–113 bytes per value at a million)."""
        return BASE + 136 * self.numel

    def refusal(self) -> str | None:
        """Why this self is not run (too big, inconsistent), or None — before allocating anything."""
        shape = self.shape
        checks = [
            (not 3 <= len(shape) <= MAX_RANK, f"the family needs a shape of rank 3 to {MAX_RANK}: (N, C, spatial…)"),
            (any(d < 1 for d in shape), "every dimension needs at least 1"),
            (self.numel > MAX_ELEMENTS, f"{self.numel:,} elements is over the limit of {MAX_ELEMENTS:,}"),
            (self.groups < 1, "groups must be at least 1"),
            (len(shape) > 1 and shape[1] % self.groups != 0,
             f"GroupNorm needs the channels (C = {shape[1] if len(shape) > 1 else 0}) divisible by the groups "
             f"({self.groups})"),
            (math.prod(shape[2:]) < 2 if len(shape) > 2 else True, "InstanceNorm needs at least 2 spatial values"),
            (self.dist not in DISTRIBUTIONS, f"unknown distribution; choose one of {', '.join(DISTRIBUTIONS)}"),
            (self.ln_over not in LN_OVER, f"LayerNorm over must be {' or '.join(LN_OVER)}"),
            (not 0 < self.eps <= 1, "eps must be above 0 and at most 1"),
        ]  # fmt: skip
        return next((message for failed, message in checks if failed), None)


FAMILY = QuerySpec[FamilyConfig](
    [
        Param("shape", "shape", parse_shape),
        Param("groups", "groups", int_in(1, 4096)),
        Param("dist", "dist", choice(DISTRIBUTIONS)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("ln", "ln_over", choice(LN_OVER)),
        Param("eps", "eps", float_in(1e-12, 1.0)),
    ]
)


@dataclass(frozen=True)
class FamilyFocus:
    """What the family page looks at closely: the channel whose statistics groups are shaded, and
    the member whose cells are drawn."""

    channel: int = 0
    member: str = "BatchNorm"


FAMILY_FOCUS = QuerySpec[FamilyFocus](
    [Param("channel", "channel", int_in(0, 4095)), Param("member", "member", choice(MEMBERS))]
)
