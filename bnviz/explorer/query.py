"""The URL query string ⇄ ``Config``: every control of the app under a short name.

``parse_query`` never raises: a malformed or hostile value falls back to the default and
yields a warning that quotes it *inertly* (see ``inert``); ``to_query`` writes every field, so a
link reproduces the view exactly and ``parse_query(to_query(c)) == (c, [])``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from bnviz.explorer.compare import DEVICES, DTYPES, LAYERS, MAX_RANK, MAX_STEPS, MODES, Config
from bnviz.explorer.data import DISTRIBUTIONS

MAX_VALUE_LENGTH = 100
MAX_DIM = 100_000_000
# URL name -> Config field
FIELD_OF = {
    "layer": "layer",
    "shape": "shape",
    "mode": "mode",
    "momentum": "momentum",
    "eps": "eps",
    "affine": "affine",
    "track": "track_running_stats",
    "dtype": "dtype",
    "device": "device",
    "dist": "dist",
    "seed": "seed",
    "steps": "steps",
}
PARAMS = tuple(FIELD_OF)


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


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return text

    return parse


def _float_in(lo: float, hi: float, allow_none: bool = False) -> Callable[[str], float | None]:
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


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ValueError("expected true or false")
    return lowered == "true"


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d{1,10}\s*", text) or not lo <= int(text) <= hi:
            raise ValueError(f"expected a whole number between {lo} and {hi}")
        return int(text)

    return parse


PARSERS: dict[str, Callable[[str], Any]] = {
    "layer": _choice(LAYERS),
    "shape": parse_shape,
    "mode": _choice(MODES),
    "momentum": _float_in(0.0, 1.0, allow_none=True),
    "eps": _float_in(-1.0, 1.0),
    "affine": _bool,
    "track": _bool,
    "dtype": _choice(tuple(DTYPES)),
    "device": _choice(DEVICES),
    "dist": _choice(DISTRIBUTIONS),
    "seed": _int_in(0, 2**31 - 1),
    "steps": _int_in(0, MAX_STEPS),
}


def inert(text: str, limit: int = 60) -> str:
    """``text`` made safe to show inside Markdown: truncated, and every character that Markdown,
    Streamlit's colour/emoji directives or LaTeX could act on backslash-escaped. Never HTML."""
    text = text if len(text) <= limit else text[:limit] + "…"
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in text)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:&;=\"'/%^@])", r"\\\1", text)


def format_value(name: str, config: Config) -> str:
    """The URL text of one parameter."""
    value = getattr(config, FIELD_OF[name])
    if name == "shape":
        return ",".join(str(d) for d in value)
    if name == "momentum" and value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_query(config: Config) -> dict[str, str]:
    """Every parameter of ``config`` as URL text."""
    return {name: format_value(name, config) for name in PARAMS}


def parse_query(params: Mapping[str, str | list[str]], base: Config | None = None) -> tuple[Config, list[str]]:
    """Read the known parameters over ``base`` (default: ``Config()``); unknown ones are ignored.

    Returns the config and one warning per value that was refused (and replaced by the default).
    """
    base = base or Config()
    values: dict[str, Any] = {}
    warnings: list[str] = []
    for name in PARAMS:
        if name not in params:
            continue
        raw = params[name]
        text = raw[-1] if isinstance(raw, list) else raw
        if not isinstance(text, str):
            text = str(text)
        default = format_value(name, base)
        try:
            if len(text) > MAX_VALUE_LENGTH:
                raise ValueError(f"longer than {MAX_VALUE_LENGTH} characters")
            values[FIELD_OF[name]] = PARSERS[name](text)
        except ValueError as exc:
            warnings.append(f"Ignored {name}={inert(text)} ({inert(str(exc), 120)}); using {name}={inert(default)}.")
    return replace(base, **values), warnings
