"""The family page's engine: every member against torch on one tensor, the universal table, the
statistics pictures, batch dependence, refusals."""

from __future__ import annotations

import pickle
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from bnviz.explorer.family import engine as family
from bnviz.explorer.family import url as family_url
from bnviz.explorer.family.engine import (
    dependence_note,
    dependence_rows,
    grouping,
    member_cells,
    member_pictures,
    output_figure,
    universal_rows,
)
from bnviz.explorer.family.engine import (
    run as run_family,
)
from bnviz.explorer.family.url import FamilyConfig

CONFIGS = [
    pytest.param(FamilyConfig(), id="default"),
    pytest.param(FamilyConfig(shape=(8, 128, 64), ln_over="last", groups=4), id="features-last"),
    pytest.param(FamilyConfig(shape=(4, 6, 3), groups=3, dist="large-mean"), id="large-mean"),
    pytest.param(FamilyConfig(shape=(2, 4, 2, 2, 2), groups=1, dist="bimodal"), id="rank5-one-group"),
    pytest.param(FamilyConfig(shape=(3, 6, 2, 2, 2, 2), groups=6, dist="heavy-tailed", eps=1e-3), id="rank6-G=C"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_every_member_matches_torch(config):
    r = run_family(config)
    assert [m.member for m in r.members] == list(family_url.MEMBERS)
    assert r.verdict == "match", [(m.member, m.max_abs) for m in r.members if not m.ok]
    pickle.loads(pickle.dumps(r))  # plain data: cacheable and shareable


@pytest.mark.parametrize("config", CONFIGS)
def test_only_batch_norm_depends_on_the_other_samples(config):
    changes = {m.member: m.sample0_change for m in run_family(config).members}
    assert changes.pop("BatchNorm") > 0.01, "batch norm's sample 0 moves when the batch changes"
    assert all(v == 0.0 for v in changes.values()), changes
    report = run_family(config)
    assert report.eval_change == 0.0, "in eval mode batch norm normalizes each sample on its own"
    rows = {row["member"]: row for row in dependence_rows(report)}
    assert rows["BatchNorm, train mode"]["depends on the other samples"] == "yes"
    assert rows["BatchNorm, eval mode"]["depends on the other samples"] == "no"
    assert rows["LayerNorm"]["sample 0 output moves by"] == "0 (exactly)"
    assert "In train mode batch norm's statistics come from the whole batch" in dependence_note(report)


def test_a_batch_of_one_runs_and_batch_norm_takes_instance_norms_sets():
    report = run_family(FamilyConfig(shape=(1, 6, 8, 8), groups=3))
    assert report.verdict == "match" and report.eval_change is None
    assert all(m.sample0_change is None for m in report.members)
    sizes = {row["member"]: row for row in universal_rows(report)[0]}
    assert (sizes["BatchNorm"]["groups"], sizes["BatchNorm"]["values each"]) == (
        sizes["InstanceNorm"]["groups"], sizes["InstanceNorm"]["values each"]) == ("6", "64")  # fmt: skip
    assert {row["depends on the other samples"] for row in dependence_rows(report)} == {"no other sample"}
    assert "the very sets InstanceNorm uses" in dependence_note(report)


def test_universal_table_for_a_4d_tensor():
    sizes, kinds = universal_rows(run_family(FamilyConfig(shape=(8, 6, 4, 4), groups=3)))
    rows = {a["member"]: {**a, **b} for a, b in zip(sizes, kinds, strict=True)}
    assert rows["BatchNorm"] == {"member": "BatchNorm", "reduced dims": "N, H, W", "groups": "6", "values each": "128",
                                 "centred": "yes", "running stats": "yes", "γ, β shape": "6"}  # fmt: skip
    assert (rows["LayerNorm"]["reduced dims"], rows["LayerNorm"]["groups"], rows["LayerNorm"]["values each"]) == (
        "C, H, W", "8", "96")  # fmt: skip
    assert (rows["InstanceNorm"]["groups"], rows["InstanceNorm"]["values each"]) == ("48", "16")
    assert (rows["GroupNorm"]["reduced dims"], rows["GroupNorm"]["groups"]) == ("C/3, H, W", "24")
    assert rows["RMSNorm"]["centred"] == "no (RMS)" and rows["RMSNorm"]["γ, β shape"] == "6×4×4 (γ)"


@pytest.mark.parametrize("member", family_url.MEMBERS)
def test_pictures_and_cells_are_drawn_for_every_member(member):
    config = FamilyConfig(shape=(6, 4, 5, 5), groups=2)
    r = run_family(config)
    root = ET.fromstring(member_pictures(r, 0, 1)[member])
    assert [p for p in root.iter("{http://www.w3.org/2000/svg}polygon") if p.get("class") == "shared"]
    g = grouping(config, member)
    assert g.group_size() * g.group_count() == 6 * 4 * 5 * 5
    fig = member_cells(r, 1)[member]
    assert fig.data and len(fig.to_json()) <= 100_000
    out = output_figure(r)
    assert len(out.data) == 2 * len(family_url.MEMBERS) and len(out.to_json()) <= 100_000


@pytest.mark.parametrize(
    "change, words",
    [(dict(shape=(8, 6)), "rank 3"), (dict(groups=4), "divisible"),
     (dict(shape=(8, 6, 1)), "2 spatial"), (dict(shape=(100, 100, 200)), "over the limit"), (dict(dist="x"), "unknown"),
     (dict(ln_over="x"), "LayerNorm over"), (dict(eps=0.0), "eps"), (dict(shape=(4, 0, 3)), "at least 1")],
)  # fmt: skip
def test_refusals_before_anything_is_allocated(change, words, monkeypatch):
    config = replace(FamilyConfig(), **change)
    assert words in (config.refusal() or ""), config.refusal()
    monkeypatch.setattr(family, "sample_batch", lambda *a, **k: pytest.fail("sampled a refused config"))
    with pytest.raises(ValueError):
        run_family(config)
