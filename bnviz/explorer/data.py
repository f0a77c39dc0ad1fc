r"""Input batches with known population statistics, so running statistics can be drawn against them.

Every distribution is a standardized base ``z`` (population mean 0, variance 1) moved per channel:

.. math::
    x_{n,c,\dots} = \mu_c + s_c \, z_{n,c,\dots}, \qquad
    \mathrm{E}[x_c] = \mu_c, \quad \mathrm{Var}[x_c] = s_c^2

with offsets ``μ_c`` spread over [−2, 2] and scales ``s_c`` over [0.5, 2], so normalization
visibly does something. Bases:

- ``normal``: z ~ N(0, 1)
- ``uniform``: z ~ U(−√3, √3)
- ``heavy-tailed``: z = t₃ / √3 (Student's t with 3 degrees of freedom has variance 3)
- ``bimodal``: z = ±0.9 + N(0, 0.19), each sign with probability ½ (variance 0.81 + 0.19 = 1)
- ``large-mean``: normal, with every channel's mean moved up by 10⁴ — where a one-pass
  ``E[x²] − E[x]²`` in float32 cancels away most of its digits
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

DISTRIBUTIONS = ("normal", "uniform", "heavy-tailed", "bimodal", "large-mean")
LARGE_MEAN = 1e4


def population_stats(num_channels: int, dist: str = "normal") -> tuple[Tensor, Tensor]:
    """Per-channel population mean ``μ_c`` and variance ``s_c²`` (float64, shape ``(C,)``)."""
    if num_channels <= 1:
        mean = torch.full((num_channels,), 1.0, dtype=torch.float64)
        var = torch.full((num_channels,), 1.0, dtype=torch.float64)
    else:
        mean = torch.linspace(-2.0, 2.0, num_channels, dtype=torch.float64)
        var = torch.linspace(0.5, 2.0, num_channels, dtype=torch.float64) ** 2
    return (mean + LARGE_MEAN if dist == "large-mean" else mean), var


def _standard(dist: str, shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """A float64 sample of the standardized base distribution."""
    if dist in ("normal", "large-mean"):
        return torch.randn(shape, generator=gen, dtype=torch.float64)
    if dist == "uniform":
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * math.sqrt(3.0)
    if dist == "heavy-tailed":
        z = torch.randn(shape, generator=gen, dtype=torch.float64)
        chi2 = torch.randn((3, *shape), generator=gen, dtype=torch.float64).square().sum(0)
        return z / torch.sqrt(chi2 / 3) / math.sqrt(3.0)
    if dist == "bimodal":
        sign = torch.randint(0, 2, shape, generator=gen, dtype=torch.int64).double() * 2 - 1
        return sign * 0.9 + torch.randn(shape, generator=gen, dtype=torch.float64) * math.sqrt(0.19)
    raise ValueError(f"unknown distribution {dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")


UPSTREAM_SEED = 7919  # the upstream gradient's stream: the page's seed plus this


def upstream_gradient(
    shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> Tensor:
    r"""The fixed upstream gradient :math:`\partial L / \partial y` the pages backpropagate: every
    value N(0, 1), independently — zero mean in every channel, so no channel's gradient is dominated
    by a constant. Seeded like ``sample_batch`` (seed + ``UPSTREAM_SEED``, step 0), float64 on the CPU, then cast."""
    gen = torch.Generator().manual_seed((seed + UPSTREAM_SEED) * 1_000_003)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def channel_sample(
    dist: str, num_channels: int, channel: int, shape: tuple[int, ...], seed: int, step: int = 0
) -> Tensor:
    """``shape`` values of one channel alone, ``μ_c + s_c · z`` as ``sample_batch`` draws channel
    ``channel`` of ``num_channels`` (float64; its own seeded stream, not a slice of a batch's)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    mean, var = population_stats(num_channels, dist)
    return mean[channel] + var[channel].sqrt() * _standard(dist, shape, gen)


def sample_batch(
    dist: str, shape: tuple[int, ...], seed: int, step: int, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> Tensor:
    """Batch ``step`` of a seeded stream: ``μ_c + s_c · z`` with channels on dim 1 (dim 0 for rank 1).

    The same (dist, shape, seed, step) gives the same values on every machine: sampling is done
    on the CPU in float64, then cast.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    z = _standard(dist, shape, gen)
    if len(shape) >= 2:
        mean, var = population_stats(shape[1], dist)
        view = [1, shape[1], *([1] * (len(shape) - 2))]
        z = mean.view(view) + var.sqrt().view(view) * z
    return z.to(device=device, dtype=dtype)
