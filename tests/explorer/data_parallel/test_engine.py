"""The data-parallel page's engine: k real gloo processes against the full batch, bounded in time,
none left behind — and a rank that dies mid-run is reported clearly, not waited on forever."""

from __future__ import annotations

import multiprocessing
import pickle
import time
from dataclasses import replace

import pytest

from bnviz.explorer.data_parallel import engine as data_parallel
from bnviz.explorer.data_parallel import worker as dp_worker
from bnviz.explorer.data_parallel.engine import WorldError, all_figures, rank_rows
from bnviz.explorer.data_parallel.engine import run as run_data_parallel
from bnviz.explorer.data_parallel.url import DataParallelConfig

CASES = [
    pytest.param(DataParallelConfig(), id="4-even"),
    pytest.param(DataParallelConfig(world=2, batches="5,0"), id="empty-rank"),
    pytest.param(DataParallelConfig(world=3, batches="1,1,6", sample=(4, 16)), id="uneven-1d"),
    pytest.param(DataParallelConfig(world=1, per_rank=6, sample=(2,)), id="world-1-rank-2"),
    pytest.param(DataParallelConfig(world=2, per_rank=3, sample=(2, 2, 3, 3), dist="large-mean"), id="3d-large-mean"),
]


def _no_rank_left():
    assert multiprocessing.active_children() == [], multiprocessing.active_children()


@pytest.mark.parametrize("config", CASES)
def test_sync_equals_the_full_batch_on_every_rank(config):
    r = run_data_parallel(config)
    assert r.verdict == "match", [(x.rank, x.sync_error, x.running_error) for x in r.ranks if not x.ok]
    assert [x.count for x in r.ranks] == list(config.sizes())
    assert [x.start for x in r.ranks] == [sum(config.sizes()[:i]) for i in range(config.world)]
    pickle.loads(pickle.dumps(r))
    figs = all_figures(r)
    assert all(f.data and len(f.to_json()) <= 100_000 for f in figs.values())
    assert len(rank_rows(r)) == config.world
    _no_rank_left()


def test_plain_per_rank_batch_norm_is_off_and_sync_is_not():
    r = run_data_parallel(DataParallelConfig(world=4, per_rank=2))
    assert all(x.plain_error > 0.05 for x in r.ranks), [x.plain_error for x in r.ranks]
    assert all(x.sync_error < 1e-5 for x in r.ranks), [x.sync_error for x in r.ranks]


def test_spread_grows_as_the_batch_shrinks():
    rows = run_data_parallel(DataParallelConfig(world=2, per_rank=4)).spread["rows"]
    sds = [row["mean_sd"] for row in rows]
    assert sds == sorted(sds, reverse=True), sds
    assert sds[0] > 4 * sds[-1]


def test_a_rank_dying_mid_run_is_a_clear_error_within_its_bound(monkeypatch):
    monkeypatch.setenv(dp_worker.FAULT_ENV, "rank:1")
    start = time.monotonic()
    with pytest.raises(WorldError, match=r"rank 1 stopped \(exit code 3\)"):
        run_data_parallel(DataParallelConfig(world=3, per_rank=2, seed=5))
    took = time.monotonic() - start
    assert took < dp_worker.GLOO_TIMEOUT.total_seconds() + 15, took
    _no_rank_left()


def test_the_deadline_kills_a_world_that_does_not_finish(monkeypatch):
    monkeypatch.setenv(dp_worker.FAULT_ENV, "rank:0")
    with pytest.raises(WorldError):
        data_parallel.run_world(DataParallelConfig(world=2, per_rank=2, seed=6), deadline_s=3)
    _no_rank_left()


@pytest.mark.parametrize(
    "change, words",
    [(dict(world=0), "world size"), (dict(world=9), "world size"), (dict(batches="8,8"), "one batch size per rank"),
     (dict(batches="a,b,c,d"), "whole numbers"), (dict(per_rank=65), "0 to 64"), (dict(sample=(3, 100, 100)),
     "over the limit"), (dict(per_rank=0), "more than 1 value"), (dict(dist="x"), "unknown")],
)  # fmt: skip
def test_refusals_before_anything_starts(change, words, monkeypatch):
    config = replace(DataParallelConfig(), **change)
    assert words in (config.refusal() or ""), config.refusal()
    monkeypatch.setattr(data_parallel, "run_world", lambda *a, **k: pytest.fail("started ranks for a refused config"))
    with pytest.raises(ValueError):
        run_data_parallel(config)
