"""Shared helpers: the devices to run on and a comparison that prints both values."""

from __future__ import annotations

import pytest
import torch

from bnviz.explorer.parity import diff, tolerance

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")],
    ),
]


def assert_close(actual, expected, what: str, dtype: torch.dtype | None = None, scale: float = 1.0) -> None:
    """Fail with both values when ``actual`` and ``expected`` differ beyond the dtype's tolerance.

    ``scale`` widens atol for reductions (the magnitude of their summands, times √n).
    """
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{what}: bnviz={actual!r} torch={expected!r}"
        return
    assert actual.shape == expected.shape, f"{what}: shape bnviz={actual.shape} torch={expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype bnviz={actual.dtype} torch={expected.dtype}"
    rtol, atol = tolerance(dtype or expected.dtype)
    d = diff(actual, expected, rtol, atol * scale)
    if not d.ok:
        a, e = actual.detach().double().cpu().flatten(), expected.detach().double().cpu().flatten()
        worst = int((a - e).abs().nan_to_num(float("inf")).argmax())
        raise AssertionError(
            f"{what}: max|Δ|={d.max_abs:.3e} max rel={d.max_rel:.3e} (rtol={rtol}, atol={atol * scale:.2e}); "
            f"worst element {worst}: bnviz={a[worst].item()!r} torch={e[worst].item()!r}"
        )


def assert_same_error(fn_bnviz, fn_torch, what: str) -> None:
    """Both callables raise, with the same exception type and the same message."""
    errors = []
    for fn in (fn_bnviz, fn_torch):
        try:
            fn()
        except Exception as exc:
            errors.append(exc)
        else:
            errors.append(None)
    got, want = errors
    assert want is not None, f"{what}: torch raised nothing (bnviz raised {got!r})"
    assert got is not None, f"{what}: bnviz raised nothing, torch raised {type(want).__name__}: {want}"
    assert (type(got), str(got)) == (type(want), str(want)), (
        f"{what}:\n  bnviz: {type(got).__name__}: {got}\n  torch: {type(want).__name__}: {want}"
    )


def pytest_addoption(parser):
    parser.addoption(
        "--update-snapshots", action="store_true", default=False, help="rewrite the browser tests' baseline PNGs"
    )
