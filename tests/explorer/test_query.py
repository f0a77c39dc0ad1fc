"""URL ⇄ Config: round trips, hostile values, inert quoting."""

from __future__ import annotations

from dataclasses import fields
from urllib.parse import parse_qsl

import pytest

from bnviz.explorer.data_parallel.url import DATA_PARALLEL, DataParallelConfig
from bnviz.explorer.eval_gap.url import EVAL_GAP, BatchesConfig
from bnviz.explorer.family.url import FAMILY, FamilyConfig
from bnviz.explorer.inference.url import INFERENCE, InferenceConfig
from bnviz.explorer.layer.url import FIELD_OF, FOCUS, LAYER, PARAMS, Config, Focus, parse_query, to_query
from bnviz.explorer.layer.url import Config as LayerConfig
from bnviz.explorer.network.url import NETWORK, NetworkConfig
from bnviz.explorer.query import inert, parse_shape
from bnviz.explorer.training.url import TRAINING_DRIFT, DriftConfig

ROUND_TRIPS = [
    Config(),
    Config(layer="BatchNorm", shape=(2, 3, 4, 5, 6, 7), momentum=None, eps=1e-3, affine=False,
           track_running_stats=False, dtype="bfloat16", dist="bimodal", seed=42, steps=0, mode="eval"),
    Config(layer="BatchNorm1d", shape=(32, 4), momentum=0.37, eps=0.0, dtype="float16", dist="heavy-tailed"),
    Config(layer="BatchNorm3d", shape=(0, 3, 1, 1, 1), momentum=1.0, device="cuda", dist="uniform", steps=100),
    Config(shape=(7,), eps=-0.5),
    Config(layer="BatchNorm1d", shape=(8, 128, 64), layout="features-last", train_batch=32),
]  # fmt: skip


@pytest.mark.parametrize("config", ROUND_TRIPS, ids=range(len(ROUND_TRIPS)))
def test_round_trip(config):
    assert parse_query(to_query(config)) == (config, [])


def test_every_config_field_has_a_url_name():
    """All but ``own``, the digest of a visitor's uploaded tensor: a link cannot carry a file."""
    assert {f.name for f in fields(Config)} - {"own"} == set(FIELD_OF.values())
    assert set(to_query(Config())) == set(PARAMS)


@pytest.mark.parametrize(
    "text, shape",
    [("8,3,16,16", (8, 3, 16, 16)), ("(8, 3, 16, 16)", (8, 3, 16, 16)), ("8x3x16", (8, 3, 16)), (" 4 , 2 ", (4, 2)),
     ("[0,3]", (0, 3)), ("5", (5,))],
)  # fmt: skip
def test_parse_shape(text, shape):
    assert parse_shape(text) == shape


