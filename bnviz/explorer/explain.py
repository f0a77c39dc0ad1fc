"""Words and code for a report: the reduced axes, the update rule with the actual numbers, hints
for torch's errors, and a runnable snippet. Plain strings built from numbers and fixed text —
never from user-typed text — so the app can render them as Markdown safely."""

from __future__ import annotations

import math
import re
from typing import Any

from bnviz.explorer.compare import Config, Report


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.7g}"  # float32 carries about 7 significant digits


def reduced_axes(config: Config) -> str:
    """One sentence: which dims are reduced, how many values share each channel's statistics."""
    shape = config.shape
    if len(shape) < 2:
        return f"A rank-{len(shape)} input has no channel dim 1: batch norm needs (N, C, *)."
    dims = [0, *range(2, len(shape))]
    names = ["N", "C", *[f"L{i}" for i in range(1, len(shape) - 1)]]
    n = math.prod(shape) // shape[1] if shape[1] else 0
    reduced = " × ".join(f"{names[d]}={shape[d]}" for d in dims)
    text = (
        f"Input ({', '.join(f'{a}={b}' for a, b in zip(names, shape, strict=True))}): statistics are per channel "
        f"(C = {shape[1]}), over dims {dims} — {reduced} = **n = {n:,}** values per channel."
    )
    if len(shape) == 3:
        text += (
            f" Channels are dim 1: a (batch, length, features) tensor must be permuted to (N, features, length) "
            f"first, or its length {shape[1]} is taken for the channels."
        )
    return text


def channel_table(report: Report, channel: int) -> list[dict[str, str]]:
    """Rows (quantity, formula, value) for one channel of the displayed batch."""
    ch: dict[str, Any] = report.channels
    if not ch or ch.get("mean") is None or channel >= len(ch["mean"]):
        return []
    c, n, cfg = channel, ch["n"], report.config
    rows = [
        ("batch mean", "μ_B = Σx / n", ch["mean"][c]),
        ("biased variance (normalizes)", "σ²_B = Σ(x − μ_B)² / n", ch["var_biased"][c]),
        ("naive one-pass float32 variance", "E[x²] − E[x]² (cancels when μ ≫ σ)", ch["var_naive_f32"][c]),
        (
            "unbiased variance (stored)",
            f"σ²_B · n/(n−1) = σ²_B · {n}/{n - 1}" if n > 1 else "needs n > 1",
            ch["var_unbiased"][c],
        ),
    ]
    before_m, after_m = ch.get("running_mean_before"), ch.get("running_mean_after")
    updates = cfg.mode == "train" and cfg.track_running_stats and before_m is not None
    if updates:
        nbt = ch["num_batches_tracked"]
        m = cfg.momentum if cfg.momentum is not None else 1 / nbt
        m_text = (
            f"{cfg.momentum:g} (Keras/Flax momentum {1 - cfg.momentum:g})"
            if cfg.momentum is not None
            else f"1/{nbt} (cumulative average)"
        )
        rows += [
            ("running_mean before", "", before_m[c]),
            ("running_mean after", f"(1 − m)·old + m·μ_B, m = {m_text}", after_m[c]),
            ("running_mean by the formula", "", (1 - m) * before_m[c] + m * ch["mean"][c]),
            ("running_var before", "", ch["running_var_before"][c]),
            ("running_var after", "(1 − m)·old + m·σ²_B·n/(n−1)", ch["running_var_after"][c]),
            ("running_var by the formula", "", (1 - m) * ch["running_var_before"][c] + m * ch["var_unbiased"][c]),
        ]
    elif before_m is not None:
        rows += [
            ("running_mean (normalizes in eval)", "not updated in eval", before_m[c]),
            ("running_var (normalizes in eval)", "not updated in eval", ch["running_var_before"][c]),
        ]
    return [{"quantity": q, "formula": f, "value": _fmt(v)} for q, f, v in rows]


