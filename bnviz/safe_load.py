"""Reading a state dict from a file without running anything in it: ``load_state_dict_file``.

Two formats, each read so that a hostile file can only be refused:

- ``.safetensors``, read by bnviz itself (no ``safetensors`` package needed): an 8-byte
  little-endian header length h, a JSON header of h bytes, then raw little-endian buffers. The
  header is capped (``MAX_HEADER_BYTES``) and checked against the file's real size before it is
  read, so a header claiming 10 GB is refused without allocating it; every tensor's
  ``data_offsets`` must lie inside the buffer and match its dtype and shape.
- ``.pt`` / ``.pth``, through ``torch.load(weights_only=True)`` only — torch's restricted
  unpickler, which builds tensors, containers and numbers and refuses any other global (a pickle
  that would import ``os.system`` raises before anything runs). There is no fallback to a full
  unpickle. A checkpoint dict holding the state dict under ``"state_dict"``, ``"model"`` or
  ``"model_state_dict"`` (Lightning's and common training scripts' layouts) is unwrapped.

Everything refused raises ``CheckpointError`` with a one-line reason.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

MAX_HEADER_BYTES = 16 * 2**20  # a resnet50's header is about 30 kB; safetensors itself caps at 100 MB
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")
SUFFIXES = (".safetensors", ".pt", ".pth")

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A file bnviz refuses to read as a state dict; the message says why."""


def read_safetensors(data: bytes) -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file's bytes (copies: nothing refers to ``data`` after).

    Raises:
        CheckpointError: a truncated file, a header over ``MAX_HEADER_BYTES`` or past the file's
            end, a header that is not a JSON object, an unknown dtype, offsets outside the buffer
            or not matching dtype × shape.
    """
    if len(data) < 8:
        raise CheckpointError(f"not a safetensors file: {len(data)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES:
        raise CheckpointError(
            f"safetensors header claims {header_len:,} bytes, over bnviz's cap of {MAX_HEADER_BYTES:,}: refused"
        )
    if 8 + header_len > len(data):
        raise CheckpointError(
            f"truncated safetensors file: its header claims {header_len:,} bytes, the file holds {len(data) - 8:,}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"safetensors header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object")
    body = memoryview(data)[8 + header_len :]
    out: dict[str, Tensor] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
            raise CheckpointError(f"safetensors entry {name!r} lacks dtype, shape or data_offsets")
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"safetensors entry {name!r} has dtype {entry['dtype']!r}, which bnviz does not read")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise CheckpointError(f"safetensors entry {name!r} has a malformed shape {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"safetensors entry {name!r} has malformed data_offsets {offsets!r}")
        begin, end = offsets
        need = math.prod(shape) * dtype.itemsize
        if not 0 <= begin <= end <= len(body) or end - begin != need:
            raise CheckpointError(
                f"safetensors entry {name!r}: data_offsets {offsets} do not hold {entry['dtype']} {shape} "
                f"({need:,} bytes) inside the {len(body):,}-byte buffer (a truncated or malformed file)"
            )
        raw = bytearray(body[begin:end])  # this tensor's own copy, which it keeps alive: no second copy
        flat = torch.frombuffer(raw, dtype=dtype) if need else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(shape)
    return out


def _unwrap(obj: Any) -> dict[str, Tensor]:
    """The state dict in what ``torch.load`` returned: the mapping of tensors itself, or one nested
    under a usual key. Non-tensor entries (an epoch count, a version) are dropped."""
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, Tensor) for v in inner.values()):
                return _unwrap(inner)
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise CheckpointError(
        f"the file holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors): save "
        "model.state_dict() rather than the model"
    )


def read_torch_object(data: bytes | str | os.PathLike) -> Any:
    """What ``torch.load(data, weights_only=True)`` returns for ``.pt``/``.pth`` bytes or a path:
    tensors, containers and numbers only.

    Raises:
        CheckpointError: the restricted unpickler refused the file (it names a global outside the
            allowed set: a pickled model, or code) or the file is not a torch archive.
    """
    import io

    source: Any = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    try:
        with warnings.catch_warnings():  # a protocol-4 pickle's warning: noise before the refusal itself
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler's refusal, a truncated zip, garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"torch.load(weights_only=True) refused the file ({type(exc).__name__}: {first[:300]}); bnviz never "
            "unpickles anything else: save tensors or a state dict with torch.save"
        ) from None


def read_torch(data: bytes | str | os.PathLike) -> dict[str, Tensor]:
    """A state dict from ``.pt``/``.pth`` bytes or a path (``read_torch_object``, unwrapped)."""
    return _unwrap(read_torch_object(data))


def load_state_dict_file(path: str | os.PathLike, max_bytes: int | None = None) -> dict[str, Tensor]:
    """The state dict in ``path`` (``.safetensors``, ``.pt`` or ``.pth``), read without running any
    code from it.

    Raises:
        CheckpointError: an unknown suffix, a file over ``max_bytes``, a missing or unreadable
            file, or any refusal of ``read_safetensors`` / ``read_torch``.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(f"{p.name}: {_unknown(suffix)}")
    try:
        size = p.stat().st_size
        if max_bytes is not None and size > max_bytes:
            raise CheckpointError(f"{p.name}: {size:,} bytes, over the limit of {max_bytes:,}")
        if suffix == ".safetensors":
            return read_safetensors(p.read_bytes())
        return read_torch(p)
    except OSError as exc:
        raise CheckpointError(f"{p.name}: cannot read it ({exc.strerror or exc})") from None


def load_state_dict_bytes(name: str, data: bytes) -> dict[str, Tensor]:
    """``load_state_dict_file`` for an upload: the file's name (for its suffix) and its bytes."""
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise CheckpointError(_unknown(suffix))
    return read_safetensors(data) if suffix == ".safetensors" else read_torch(data)


def _unknown(suffix: str) -> str:
    return f"bnviz reads .safetensors, .pt and .pth state dicts, not {suffix or 'no suffix'!r}"


def write_safetensors(tensors: Mapping[str, Tensor]) -> bytes:
    """``tensors`` as a ``.safetensors`` file's bytes (contiguous CPU copies, little-endian): the
    samples and the tests write files the reader above reads back."""
    names = {v: k for k, v in _DTYPES.items()}
    header: dict[str, Any] = {}
    chunks: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = bytes(t.reshape(-1).view(torch.uint8).tolist())  # no numpy: the library is torch-only
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)
