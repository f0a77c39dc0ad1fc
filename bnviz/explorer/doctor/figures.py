"""The /doctor page's picture: each batch norm's running statistics down the network — per layer,
the spread of running_mean and of running_var over its channels (min–max as a line, the
quartiles as a thick bar, the median as a dot; a NaN median in red; a variance of 0 is off the
log scale), from the report's quantiles."""

from __future__ import annotations

import html
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnviz.explorer.theme import LAYOUT, TORCH_COLOR, plain_ticks

MAX_LAYERS = 120  # a resnet152 has 155 batch norms: the picture shows the first 120, the table all


def _plain(name: str, limit: int = 40) -> str:
    """A layer name (an upload's: anything) as plotly text that shows as typed: its pseudo-HTML
    (``<a href>``, ``<b>``) escaped, ``%{`` templates broken, at most ``limit`` characters."""
    name = name if len(name) <= limit else name[:limit] + "…"
    return html.escape(name).replace("%{", "%⁠{")


def statistics_figure(report: dict[str, Any]) -> go.Figure:
    """Two panels, layers in network order along x: running_mean and running_var (log scale)."""
    layers = report["layers"][:MAX_LAYERS]
    names = [f"{i}: {_plain(r['name'])}" for i, r in enumerate(layers)]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("running_mean over the channels", "running_var over the channels (log)"))
    for row, key in ((1, "running_mean"), (2, "running_var")):
        for name, layer in zip(names, layers, strict=True):
            q = layer[key]
            fig.add_trace(go.Scatter(x=[name, name], y=[q["min"], q["max"]], mode="lines",
                                     line=dict(color="#999", width=1),
                                     showlegend=False, hoverinfo="skip"), row=row, col=1)
            fig.add_trace(go.Scatter(x=[name, name], y=[q["q25"], q["q75"]], mode="lines",
                                     line=dict(color=TORCH_COLOR, width=8), showlegend=False, hoverinfo="skip"),
                          row=row, col=1)
            bad = q["median"] is None
            fig.add_trace(go.Scatter(
                x=[name], y=[q["median"]], mode="markers", showlegend=False,
                marker=dict(color="#d62728" if bad else "#222", size=8),
                hovertemplate=(f"{name}<br>min {q['min']}<br>q25 {q['q25']}<br>median {q['median']}<br>"
                               f"q75 {q['q75']}<br>max {q['max']}<extra>{key}</extra>"),
            ), row=row, col=1)
    fig.update_xaxes(title_text="batch norm, in the network's order", row=2, col=1, tickangle=-45)
    fig.update_layout(height=560, title="Running statistics, layer by layer", **LAYOUT)
    plain_ticks(fig)
    fig.update_yaxes(type="log", dtick=1, row=2, col=1)  # a label per power of ten
    return fig
