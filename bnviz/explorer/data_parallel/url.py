"""The /data-parallel page's URL: its frozen DataParallelConfig (the world, each rank's batch,
the sample; limits, memory estimate and refusal) and the QuerySpec that maps it to the query string."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.query import Param, QuerySpec, choice, int_in, parse_shape
from bnviz.hosting.memory import BASE, MB, with_workers

MAX_WORLD = 8
MAX_RANK_BATCH = 64
MAX_SAMPLE_VALUES = 4096  # C × spatial values of one sample
MAX_VALUES = 200_000  # the whole batch
# Memory (``DataParallelConfig.estimate_bytes``). Each gloo rank is a fork of the warmed-up, frozen
# fork server (``workers``), and holds privately what it writes (measured 24–28 MB with tiny
# batches); each draws the whole batch and its upstream gradient in float64 (measured ≤ 4 MB more
# at 200,000 values). The fork server itself is ``workers.FORK_SERVER_BYTES``, once per server.
FORKED_RANK_BYTES = 30 * MB
RANK_PER_VALUE = 48
DP_PER_VALUE = 64  # the parent: the full-batch reference in float32 and float64 (measured ≤ 62 at 200,000)
DP_PER_CHANNEL = 1024  # per-channel statistics of every rank, as Python lists (measured 4 MB at 4,096)


@dataclass(frozen=True)
class DataParallelConfig:
    """One view of the data-parallel page; hashable, so it keys the cache."""

    world: int = 4
    per_rank: int = 4
    batches: str = ""  # a typed list of per-rank batch sizes ("8,8,4,0"); empty: per_rank on every rank
    sample: tuple[int, ...] = (3, 8, 8)  # one sample: (C, spatial…)
    dist: str = "normal"
    seed: int = 0

    def sizes(self) -> tuple[int, ...]:
        """Each rank's batch size."""
        if self.batches.strip():
            return tuple(int(p) for p in self.batches.replace(" ", "").split(",") if p != "")
        return (self.per_rank,) * self.world

    def estimate_bytes(self) -> int:
        """The peak memory a run adds to the server's process tree: the parent's full-batch
        reference and the spread's draws (a few MB, in blocks), plus ``world`` forked ranks. The
        fork server is not in it (``workers.FORK_SERVER_BYTES``, once)."""
        values = sum(self.sizes()) * math.prod(self.sample)
        parent = DP_PER_VALUE * values + DP_PER_CHANNEL * self.sample[0] + 4 * MB
        return BASE + parent + with_workers(self.world, RANK_PER_VALUE * values, FORKED_RANK_BYTES)

    def refusal(self) -> str | None:
        """Why this self is not run, or None — checked on plain integers before anything starts."""
        typed = _typed_sizes(self)
        if typed:
            return typed
        sizes = self.sizes()
        per_sample = math.prod(self.sample) if self.sample else 0
        checks = [
            (not 1 <= self.world <= MAX_WORLD, f"the world size is 1 to {MAX_WORLD}"),
            (not 2 <= len(self.sample) + 1 <= 6, "a sample is (C, spatial…): 1 to 5 numbers"),
            (any(d < 1 for d in self.sample), "every dimension of a sample needs at least 1"),
            (per_sample > MAX_SAMPLE_VALUES, f"a sample holds {per_sample:,} values, over the limit of "
                                             f"{MAX_SAMPLE_VALUES:,}"),
            (any(not 0 <= s <= MAX_RANK_BATCH for s in sizes), f"a rank's batch size is 0 to {MAX_RANK_BATCH}"),
            (sum(sizes) * per_sample > MAX_VALUES, f"the batch holds {sum(sizes) * per_sample:,} values, over the "
                                                   f"limit of {MAX_VALUES:,}"),
            (sum(sizes) * max(1, per_sample // max(1, self.sample[0])) < 2 if self.sample else True,
             "the whole batch needs more than 1 value per channel to train"),
            (self.dist not in DISTRIBUTIONS, f"unknown distribution; choose one of {', '.join(DISTRIBUTIONS)}"),
        ]  # fmt: skip
        return next((message for failed, message in checks if failed), None)


def _typed_sizes(config: DataParallelConfig) -> str | None:
    """Why the typed list of batch sizes is unusable, or None."""
    parts = [p for p in config.batches.replace(" ", "").split(",") if p != ""]
    if config.batches.strip() and not all(p.isdigit() and len(p) <= 4 for p in parts):
        return "batch sizes are whole numbers ≥ 0, separated by commas, like 8,8,4,0"
    if config.batches.strip() and len(parts) != config.world:
        return f"give one batch size per rank: {len(parts)} sizes for {config.world} ranks"
    return None


def batch_sizes(text: str) -> str:
    """A typed list of per-rank batch sizes, ``"8,8,4,0"`` (or empty for even sizes)."""
    body = text.strip()
    if body and not re.fullmatch(r"\d{1,4}(\s*,\s*\d{1,4})*", body):
        raise ValueError("batch sizes are whole numbers ≥ 0 separated by commas, like 8,8,4,0")
    return ",".join(p.strip() for p in body.split(",")) if body else ""


DATA_PARALLEL = QuerySpec[DataParallelConfig](
    [
        Param("world", "world", int_in(1, MAX_WORLD)),
        Param("per_rank", "per_rank", int_in(0, MAX_RANK_BATCH)),
        Param("batches", "batches", batch_sizes),
        Param("sample", "sample", parse_shape),
        Param("dist", "dist", choice(DISTRIBUTIONS)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
    ]
)
