"""The /family page's engine: one input tensor through the five members of the family.

BatchNorm, LayerNorm, InstanceNorm, GroupNorm and RMSNorm are the same operation — statistics
over a set of values, then an affine transform — over different sets. For one seeded tensor of
shape ``(N, C, *)`` this runs each member in bnviz and in torch (training mode: batch norm uses
the batch's statistics), and reports which values share a statistic (the picture), how many
statistics and values per statistic, the output distribution, the verdict against torch, and
the universal form in a table. It also shows batch dependence live: the other samples of the
batch are replaced, and sample 0's output moves under batch norm only.

The report is plain data (no tensors, no modules), so it can be cached and shared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots
from torch import Tensor

import bnviz
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.data import sample_batch, upstream_gradient
from bnviz.explorer.family.url import MEMBERS, FamilyConfig
from bnviz.explorer.parity import as_accurate, diff, tolerance
from bnviz.explorer.picture import Cells, Grouping, cells, cells_figure, cube_svg, spatial_names
from bnviz.explorer.theme import BNVIZ_COLOR, LAYOUT, TORCH_COLOR, VALUE_TICKS, bars, outline

FONT, PICTURE_SCALE = 16, 36  # five pictures side by side, three to a row: small boxes, large words
BINS = 40


def grouping(config: FamilyConfig, member: str) -> Grouping:
    """Which values share one statistic under ``member`` for this shape."""
    rank = len(config.shape)
    spatial = tuple(range(2, rank))
    if member == "BatchNorm":
        return Grouping(config.shape, (0, *spatial))
    if member == "InstanceNorm":
        return Grouping(config.shape, spatial)
    if member == "GroupNorm":
        return Grouping(config.shape, spatial, config.groups)
    trailing = tuple(range(rank - len(config.normalized_shape), rank))  # LayerNorm, RMSNorm
    return Grouping(config.shape, trailing)


def _params(config: FamilyConfig, member: str) -> tuple[Tensor | None, Tensor | None]:
    """Non-trivial γ and β of the shape each member uses (RMSNorm has no β)."""
    shape = config.normalized_shape if member in ("LayerNorm", "RMSNorm") else (config.shape[1],)
    n = math.prod(shape)
    weight = torch.linspace(0.5, 1.5, n).view(shape)
    bias = None if member == "RMSNorm" else torch.linspace(-0.5, 0.5, n).view(shape)
    return weight, bias


def functions(config: FamilyConfig, member: str) -> tuple[Callable[..., Tensor], Callable[..., Tensor]]:
    """``(bnviz's, torch's)`` function of ``member`` as ``f(x, weight, bias)``."""
    ns, g, eps = config.normalized_shape, config.groups, config.eps
    table: dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {
        "BatchNorm": (lambda x, w, b: bnviz.batch_norm(x, None, None, w, b, True, 0.1, eps),
                      lambda x, w, b: F.batch_norm(x, None, None, w, b, True, 0.1, eps)),
        "LayerNorm": (lambda x, w, b: bnviz.layer_norm(x, ns, w, b, eps),
                      lambda x, w, b: F.layer_norm(x, ns, w, b, eps)),
        "InstanceNorm": (lambda x, w, b: bnviz.instance_norm(x, weight=w, bias=b, eps=eps),
                         lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=eps)),
        "GroupNorm": (lambda x, w, b: bnviz.group_norm(x, g, w, b, eps),
                      lambda x, w, b: F.group_norm(x, g, w, b, eps)),
        "RMSNorm": (lambda x, w, b: bnviz.rms_norm(x, ns, w, eps), lambda x, w, b: F.rms_norm(x, ns, w, eps)),
    }  # fmt: skip
    return table[member]


def batches(config: FamilyConfig) -> tuple[Tensor, Tensor]:
    """The tensor, and the same tensor with every sample but sample 0 replaced (other values,
    three times the spread, shifted): batch dependence shows in sample 0's output."""
    x = sample_batch(config.dist, config.shape, config.seed, 0)
    other = x.clone()
    other[1:] = sample_batch(config.dist, config.shape, config.seed + 1, 0)[1:] * 3 + 2
    return x, other


@dataclass(frozen=True)
class MemberReport:
    """One member on the tensor: its statistics groups, verdict, and output distribution."""

    member: str
    grouping: Grouping
    statistics: int
    per_statistic: int
    centred: bool
    running: str
    affine_shape: tuple[int, ...]
    max_abs: dict[str, float]  # output, grad input, grad weight, grad bias: max |bnviz − torch|
    ok: bool
    sample0_change: float | None  # max |Δ| of sample 0's output when the other samples change (None: a batch of one)
    histogram: dict[str, Any] = field(default_factory=dict)
    cells: Cells | None = None

    @property
    def verdict(self) -> str:
        return "match" if self.ok else "mismatch"


