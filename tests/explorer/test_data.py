"""The seeded input batches against the population statistics they are drawn from: for every
distribution, a channel's sample mean and variance from ``sample_batch`` (a whole batch) and from
``channel_sample`` (that channel alone), within five standard errors of ``μ_c`` and ``s_c²``."""

from __future__ import annotations

import math

import pytest
import torch

from bnviz.explorer.data import DISTRIBUTIONS, channel_sample, population_stats, sample_batch

N = 40_000
KURTOSIS = {"normal": 3.0, "large-mean": 3.0, "uniform": 1.8, "bimodal": 1.3}  # E[z⁴] of each base
CASES = [(dist, channels, c) for dist in DISTRIBUTIONS for channels, c in ((1, 0), (5, 0), (5, 3))]


def _check(x: torch.Tensor, dist: str, channels: int, c: int, what: str) -> None:
    mean, var = population_stats(channels, dist)
    mu, s2 = float(mean[c]), float(var[c])
    got_var, got_mean = torch.var_mean(x.double(), correction=1)
    mean_tol = 5 * math.sqrt(s2 / x.numel())
    # the sample variance's standard error is s²·√((E[z⁴] − 1)/n); heavy-tailed (t₃/√3) has no
    # finite fourth moment, so its sample variance converges slowly (mostly from below): within 25%
    var_tol = 5 * s2 * math.sqrt((KURTOSIS[dist] - 1) / x.numel()) if dist in KURTOSIS else 0.25 * s2
    assert abs(float(got_mean) - mu) <= mean_tol, f"{what} {dist} C={channels} c={c}: mean {float(got_mean)} vs {mu}"
    assert abs(float(got_var) - s2) <= var_tol, f"{what} {dist} C={channels} c={c}: var {float(got_var)} vs {s2}"


@pytest.mark.parametrize(("dist", "channels", "c"), CASES)
def test_a_channel_of_a_batch_has_its_population_statistics(dist, channels, c):
    x = sample_batch(dist, (N // 8, channels, 8), seed=3, step=0, dtype=torch.float64)
    _check(x[:, c], dist, channels, c, "sample_batch")


@pytest.mark.parametrize(("dist", "channels", "c"), CASES)
def test_one_channel_drawn_alone_has_the_same_statistics(dist, channels, c):
    x = channel_sample(dist, channels, c, (N // 8, 8), seed=3)
    assert x.dtype == torch.float64 and x.shape == (N // 8, 8)
    _check(x, dist, channels, c, "channel_sample")


def test_draws_are_reproducible_and_steps_differ():
    a, b = channel_sample("normal", 4, 1, (100,), 7, 0), channel_sample("normal", 4, 1, (100,), 7, 0)
    assert torch.equal(a, b)
    assert not torch.equal(a, channel_sample("normal", 4, 1, (100,), 7, 1))
