"""The default views computed ahead (``bnviz/explorer/<page>/stored.json``): they are the runs they
stand for — seed 0 of every stored config is rerun here, live, and must give the same numbers — and
only a config equal to a stored one is served from them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import torch

from bnviz.explorer import stored
from bnviz.explorer.eval_gap import engine as eval_gap
from bnviz.explorer.training import engine as training
from bnviz.explorer.training.url import DriftConfig

ENGINES = {"training": training, "eval-gap": eval_gap}
AHEAD = [(page, config) for page, engine in ENGINES.items() for config in engine.AHEAD]
RERUN = "the stored default views are stale: rerun python scripts/store_defaults.py and commit the JSON"


def _id(case: tuple[str, Any]) -> str:
    page, config = case
    return f"{page}-{type(config).__name__}-{stored.key(config).__hash__() % 1000:03d}"


def _same(a: Any, b: Any) -> bool:
    """Equal as plain data, NaN equal to NaN (a diverged training's loss)."""
    return json.dumps(stored.to_plain(a), sort_keys=True) == json.dumps(stored.to_plain(b), sort_keys=True)


@pytest.mark.parametrize("page", list(ENGINES))
def test_the_store_holds_every_default_view_and_nothing_else(page):
    engine = ENGINES[page]
    data = json.loads(engine.STORE.path.read_text())
    assert data["torch"] == torch.__version__, (data["torch"], torch.__version__, RERUN)
    assert set(data["reports"]) == {stored.key(c) for c in engine.AHEAD}, RERUN
    for config in engine.AHEAD:
        assert engine.computed_ahead(config)
        report = engine.run(config)
        assert report.config == config, (report.config, config)
        assert _same(stored.from_plain(type(report), stored.to_plain(report)), report)  # round trip


@pytest.mark.parametrize("case", AHEAD, ids=[_id(c) for c in AHEAD])
def test_seed_0_of_every_stored_view_reruns_to_the_same_numbers(case):
    page, config = case
    engine = ENGINES[page]
    kept = engine.run(config)
    if page == "training":
        live = engine.run(replace(config, seeds=(config.seeds[0],)), live=True)
        assert _same(live, kept.seed(0)), RERUN
    elif hasattr(config, "seeds"):  # eval-gap sections 1–3
        live = engine.run(replace(config, seeds=(config.seeds[0],)), live=True)
        assert _same(live.runs[0], kept.runs[0]), RERUN
    else:  # sections 4–6: one seed, the whole report
        assert _same(engine.run(config, live=True), kept), RERUN


def test_a_changed_config_runs_live(monkeypatch):
    changed = replace(DriftConfig(), steps=40, eval_every=20, seeds=(0, 1))
    assert not training.computed_ahead(changed) and training.STORE.get(changed) is None
    class Live(Exception):
        pass

    def live(*args: object) -> None:
        raise Live

    monkeypatch.setattr(training, "_seeds", live)
    training.run(DriftConfig())  # stored: no live run
    with pytest.raises(Live):
        training.run(changed)


# --- to_plain / from_plain ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _A:
    x: float
    name: str


@dataclass(frozen=True)
class _B:
    x: float
    steps: tuple[int, ...]


@dataclass(frozen=True)
class _Holder:
    table: dict[float, tuple[float, ...]] = field(default_factory=dict)
    by_name: dict[str, _A] = field(default_factory=dict)
    one: _A | _B | None = None
    pair: tuple[int, str] = (0, "")
    maybe: float | None = None


ROUND_TRIPS = [
    _Holder(),
    _Holder(table={0.001: (1.0, math.inf), 0.1: ()}, by_name={"a": _A(1.5, "a")}, one=_A(2.0, "z"), pair=(3, "b")),
    _Holder(one=_B(1.0, (0, 10, 20)), maybe=0.5),
    _Holder(table={1.0: (math.nan,)}),
]


@pytest.mark.parametrize("obj", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_plain_data_round_trips_through_json(obj):
    text = json.dumps(stored.to_plain(obj))
    back = stored.from_plain(_Holder, json.loads(text))
    assert _same(back, obj), (back, obj)
    assert type(back.one) is type(obj.one)  # a union of dataclasses: the one whose fields the data holds
    assert all(type(k) is float for k in back.table)  # JSON's string keys read back as numbers


def test_from_plain_refuses_data_of_the_wrong_type():
    with pytest.raises(TypeError, match="is not a int"):
        stored.from_plain(_Holder, {"pair": ["three", "b"]})
