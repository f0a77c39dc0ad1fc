"""The layer page's timing of its own view: eager, and compiled in a fork of its own."""

from __future__ import annotations

import glob
import os
import tempfile

from bnviz.explorer.layer import timing
from bnviz.explorer.layer.url import Config


def test_compiled_timing_runs_in_a_process_of_its_own_from_cold():
    """bnviz and torch compiled in a fork (inductor's start-up apart), nothing left on disk."""
    caches = os.path.join(tempfile.gettempdir(), "bnviz-inductor-*")  # the fork server's temp dir is this one
    before = set(glob.glob(caches))
    speed = timing.measure_config_compiled(Config(shape=(4, 3, 4, 4)))
    for key in ("bnviz", "torch", "ratio", "bnviz compile s", "torch compile s", "inductor start-up s", "eager bnviz",
                "eager torch"):
        assert speed[key] > 0, (key, speed)
    assert speed["process bytes"] > 32 * 2**20, speed  # inductor and two compiled layers, in that process
    assert set(glob.glob(caches)) == before, "the fork's inductor cache is removed"


def test_measure_config():
    for mode in ("train", "eval"):
        speed = timing.measure_config(Config(mode=mode, shape=(4, 3, 4, 4)), repeats=2)
        assert speed["bnviz"] > 0 and speed["torch"] > 0 and speed["ratio"] > 0
    compiled = timing.measure_config(Config(shape=(4, 3, 4, 4)), repeats=2, compiled=True)
    assert compiled["bnviz compile s"] > 0 and compiled["torch compile s"] > 0
