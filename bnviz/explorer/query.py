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

MAX_VALUE_LENGTH = 100
MAX_RANK = 8  # dims of a shape a link may give
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
    """One control: its URL name, the config field it sets, and the parser of its URL text.
    ``write=False``: an old name still read from a link (before the name that replaced it, which
    wins when both are given), never written and never a widget."""

    name: str
    field: str
    parse: Callable[[str], Any]
    write: bool = True


class QuerySpec(Generic[T]):
    """The URL of one page: parse a query over a base config, and write a config back."""

    def __init__(self, params: list[Param], formats: dict[str, Callable[[Any], str]] | None = None) -> None:
        self.params = {p.name: p for p in params}
        self.formats = formats or {}  # a field's own URL text, where format_any's is not it

    @property
    def names(self) -> tuple[str, ...]:
        """The URL names written (and shown as widgets): every parameter but the old aliases."""
        return tuple(name for name, p in self.params.items() if p.write)

    def format_value(self, name: str, config: T) -> str:
        """The URL text of one parameter."""
        value = getattr(config, self.params[name].field)
        return self.formats[name](value) if name in self.formats else format_any(value)

    def to_query(self, config: T) -> dict[str, str]:
        """Every parameter of ``config`` as URL text."""
        return {name: self.format_value(name, config) for name in self.names}

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


