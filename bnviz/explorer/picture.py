r"""The picture: which values of a tensor share one mean and variance.

A normalization layer computes one mean and one variance per *statistics group*. For an input
of shape ``(N, C, *S)`` and a set of reduced dims R, a value at ``(n, c, s…)`` belongs to the
group keyed by its coordinates on the dims *not* in R — and, for GroupNorm, by ``c // (C/G)``
instead of ``c``:

=============  ==========================  ===========================
member         reduced dims R              one statistic over
=============  ==========================  ===========================
BatchNorm      0, 2, 3, …                  N·S values (one channel)
LayerNorm      1, 2, 3, … (per sample)     C·S values (one sample)
InstanceNorm   2, 3, …                     S values (one sample, one channel)
GroupNorm      2, 3, … with C in G groups  (C/G)·S values
=============  ==========================  ===========================

Two figures draw it. ``cube_svg`` is the classic picture: the tensor as a box with axes N, C
and the spatial dims folded into one (``H·W = 16·16``), and the group of one value shaded.
``cells_figure`` draws every value of a small tensor (a capped corner of a large one) as a
cell, one sample per row and one block of positions per channel, coloured by its group; hover
shows the index, the value and its group's mean and variance. Both stay small: the cells are
capped, so a chart's JSON is a few tens of KB whatever the tensor's size.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import torch
from torch import Tensor

# A qualitative palette for the groups, and a faded copy of each colour for cells not chosen.
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e4b300", "#439894", "#9d755d", "#ff9da6")
FADE = 0.72  # share of white mixed into a colour that is not highlighted
MAX_SAMPLES = 6
MAX_CHANNELS = 6
MAX_POSITIONS = 12
SPATIAL_NAMES = {1: ("L",), 2: ("H", "W"), 3: ("D", "H", "W")}


def spatial_names(rank: int) -> tuple[str, ...]:
    """Names of the spatial dims of a rank-``rank`` input: L; H, W; D, H, W; else L1, L2, …"""
    k = rank - 2
    return SPATIAL_NAMES.get(k, tuple(f"L{i}" for i in range(1, k + 1)))


def dim_names(rank: int, features_last: bool = False) -> tuple[str, ...]:
    """What each dim of a rank-``rank`` tensor holds: ``N, C, H, W`` — or, for a tensor that lists
    its features last, ``N, H, W, C``: then dim 1, which batch norm takes for the channels, is
    named for what it holds (the length, or the height)."""
    if rank < 2:
        return ("N",)[:rank]
    spatial = spatial_names(rank)
    return ("N", *spatial, "C") if features_last and rank >= 3 else ("N", "C", *spatial)


@dataclass(frozen=True)
class Grouping:
    """Which values share one statistic: ``shape`` with ``reduced`` dims, and for GroupNorm the
    channels split into ``channel_groups`` groups (0: every channel on its own or all together,
    as ``reduced`` says)."""

    shape: tuple[int, ...]
    reduced: tuple[int, ...]
    channel_groups: int = 0
    features_last: bool = False  # the tensor lists its features last: dims are named for what they hold

    @property
    def names(self) -> tuple[str, ...]:
        return dim_names(len(self.shape), self.features_last)

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def positions(self) -> int:
        """S: the spatial dims folded into one axis (1 for an (N, C) input)."""
        return math.prod(self.spatial)

    def group_size(self) -> int:
        """How many values feed one statistic."""
        n, c = self.shape[0], self.shape[1]
        size = n if 0 in self.reduced else 1
        if 1 in self.reduced:
            size *= c
        elif self.channel_groups:
            size *= c // self.channel_groups
        return size * math.prod(d for i, d in enumerate(self.spatial, start=2) if i in self.reduced)

    def group_count(self) -> int:
        """How many statistics the layer computes (a mean and a variance each)."""
        total = math.prod(self.shape)
        size = self.group_size()
        return total // size if size else 0

    def _channel_span(self, c: int) -> range:
        """The channels that share a statistic with channel ``c``."""
        if 1 in self.reduced:
            return range(self.shape[1])
        if self.channel_groups:
            k = self.shape[1] // self.channel_groups
            return range(c - c % k, c - c % k + k)
        return range(c, c + 1)

    def _position_set(self, s: int) -> list[int]:
        """The flat positions that share a statistic with flat position ``s``."""
        sp = self.spatial
        if not sp:
            return [0]
        coords = _unflatten(s, sp)
        axes = [range(d) if i in self.reduced else (coords[i - 2],) for i, d in enumerate(sp, start=2)]
        return [_flatten(p, sp) for p in itertools.product(*axes)]

    def block(self, n: int, c: int, s: int = 0) -> tuple[list[tuple[int, int]], ...]:
        """The group of value ``(n, c, s)`` as runs ``[lo, hi)`` along the cube's axes N, C and S."""
        ns = range(self.shape[0]) if 0 in self.reduced else range(n, n + 1)
        return _runs(list(ns)), _runs(list(self._channel_span(c))), _runs(self._position_set(s))

    def group_id(self, n: int, c: int, s: int = 0) -> int:
        """The number of the statistic that value ``(n, c, s)`` feeds, as ``group_statistics``
        numbers them: row-major over the dims that are not reduced."""
        shape, sp = self.shape, self.spatial
        g = self.channel_groups or shape[1]
        k = shape[1] // g if g else 1
        coords = [(n, shape[0]), (c // k, g)] if 1 not in self.reduced else [(n, shape[0])]
        if 0 in self.reduced:
            coords = coords[1:]
        coords += [(p, d) for i, (p, d) in enumerate(zip(_unflatten(s, sp), sp, strict=True), start=2)
                   if i not in self.reduced]  # fmt: skip
        gid = 0
        for p, d in coords:
            gid = gid * d + p
        return gid

    def describe(self) -> str:
        """``"N·H·W = 8·16·16 = 2,048 values"``: what one statistic is computed over."""
        names = self.names
        parts = [(names[i], d) for i, d in enumerate(self.shape) if i in self.reduced]
        if self.channel_groups and 1 not in self.reduced:
            parts.insert(1 if 0 in self.reduced else 0, ("C/G", self.shape[1] // self.channel_groups))
        if not parts:
            return "1 value"
        formula = "·".join(p for p, _ in parts) + " = " + "·".join(str(d) for _, d in parts)
        if len(parts) > 1:
            formula += f" = {self.group_size():,}"
        return f"{formula} values"


def _unflatten(s: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for d in reversed(sizes):
        out.append(s % d)
        s //= d
    return tuple(reversed(out))


def _flatten(coords: tuple[int, ...], sizes: tuple[int, ...]) -> int:
    s = 0
    for c, d in zip(coords, sizes, strict=True):
        s = s * d + c
    return s


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as maximal runs ``[lo, hi)``: ``[0, 1, 2, 5]`` → ``[(0, 3), (5, 6)]``."""
    runs: list[tuple[int, int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def axis_labels(shape: tuple[int, ...], features_last: bool = False) -> tuple[str, str, str]:
    """The cube's three labels: ``"N = 8"``, ``"C = 3"``, ``"H·W = 16·16"``; for a features-last
    tensor each dim is named for what it holds: ``"L = 64"`` on dim 1, ``"C = 64"`` last."""
    all_names = dim_names(len(shape), features_last)
    names = all_names[2:]
    sp = shape[2:]
    if not sp:
        s_label = "no spatial dims"
    elif len(sp) == 1:
        s_label = f"{names[0]} = {sp[0]}"
    else:
        s_label = f"{'·'.join(names)} = {'·'.join(map(str, sp))}"
    return f"N = {shape[0]}", f"{all_names[1]} = {shape[1]}", s_label


# --- the cube ----------------------------------------------------------------------------------

_W, _H, _D = 3.0, 2.0, 1.6  # drawn lengths of the S, N and C axes
_DX, _DY = 0.75, 0.55  # how far one unit of depth (C) moves right and up


@dataclass(frozen=True)
class _Projection:
    """Oblique projection of the unit cube: S to the right (``width`` long: narrow when there are
    no spatial dims), N down, C into the page (up and right)."""

    width: float = _W

    def point(self, s: float, n: float, c: float) -> tuple[float, float]:
        return s * self.width + c * _D * _DX, -n * _H + c * _D * _DY

    def face(self, corners: list[tuple[float, float, float]]) -> tuple[list[float], list[float]]:
        pts = [self.point(*p) for p in corners]
        pts.append(pts[0])
        return [round(x, 4) for x, _ in pts], [round(y, 4) for _, y in pts]

    def box_faces(self, s0: float, s1: float, n0: float, n1: float, c0: float, c1: float) -> list[tuple[list, list]]:
        """The three visible faces (front, top, right side) of a box in unit cube coordinates."""
        return [
            self.face([(s0, n0, c0), (s1, n0, c0), (s1, n1, c0), (s0, n1, c0)]),  # front
            self.face([(s0, n0, c0), (s1, n0, c0), (s1, n0, c1), (s0, n0, c1)]),  # top
            self.face([(s1, n0, c0), (s1, n1, c0), (s1, n1, c1), (s1, n0, c1)]),  # right side
        ]


def _grid_lines(size: int, cap: int = 24) -> list[float]:
    """Fractions where cell borders are drawn along an axis of ``size`` cells (none if too many)."""
    if size <= 1 or size > cap:
        return []
    return [i / size for i in range(1, size)]


def cube_svg(
    grouping: Grouping, sample: int = 0, channel: int = 0, title: str | None = None, font: int = 13,
    scale: float = 60.0,
) -> str:
    """The tensor as a glass box (N down, S across, C in depth), with the group of value
    ``(sample, channel, 0)`` shaded in its group's colour (the one ``cells_figure`` uses): the
    values that share its mean and variance. A static SVG document: it needs no chart library,
    so it is the first picture a reader sees. Every word in it is built from numbers. ``font``: the
    text size in the picture's own pixels (larger for a picture drawn small); ``scale``: pixels per
    unit of the box (smaller for pictures drawn side by side, so that their words stay large)."""
    n_size, c_size, s_size = grouping.shape[0], grouping.shape[1], grouping.positions
    proj = _Projection(_W if grouping.spatial else 0.7)
    left, top, bottom = 0.9 * font / 13, 0.55 * font / 13, 0.45 * font / 13  # margins in units: labels, title
    x_min, y_max = proj.point(0, 0, 0)[0] - left, proj.point(0, 0, 1)[1] + top

    def px(x: float, y: float) -> str:
        return f"{(x - x_min) * scale:.1f},{(y_max - y) * scale:.1f}"

    def polyline(points: list[tuple[float, float]], style: str, closed: bool = False) -> str:
        tag = "polygon" if closed else "polyline"
        fill = "" if closed else ' fill="none"'
        return f'<{tag} points="{" ".join(px(*p) for p in points)}"{fill} {style}/>'

    parts = []
    for xs, ys in proj.box_faces(0, 1, 0, 1, 0, 1):  # the tensor
        parts.append(polyline(list(zip(xs, ys, strict=True)), 'fill="#000" fill-opacity="0.03" stroke="#555" '
                              'stroke-width="1.5"', closed=True))  # fmt: skip
    grid = []  # cell borders on the two visible faces of each axis, where there are few enough cells to see
    for f in _grid_lines(s_size):
        grid += [((f, 0, 0), (f, 1, 0)), ((f, 0, 0), (f, 0, 1))]
    for f in _grid_lines(n_size):
        grid += [((0, f, 0), (1, f, 0)), ((1, f, 0), (1, f, 1))]
    for f in _grid_lines(c_size):
        grid += [((0, 0, f), (1, 0, f)), ((1, 0, f), (1, 1, f))]
    parts += [polyline([proj.point(*a), proj.point(*b)], 'stroke="#bbb" stroke-width="0.7"') for a, b in grid]
    hidden = [((0, 0, 1), (0, 1, 1)), ((0, 1, 1), (1, 1, 1)), ((0, 1, 1), (0, 1, 0))]  # the back edges, dotted
    parts += [polyline([proj.point(*a), proj.point(*b)], 'stroke="#999" stroke-dasharray="3,3"') for a, b in hidden]
    if min(n_size, c_size, s_size) > 0:
        color = PALETTE[grouping.group_id(sample, channel) % len(PALETTE)]
        n_runs, c_runs, s_runs = grouping.block(sample, channel, 0)
        for (n0, n1), (c0, c1), (s0, s1) in itertools.product(n_runs[:8], c_runs[:8], s_runs[:8]):
            box = (s0 / s_size, s1 / s_size, n0 / n_size, n1 / n_size, c0 / c_size, c1 / c_size)
            for xs, ys in proj.box_faces(*box):
                parts.append(polyline(list(zip(xs, ys, strict=True)), f'class="shared" fill="{color}" '
                                      f'fill-opacity="0.55" stroke="{color}"', closed=True))  # fmt: skip
    n_label, c_label, s_label = axis_labels(grouping.shape, grouping.features_last)
    labels = [
        (proj.point(0, 0.5, 0), -0.8 * font, 0, n_label, "middle", -90),
        (proj.point(0.5, 1, 0), 0, 1.4 * font, s_label, "middle", 0),
        (proj.point(1, 1, 0.5), 0.6 * font, 0.3 * font, c_label, "start", 0),
    ]
    for (x, y), dx, dy, text, anchor, angle in labels:
        at = px(x, y).split(",")
        ax, ay = float(at[0]) + dx, float(at[1]) + dy
        turn = f' transform="rotate({angle} {ax:.1f} {ay:.1f})"' if angle else ""
        parts.append(f'<text x="{ax:.1f}" y="{ay:.1f}" text-anchor="{anchor}"{turn}>{html.escape(text)}</text>')
    heading = title or f"shaded: {grouping.group_size():,} values, 1 statistic"
    parts.append(f'<text x="4" y="{1.25 * font:.0f}" font-weight="600">{html.escape(heading)}</text>')
    width = (proj.point(1, 0, 1)[0] + 1.2 * font / 13 - x_min) * scale
    height = (y_max - proj.point(0, 1, 0)[1] + bottom) * scale
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" '
        f'height="{height:.0f}" font-family="sans-serif" font-size="{font}" fill="#31333f" role="img">'
        f"<title>{html.escape(heading)}</title>{''.join(parts)}</svg>"
    )


# --- the cells -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cells:
    """A capped corner of a tensor, as plain data: values, their groups, and each group's
    mean and (biased) variance computed over the *whole* tensor."""

    shape: tuple[int, ...]
    samples: int  # rows drawn
    channels: int  # channel blocks drawn
    positions: int  # positions drawn per channel block
    values: tuple[tuple[float, ...], ...]  # [row][channel * positions + position]
    groups: tuple[tuple[int, ...], ...]  # group id per cell, same layout
    means: tuple[tuple[float, ...], ...]
    variances: tuple[tuple[float, ...], ...]
    names: tuple[str, ...] = ()  # what each dim holds (``dim_names``); empty: N, C, then the spatial names

    @property
    def dims(self) -> tuple[str, ...]:
        return self.names or dim_names(len(self.shape))

    @property
    def capped(self) -> bool:
        return (self.samples, self.channels, self.positions) != (
            self.shape[0],
            self.shape[1],
            math.prod(self.shape[2:]),
        )


def group_statistics(x: Tensor, grouping: Grouping) -> tuple[Tensor, Tensor, Tensor]:
    """Per value of ``x`` (broadcast views, nothing input-sized allocated but the key): its
    group's mean, biased variance (float64) and group id.

    ``x`` is viewed as ``(N, G, C/G, *S)`` — G = C unless GroupNorm splits the channels — and
    reduced over the dims that R maps to: ``mean = Σx / n``, ``var = Σ(x − mean)² / n``.
    """
    shape = tuple(x.shape)
    c = shape[1]
    g = grouping.channel_groups or c
    view = x.double().reshape(shape[0], g, c // g if g else 0, *shape[2:])
    dims = [0] if 0 in grouping.reduced else []
    if 1 in grouping.reduced:
        dims.append(1)
    dims.append(2)
    dims += [d + 1 for d in range(2, len(shape)) if d in grouping.reduced]
    var, mean = torch.var_mean(view, dims, correction=0, keepdim=True)
    ids = torch.arange(mean.numel()).view(mean.shape)
    full = view.shape
    return (
        mean.expand(full).reshape(shape),
        var.expand(full).reshape(shape),
        ids.expand(full).reshape(shape),
    )


def cells(
    x: Tensor,
    grouping: Grouping,
    max_samples: int = MAX_SAMPLES,
    max_channels: int = MAX_CHANNELS,
    max_positions: int = MAX_POSITIONS,
) -> Cells:
    """The first samples, channels and positions of ``x`` with their groups' statistics."""
    shape = tuple(x.shape)
    names = grouping.names if grouping.features_last else ()
    if x.numel() == 0:
        return Cells(shape, 0, 0, 0, (), (), (), (), names)
    mean, var, ids = group_statistics(x, grouping)
    k_n, k_c = min(shape[0], max_samples), min(shape[1], max_channels)
    k_s = min(math.prod(shape[2:]), max_positions)

    def corner(t: Tensor) -> list[list[Any]]:
        t = t.reshape(shape[0], shape[1], -1)[:k_n, :k_c, :k_s]  # (N, C, S) -> (n, c, s)
        return t.reshape(k_n, -1).tolist()

    def rounded(rows: list[list[float]]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(f"{v:.6g}") for v in row) for row in rows)

    return Cells(
        shape, k_n, k_c, k_s,
        rounded(corner(x.detach().double().cpu())),
        tuple(tuple(int(v) for v in row) for row in corner(ids)),
        rounded(corner(mean.cpu())),
        rounded(corner(var.cpu())),
        names,
    )  # fmt: skip


def _mix(color: str, white: float) -> str:
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(v + (255 - v) * white):02x}" for v in (r, g, b))


def _index_text(names: tuple[str, ...], shape: tuple[int, ...], n: int, c: int, s: int) -> str:
    coords = _unflatten(s, shape[2:]) if len(shape) > 2 else ()
    parts = [f"n={n}", f"{names[1].lower()}={c}", *(f"{a}={b}" for a, b in zip(names[2:], coords, strict=True))]
    return ", ".join(parts)


def cells_note(data: Cells) -> str:
    """What the cells show when the tensor is larger than what is drawn (empty otherwise)."""
    if not data.capped or not data.samples:
        return ""
    total_s = math.prod(data.shape[2:])
    parts = [
        f"{data.samples} of {data.shape[0]} samples",
        f"{data.channels} of {data.shape[1]} channels",
    ]
    if len(data.shape) > 2:
        parts.append(f"the first {data.positions} of {total_s:,} positions")
    return "Drawn capped: " + ", ".join(parts) + ". Hover values and statistics are the whole tensor's."


def cells_figure(data: Cells, highlight_channel: int | None = None, title: str | None = None) -> go.Figure:
    """Every drawn value as a cell: a row per sample, a block of positions per channel, coloured
    by its statistics group (the cells of ``highlight_channel`` in full colour, the rest faded)."""
    fig = go.Figure()
    if not data.samples:
        fig.add_annotation(text="an empty tensor has no values to draw", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")  # fmt: skip
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        fig.update_layout(template="plotly_white", height=160, margin=dict(l=10, r=10, t=30, b=10))
        return fig
    k_c, k_s = data.channels, data.positions
    width = k_c * (k_s + 1) - 1  # a blank column between channel blocks
    # z: 2·(palette slot) (+1 when faded), drawn through a discrete colour scale
    z: list[list[int | None]] = []
    custom: list[list[Any]] = []
    for n in range(data.samples):
        z_row: list[int | None] = [None] * width
        c_row: list[Any] = [None] * width
        for c, s in itertools.product(range(k_c), range(k_s)):
            i, col = c * k_s + s, c * (k_s + 1) + s
            slot = data.groups[n][i] % len(PALETTE)
            faded = highlight_channel is not None and c != highlight_channel
            z_row[col] = 2 * slot + int(faded)
            c_row[col] = [_index_text(data.dims, data.shape, n, c, s), data.values[n][i], data.means[n][i],
                          data.variances[n][i], data.groups[n][i]]  # fmt: skip
        z.append(z_row)
        custom.append(c_row)
    levels = 2 * len(PALETTE)
    scale = []
    for k in range(levels):
        color = PALETTE[k // 2] if k % 2 == 0 else _mix(PALETTE[k // 2], FADE)
        scale += [[k / levels, color], [(k + 1) / levels, color]]
    fig.add_trace(
        go.Heatmap(
            z=z,
            customdata=custom,
            zmin=0,
            zmax=levels,
            colorscale=scale,
            showscale=False,
            xgap=1,
            ygap=1,
            hoverongaps=False,
            hovertemplate="x[%{customdata[0]}] = %{customdata[1]:.5g}<br>statistic #%{customdata[4]}: "
            "mean %{customdata[2]:.5g}, variance %{customdata[3]:.5g}<extra></extra>",
        )
    )
    ticks = [c * (k_s + 1) + (k_s - 1) / 2 for c in range(k_c)]
    fig.update_xaxes(tickvals=ticks, ticktext=[f"{data.dims[1].lower()}={c}" for c in range(k_c)], showgrid=False,
                     zeroline=False, side="top", fixedrange=True)  # fmt: skip
    fig.update_yaxes(tickvals=list(range(data.samples)), ticktext=[f"n={n}" for n in range(data.samples)],
                     autorange="reversed", showgrid=False, zeroline=False, fixedrange=True)  # fmt: skip
    fig.update_layout(
        template="plotly_white",
        height=70 + 26 * data.samples,
        margin=dict(l=50, r=10, t=50 if title else 30, b=10),
        title=dict(text=title, font=dict(size=14)) if title else None,
    )
    return fig
