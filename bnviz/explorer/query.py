"""The URL query string ⇄ a page's frozen config: every control under a short name.

Each page has a ``QuerySpec``: its config dataclass and one ``Param`` per control (URL name,
field, parser). ``parse`` never raises: a malformed or hostile value falls back to the default
and yields a warning that quotes it *inertly* (see ``inert``); ``to_query`` writes every field,
so a link reproduces the view exactly and ``spec.parse(spec.to_query(c)) == (c, [])``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from bnviz.explorer import mlp
from bnviz.explorer.data import DISTRIBUTIONS
from bnviz.explorer.data_parallel import engine as data_parallel
from bnviz.explorer.data_parallel.engine import DataParallelConfig
from bnviz.explorer.eval_gap import engine as eval_gap
from bnviz.explorer.family import engine as family
from bnviz.explorer.family.engine import FamilyConfig
from bnviz.explorer.inference import engine as inference
from bnviz.explorer.inference.engine import InferenceConfig
from bnviz.explorer.layer.engine import (
    DEVICES,
    DTYPES,
    LAYERS,
    LAYOUTS,
    MAX_RANK,
    MAX_STEPS,
    MAX_TRAIN_BATCH,
    MODES,
    Config,
)
from bnviz.explorer.network import engine as network
from bnviz.explorer.network.engine import NetworkConfig
from bnviz.explorer.training import engine as training

MAX_VALUE_LENGTH = 100
MAX_DIM = 100_000_000
T = TypeVar("T")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8,3,16,16"`` (also ``"(8, 3, 16, 16)"``, ``"8x3x16x16"``) → ``(8, 3, 16, 16)``."""
    body = text.strip().strip("()[]")
    parts = [p for p in re.split(r"[,x×\s]+", body) if p]
    if not parts:
        raise ValueError("a shape needs at least one dimension, like 8,3,16,16")
    if len(parts) > MAX_RANK:
        raise ValueError(f"at most {MAX_RANK} dimensions")
    dims = []
    for p in parts:
        if not re.fullmatch(r"\d{1,9}", p):
            raise ValueError("dimensions are whole numbers ≥ 0, separated by commas")
        dims.append(int(p))
    if any(d > MAX_DIM for d in dims):
        raise ValueError(f"a dimension is at most {MAX_DIM:,}")
    return tuple(dims)


def choice(options: tuple[str, ...]) -> Callable[[str], str]:
    """A parser that accepts exactly one of ``options``."""

    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def float_in(lo: float, hi: float, allow_none: bool = False) -> Callable[[str], float | None]:
    """A parser for a finite number in ``[lo, hi]`` (or ``none`` when allowed)."""

    def parse(text: str) -> float | None:
        if allow_none and text.strip().lower() == "none":
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number{' or none' if allow_none else ''}") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise ValueError(f"expected a number between {lo:g} and {hi:g}")
        return value

    return parse


def number_list(lo: float, hi: float, most: int) -> Callable[[str], tuple[float, ...]]:
    """A parser for a comma-separated list of 1 to ``most`` finite numbers in ``[lo, hi]``."""
    one = float_in(lo, hi)

    def parse(text: str) -> tuple[float, ...]:
        parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
        if not 1 <= len(parts) <= most:
            raise ValueError(f"expected 1 to {most} numbers separated by commas")
        return tuple(one(p) for p in parts)  # type: ignore[misc]

    return parse


def whole_list(lo: int, hi: int, most: int) -> Callable[[str], tuple[int, ...]]:
    """A parser for a comma-separated list of 1 to ``most`` distinct whole numbers in ``[lo, hi]``."""
    one = int_in(lo, hi)

    def parse(text: str) -> tuple[int, ...]:
        parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
        if not 1 <= len(parts) <= most:
            raise ValueError(f"expected 1 to {most} whole numbers separated by commas")
        values = tuple(one(p) for p in parts)
        if len(set(values)) != len(values):
            raise ValueError("a number repeats")
        return values

    return parse


def std_or_default(text: str) -> float | None:
    """``default`` (torch's initialisation: None) or a standard deviation above 0, at most 10."""
    if text.strip().lower() == "default":
        return None
    value = float_in(1e-6, 10.0)(text)
    return value


def boolean(text: str) -> bool:
    """``true`` or ``false``."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered == "true"


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """A parser for a whole number in ``[lo, hi]``."""

    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d{1,10}\s*", text) or not lo <= int(text) <= hi:
            raise ValueError(f"expected a whole number between {lo:,} and {hi:,}")
        return int(text)

    return parse


def escape(text: str) -> str:
    """Our own text made safe inside Markdown: every character that Markdown, Streamlit's
    colour/emoji directives or LaTeX could act on backslash-escaped."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&;=\"'/%^@])", r"\\\1", text)


