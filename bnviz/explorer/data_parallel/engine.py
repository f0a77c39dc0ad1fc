"""The /data-parallel page's engine: k real gloo processes, each holding a slice of one batch.

Under DistributedDataParallel every replica normalizes with the statistics of its own slice of the
batch; with small per-device batches those statistics are noisy. SyncBatchNorm exchanges them so
every rank normalizes with the whole batch's. This runs both for one seeded batch split over k
ranks (sizes even or typed, zeros allowed): each rank's own batch statistics next to the
synchronized ones and the full batch's (computed here, in one process, by torch), the verdict that
SyncBatchNorm equals the full batch on every rank (output, ∂L/∂x, running statistics), how far
plain per-rank batch norm is from it, and — without processes — how the spread of per-rank means
and variances grows as the per-device batch shrinks.

The ranks are forks of a fork server (``workers``) that has imported ``dp_worker`` (torch and bnviz
only), warmed up and frozen, so a rank costs tens of MB rather than a fresh interpreter. Every
run is bounded in time (gloo's collective timeout and a deadline on the whole world), and every
rank is joined or killed on every exit path. The report is plain data.
"""

from __future__ import annotations

import math
import os
import queue
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
import torch
import torch.nn.functional as F

from bnviz.explorer import workers
from bnviz.explorer.contract import Progress, Stopped, check_stop, ignore, never
from bnviz.explorer.data import channel_sample
from bnviz.explorer.data_parallel import worker as dp_worker
from bnviz.explorer.data_parallel.url import DataParallelConfig
from bnviz.explorer.parity import as_accurate, diff, max_abs, tolerance
from bnviz.explorer.picture import PALETTE
from bnviz.explorer.theme import BNVIZ_COLOR, INPUT_COLOR, LAYOUT, TORCH_COLOR, log_ticks
from bnviz.hosting import forks

DEADLINE_S = 60.0  # the whole world, start to finish
SPREAD_SIZES = (1, 2, 4, 8, 16, 32, 64)
SPREAD_DRAWS = 200
SPREAD_BLOCK_VALUES = 2**18  # values drawn at once for the spread (a few MB, whatever the sample)


class WorldError(forks.ForkError):
    """A rank failed, died or ran out of time; the message says which and how."""


@dataclass(frozen=True)
class RankReport:
    """One rank: its slice, its own statistics, and how it compares with the full batch."""

    rank: int
    count: int
    start: int
    mean: list[float] | None  # its own slice's per-channel mean (None for an empty slice)
    var: list[float] | None
    sync_error: float  # max |SyncBatchNorm − full batch| over output and ∂L/∂x on its slice
    running_error: float  # max |running statistics − full batch's|
    plain_error: float | None  # max |plain per-rank BatchNorm output − full batch's|
    ok: bool
    private_bytes: int = 0  # the memory this rank's process held alone (Linux; 0 elsewhere)


@dataclass(frozen=True)
class DataParallelReport:
    """Everything the data-parallel page shows; plain data only."""

    config: DataParallelConfig
    ranks: tuple[RankReport, ...]
    full_mean: list[float]
    full_var: list[float]
    seconds: float
    spread: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "match" if all(r.ok for r in self.ranks) else "mismatch"