HOSTILE = {
    "layer": "<img src=x onerror=alert(1)>",
    "shape": "<script>alert('x')</script>",
    "mode": "javascript:alert(1)",
    "momentum": "2",
    "eps": "nan",
    "affine": "yes",
    "track": "**bold**",
    "dtype": "int64",
    "device": "tpu",
    "dist": "$$\\LaTeX$$",
    "seed": "-1",
    "steps": "1e9",
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_values_fall_back_with_a_warning(name):
    config, warnings = parse_query({name: HOSTILE[name]})
    assert config == Config(), f"{name} changed the config: {config}"
    assert len(warnings) == 1 and warnings[0].startswith(f"Ignored {name}={inert(HOSTILE[name])} (")
    outside_code = warnings[0].replace(inert(HOSTILE[name]), "")
    assert HOSTILE[name] not in outside_code, f"quoted outside a code span: {warnings[0]!r}"


def test_all_hostile_at_once_and_unknown_keys_ignored():
    config, warnings = parse_query({**HOSTILE, "utm_source": "x", "shape2": "1"})
    assert config == Config() and len(warnings) == len(HOSTILE)


def test_long_values_are_refused_and_truncated():
    config, warnings = parse_query({"shape": "1," * 500})
    assert config == Config() and "longer than" in warnings[0] and len(warnings[0]) < 300


def test_repeated_parameter_takes_the_last():
    assert parse_query({"layer": ["BatchNorm1d", "BatchNorm3d"]})[0].layer == "BatchNorm3d"


@pytest.mark.parametrize(
    "text, expected",
    [("plain", "`plain`"), ("<b>", "`<b>`"), ("a*b_c", "`a*b_c`"), ("$x$", "`$x$`"), (":red[x]", "`:red[x]`"),
     ("see https://evil.example/login now", "`see https://evil.example/login now`"),
     ("a`b", "``a`b``"), ("`x", "`` `x ``"), ("ab``", "``` ab`` ```"),
     (":material/home:", "`:\u2060material/home:`"),
     ("x" * 70, "`" + "x" * 60 + "…`"), ("tab\there", "`tab\ufffdhere`")],
)  # fmt: skip
def test_inert_quotes_a_value_as_a_code_span(text, expected):
    assert inert(text) == expected


NETWORK_TRIPS = [NetworkConfig(), NetworkConfig(batch=2, image=64, channels=32, steps=0, lr=1e-3, seed=9, mode="train")]


@pytest.mark.parametrize("config", NETWORK_TRIPS, ids=range(len(NETWORK_TRIPS)))
def test_network_round_trip_and_every_field_in_the_url(config):
    assert NETWORK.parse(NETWORK.to_query(config), NetworkConfig()) == (config, [])
    assert {f.name for f in fields(NetworkConfig)} == {p.field for p in NETWORK.params.values()}


@pytest.mark.parametrize(
    "name, text", [("batch", "1"), ("image", "1000"), ("channels", "<b>"), ("steps", "51"), ("lr", "inf"),
                   ("mode", "<script>"), ("seed", "-1")],
)  # fmt: skip
def test_network_bad_values_fall_back_with_an_inert_warning(name, text):
    config, warnings = NETWORK.parse({name: text}, NetworkConfig())
    assert config == NetworkConfig() and len(warnings) == 1 and warnings[0].startswith(f"Ignored {name}=")
    assert "<" not in warnings[0].replace(inert(text), ""), warnings[0]


def test_focus_channel():
    assert FOCUS.parse({"channel": "3"}, Focus()) == (Focus(3), [])
    assert FOCUS.parse({"channel": "x"}, Focus())[0] == Focus()


INFERENCE_TRIPS = [
    InferenceConfig(),
    InferenceConfig(batch_size=2, channels=64, image_size=3, train_steps=0, finetune_steps=100, lr=1e-6, shift=-100.0,
                    channel=63, seed=2**31 - 1, dtype="float64"),
    InferenceConfig(batch_size=256, channels=1, image_size=32, train_steps=200, finetune_steps=1, lr=1.0, shift=0.25),
]  # fmt: skip


@pytest.mark.parametrize("config", INFERENCE_TRIPS, ids=range(len(INFERENCE_TRIPS)))
def test_inference_round_trip_and_every_field_in_the_url(config):
    assert INFERENCE.parse(INFERENCE.to_query(config), InferenceConfig()) == (config, [])
    assert {f.name for f in fields(InferenceConfig)} == {p.field for p in INFERENCE.params.values()}


@pytest.mark.parametrize(
    "name, text", [("batch", "1"), ("channels", "65"), ("image", "2"), ("steps", "201"), ("finetune", "0"),
                   ("lr", "0"), ("shift", "nan"), ("channel", "<b>"), ("seed", "-1"), ("dtype", "float16")],
)  # fmt: skip
def test_inference_bad_values_fall_back_with_an_inert_warning(name, text):
    config, warnings = INFERENCE.parse({name: text}, InferenceConfig())
    assert config == InferenceConfig() and len(warnings) == 1 and warnings[0].startswith(f"Ignored {name}=")
    assert "<" not in warnings[0].replace(inert(text), ""), warnings[0]


def test_inference_url_limits_are_the_engines():
    """A value the URL accepts on its own is never refused for being out of range (only for the work)."""
    for name, text in [("batch", "2"), ("channels", "64"), ("image", "32"), ("finetune", "100"), ("lr", "1")]:
        config, warnings = INFERENCE.parse({name: text}, InferenceConfig())
        assert not warnings and (config.refusal() is None or "limit" in config.refusal()), (name, config.refusal())


# --- links from before the page folders: each still parses to the view it named -----------------

OLD_LINKS = [  # (page's spec, its base, a query as the app wrote it before, the config it named)
    ("layer", "?layer=BatchNorm1d&shape=32,10,64&layout=features-last",
     lambda: LayerConfig(layer="BatchNorm1d", shape=(32, 10, 64), layout="features-last")),
    ("layer", "?track=false&mode=eval", lambda: LayerConfig(track_running_stats=False, mode="eval")),
    ("layer", "?momentum=0.01&steps=30", lambda: LayerConfig(momentum=0.01, steps=30)),
    ("layer", "?layer=BatchNorm&shape=2,3,4,4,2,2", lambda: LayerConfig(layer="BatchNorm", shape=(2, 3, 4, 4, 2, 2))),
    ("network", "?batch=2&image=16&channels=8&steps=10&lr=0.1&seed=0&mode=eval",
     lambda: NetworkConfig(batch=2)),
    ("family", "?shape=8,128,64&ln=last&groups=4",
     lambda: FamilyConfig(shape=(8, 128, 64), ln_over="last", groups=4)),
    ("data-parallel", "?world=8&per_rank=2", lambda: DataParallelConfig(world=8, per_rank=2)),
    ("inference", "?batch=8&channels=3&image=6&steps=4&finetune=3&lr=0.1&shift=-1.5&channel=2&seed=5&dtype=float64",
     lambda: InferenceConfig(batch_size=8, channels=3, image_size=6, train_steps=4, finetune_steps=3, lr=0.1,
                             shift=-1.5, channel=2, seed=5, dtype="float64")),
    ("training", "?lr=0.5&steps=2000&seed=0&init=default&every=100&width=100&batch=60",
     lambda: DriftConfig(init_std=None, seeds=(0,))),  # one seed then: that seed alone, as it showed
    ("eval-gap", "?order_lr=0.3&order_steps=500&order_batch=72&order_seed=0", lambda: BatchesConfig(seeds=(0,))),
]  # fmt: skip
SPECS = {"layer": (LAYER, LayerConfig), "network": (NETWORK, NetworkConfig), "family": (FAMILY, FamilyConfig),
         "data-parallel": (DATA_PARALLEL, DataParallelConfig), "inference": (INFERENCE, InferenceConfig),
         "training": (TRAINING_DRIFT, DriftConfig), "eval-gap": (EVAL_GAP["batches"], BatchesConfig)}  # fmt: skip


def test_a_view_of_several_seeds_writes_them_as_one_list_and_reads_them_back():
    config = DriftConfig(seeds=(0, 3, 7))
    query = TRAINING_DRIFT.to_query(config)
    assert query["seeds"] == "0,3,7" and "seed" not in query, query
    assert TRAINING_DRIFT.parse(query, DriftConfig()) == (config, [])


@pytest.mark.parametrize("page, query, want", OLD_LINKS, ids=[f"{p}{q[:40]}" for p, q, _ in OLD_LINKS])
def test_links_from_before_still_name_the_same_view(page, query, want):
    spec, base = SPECS[page]
    config, warnings = spec.parse(dict(parse_qsl(query.lstrip("?"))), base())
    assert not warnings, warnings
    assert config == want(), f"{page}{query}: {config} != {want()}"