def inert(text: str, limit: int = 60) -> str:
    """A value from a link or a box, to quote inside Markdown as inert text: a code span, whose
    content Markdown shows as it is — no emphasis, link, autolinked address (``https://…``,
    ``www.…``), image, colour directive or LaTeX. Truncated to ``limit`` characters; characters
    that do not print become U+FFFD; the fence is one backtick longer than the longest run of
    backticks inside. Streamlit turns ``:material/name:`` into an icon before parsing, even in
    code: a word joiner (U+2060) after its colon keeps it text. Never HTML."""
    text = text if len(text) <= limit else text[:limit] + "…"
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    text = text.replace(":material/", ":\u2060material/")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def format_any(value: Any) -> str:
    """A field's URL text: shapes and lists comma-separated (numbers as ``:g``), None as ``none``,
    booleans lower-case."""
    if isinstance(value, tuple):
        return ",".join(f"{d:g}" if isinstance(d, float) else str(d) for d in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Param:
    """One control: its URL name, the config field it sets, and the parser of its URL text."""

    name: str
    field: str
    parse: Callable[[str], Any]


class QuerySpec(Generic[T]):
    """The URL of one page: parse a query over a base config, and write a config back."""

    def __init__(self, params: list[Param], formats: dict[str, Callable[[Any], str]] | None = None) -> None:
        self.params = {p.name: p for p in params}
        self.formats = formats or {}  # a field's own URL text, where format_any's is not it

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.params)

    def format_value(self, name: str, config: T) -> str:
        """The URL text of one parameter."""
        value = getattr(config, self.params[name].field)
        return self.formats[name](value) if name in self.formats else format_any(value)

    def to_query(self, config: T) -> dict[str, str]:
        """Every parameter of ``config`` as URL text."""
        return {name: self.format_value(name, config) for name in self.params}

    def parse(self, query: Mapping[str, str | list[str]], base: T) -> tuple[T, list[str]]:
        """Read the known parameters over ``base``; unknown ones are ignored. Returns the config
        and one warning per value that was refused (and replaced by the default)."""
        config, warnings, _ = self.parse_refused(query, base)
        return config, warnings

    def parse_refused(self, query: Mapping[str, str | list[str]], base: T) -> tuple[T, list[str], list[str]]:
        """``parse``, and the names of the refused parameters (a page resets their boxes)."""
        values: dict[str, Any] = {}
        warnings: list[str] = []
        refused: list[str] = []
        for name, param in self.params.items():
            if name not in query:
                continue
            raw = query[name]
            text = raw[-1] if isinstance(raw, list) else raw
            if not isinstance(text, str):
                text = str(text)
            default = self.format_value(name, base)
            try:
                if len(text) > MAX_VALUE_LENGTH:
                    raise ValueError(f"longer than {MAX_VALUE_LENGTH} characters")
                values[param.field] = param.parse(text)
            except ValueError as exc:
                refused.append(name)
                warnings.append(
                    f"Ignored {name}={inert(text)} ({escape(str(exc)[:120])}); using {name}={inert(default)}."
                )
        return replace(base, **values), warnings, refused  # type: ignore[type-var]


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