def run_world(config: DataParallelConfig, deadline_s: float = DEADLINE_S) -> dict[int, dict[str, Any]]:
    """Start ``config.world`` gloo ranks on 127.0.0.1 (file rendezvous), collect each one's
    numbers, and join — or kill — every one of them on every path. Raises ``WorldError``."""
    ctx = workers.context()
    sizes = config.sizes()
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bnviz-dp-") as tmp:
        channel = ctx.Queue()
        rendezvous = f"{tmp}/rendezvous"
        fault = os.environ.get(dp_worker.FAULT_ENV, "")
        args = (config.world, rendezvous, sizes, config.sample, config.dist, config.seed, channel, fault)
        procs = [ctx.Process(target=dp_worker.rank_main, args=(r, *args), daemon=True) for r in range(config.world)]
        end = time.monotonic() + deadline_s
        try:
            for p in procs:
                p.start()
            while len(results) < config.world:
                left = end - time.monotonic()
                if left <= 0:
                    raise WorldError(f"the ranks did not finish within {deadline_s:.0f} s")
                try:
                    rank, payload = channel.get(timeout=min(left, 0.5))
                    results[rank] = payload
                except queue.Empty:
                    dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0) and r not in results]
                    if dead:
                        _wait_for_errors(channel, results, procs, end)
                        raise WorldError(_death_message(dead, procs, results)) from None
            errors = {r: p["error"] for r, p in results.items() if "error" in p}
            if errors:
                raise WorldError("; ".join(f"rank {r}: {e}" for r, e in sorted(errors.items())))
        finally:
            forks.stop(procs)
            channel.close()
            channel.join_thread()
    return results


def _wait_for_errors(channel: Any, results: dict, procs: list, end: float) -> None:
    """After a rank died, give the survivors until gloo's timeout to report their own errors."""
    limit = min(end, time.monotonic() + dp_worker.GLOO_TIMEOUT.total_seconds() + 5)
    while time.monotonic() < limit and any(p.is_alive() for p in procs):
        try:
            rank, payload = channel.get(timeout=0.5)
            results[rank] = payload
        except queue.Empty:
            continue


def _death_message(dead: list[int], procs: list, results: dict) -> str:
    parts = [f"rank {r} stopped (exit code {procs[r].exitcode}) before reporting" for r in dead]
    parts += [f"rank {r}: {p['error']}" for r, p in sorted(results.items()) if "error" in p]
    return "; ".join(parts)


def _full_batch_reference(config: DataParallelConfig, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """torch's own BatchNorm on the concatenated batch, in one process: the target (and, in
    float64 on the same values, the truth)."""
    x, upstream = (t.to(dtype) for t in dp_worker.full_batch(config.sizes(), config.sample, config.dist, config.seed))
    c = config.sample[0]
    running_mean, running_var = torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype)  # a fresh layer's
    weight, bias = torch.linspace(0.5, 1.5, c, dtype=dtype), torch.linspace(-0.5, 0.5, c, dtype=dtype)
    xr = x.clone().requires_grad_()
    y = F.batch_norm(xr, running_mean, running_var, weight, bias, True, 0.1, 1e-5)
    (grad,) = torch.autograd.grad(y, [xr], upstream)
    var, mean = torch.var_mean(x.double(), [0, *range(2, x.dim())], correction=0)
    return {"y": y.detach(), "grad": grad, "running_mean": running_mean, "running_var": running_var, "mean": mean,
            "var": var}  # fmt: skip



