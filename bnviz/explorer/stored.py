"""Reports computed ahead: a page's default views, trained once by ``python scripts/store_defaults.py``
and kept as JSON beside the page's engine, so that the first visitor does not wait for five seeds of
training. Only a config equal to a stored one is served from it — any changed parameter runs live —
and the tests rerun seed 0 of every stored config and find the same numbers.

Reports and configs are frozen dataclasses of numbers, strings, tuples and dicts: ``to_plain`` turns
one into JSON-ready data, ``from_plain`` back, by the dataclass's type hints (NaN and infinities
kept, as Python's ``json`` writes them).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch


def to_plain(obj: Any) -> Any:
    """A dataclass as a dict of its fields, tuples as lists, recursively; numbers and strings as they are."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    return obj


def from_plain(tp: Any, data: Any) -> Any:
    """``data`` (from ``to_plain``) as an instance of the type ``tp``, by its type hints."""
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: from_plain(hints[f.name], data[f.name]) for f in dataclasses.fields(tp) if f.name in data}
        return tp(**fields)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_plain(args[0], v) for v in data)
        return tuple(from_plain(a, v) for a, v in zip(args, data, strict=True))
    if origin is dict:  # JSON's keys are strings: an int or float key is read back as one
        keys = {int: int, float: float}.get(args[0], lambda k: k)
        return {keys(k): from_plain(args[1], v) for k, v in data.items()}
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return from_plain(options[0], data)
        if isinstance(data, dict):  # a union of dataclasses: the one whose fields the data holds
            exact = [a for a in options if dataclasses.is_dataclass(a)
                     and {f.name for f in dataclasses.fields(a)} == set(data)]  # fmt: skip
            if len(exact) == 1:
                return from_plain(exact[0], data)
        for option in options:  # the first member the data fits
            try:
                return from_plain(option, data)
            except (TypeError, KeyError, ValueError):
                continue
        raise TypeError(f"{data!r} fits none of {tp}")
    if tp is float:
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp):
            raise TypeError(f"{data!r} is not a {tp.__name__}")
        return data
    return data


def key(config: Any) -> str:
    """A config's identity in the store: its class and every field, as canonical JSON."""
    return json.dumps({"config": type(config).__name__, **to_plain(config)}, sort_keys=True)


class Store:
    """The reports kept in one JSON file: ``{"torch": version, "reports": {key: report}}``;
    ``report_type(config)`` names the report class a config's run returns."""

    def __init__(self, path: Path, report_type: Callable[[Any], type]) -> None:
        self.path, self.report_type = path, report_type
        self._reports: dict[str, Any] | None = None

    def _load(self) -> dict[str, Any]:
        if self._reports is None:
            self._reports = json.loads(self.path.read_text())["reports"] if self.path.exists() else {}
        return self._reports

    def get(self, config: Any) -> Any | None:
        """The stored report of ``config``, or None (it runs live)."""
        data = self._load().get(key(config))
        return None if data is None else from_plain(self.report_type(config), data)

    def has(self, config: Any) -> bool:
        return key(config) in self._load()

    def write(self, reports: Iterable[Any]) -> None:
        """Keep ``reports`` (each holding its ``config``), replacing the file."""
        kept = {key(r.config): to_plain(r) for r in reports}
        self.path.write_text(json.dumps({"torch": torch.__version__, "reports": kept}, sort_keys=True, indent=1) + "\n")
        self._reports = kept
