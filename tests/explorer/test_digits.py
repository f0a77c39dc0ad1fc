"""The digits: read from scikit-learn's bundled file without importing scikit-learn, split 80/20
per class with a fixed seed, scaled to [0, 1]."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from bnviz.explorer.digits import CLASSES, PIXELS, digits_file, load_digits

ROOT = Path(__file__).resolve().parents[2]


def test_shapes_types_range_and_a_stratified_split():
    d = load_digits()
    assert d.train_x.shape == (1438, PIXELS) and d.test_x.shape == (359, PIXELS)
    assert d.train_x.dtype == d.test_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert float(d.train_x.min()) == 0.0 and float(d.train_x.max()) == 1.0
    counts = torch.bincount(d.test_y, minlength=CLASSES), torch.bincount(d.train_y, minlength=CLASSES)
    assert all(0.18 <= float(t) / float(t + r) <= 0.22 for t, r in zip(*counts, strict=True)), counts


def test_the_same_images_as_scikit_learns_loader():
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    d = load_digits()
    ours = np.c_[torch.cat([d.train_x, d.test_x]).numpy() * 16, torch.cat([d.train_y, d.test_y]).numpy()]
    theirs = np.c_[x, y]
    assert np.array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])


def test_the_split_is_fixed_and_the_tensors_are_each_callers_own():
    a, b = load_digits(), load_digits()
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)
    a.train_x.add_(1)
    assert torch.equal(load_digits().train_x, b.train_x)


def test_scikit_learn_is_found_but_not_imported():
    code = ("import sys; from bnviz.explorer.digits import load_digits; d = load_digits(); "
            "print(len(d.test_y), 'sklearn' in sys.modules)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["359", "False"], done.stderr
    assert digits_file().name == "digits.csv.gz"
