"""The verdict on a claim about training, over seeds — one rule for ``/training`` and ``/eval-gap``.

A claim compares two arms that share each seed (the same initial weights, the same minibatches): "batch
norm ends ahead of the plain network", "the median drifts further without batch norm". For each seed
``i`` the paired difference ``d_i`` is taken in the direction the claim states (positive: as
claimed), and with a ``margin`` — what the metric needs to tell a difference from noise (one test
image for an accuracy) —

- ``k`` = the seeds where ``d_i > margin``: the claim holds on k of n seeds;
- "holds" when k = n; "reversed" when every seed goes the other way by more than the margin; "no
  difference" when the mean difference is within the margin; else "mixed";
- fewer than ``MIN_SEEDS`` seeds: the numbers, and no verdict ("too few seeds").

A claim stated as general ("ahead on every seed", "a consistent difference", "as in the paper") is
made only when it holds on every seed shown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SEEDS = 3  # fewer seeds: numbers, no verdict
TEST_IMAGES = 359  # the digits' test split
ONE_IMAGE = 1 / TEST_IMAGES  # an accuracy's margin: one test image
SAME = 0.03  # accuracies closer than this (3 points, 11 test images) are "about the same"


@dataclass(frozen=True)
class Verdict:
    """A claim's paired differences over seeds (positive: as claimed), its margin, and the verdict."""

    differences: tuple[float, ...]
    margin: float

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def _beyond(self) -> float:
        """The margin as compared: a hair above it, so that a difference of exactly one test image
        (k/359 − (k − 1)/359, which float rounding puts either side of 1/359) never counts as beyond it."""
        return self.margin * (1 + 1e-9) + 1e-15

    @property
    def k(self) -> int:
        """Seeds where the difference has the claimed sign and exceeds the margin."""
        return sum(d > self._beyond for d in self.differences)

    @property
    def against(self) -> int:
        """Seeds where it goes the other way by more than the margin."""
        return sum(d < -self._beyond for d in self.differences)

    @property
    def mean(self) -> float:
        finite = [d for d in self.differences if math.isfinite(d)]
        return sum(finite) / len(finite) if finite else math.nan

    @property
    def kind(self) -> str:
        """"too few seeds", "holds", "reversed", "no difference" or "mixed"."""
        if self.n < MIN_SEEDS:
            return "too few seeds"
        if self.k == self.n:
            return "holds"
        if self.against == self.n:
            return "reversed"
        if not abs(self.mean) > self._beyond:  # (a NaN mean: no difference either)
            return "no difference"
        return "mixed"

    @property
    def holds(self) -> bool:
        return self.kind == "holds"

    def count(self) -> str:
        """``"on 4 of 5 seeds"``."""
        return f"on {self.k} of {self.n} seed{'s' if self.n != 1 else ''}"


def paired(claimed: Sequence[float], other: Sequence[float], margin: float) -> Verdict:
    """The verdict on "``claimed`` is above ``other``", seed by seed (the same seeds in order)."""
    return Verdict(tuple(a - b for a, b in zip(claimed, other, strict=True)), margin)


def verdict_word(v: Verdict) -> str:
    """A short label for a chart or a card: "holds on 5 of 5 seeds", "mixed: 3 of 5", "no difference"."""
    if v.kind == "too few seeds":
        return f"{v.n} seed{'s' if v.n != 1 else ''}: too few for a verdict"
    if v.kind == "holds":
        return f"holds {v.count()}"
    if v.kind == "reversed":
        return f"the other way on {v.n} of {v.n} seeds"
    if v.kind == "no difference":
        return f"no difference beyond the margin ({v.k} of {v.n} seeds as claimed)"
    return f"mixed: as claimed {v.count()}, the other way on {v.against}"


def sentence(v: Verdict, claim: str, paper: bool = False) -> str:
    """One sentence on ``claim`` over the seeds, for /training and /eval-gap alike: it holds on every
    seed (with ``paper``: "as in the paper"), on some, the other way, or no difference beyond the
    margin; no verdict under ``MIN_SEEDS`` seeds."""
    if v.kind == "too few seeds":
        return (f"With {v.n} seed{'s' if v.n != 1 else ''} there is no verdict on whether {claim}: choose "
                f"{MIN_SEEDS} or more. ")  # fmt: skip
    if v.kind == "holds":
        return f"{claim[0].upper()}{claim[1:]} on all {v.n} seeds{', as in the paper' if paper else ''}. "
    if v.kind == "reversed":
        return f"Whether {claim}: the other way on all {v.n} seeds{', unlike the paper' if paper else ''}. "
    if v.kind == "no difference":
        return (f"Whether {claim}: no difference beyond the margin on average ({v.k} of {v.n} seeds as claimed, "
                f"{v.against} the other way){', unlike the paper' if paper else ''}. ")  # fmt: skip
    return (f"Whether {claim} is mixed: it holds on {v.k} of {v.n} seeds, goes the other way on {v.against}"
            f"{' — not the general result the paper states' if paper else ''}. ")  # fmt: skip
