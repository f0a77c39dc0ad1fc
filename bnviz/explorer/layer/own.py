"""Your own tensor on ``/``: one tensor of rank 2–5 read from an upload (``.npy`` with
``allow_pickle=False``, ``.pt`` through ``torch.load(weights_only=True)``, ``.safetensors`` by
``bnviz.safe_load``'s reader), checked before the layer explorer runs on it instead of a synthetic
batch. Reading runs in a worker process (``read_in_worker``) with the doctor's limits."""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bnviz.explorer.layer.url import DTYPES, MAX_ELEMENTS
from bnviz.explorer.workers import UPLOAD_WORKER_BYTES
from bnviz.hosting.memory import BASE
from bnviz.safe_load import CheckpointError, read_safetensors, read_torch_object

SUFFIXES = (".npy", ".pt", ".pth", ".safetensors")
RANKS = range(2, 6)
MAX_BYTES = MAX_ELEMENTS * 8 + 2**20  # the layer page's largest batch in float64, and a header
NUMPY_DTYPES = {np.dtype("float16"): torch.float16, np.dtype("float32"): torch.float32,
                np.dtype("float64"): torch.float64}  # fmt: skip
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


@dataclass(frozen=True)
class OwnTensor:
    """An uploaded tensor: its file name (shown inert), a digest of its values (it tells two
    uploads apart in a config), and the values themselves (not hashed)."""

    name: str
    digest: str
    values: Tensor = field(compare=False, hash=False, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def dtype(self) -> str:
        return DTYPE_NAMES[self.values.dtype]


class OwnTensorError(ValueError):
    """An upload refused; the message says why, in one line."""


def _one(obj: object) -> Tensor:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, dict):
        tensors = [v for v in obj.values() if isinstance(v, Tensor)]
        if len(tensors) == 1:
            return tensors[0]
        raise OwnTensorError(f"the file holds {len(tensors)} tensors; the explorer takes a file with exactly one")
    raise OwnTensorError(f"the file holds a {type(obj).__name__}, not a tensor")


def read_tensor(name: str, data: bytes) -> Tensor:
    """The one tensor in an upload's bytes, as it was stored.

    Raises:
        OwnTensorError: an unknown suffix, a file over ``MAX_BYTES``, anything but one tensor, a
            pickle (refused, never run), a dtype other than float16/bfloat16/float32/float64, a
            rank outside 2–5, more than ``MAX_ELEMENTS`` values, or non-finite values (with their
            count).
    """
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise OwnTensorError(
            f"the explorer reads .npy, .pt, .pth and .safetensors files, not {suffix or 'no suffix'!r}"
        )
    if len(data) > MAX_BYTES:
        raise OwnTensorError(
            f"{len(data):,} bytes is over the limit of {MAX_BYTES:,} ({MAX_ELEMENTS:,} float64 values)"
        )
    try:
        if suffix == ".npy":
            try:
                array = np.load(io.BytesIO(data), allow_pickle=False)
            except ValueError as exc:  # "Object arrays cannot be loaded when allow_pickle=False", a bad header
                raise OwnTensorError(f"numpy refused the file: {str(exc).splitlines()[0][:200]}") from None
            if not isinstance(array, np.ndarray):
                raise OwnTensorError("the .npy file holds no single array")
            native = array.dtype.newbyteorder("=")  # a big-endian file's values, in this machine's order
            if native not in NUMPY_DTYPES:
                raise OwnTensorError(f"dtype {native} is not one of float16, float32, float64")
            x = torch.from_numpy(np.ascontiguousarray(array).astype(native, copy=True))
        elif suffix == ".safetensors":
            x = _one(read_safetensors(data))
        else:
            x = _one(read_torch_object(data))
    except CheckpointError as exc:
        raise OwnTensorError(str(exc)) from None
    return check_tensor(x)


def check_tensor(x: Tensor) -> Tensor:
    """``x`` on the CPU, contiguous, if the explorer can run it; else ``OwnTensorError``."""
    if x.dtype not in DTYPE_NAMES:
        raise OwnTensorError(f"dtype {str(x.dtype).removeprefix('torch.')} is not one of {', '.join(DTYPES)}")
    if x.dim() not in RANKS:
        raise OwnTensorError(f"rank {x.dim()} (shape {tuple(x.shape)}): the explorer takes a tensor of rank 2 to 5, "
                             "(N, C, …) with channels on dim 1")  # fmt: skip
    if x.numel() > MAX_ELEMENTS:
        raise OwnTensorError(f"{x.numel():,} values is over the limit of {MAX_ELEMENTS:,}")
    if x.numel() == 0:
        raise OwnTensorError(f"the tensor is empty (shape {tuple(x.shape)})")
    bad = int((~x.isfinite()).sum())
    if bad:
        raise OwnTensorError(f"{bad:,} of {x.numel():,} values are NaN or infinite: batch norm's statistics would be "
                             "NaN; replace them first")  # fmt: skip
    return x.detach().cpu().contiguous()


def own_tensor(name: str, x: Tensor) -> OwnTensor:
    """The checked tensor with its digest (SHA-256 of its dtype, shape and bytes, 16 hex digits)."""
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(bytes(x.reshape(-1).view(torch.uint8).numpy()) if x.numel() else b"")
    return OwnTensor(name, h.hexdigest()[:16], x)


def channel_stats(x: Tensor, features_last: bool = False) -> tuple[Tensor, Tensor]:
    """Per channel (dim 1, or the last dim when ``features_last``): the mean and the unbiased
    variance of every value, in float64 — the "population" the running statistics approach when
    the explorer feeds the tensor as every training batch."""
    x = x.double()
    c = x.movedim(-1, 1) if features_last else x
    flat = c.transpose(0, 1).reshape(c.shape[1], -1)
    n = flat.shape[1]
    return flat.mean(1), (flat.var(1, correction=1) if n > 1 else torch.full((flat.shape[0],), math.nan))


Packed = tuple[str, tuple[int, ...], bytes]


def pack(x: Tensor) -> Packed:
    """``x`` as plain data (dtype name, shape, raw bytes): what a worker sends back. A tensor itself
    would travel as a shared-memory handle that dies with the worker."""
    raw = x.contiguous().view(torch.int16) if x.dtype == torch.bfloat16 else x.contiguous()
    return DTYPE_NAMES[x.dtype], tuple(x.shape), raw.numpy().tobytes()


def unpack(packed: Packed) -> Tensor:
    dtype_name, shape, raw = packed
    dtype = DTYPES[dtype_name]
    flat = torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)
    return flat.reshape(shape)


def upload_bytes(size: int) -> int:
    """What reading an upload of ``size`` bytes adds to the server: the copy sent to the worker,
    the array it reads and the packed copy it sends back, and the worker's own pages."""
    return BASE + UPLOAD_WORKER_BYTES + 3 * size


def read_in_worker(name: str, data: bytes) -> Packed:
    """In a worker process (``workers.read_upload``): the tensor, packed to send back. A file
    refused raises ``OwnTensorError``."""
    return pack(read_tensor(name, data))