@dataclass(frozen=True)
class FamilyReport:
    """Everything the family page shows; plain data only. ``eval_change``: batch norm in eval mode
    (normalizing with running statistics, here those of this batch), how far sample 0's output
    moves when the other samples change (None: a batch of one)."""

    config: FamilyConfig
    members: tuple[MemberReport, ...]
    eval_change: float | None = None

    @property
    def verdict(self) -> str:
        return "match" if all(m.ok for m in self.members) else "mismatch"


def reduced_text(config: FamilyConfig, g: Grouping) -> str:
    """``"N, H, W"`` — the dims a member reduces, by name (``C/G`` for a group of channels)."""
    names = ["N", "C", *spatial_names(len(config.shape))]
    parts = [names[d] for d in g.reduced]
    if g.channel_groups and 1 not in g.reduced:
        parts.insert(0, f"C/{g.channel_groups}")
    return ", ".join(parts)


def _run_member(config: FamilyConfig, member: str, x: Tensor, other: Tensor) -> MemberReport:
    ours, ref = functions(config, member)
    w, b = _params(config, member)
    rtol, atol = tolerance(torch.float32)
    upstream = upstream_gradient(config.shape, config.seed)
    results = []
    for fn, dtype in ((ours, torch.float32), (ref, torch.float32), (ref, torch.float64)):  # the last: the truth
        xr = x.to(dtype).requires_grad_()
        ws = [t.to(dtype).requires_grad_() for t in (w, b) if t is not None]
        y = fn(xr, *ws, *([None] * (2 - len(ws))))
        grads = torch.autograd.grad(y, [xr, *ws], upstream.to(dtype))
        results.append((y.detach(), *grads))
    names = ["output", "grad input", "grad weight", "grad bias"]
    max_abs, ok = {}, True
    for name, a, r, t in zip(names, *results, strict=False):
        n = max(1, x.numel() // max(1, a.numel()))
        scale = 1.0 if name == "output" else (4.0 if name == "grad input" else n**0.5)
        d = diff(a, r, rtol, atol * scale)
        # within float32's tolerance of torch, or about as close as torch to the float64 run
        closer = as_accurate(float((a.double() - t).abs().max()), float((r.double() - t).abs().max()))
        max_abs[name], ok = d.max_abs, ok and (d.ok or closer)
    change = None
    if x.size(0) > 1:  # a batch of one has no other sample to change
        with torch.no_grad():
            change = float((ours(other, w, b)[0] - results[0][0][0]).abs().max())
    g = grouping(config, member)
    y = results[0][0].double().numpy().ravel()
    y_ref = results[1][0].double().numpy().ravel()
    lo, hi = float(min(y.min(), y_ref.min())), float(max(y.max(), y_ref.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
    histogram = {"edges": edges.tolist(), "bnviz": np.histogram(y, edges)[0].tolist(),
                 "torch": np.histogram(y_ref, edges)[0].tolist()}  # fmt: skip
    running = {"BatchNorm": "yes", "InstanceNorm": "optional"}
    return MemberReport(
        member=member,
        grouping=g,
        statistics=g.group_count(),
        per_statistic=g.group_size(),
        centred=member != "RMSNorm",
        running=running.get(member, "no"),
        affine_shape=tuple(w.shape) if w is not None else (),
        max_abs=max_abs,
        ok=ok,
        sample0_change=change,
        histogram=histogram,
        cells=cells(x, g),
    )


def run(config: FamilyConfig, stopped: Stopped = never, progress: Progress = ignore) -> FamilyReport:
    """Every member on the config's tensor, against torch; raises ValueError for a refused config.
    ``stopped`` is asked before each member (``check_stop``), ``progress`` told after it."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
    x, other = batches(config)
    members = []
    for k, m in enumerate(MEMBERS):
        check_stop(stopped)
        members.append(_run_member(config, m, x, other))
        progress((k + 1) / len(MEMBERS))
    return FamilyReport(config, tuple(members), eval_change(config, x, other))


def eval_change(config: FamilyConfig, x: Tensor, other: Tensor) -> float | None:
    """Batch norm in eval mode: sample 0's output moves by this much (max |Δ|) when the other
    samples change, the running statistics being this batch's (mean and unbiased variance over N
    and the spatial dims, as one training update with momentum 1 leaves them). None for a batch of one."""
    if x.size(0) < 2:
        return None
    dims = [0, *range(2, x.dim())]
    var, mean = torch.var_mean(x, dims)
    w, b = _params(config, "BatchNorm")
    with torch.no_grad():
        ys = [bnviz.batch_norm(t, mean.clone(), var.clone(), w, b, False, 0.1, config.eps) for t in (x, other)]
    return float((ys[0][0] - ys[1][0]).abs().max())


def universal_rows(report: FamilyReport) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The universal form, one row per member, in two narrow tables: what it reduces for this
    shape, how many statistics (groups) and values each; then centred or not, running
    statistics, and γ/β's shape."""
    sizes = [
        {
            "member": m.member,
            "reduced dims": reduced_text(report.config, m.grouping),
            "groups": f"{m.statistics:,}",
            "values each": f"{m.per_statistic:,}",
        }
        for m in report.members
    ]
    kinds = [
        {
            "member": m.member,
            "centred": "yes" if m.centred else "no (RMS)",
            "running stats": m.running,
            "γ, β shape": "×".join(map(str, m.affine_shape)) + (" (γ)" if m.member == "RMSNorm" else ""),
        }
        for m in report.members
    ]
    return sizes, kinds


def _moves(change: float | None) -> tuple[str, str]:
    if change is None:
        return "—", "no other sample"
    return ("0 (exactly)" if change == 0 else f"{change:.3g}"), ("yes" if change > 0 else "no")


def dependence_rows(report: FamilyReport) -> list[dict[str, str]]:
    """Batch dependence: how far sample 0's output moves when the other samples change — each
    member in training mode, then batch norm in eval mode."""
    rows = []
    for name, change in [*((f"{m.member}" + (", train mode" if m.member == "BatchNorm" else ""), m.sample0_change)
                           for m in report.members), ("BatchNorm, eval mode", report.eval_change)]:  # fmt: skip
        moves, depends = _moves(change)
        rows.append({"member": name, "sample 0 output moves by": moves, "depends on the other samples": depends})
    return rows


def dependence_note(report: FamilyReport) -> str:
    """The batch-dependence table in words: a training-mode effect of batch norm alone; for a batch
    of one, what batch norm's statistics then are."""
    n = report.config.shape[0]
    if n == 1:
        spatial = "·".join(spatial_names(len(report.config.shape)))
        return (
            "A batch of one has no other sample to change. In training, batch norm then takes each channel's mean and "
            f"variance over this one sample's {spatial} values — the very sets InstanceNorm uses (compare their rows "
            "above): with one sample per batch, batch norm is instance norm plus running statistics. A (1, C) input "
            "to BatchNorm1d has one value per channel, and torch refuses it in training (\"Expected more than 1 value "
            "per channel\"); in eval mode the running statistics normalize, and a batch of one works."
        )
    return (
        "In train mode batch norm's statistics come from the whole batch, so one sample's output depends on the "
        "others — and with a small batch those statistics are noisy. In eval mode it normalizes with its running "
        "statistics, fixed numbers: each sample on its own, like the others. The others take statistics within each "
        "sample, in either mode: the batch size does not enter."
    )


def output_figure(report: FamilyReport) -> go.Figure:
    """Each member's output distribution (all values), one row each: bnviz filled red, torch
    outlined blue — where they agree the outline sits on the bar."""
    rows = len(report.members)
    fig = make_subplots(rows=rows, cols=1, subplot_titles=[m.member for m in report.members], vertical_spacing=0.1)
    for i, m in enumerate(report.members, start=1):
        h = m.histogram
        fig.add_trace(bars(h["edges"], h["bnviz"], "bnviz", BNVIZ_COLOR, i == 1, 0.45), row=i, col=1)
        fig.add_trace(outline(h["edges"], h["torch"], "torch", TORCH_COLOR, i == 1), row=i, col=1)
    fig.update_xaxes(tickformat=VALUE_TICKS)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(barmode="overlay", height=130 * rows + 120, title="Outputs of every member", **LAYOUT)
    return fig


def member_pictures(report: FamilyReport, sample: int = 0, channel: int = 0) -> dict[str, str]:
    """Each member's statistics picture (an SVG document), the group of ``(sample, channel)``."""
    return {
        m.member: cube_svg(m.grouping, sample, channel, title=f"{m.per_statistic:,} values each", font=FONT,
                           scale=PICTURE_SCALE)
        for m in report.members
    }


def member_cells(report: FamilyReport, channel: int = 0) -> dict[str, go.Figure]:
    """Each member's cells figure, ``channel`` highlighted."""
    return {m.member: cells_figure(m.cells, channel) for m in report.members if m.cells is not None}