def mode_note(config: Config) -> str:
    """What normalizes the displayed batch, in one sentence."""
    if config.mode == "train":
        return "Train mode: the batch's own mean and biased variance normalize; running statistics move towards it."
    if not config.track_running_stats:
        return (
            "Eval mode with track_running_stats=False: there are no running statistics, so the batch's own normalize."
        )
    return (
        "Eval mode: running_mean and running_var normalize; nothing is updated. "
        "(torch.no_grad() alone would not do this.)"
    )


_HINTS = [
    (
        r"Expected more than 1 value per channel",
        "With one value per channel the batch variance is 0: training "
        "needs N × (spatial size) > 1. Use a bigger batch, or eval mode (running statistics need no batch).",
    ),
    (
        r"expected (\d+D|2D or 3D|at least 2D) input",
        "Each BatchNormXd accepts only its rank; BatchNorm1d takes (N, C) "
        "or (N, C, L), BatchNorm2d (N, C, H, W), BatchNorm3d (N, C, D, H, W). "
        "The universal bnviz.BatchNorm takes any rank ≥ 2.",
    ),
    (
        r"running_mean should contain",
        "Channels are dim 1. A (batch, length, features) tensor has its features last: "
        "permute it to (N, C, L) first, or the layer sees L as the channel count.",
    ),
    (r"eps must be", "eps guards the square root: it must be positive in training and non-negative in eval."),
]


def error_hint(message: str | None) -> str | None:
    """A short explanation for a torch error message, when bnviz knows one."""
    if message is None:
        return None
    return next((hint for pattern, hint in _HINTS if re.search(pattern, message)), None)


def code_snippet(config: Config) -> str:
    """A runnable script that reproduces this comparison with bnviz and torch."""
    momentum = "None" if config.momentum is None else repr(config.momentum)
    torch_layer = "TorchBatchNorm" if config.layer == "BatchNorm" else f"torch.nn.{config.layer}"
    imports = (
        "from bnviz.explorer.compare import TorchBatchNorm  # torch's _BatchNorm policy for any rank\n"
        if (config.layer == "BatchNorm")
        else ""
    )
    param_dtype = "torch.float64" if config.dtype == "float64" else "torch.float32"
    return f'''import torch
import bnviz
from bnviz.explorer.data import sample_batch
{imports}
kwargs = dict(eps={config.eps!r}, momentum={momentum}, affine={config.affine},
              track_running_stats={config.track_running_stats}, device="{config.device}", dtype={param_dtype})
ours = bnviz.{config.layer}({config.num_features}, **kwargs)
ref = {torch_layer}({config.num_features}, **kwargs)
if {config.affine}:  # the same non-trivial γ and β on both sides
    with torch.no_grad():
        for m in (ours, ref):
            m.weight.copy_(torch.linspace(0.5, 1.5, {config.num_features}))
            m.bias.copy_(torch.linspace(-0.5, 0.5, {config.num_features}))

shape, dtype = {config.shape!r}, torch.{config.dtype}
for step in range({config.steps}):  # training batches
    x = sample_batch("{config.dist}", shape, {config.seed}, step, dtype, "{config.device}")
    with torch.no_grad():
        ours(x), ref(x)

upstream = sample_batch("normal", shape, {config.seed + 7919}, 0, dtype, "{config.device}")
for m in (ours, ref):
    m.train({config.mode == "train"})
results = []
for m in (ours, ref):
    x = sample_batch("{config.dist}", shape, {config.seed}, {config.steps}, dtype, "{config.device}").requires_grad_()
    y = m(x)
    params = [p for p in (m.weight, m.bias) if p is not None]
    results.append((y, *torch.autograd.grad(y, [x, *params], upstream)))
for name, a, b in zip(["output", "grad input", "grad weight", "grad bias"], *results):
    print(f"{{name:12s}} max |bnviz - torch| = {{(a - b).abs().max().item():.3e}}")
if ours.running_mean is not None:
    print("running_mean max |diff| =", (ours.running_mean - ref.running_mean).abs().max().item())
    print("running_var  max |diff| =", (ours.running_var - ref.running_var).abs().max().item())
'''
