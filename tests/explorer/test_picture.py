"""The statistics picture: which values share one statistic, for every rank and member."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest
import torch

from bnviz.explorer.picture import (
    PALETTE,
    Grouping,
    axis_labels,
    cells,
    cells_figure,
    cells_note,
    cube_svg,
    group_statistics,
)

SVG = "{http://www.w3.org/2000/svg}"

# (shape, reduced dims, channel groups): what each layer of the family reduces
CASES = {
    "BatchNorm1d-(N,C)": ((32, 4), (0,), 0),
    "BatchNorm1d-(N,C,L)": ((16, 4, 8), (0, 2), 0),
    "BatchNorm2d": ((8, 3, 16, 16), (0, 2, 3), 0),
    "BatchNorm3d": ((4, 2, 4, 8, 8), (0, 2, 3, 4), 0),
    "BatchNorm-rank6": ((2, 3, 4, 4, 2, 2), (0, 2, 3, 4, 5), 0),
    "LayerNorm": ((4, 6, 3, 3), (1, 2, 3), 0),
    "LayerNorm-last-dim": ((4, 6, 3, 3), (3,), 0),
    "InstanceNorm": ((4, 6, 3, 3), (2, 3), 0),
    "GroupNorm": ((4, 6, 3, 3), (2, 3), 3),
}


def _reference_groups(x, reduced, groups):
    """Brute force: the key of every value, and each key's values."""
    shape = x.shape
    k = shape[1] // groups if groups else 1
    keys = {}
    for idx in itertools.product(*(range(d) for d in shape)):
        key = tuple(
            (i // k if groups and d == 1 else i) if d not in reduced else None for d, i in enumerate(idx)
        )
        keys.setdefault(key, []).append(float(x[idx]))
    return keys


@pytest.mark.parametrize("case", CASES)
def test_groups_match_a_brute_force_reference(case):
    shape, reduced, groups = CASES[case]
    grouping = Grouping(shape, reduced, groups)
    x = torch.randn(shape, dtype=torch.float64)
    reference = _reference_groups(x, reduced, groups)
    assert grouping.group_count() == len(reference), (grouping.group_count(), len(reference))
    assert {len(v) for v in reference.values()} == {grouping.group_size()}
    mean, var, ids = group_statistics(x, grouping)
    assert int(ids.max()) + 1 == len(reference)
    flat_ids = ids.reshape(shape[0], shape[1], -1)
    for n, c, s in itertools.product(range(shape[0]), range(shape[1]), range(flat_ids.shape[2])):
        assert grouping.group_id(n, c, s) == int(flat_ids[n, c, s]), (n, c, s)
    for values in reference.values():  # every group's mean is its values' mean
        t = torch.tensor(values, dtype=torch.float64)
        hits = (mean - t.mean()).abs() < 1e-12
        assert hits.sum() >= len(values), "a group's mean is not shared by all its values"
        assert torch.isclose(var[hits][0], t.var(correction=0)), (var[hits][0], t.var(correction=0))


@pytest.mark.parametrize("case", CASES)
def test_both_figures_draw_and_stay_small(case):
    shape, reduced, groups = CASES[case]
    grouping = Grouping(shape, reduced, groups)
    channel = min(1, shape[1] - 1)
    svg = cube_svg(grouping, 0, channel)
    root = ET.fromstring(svg)  # a well-formed SVG document
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert set(axis_labels(shape)) <= set(texts), texts
    shaded = [p for p in root.iter(f"{SVG}polygon") if p.get("class") == "shared"]
    assert len(shaded) >= 3, "the shared block is shaded (three visible faces)"
    colour = PALETTE[grouping.group_id(0, channel) % len(PALETTE)]
    assert {p.get("fill") for p in shaded} == {colour}, "the cube's shade is the cells' colour of that group"
    data = cells(torch.randn(shape), grouping)
    fig = cells_figure(data, highlight_channel=0)
    assert fig.data and len(fig.to_json()) <= 100_000
    assert len(svg) <= 100_000


def test_labels_fold_the_spatial_dims():
    assert axis_labels((8, 3, 16, 16)) == ("N = 8", "C = 3", "H·W = 16·16")
    assert axis_labels((32, 4)) == ("N = 32", "C = 4", "no spatial dims")
    assert axis_labels((16, 4, 8)) == ("N = 16", "C = 4", "L = 8")
    assert axis_labels((2, 3, 4, 4, 2, 2))[2] == "L1·L2·L3·L4 = 4·4·2·2"
    assert Grouping((8, 3, 16, 16), (0, 2, 3)).describe() == "N·H·W = 8·16·16 = 2,048 values"
    assert Grouping((8, 6, 4, 4), (2, 3), 3).describe() == "C/G·H·W = 2·4·4 = 32 values"


def test_large_tensors_are_capped_and_say_so():
    shape = (256, 512, 64, 64)  # 537M values: only a view is allocated for the corner
    x = torch.zeros(1).expand(shape)
    data = cells(x, Grouping(shape, (0, 2, 3)))
    assert (data.samples, data.channels, data.positions) == (6, 6, 12)
    note = cells_note(data)
    assert "6 of 256 samples" in note and "6 of 512 channels" in note and "12 of 4,096 positions" in note
    assert len(cells_figure(data, 2).to_json()) <= 100_000


def test_highlight_fades_the_other_channels():
    data = cells(torch.randn(4, 3, 2), Grouping((4, 3, 2), (0, 2)))
    z = cells_figure(data, highlight_channel=1).data[0].z
    row = [v for v in z[0] if v is not None]
    assert row[0] % 2 == 1 and row[2] % 2 == 0 and row[4] % 2 == 1, row  # c=0 faded, c=1 full, c=2 faded


def test_hover_shows_index_value_and_group_statistics():
    data = cells(torch.arange(24.0).view(2, 3, 4), Grouping((2, 3, 4), (0, 2)))
    fig = cells_figure(data)
    custom = fig.data[0].customdata[1][5]  # row n=1, column of c=1, position 0
    assert custom[0] == "n=1, c=1, L=0" and custom[1] == 16.0
    assert custom[2] == pytest.approx(torch.tensor([4.0, 5, 6, 7, 16, 17, 18, 19]).mean().item())
    assert "mean" in fig.data[0].hovertemplate and "variance" in fig.data[0].hovertemplate
