"""The layer page's lessons beyond the comparison, measured on the displayed batch: what the
gradient through batch norm looks like (``GradientLesson``: its closed form against both layers)
and what eps changes (``EpsEffect``). Plain data, like the report that carries them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

import bnviz
from bnviz.explorer.layer.url import Config
from bnviz.explorer.parity import normalized


@dataclass(frozen=True)
class GradientLesson:
    r"""What the gradient through batch norm looks like on the displayed batch, per channel (the
    first ``PLOT_CHANNELS`` of ``engine``), with :math:`g = \partial L/\partial y` the upstream gradient and
    :math:`\hat x` the input normalized with the batch's statistics (mean μ, biased variance v):

    - batch statistics (train mode, or ``track_running_stats=False``): μ and v depend on every value
      of the channel, and

      .. math::
          \frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{v + \epsilon}}
          \Big(g - \overline{g} - \hat x\, \overline{g \hat x}\Big),

      whose sum over the channel is 0 (Σ x̂ = 0) and whose dot product with x̂ is
      :math:`N\,\overline{g\hat x}\,\gamma (v+\epsilon)^{-1/2} \cdot \epsilon / (v + \epsilon)`: 0 but for eps;
    - running statistics (eval mode): constants, so
      :math:`\partial L/\partial x = \gamma\, g / \sqrt{\mathrm{running\_var} + \epsilon}`, the upstream
      gradient rescaled.

    ``mean_*[c]``: the mean over the channel's values (of g, of bnviz's and torch's ∂L/∂x);
    ``cos_*[c]``: the cosine between that and x̂ over the channel's values (``cos_closed``: of the
    closed form above, in float64 — what eps leaves). ``closed_vs_bnviz``/``closed_vs_torch``: the
    largest |closed form − side| over every value; ``closed_scale``: the largest |closed form|."""

    batch_stats: bool
    mean_upstream: tuple[float, ...]
    mean_bnviz: tuple[float, ...]
    mean_torch: tuple[float, ...]
    cos_upstream: tuple[float, ...]
    cos_bnviz: tuple[float, ...]
    cos_torch: tuple[float, ...]
    cos_closed: tuple[float, ...]
    closed_vs_bnviz: float
    closed_vs_torch: float
    closed_scale: float


def closed_form_grad_input(x: Tensor, g: Tensor, eps: float, weight: Tensor | None = None,
                           running_var: Tensor | None = None) -> Tensor:  # fmt: skip
    r"""∂L/∂x of batch norm in float64, channels on dim 1, written out (``GradientLesson``): with the
    batch's statistics when ``running_var`` is None, else with the running variance (eval mode)."""
    x, g = x.double(), g.double()
    view = [1, x.size(1), *([1] * (x.dim() - 2))]
    gamma = torch.ones(view, dtype=torch.float64) if weight is None else weight.double().view(view)
    if running_var is not None:
        return gamma * g * (running_var.double().view(view) + eps).rsqrt()
    dims = [0, *range(2, x.dim())]
    x_hat, inv_std = normalized(x, eps)
    g_mean = g.mean(dims, keepdim=True)
    gx_mean = (g * x_hat).mean(dims, keepdim=True)
    return gamma * inv_std * (g - g_mean - x_hat * gx_mean)


def _by_channel(t: Tensor) -> Tensor:
    """(N, C, …) → (C, N·…) in float64: each row one channel's values."""
    return t.double().transpose(0, 1).reshape(t.size(1), -1)


def _cosines(a: Tensor, b: Tensor) -> tuple[float, ...]:
    """Row-wise cosine between two (C, M) tensors (0 for a zero row)."""
    norms = a.norm(dim=1) * b.norm(dim=1)
    return tuple(float(v) for v in torch.where(norms > 0, (a * b).sum(1) / norms, torch.zeros_like(norms)))


def gradient_lesson(config: Config, x: Tensor, g: Tensor, grad_bnviz: Tensor, grad_torch: Tensor,
                    running_var: Tensor | None, weight: Tensor | None, channels: int) -> GradientLesson:  # fmt: skip
    """The ``GradientLesson`` of the displayed batch ``x`` (as the layer saw it, channels on dim 1),
    ``weight`` its γ (or None), for its first ``channels`` channels."""
    batch_stats = config.mode == "train" or not config.track_running_stats
    closed = closed_form_grad_input(x, g, config.eps, weight, None if batch_stats else running_var)
    k = min(x.size(1), channels)
    x_hat = _by_channel(normalized(x, config.eps)[0])[:k]
    rows = {name: _by_channel(t)[:k] for name, t in (("g", g), ("bnviz", grad_bnviz), ("torch", grad_torch),
                                                     ("closed", closed))}  # fmt: skip
    means = {name: tuple(float(v) for v in r.mean(1)) for name, r in rows.items()}
    return GradientLesson(
        batch_stats=batch_stats,
        mean_upstream=means["g"],
        mean_bnviz=means["bnviz"],
        mean_torch=means["torch"],
        cos_upstream=_cosines(rows["g"], x_hat),
        cos_bnviz=_cosines(rows["bnviz"], x_hat),
        cos_torch=_cosines(rows["torch"], x_hat),
        cos_closed=_cosines(rows["closed"], x_hat),
        closed_vs_bnviz=float((closed - grad_bnviz.double()).abs().max()),
        closed_vs_torch=float((closed - grad_torch.double()).abs().max()),
        closed_scale=float(closed.abs().max()),
    )


TORCH_EPS, KERAS_EPS = 1e-5, 1e-3  # the defaults the eps view compares
EPS_SHRINK = 30.0  # the eps view's quiet channel: the same values divided by this (variance ÷ 900)


@dataclass(frozen=True)
class EpsEffect:
    r"""What eps does on the displayed batch, measured with ``bnviz.functional.batch_norm`` (batch
    statistics, no affine, float64): per channel (the first ``PLOT_CHANNELS`` of ``engine``), its biased variance
    ``var`` and the output's standard deviation at each eps of ``eps`` — :math:`\sqrt{v / (v + \epsilon)}`
    — for the batch as it is (``std``) and for the same values divided by ``EPS_SHRINK`` (``quiet_std``)."""

    eps: tuple[float, ...]
    var: tuple[float, ...]
    std: dict[float, tuple[float, ...]]
    quiet_std: dict[float, tuple[float, ...]]


def eps_effect(config: Config, x: Tensor, channels: int) -> EpsEffect:
    """``EpsEffect`` of the displayed batch ``x`` (channels on dim 1) at torch's eps, Keras' and the
    view's, for its first ``channels`` channels."""
    eps = tuple(sorted({TORCH_EPS, KERAS_EPS, config.eps}))
    k = min(x.size(1), channels)
    x = x.double()
    var = _by_channel(x)[:k].var(1, correction=0)

    def stds(values: Tensor) -> dict[float, tuple[float, ...]]:
        return {e: tuple(float(v) for v in _by_channel(
            bnviz.functional.batch_norm(values, None, None, training=True, eps=e))[:k].std(1, correction=0))
            for e in eps}  # fmt: skip

    return EpsEffect(eps, tuple(float(v) for v in var), stds(x), stds(x / EPS_SHRINK))