NETWORK = QuerySpec[NetworkConfig](
    [
        Param("batch", "batch", int_in(2, network.MAX_BATCH)),
        Param("image", "image", int_in(4, network.MAX_IMAGE)),
        Param("channels", "channels", int_in(1, network.MAX_CHANNELS)),
        Param("steps", "steps", int_in(0, network.MAX_STEPS)),
        Param("lr", "lr", float_in(1e-6, 1.0)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("mode", "mode", choice(network.MODES)),
    ]
)


INFERENCE = QuerySpec[InferenceConfig](
    [
        Param("batch", "batch_size", int_in(2, inference.MAX_BATCH)),
        Param("channels", "channels", int_in(1, inference.MAX_CHANNELS)),
        Param("image", "image_size", int_in(3, inference.MAX_IMAGE)),
        Param("steps", "train_steps", int_in(0, inference.MAX_STEPS)),
        Param("finetune", "finetune_steps", int_in(1, inference.MAX_FINETUNE_STEPS)),
        Param("lr", "lr", float_in(1e-6, 1.0)),
        Param("shift", "shift", float_in(-100.0, 100.0)),
        Param("channel", "channel", int_in(0, inference.MAX_CHANNELS - 1)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("dtype", "dtype", choice(tuple(inference.DTYPES))),
    ]
)


FAMILY = QuerySpec[FamilyConfig](
    [
        Param("shape", "shape", parse_shape),
        Param("groups", "groups", int_in(1, 4096)),
        Param("dist", "dist", choice(DISTRIBUTIONS)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
        Param("ln", "ln_over", choice(family.LN_OVER)),
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
    [Param("channel", "channel", int_in(0, 4095)), Param("member", "member", choice(family.MEMBERS))]
)


def batch_sizes(text: str) -> str:
    """A typed list of per-rank batch sizes, ``"8,8,4,0"`` (or empty for even sizes)."""
    body = text.strip()
    if body and not re.fullmatch(r"\d{1,4}(\s*,\s*\d{1,4})*", body):
        raise ValueError("batch sizes are whole numbers ≥ 0 separated by commas, like 8,8,4,0")
    return ",".join(p.strip() for p in body.split(",")) if body else ""


DATA_PARALLEL = QuerySpec[DataParallelConfig](
    [
        Param("world", "world", int_in(1, data_parallel.MAX_WORLD)),
        Param("per_rank", "per_rank", int_in(0, data_parallel.MAX_RANK_BATCH)),
        Param("batches", "batches", batch_sizes),
        Param("sample", "sample", parse_shape),
        Param("dist", "dist", choice(DISTRIBUTIONS)),
        Param("seed", "seed", int_in(0, 2**31 - 1)),
    ]
)


def _init(value: float | None) -> str:
    return "default" if value is None else f"{value:g}"


SEEDS = whole_list(0, mlp.MAX_SEED, training.MAX_SEEDS)
TRAINING_DRIFT = QuerySpec[training.DriftConfig](
    [
        Param("lr", "lr", float_in(1e-6, mlp.MAX_LR)),
        Param("steps", "steps", int_in(1, mlp.MAX_STEPS)),
        Param("seed", "seed", int_in(0, mlp.MAX_SEED)),
        Param("init", "init_std", std_or_default),
        Param("every", "eval_every", int_in(1, mlp.MAX_STEPS)),
        Param("width", "width", int_in(mlp.MIN_WIDTH, mlp.MAX_WIDTH)),
        Param("batch", "batch", int_in(mlp.MIN_BATCH, mlp.MAX_BATCH)),
    ],
    {"init": _init},
)
TRAINING_SWEEP = QuerySpec[training.SweepConfig](
    [
        Param("sweep_lrs", "lrs", number_list(1e-6, mlp.MAX_LR, training.MAX_LRS)),
        Param("sweep_seeds", "seeds", SEEDS),
        Param("sweep_steps", "steps", int_in(1, mlp.MAX_STEPS)),
        Param("sweep_act", "activation", choice(tuple(mlp.ACTIVATIONS))),
        Param("sweep_init", "init_std", std_or_default),
    ],
    {"sweep_init": _init},
)
TRAINING_NOISE = QuerySpec[training.NoiseConfig](
    [
        Param("noise_lr", "lr", float_in(1e-6, mlp.MAX_LR)),
        Param("noise_steps", "steps", int_in(1, mlp.MAX_STEPS)),
        Param("noise_seeds", "seeds", SEEDS),
        Param("noise_mean", "noise_mean", float_in(0.0, training.MAX_NOISE)),
        Param("noise_std", "noise_std", float_in(1.0, training.MAX_NOISE)),
    ]
)
TRAINING_PLACEMENT = QuerySpec[training.PlacementConfig](
    [
        Param("relu_lr", "lr", float_in(1e-6, mlp.MAX_LR)),
        Param("relu_steps", "steps", int_in(1, mlp.MAX_STEPS)),
        Param("relu_seeds", "seeds", SEEDS),
    ]
)


STEPS = int_in(1, mlp.MAX_STEPS)
SEED = int_in(0, mlp.MAX_SEED)
EVAL_GAP = {  # section: its URL, one QuerySpec per config of bnviz.explorer.eval_gap.engine
    "batches": QuerySpec[eval_gap.BatchesConfig](
        [Param("order_lr", "lr", float_in(1e-6, mlp.MAX_LR)), Param("order_steps", "steps", STEPS),
         Param("order_batch", "batch", int_in(2, eval_gap.MAX_BATCH)), Param("order_seed", "seed", SEED)]
    ),
    "lag": QuerySpec[eval_gap.LagConfig](
        [Param("lag_momenta", "momenta", number_list(1e-6, 1.0, eval_gap.MAX_MOMENTA)),
         Param("lag_lr", "lr", float_in(1e-6, mlp.MAX_LR)), Param("lag_steps", "steps", STEPS),
         Param("lag_seed", "seed", SEED)]
    ),
    "dropout": QuerySpec[eval_gap.DropoutConfig](
        [Param("p", "p", float_in(1e-6, eval_gap.MAX_P)), Param("dropout_input", "placement",
         choice(eval_gap.DROPOUT_INPUTS)), Param("dropout_steps", "steps", STEPS),
         Param("dropout_seed", "seed", SEED)]
    ),
    "accumulation": QuerySpec[eval_gap.AccumulationConfig](
        [Param("micro", "micro", int_in(1, eval_gap.MAX_MICRO)), Param("micro_batch", "micro_batch", int_in(2, 128)),
         Param("accum_momentum", "momentum", float_in(1e-6, 1.0)), Param("accum_steps", "steps", STEPS)]
    ),
    "passes": QuerySpec[eval_gap.PassesConfig](
        [Param("pair", "pair", choice(eval_gap.PAIRS)), Param("pairs", "pairs", int_in(1, eval_gap.MAX_PAIRS)),
         Param("passes_steps", "steps", STEPS)]
    ),
    "checkpoint": QuerySpec[eval_gap.CheckpointConfig](
        [Param("ckpt_steps", "steps", STEPS), Param("ckpt_momentum", "momentum", float_in(1e-6, 1.0))]
    ),
}  # fmt: skip