def spread_by_batch(config: DataParallelConfig) -> dict[str, Any]:
    """How far per-rank statistics scatter around the population's as the per-device batch
    shrinks: for each size b, the standard deviation over draws of channel 0's per-slice mean
    and variance (and the per-value standard deviation, for σ/√n).

    Channel 0 alone is drawn, ``SPREAD_BLOCK_VALUES`` at a time; the per-value deviation pools
    the draws: ``√(Σ_d m·(v_d + (μ_d − μ̄)²) / (D·m − 1))`` over D draws of m values each."""
    per_sample = math.prod(config.sample[1:])
    rows = []
    for b in SPREAD_SIZES:
        m = b * per_sample  # channel 0's values in a slice of b samples
        block = max(1, SPREAD_BLOCK_VALUES // m)
        stats = [torch.var_mean(channel_sample(config.dist, config.sample[0], 0, (min(block, SPREAD_DRAWS - s), m),
                                               config.seed + 101 + b, s), 1, correction=0)
                 for s in range(0, SPREAD_DRAWS, block)]  # fmt: skip
        var, mean = torch.cat([v for v, _ in stats]), torch.cat([u for _, u in stats])
        pooled = m * (var + (mean - mean.mean()).square()).sum() / (SPREAD_DRAWS * m - 1)
        rows.append({"size": b, "values": m, "mean_sd": float(mean.std()), "var_sd": float(var.std()),
                     "value_sd": float(pooled.sqrt())})  # fmt: skip
    return {"rows": rows, "per_rank": sorted(set(config.sizes()))}


def run(config: DataParallelConfig, stopped: Stopped = never, progress: Progress = ignore,
        deadline_s: float = DEADLINE_S) -> DataParallelReport:  # fmt: skip
    """The whole page's numbers: k ranks in real processes against one full-batch reference. The
    world runs within ``deadline_s`` whatever ``stopped`` says (its ranks are killed after it);
    ``stopped`` is asked once it is back."""
    reason = config.refusal()
    if reason is not None:
        raise ValueError(reason)
    t = time.monotonic()
    results = run_world(config, deadline_s)
    seconds = time.monotonic() - t
    check_stop(stopped)
    ref = _full_batch_reference(config)
    truth = _full_batch_reference(config, torch.float64)
    rtol, atol = tolerance(torch.float32)
    ranks, start = [], 0
    for r, size in enumerate(config.sizes()):
        got = {k: torch.from_numpy(v) if hasattr(v, "dtype") else v for k, v in results[r].items()}
        sl = slice(start, start + size)
        out_err = max(max_abs(got["y"], ref["y"][sl]), max_abs(got["grad"], ref["grad"][sl]))
        ok = True
        for mine, theirs, true, widen in (  # output, ∂L/∂x, running statistics
            (got["y"], ref["y"][sl], truth["y"][sl], 1),
            (got["grad"], ref["grad"][sl], truth["grad"][sl], 4),
            (torch.tensor(got["running_mean"]), ref["running_mean"], truth["running_mean"], 1),
            (torch.tensor(got["running_var"]), ref["running_var"], truth["running_var"], 1),
        ):  # within float32's tolerance of torch, or about as close as torch to a float64 run (parity.as_accurate)
            ok = ok and (diff(mine, theirs.to(mine.dtype), rtol, widen * atol).ok
                         or as_accurate(max_abs(mine, true), max_abs(theirs, true)))  # fmt: skip
        run_err = max(max_abs(torch.tensor(got[n]), ref[n]) for n in ("running_mean", "running_var"))
        plain = None if got["y_plain"] is None else max_abs(got["y_plain"], ref["y"][sl])
        ranks.append(RankReport(r, size, start, got["mean"], got["var"], out_err, run_err, plain, ok,
                                got["private_bytes"]))  # fmt: skip
        start += size
    return DataParallelReport(config, tuple(ranks), ref["mean"].tolist(), ref["var"].tolist(), seconds,
                              spread_by_batch(config))  # fmt: skip


# --- figures ------------------------------------------------------------------------------------


def slices_figure(report: DataParallelReport) -> go.Figure:
    """Which samples of the batch each rank holds: one coloured segment per rank."""
    fig = go.Figure()
    for r in report.ranks:
        where = f"rank {r.rank}: samples {r.start}–{r.start + r.count - 1}" if r.count else f"rank {r.rank}: none"
        fig.add_trace(go.Bar(y=["batch"], x=[r.count], orientation="h", name=f"rank {r.rank}: {r.count}",
                             marker_color=PALETTE[r.rank % len(PALETTE)], text=[f"rank {r.rank}"] if r.count else None,
                             textposition="inside", insidetextanchor="middle",
                             hovertemplate=where + "<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title_text="sample", tickformat="d")
    fig.update_yaxes(visible=False)
    fig.update_layout(barmode="stack", height=190, title="Which samples each rank holds", **LAYOUT)
    fig.update_layout(legend_traceorder="normal")
    return fig


def statistics_figure(report: DataParallelReport, channel: int = 0) -> go.Figure:
    """Channel ``channel``: each rank's own batch mean and variance against the whole batch's
    (what SyncBatchNorm uses on every rank)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean", "variance"), horizontal_spacing=0.14)
    ranks = [r for r in report.ranks if r.mean is not None]
    for col, key, full in ((1, "mean", report.full_mean), (2, "var", report.full_var)):
        fig.add_trace(go.Scatter(x=[r.rank for r in ranks], y=[getattr(r, key)[channel] for r in ranks],
                                 mode="markers", marker=dict(color=BNVIZ_COLOR, size=11),
                                 name="each rank's own (plain BatchNorm)", showlegend=col == 1,
                                 hovertemplate="rank %{x}: %{y:.4g}<extra></extra>"), row=1, col=col)  # fmt: skip
        fig.add_hline(y=full[channel], line=dict(color=TORCH_COLOR, width=2), row=1, col=col)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=TORCH_COLOR, width=2),
                             name="whole batch (SyncBatchNorm, every rank)"))  # fmt: skip
    fig.update_xaxes(title_text="rank", tickformat="d", dtick=1)
    fig.update_layout(height=360, title=f"Channel {channel}: per-rank vs synced", **LAYOUT)
    return fig


def spread_figure(report: DataParallelReport) -> go.Figure:
    """The spread of per-slice statistics against n, the values each statistic is taken over
    (samples per device × positions per sample), log–log, with this view's per-rank n marked."""
    rows = report.spread["rows"]
    fig = go.Figure()
    n = [row["values"] for row in rows]
    fig.add_trace(go.Scatter(x=n, y=[row["mean_sd"] for row in rows], mode="lines+markers",
                             name="spread of the mean", line=dict(color=BNVIZ_COLOR)))  # fmt: skip
    fig.add_trace(go.Scatter(x=n, y=[row["var_sd"] for row in rows], mode="lines+markers",
                             name="spread of the variance", line=dict(color=INPUT_COLOR)))  # fmt: skip
    ideal = [row["value_sd"] / math.sqrt(row["values"]) for row in rows]
    fig.add_trace(go.Scatter(x=n, y=ideal, mode="lines", name="σ/√n", line=dict(color=TORCH_COLOR, dash="dot")))
    per_sample = math.prod(report.config.sample[1:])
    for b in report.spread["per_rank"]:
        if b > 0:
            fig.add_vline(x=b * per_sample, line=dict(color="#999999", dash="dash", width=1))
    ys = [v for row in rows for v in (row["mean_sd"], row["var_sd"])] + ideal
    yticks, ytext = log_ticks(ys)
    fig.update_xaxes(type="log", title_text="n: values per statistic on a device",
                     tickvals=n, ticktext=[f"{v:,}" for v in n])  # fmt: skip
    fig.update_yaxes(type="log", title_text="standard deviation over draws", tickvals=yticks, ticktext=ytext)
    fig.update_layout(height=380, title="Smaller batches, noisier statistics", **LAYOUT)
    return fig


def all_figures(report: DataParallelReport, channel: int = 0) -> dict[str, go.Figure]:
    return {"slices": slices_figure(report), "statistics": statistics_figure(report, channel),
            "spread": spread_figure(report)}  # fmt: skip


def rank_rows(report: DataParallelReport, channel: int = 0) -> list[dict[str, str]]:
    """Per rank, channel ``channel``: its own statistics, the synced (= full-batch) ones, and how
    far plain per-rank batch norm is from the full batch."""

    def g(v: float | None) -> str:
        return "—" if v is None else f"{v:.4g}"

    return [
        {
            "rank": str(r.rank),
            "samples": str(r.count),
            "own mean / var": "empty" if r.mean is None else f"{g(r.mean[channel])} / {g(r.var[channel])}",
            "plain BN off by": "—" if r.plain_error is None else f"{r.plain_error:.3g}",
            "sync off by": f"{r.sync_error:.1e}",
        }
        for r in report.ranks
    ]
