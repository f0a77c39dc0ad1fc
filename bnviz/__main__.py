"""``python -m bnviz``: a parity report of bnviz against torch on a handful of configurations —
batch norm (every layer, mode, dtype and error), then the family (LayerNorm, InstanceNorm,
GroupNorm, RMSNorm beside BatchNorm on the same tensors).

Exits 0 when every configuration matches, 1 otherwise.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import torch

from bnviz._extra import require_app

if TYPE_CHECKING:
    from bnviz.explorer.family.url import FamilyConfig
    from bnviz.explorer.layer.engine import Quantity
    from bnviz.explorer.layer.url import Config


def configs() -> tuple[list[Config], list[FamilyConfig]]:
    """The batch-norm configurations, then the family's (the explorer's: the app's extra)."""
    from bnviz.explorer.family.url import FamilyConfig
    from bnviz.explorer.layer.url import Config

    batch_norm = [
        Config(layer="BatchNorm1d", shape=(32, 16), steps=3),
        Config(layer="BatchNorm1d", shape=(16, 8, 20), mode="eval", momentum=None),
        Config(layer="BatchNorm2d", shape=(8, 3, 16, 16)),
        Config(layer="BatchNorm2d", shape=(8, 3, 16, 16), mode="eval", dtype="bfloat16"),
        Config(layer="BatchNorm3d", shape=(4, 4, 4, 8, 8), affine=False, dtype="float64"),
        Config(layer="BatchNorm", shape=(2, 3, 4, 4, 4, 4), momentum=0.37, dist="heavy-tailed"),
        Config(layer="BatchNorm2d", shape=(8, 3, 16, 16), track_running_stats=False, mode="eval", dist="bimodal"),
        Config(layer="BatchNorm1d", shape=(1, 16)),
        Config(layer="BatchNorm2d", shape=(8, 3, 16)),
    ]
    family = [
        FamilyConfig(shape=(8, 6, 8, 8), groups=2),
        FamilyConfig(shape=(4, 64, 16), groups=8, ln_over="last", dist="heavy-tailed"),
        FamilyConfig(shape=(2, 4, 3, 4, 4), groups=4, dist="large-mean"),
    ]
    return batch_norm, family


def describe_family(c: FamilyConfig) -> str:
    over = "LN over last dim" if c.ln_over == "last" else "LN per sample"
    return f"{tuple(c.shape)} G={c.groups} {c.dist} {over}"


def describe(c: Config) -> str:
    m = "None" if c.momentum is None else f"{c.momentum:g}"
    flags = ("" if c.affine else " affine=False") + ("" if c.track_running_stats else " track=False")
    return f"{c.layer}{tuple(c.shape)} {c.mode} {c.dtype} m={m}{flags}"


def _cell(q: Quantity, width: int) -> str:
    text = "—" if q.max_abs == 0 and q.exact_fraction == 1 else f"{q.max_abs:.1e}"
    return f"{text:>{width}s}"


def main() -> int:
    require_app("python -m bnviz")
    from bnviz.explorer.family.engine import run as run_family
    from bnviz.explorer.layer.engine import run as run_comparison

    batch_norm, family = configs()
    print(f"bnviz vs torch {torch.__version__} — max |bnviz − torch| per quantity (bit-exact share of the output)\n")
    columns = [("running_var", 11), ("grad input", 10), ("grad weight", 11)]
    header = f"{'configuration':60s} {'verdict':9s} {'output':>18s} " + " ".join(f"{n:>{w}s}" for n, w in columns)
    print(header)
    print("-" * len(header))
    ok = True
    for config in batch_norm:
        r = run_comparison(config)
        ok &= r.verdict == "match"
        if r.error is not None:
            agree = "same error" if r.error.agree else "DIFFERENT errors"
            print(f"{describe(config):60s} {r.verdict:9s} {agree}: {r.error.torch}")
            continue
        q = {x.name: x for x in r.quantities}
        out = f"{q['output'].max_abs:.1e} ({q['output'].exact_fraction:.0%})"
        print(f"{describe(config):60s} {r.verdict:9s} {out:>18s} " + " ".join(_cell(q[n], w) for n, w in columns))
    print(f"\nthe family — max |bnviz − torch| of the output and the gradients (x, γ, β), torch {torch.__version__}\n")
    header = f"{'tensor':34s} {'member':14s} {'verdict':9s} {'output':>9s} {'gradients':>10s}"
    print(header)
    print("-" * len(header))
    for config in family:
        for m in run_family(config).members:
            ok &= m.ok
            grads = max(v for k, v in m.max_abs.items() if k != "output")
            line = f"{describe_family(config):34s} {m.member:14s} {m.verdict:9s}"
            print(f"{line} {m.max_abs['output']:9.1e} {grads:10.1e}")
    print("\nall match" if ok else "\nSOME MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
