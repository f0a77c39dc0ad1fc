"""scikit-learn's handwritten digits as float32 tensors, with a fixed train/test split.

1,797 images of 8×8 pixels, 10 classes (about 180 each), each pixel a count 0–16. The file ships
inside scikit-learn's wheel (``sklearn/datasets/data/digits.csv.gz``: 64 pixel columns, then the
label), so nothing is downloaded. It is read here directly, found with
``importlib.util.find_spec("sklearn")`` without importing scikit-learn: ``import sklearn.datasets``
adds about 145 MB to a process that already holds torch (and 0.9 s), reading the file 2 MB.

Scaling: pixels are divided by 16, to [0, 1] — the range of MNIST pixels in the experiments this
data stands in for (Ioffe & Szegedy 2015 train on MNIST). Not standardised per pixel: that would
need the training split's statistics, and the corner pixels that are always 0 have none; the
raw-ish input is also what the batch-norm experiments are about (a plain network has to cope
with it).

Split: 20 % of each class is held out for testing (359 images), chosen by a fixed seed
(``SPLIT_SEED``): the same split on every machine and in every run, and each class in both
halves in proportion.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CLASSES = 10
PIXELS = 64  # 8 × 8
TEST_FRACTION = 0.2
SPLIT_SEED = 0
MAX_VALUE = 16.0


@dataclass(frozen=True, eq=False)
class Digits:
    """Train and test split: ``*_x`` float32 ``(n, 64)`` in [0, 1], ``*_y`` int64 ``(n,)`` in 0–9.
    Each call of ``load_digits`` returns fresh tensors: writing into them changes no one else's."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def digits_file() -> Path:
    """Where scikit-learn's wheel keeps ``digits.csv.gz`` (found without importing it)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scikit-learn is not installed: pip install scikit-learn (it ships the digits)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"scikit-learn's digits file is missing: {path}")
    return path


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels ÷ 16 (float32), labels, and the test and train row indices; read-only, read once."""
    with gzip.open(digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)  # (1797, 65): 64 pixels, then the label
    pixels = (table[:, :-1] / MAX_VALUE).astype(np.float32)
    labels = table[:, -1].astype(np.int64)
    g = torch.Generator().manual_seed(SPLIT_SEED)
    test = []
    for c in range(CLASSES):  # per class, so each class is held out in proportion
        rows = np.flatnonzero(labels == c)
        order = torch.randperm(len(rows), generator=g).numpy()
        test.extend(rows[order[: round(TEST_FRACTION * len(rows))]].tolist())
    test_rows = np.sort(np.array(test, dtype=np.int64))
    train_rows = np.setdiff1d(np.arange(len(labels)), test_rows)
    for a in (pixels, labels, test_rows, train_rows):
        a.flags.writeable = False
    return pixels, labels, test_rows, train_rows


def load_digits() -> Digits:
    """The digits with the fixed split (1,438 train, 359 test images); the file is read once per
    process, the tensors are new on each call (about 0.5 MB)."""
    pixels, labels, test_rows, train_rows = _arrays()
    return Digits(
        train_x=torch.tensor(pixels[train_rows]),
        train_y=torch.tensor(labels[train_rows]),
        test_x=torch.tensor(pixels[test_rows]),
        test_y=torch.tensor(labels[test_rows]),
    )
