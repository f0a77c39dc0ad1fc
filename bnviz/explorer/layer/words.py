"""Words and code for a report: the reduced axes, the update rule with the actual numbers, notes
for the cases that surprise people, hints for torch's errors, and a standalone script. Plain
strings built from numbers and fixed text — never from user-typed text — so the app can render
them as Markdown safely."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

import torch

from bnviz.explorer.data import LARGE_MEAN, UPSTREAM_SEED, population_stats
from bnviz.explorer.layer.engine import Quantity, Report, affine_of
from bnviz.explorer.layer.lessons import EPS_SHRINK, KERAS_EPS, TORCH_EPS
from bnviz.explorer.layer.url import DTYPES, Config
from bnviz.explorer.picture import dim_names
from bnviz.explorer.text import sci


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v:.7g}"  # float32 carries about 7 significant digits


def reduced_axes(config: Config) -> str:
    """One sentence: which dims are reduced, how many values share each channel's statistics. For a
    features-last tensor the dims are named for what they hold, and dim 1 is said to be the one
    batch norm takes for the channels."""
    shape = config.shape
    if len(shape) < 2:
        return f"A rank-{len(shape)} input has no channel dim 1: batch norm needs (N, C, *)."
    dims = [0, *range(2, len(shape))]
    names = dim_names(len(shape), config.features_last)
    n = math.prod(shape) // shape[1] if shape[1] else 0
    reduced = " × ".join(f"{names[d]}={shape[d]}" for d in dims)
    listed = ", ".join(f"{a}={b}" for a, b in zip(names, shape, strict=True))
    if config.features_last:
        return (
            f"Input ({listed}): this tensor lists its {shape[-1]} features last, but batch norm takes dim 1 for the "
            f"channels — here its {names[1]} = {shape[1]}. So it computes one mean and one variance per position "
            f"along {names[1]}, over dims {dims} — {reduced} = **n = {n:,}** values each, mixing the features."
        )
    return (
        f"Input ({listed}): one mean and one variance per channel (C = {shape[1]}), over dims {dims} — {reduced} = "
        f"**n = {n:,}** values per channel."
    )


def explorer_note(config: Config) -> str:
    """What the layer explorer runs, in one sentence, and that every control is in the URL."""
    shape = "×".join(map(str, config.shape))
    mode = "training" if config.mode == "train" else "evaluation (eval)"
    if config.own:
        return (
            f"bnviz's from-scratch {config.layer} and torch's, each given your {shape} {config.dtype} tensor as "
            f"each of {config.steps} training batches and then once more in {mode} mode. The sidebar's shape, "
            "dtype, distribution, seed and training batch size do not apply to it; the other controls do. A link "
            "cannot carry a file: this page's link opens a synthetic tensor of the same shape."
        )
    return (
        f"bnviz's from-scratch {config.layer} and torch's, each given {config.steps} training batches and then the "
        f"same {shape} batch in {mode} mode. Change the layer, the shape and the flags in the sidebar; every control "
        "is in the URL, so a link reproduces this view."
    )


def mode_note(config: Config) -> str:
    """What normalizes the displayed batch, in one sentence."""
    if config.mode == "train" and not config.track_running_stats:
        return (
            "Train mode: the batch's own mean and biased variance normalize. With track_running_stats=False there "
            "are no running statistics to update."
        )
    if config.mode == "train":
        return (
            "Train mode: the batch's own mean and biased variance normalize; the running statistics "
            "move towards the batch's mean and unbiased variance."
        )
    if not config.track_running_stats:
        return (
            "Eval mode with track_running_stats=False: there are no running statistics, so the batch's own normalize "
            "— each sample's output then depends on the other samples in its batch, in eval as in training."
        )
    return (
        "Eval mode: the stored running_mean and running_var normalize, and nothing is updated. The batch's own "
        "statistics are shown for comparison only."
    )


def momentum_note(config: Config) -> str:
    """The running update in words, with this view's momentum, and how torch's momentum relates
    to Keras' and Flax's (theirs weights the old value, torch's the new batch). Markdown."""
    if not config.track_running_stats:
        return "With track_running_stats=False there are no running statistics: nothing to update."
    if config.momentum is None:
        return (
            "momentum=None: each batch moves the running statistics by m = 1/num_batches_tracked, so after k batches "
            "they are the plain average of all k batches' statistics (a cumulative average, not an exponential one)."
        )
    m, k = config.momentum, config.steps + (config.mode == "train")
    return (
        f"Each training batch moves them by `running = (1 − m)·running + m·batch`, with m = {m:g}: torch's momentum "
        f"weights the *new* batch. Keras and Flax write the same update with their momentum weighting the *old* "
        f"value, so torch's {m:g} is their {1 - m:g} — and Keras' default 0.99 is torch's 0.01. After k batches the "
        f"initial value keeps a weight of (1 − m)^k: {(1 - m) ** k:.3g} here, after {k}. momentum=none gives a "
        "cumulative average instead."
    )


def channel_table(report: Report, channel: int) -> list[dict[str, str]]:
    """Rows (quantity, formula, value) for one channel of the displayed batch, each labelled with
    the part it plays in the chosen mode."""
    ch: dict[str, Any] = report.channels
    if not ch or ch.get("mean") is None or channel >= len(ch["mean"]):
        return []
    c, n, cfg = channel, ch["n"], report.config
    batch_normalizes = cfg.mode == "train" or not cfg.track_running_stats
    role = "normalizes" if batch_normalizes else "not used in eval"
    empty = " (an empty batch has no values)" if n == 0 else ""
    rows = [
        (f"batch mean ({role})", f"μ_B = Σx / n{empty}", ch["mean"][c]),
        (f"batch variance, biased ({role})", f"σ²_B = Σ(x − μ_B)² / n{empty}", ch["var_biased"][c]),
        ("naive one-pass float32 variance", "E[x²] − E[x]² (cancels when μ ≫ σ)", ch["var_naive_f32"][c]),
    ]
    before_m, after_m = ch.get("running_mean_before"), ch.get("running_mean_after")
    updates = cfg.mode == "train" and before_m is not None
    if updates:
        rows.append(("batch variance, unbiased (goes into running_var)", _bessel(n), ch["var_unbiased"][c]))
    if updates and n > 0:
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
    elif updates:  # an empty batch: counted, but the statistics stay
        rows += [
            ("running_mean (unchanged)", "an empty batch moves nothing", after_m[c]),
            ("running_var (unchanged)", "an empty batch moves nothing", ch["running_var_after"][c]),
        ]
    elif before_m is not None:
        rows = [
            ("running_mean (normalizes in eval)", "stored by training; not updated in eval", before_m[c]),
            ("running_var (normalizes in eval)", "stored unbiased; not updated in eval", ch["running_var_before"][c]),
            *rows,
        ]
    else:
        rows.append(("running_mean, running_var", "track_running_stats is off", None))
    return [{"quantity": q, "formula": f, "value": "not tracked" if v is None else _fmt(v)} for q, f, v in rows]


def _bessel(n: int) -> str:
    if n > 1:
        return f"σ²_B · n/(n−1) = σ²_B · {n}/{n - 1}"
    return "needs n > 1 (nan: one value has no spread to estimate)" if n == 1 else "needs n > 1 (an empty batch)"


def quantity_cells(q: Quantity) -> dict[str, str]:
    """One row of the parity table as text: a quantity that does not exist says "not tracked"."""

    if q.absent:
        return {"quantity": q.name, "max abs diff": q.absent, "agrees": "yes"}
    return {"quantity": q.name, "max abs diff": sci(q.max_abs), "agrees": "yes" if q.ok else "NO"}


def truth_cells(q: Quantity) -> dict[str, str]:
    """Each side's largest error against a float64 run of the same values (— where torch is exact)."""
    return {"quantity": q.name, "bnviz vs float64": sci(q.err_bnviz), "torch vs float64": sci(q.err_torch)}


def spacing(dtype: torch.dtype, magnitude: float) -> float:
    """The gap between neighbouring values of ``dtype`` near ``magnitude`` (one ulp)."""
    t = torch.tensor(abs(magnitude), dtype=dtype)
    return float(torch.nextafter(t, torch.tensor(math.inf, dtype=dtype)) - t)


def precision_warning(report: Report) -> str | None:
    """A warning when the input dtype cannot hold the input's spread at its magnitude (float16 or
    bfloat16 around 10⁴): the values collapse onto a few representable numbers, silently."""
    cfg = report.config
    if cfg.dtype not in ("float16", "bfloat16") or cfg.dist != "large-mean" or cfg.num_features == 0:
        return None
    gap = spacing(DTYPES[cfg.dtype], LARGE_MEAN)
    _, var = population_stats(cfg.num_features, cfg.dist)
    sd = var.sqrt()
    distinct = report.channels.get("distinct") or []
    counts = ", ".join(f"channel {c}: {k}" for c, k in enumerate(distinct[:4]))
    return (
        f"{cfg.dtype} cannot hold these inputs: near {LARGE_MEAN:,.0f} its spacing is {gap:g}, while each channel "
        f"spreads only {float(sd.min()):g} to {float(sd.max()):g} (standard deviation). Every input rounds to one of "
        f"a few representable values ({counts} distinct values), so the batch's spread is mostly rounding. "
        "Use float32, or subtract the mean before casting."
    )


def agreement_note(report: Report) -> str | None:
    """Why a difference beyond the dtype's tolerance still counts as agreement, on screen: for each
    such quantity, both sides' error against a float64 run of the same values (``Quantity.ok``:
    bnviz about as close to it as torch). None when every quantity is within tolerance."""
    cfg = report.config
    beyond = [q for q in report.quantities if q.ok and not q.within_tolerance and q.err_bnviz is not None]
    if report.error is not None or not beyond:
        return None
    parts = [f"{q.name}: up to {sci(q.max_abs)} apart; against float64, bnviz is off by {sci(q.err_bnviz)} and torch "
             f"by {sci(q.err_torch)}" for q in beyond]  # fmt: skip
    why = ""
    if cfg.dist == "large-mean" and cfg.dtype == "float32":
        why = (f" Here the inputs sit near {LARGE_MEAN:,.0f}, where float32 holds a number to about "
               f"{spacing(torch.float32, LARGE_MEAN):.2g}: subtracting the mean leaves few exact digits, and each "
               "layer rounds its own way.")  # fmt: skip
    closer = all(q.err_bnviz <= q.err_torch for q in beyond if q.err_torch is not None)
    return (
        f"bnviz and torch differ by more than {cfg.dtype} rounding of values near 1 ({'; '.join(parts)}).{why} "
        f"Against a float64 run of the same values — the truth both are measured against — bnviz's error is "
        f"{'no larger than' if closer else 'within 8× of'} torch's: the difference is {cfg.dtype}'s limit on this "
        "input, not an error in either layer, so it counts as agreement."
    )


def empty_note(report: Report) -> str | None:
    """What an empty batch does (nothing to normalize; running statistics stay; the count moves)."""
    cfg = report.config
    if not cfg.shape or cfg.numel != 0 or report.error is not None:
        return None
    text = "An empty batch has no values: its mean and variance are undefined (nan) and the output is empty."
    if cfg.track_running_stats and cfg.mode == "train":
        text += " In training, torch and bnviz leave running_mean and running_var unchanged but still count the batch "
        text += "in num_batches_tracked."
    return text


_HINTS = [
    (
        r"expected (\d+D|2D or 3D|at least 2D) input",
        "Each BatchNormXd accepts only its rank; BatchNorm1d takes (N, C) "
        "or (N, C, L), BatchNorm2d (N, C, H, W), BatchNorm3d (N, C, D, H, W). "
        "The universal bnviz.BatchNorm takes any rank ≥ 2.",
    ),
    (r"eps must be", "eps guards the square root: it must be positive in training and non-negative in eval."),
]


BATCH_OF_ONE_OPTIONS = (
    "In plain PyTorch: drop the last, short batch of an epoch (`DataLoader(..., drop_last=True)`); normalize "
    "without batch statistics (GroupNorm or LayerNorm instead); or keep the model training but put only its batch "
    "norms in eval (`for m in model.modules(): if isinstance(m, nn.modules.batchnorm._BatchNorm): m.eval()`), so "
    "they use their running statistics."
)


def error_hint(report: Report) -> str | None:
    """A short, true explanation of the error a report carries, when bnviz knows one."""
    err = report.error
    if err is None:
        return None
    message, cfg = err.torch or err.bnviz or "", report.config
    if "Expected more than 1 value per channel" in message:
        one = "With one value per channel the batch variance is 0, so training needs N × (spatial size) > 1."
        if "training step" in err.stage:
            return (f"{one} The error comes from the training steps before the displayed batch: give them more "
                    f"samples. {BATCH_OF_ONE_OPTIONS}")  # fmt: skip
        if cfg.mode == "train":
            return f"{one} In eval mode the running statistics normalize, and a batch of one works. " + (
                BATCH_OF_ONE_OPTIONS)
        return one
    if "running_mean should contain" in message:
        if cfg.features_last:
            names = dim_names(len(cfg.shape), True)
            return (
                f"{cfg.layer}({cfg.num_features}) was built for the {cfg.num_features} features, but batch norm reads "
                f"the channels from dim 1, which holds {names[1]} = {cfg.shape[1]}. Move the features to dim 1 first "
                "— as below — or use LayerNorm over the features, as a transformer does."
            )
        return "The layer's num_features must equal dim 1 of the input."
    return next((hint for pattern, hint in _HINTS if re.search(pattern, message)), None)


def other_mode_view(report: Report) -> tuple[str, Config] | None:
    """For a displayed batch that training refuses (one value per channel): a link's label and the
    same view in eval mode, where it works. None otherwise."""
    err, cfg = report.error, report.config
    if err is None or cfg.mode != "train" or "training step" in err.stage:
        return None
    if "Expected more than 1 value per channel" not in (err.torch or err.bnviz or ""):
        return None
    return "The same batch in eval mode, where it works", replace(cfg, mode="eval")


def focus_label(config: Config) -> tuple[str, str]:
    """The channel picker's label and its short name: the channel, or — for a features-last
    tensor — the position along dim 1 that batch norm takes for a channel."""
    if config.features_last:
        name = dim_names(len(config.shape), True)[1]
        return f"{name} position in focus (dim 1, which batch norm takes for the channels)", name.lower()
    return "Channel in focus", "c"


FIX_LAYERS = {3: "BatchNorm1d", 4: "BatchNorm2d", 5: "BatchNorm3d"}


def channels_first_fix(config: Config) -> str:
    """The fix for a features-last tensor, from its rank: the permutation that moves the features
    to dim 1, the layer that takes that shape, and the permutation back. Markdown."""
    rank, c = len(config.shape), config.num_features
    layer = f"nn.{FIX_LAYERS[rank]}" if rank in FIX_LAYERS and config.layer != "BatchNorm" else "bnviz.BatchNorm"
    there = ", ".join(map(str, (0, rank - 1, *range(1, rank - 1))))
    back = ", ".join(map(str, (0, *range(2, rank), 1)))
    last, first = dim_names(rank, True), dim_names(rank)
    return (
        f"Move the features to dim 1 — `x.permute({there})` (or `x.movedim(-1, 1)`) turns ({', '.join(last)}) into "
        f"({', '.join(first)}) — apply `{layer}({c})`, then move them back with `y.permute({back})` (or "
        "`y.movedim(1, -1)`)."
    )


def features_last_warning(config: Config) -> str | None:
    """For a features-last tensor that batch norm accepts (its dim 1 happens to be as long as its
    features): no error, but the wrong axis. None otherwise. Markdown."""
    if not config.features_last:
        return None
    names, c = dim_names(len(config.shape), True), config.num_features
    return (
        f"**No error — but the wrong axis.** This tensor lists its {c} features last, and its dim 1 "
        f"({names[1]} = {config.shape[1]}) happens to be {c} long too, so {config.layer}({c}) accepts it: it "
        f"normalizes each position along {names[1]} over the features, instead of each feature over the batch. torch "
        "does exactly the same, which is why the two agree below. " + channels_first_fix(config)
    )


def _batch_code(config: Config) -> str:
    """Python for ``sample_batch`` of this config's distribution and for ``upstream_gradient``:
    the same generator, the same draws, the same arithmetic. For the visitor's own tensor, ``batch``
    loads it from the file the visitor saves it to."""
    first = config.channels_first()
    if config.own:
        return "\n".join([
            "def batch(n, step, seed, dist):",
            '    """Your tensor, saved with torch.save(x, "my_tensor.pt"): every batch of the page\'s view."""',
            '    x = torch.load("my_tensor.pt", weights_only=True)',
            f"    return x.to(device={config.device!r}, dtype=torch.{config.dtype})",
            "", "",
            "def upstream(n, seed):",
            '    """The fixed upstream gradient dL/dy: N(0, 1) for every value, zero mean in every channel."""',
            f"    g = torch.Generator().manual_seed((seed + {UPSTREAM_SEED}) * 1_000_003)",
            f"    z = torch.randn({first.shape!r}, generator=g, dtype=torch.float64)",
            f"    return z.to(device={config.device!r}, dtype=torch.{config.dtype})"
            + (".movedim(1, -1)" if config.features_last else ""),
        ])
    rank = len(first.shape)
    base = {
        "uniform": "(torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * math.sqrt(3.0)",
        "heavy-tailed": (
            "torch.randn(shape, generator=g, dtype=torch.float64)\n"
            "        chi2 = torch.randn((3, *shape), generator=g, dtype=torch.float64).square().sum(0)\n"
            "        z = z / torch.sqrt(chi2 / 3) / math.sqrt(3.0)"
        ),
        "bimodal": (
            "torch.randint(0, 2, shape, generator=g, dtype=torch.int64).double() * 2 - 1\n"
            "        z = z * 0.9 + torch.randn(shape, generator=g, dtype=torch.float64) * math.sqrt(0.19)"
        ),
    }
    normal = "torch.randn(shape, generator=g, dtype=torch.float64)"
    lines = ["def batch(n, step, seed, dist):", '    """Batch `step` of the page\'s seeded stream, with n samples."""']
    dims = ", ".join(map(str, first.shape[1:]))
    lines.append(f"    shape = (n, {dims})" if rank >= 2 else f"    shape = {first.shape!r}")
    lines.append("    g = torch.Generator().manual_seed(seed * 1_000_003 + step)")
    if config.dist in base:
        lines += [f'    if dist == "{config.dist}":', f"        z = {base[config.dist]}", "    else:"]
        lines.append(f"        z = {normal}")
    else:
        lines.append(f"    z = {normal}")
    if rank >= 2:
        c = first.shape[1]
        view = f"(1, -1{', 1' * (rank - 2)})"
        if c <= 1:
            lines.append("    mean = var = torch.ones(shape[1], dtype=torch.float64)")
        else:
            lines += [
                f"    mean = torch.linspace(-2.0, 2.0, {c}, dtype=torch.float64)",
                f"    var = torch.linspace(0.5, 2.0, {c}, dtype=torch.float64) ** 2",
            ]
        if config.dist == "large-mean":
            lines.append(f'    mean = mean + {LARGE_MEAN!r} if dist == "large-mean" else mean')
        lines.append(f"    z = mean.view{view} + var.sqrt().view{view} * z")
    move = ".movedim(1, -1)" if config.features_last else ""
    lines.append(f"    return z.to(device={config.device!r}, dtype=torch.{config.dtype}){move}")
    lines += ["", "", "def upstream(n, seed):",
              '    """The fixed upstream gradient dL/dy: N(0, 1) for every value, zero mean in every channel."""',
              f"    g = torch.Generator().manual_seed((seed + {UPSTREAM_SEED}) * 1_000_003)",
              f"    shape = (n, {dims})" if rank >= 2 else f"    shape = {first.shape!r}",
              "    z = torch.randn(shape, generator=g, dtype=torch.float64)",
              f"    return z.to(device={config.device!r}, dtype=torch.{config.dtype}){move}"]  # fmt: skip
    return "\n".join(lines)


def code_snippet(config: Config) -> str:
    """A standalone script (torch and bnviz only) that reruns this comparison and prints the
    numbers the page shows: each quantity's max |bnviz − torch|, or both sides' errors."""
    momentum = "None" if config.momentum is None else repr(config.momentum)
    param_dtype = "torch.float64" if config.dtype == "float64" else "torch.float32"
    if config.layer == "BatchNorm":
        torch_layer = "TorchBatchNorm"
        reference = '''

class TorchBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """torch's own batch-norm policy for any rank ≥ 2 (torch has no such public class)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")
'''
    else:
        torch_layer, reference = f"torch.nn.{config.layer}", ""
    init = (
        f"""
    with torch.no_grad():  # the page's γ and β, the same on both sides
        m.weight.copy_(torch.linspace(0.5, 1.5, {config.num_features}))
        m.bias.copy_(torch.linspace(-0.5, 0.5, {config.num_features}))"""
        if config.affine
        else ""
    )
    imports = "import math\n\n" if config.dist in ("uniform", "heavy-tailed", "bimodal") else ""
    n = config.shape[0] if config.shape else 0
    return f'''{imports}import torch

import bnviz

{_batch_code(config)}{reference}


def run(layer):
    """{config.steps} training steps (batches of {config.train_batch}), then the shown batch in {config.mode} mode."""
    m = layer({config.num_features}, eps={config.eps!r}, momentum={momentum}, affine={config.affine},
              track_running_stats={config.track_running_stats}, device={config.device!r}, dtype={param_dtype}){init}
    for step in range({config.steps}):
        with torch.no_grad():
            m(batch({config.train_batch}, step, {config.seed}, {config.dist!r}))
    m.train({config.mode == "train"})
    x = batch({n}, {config.steps}, {config.seed}, {config.dist!r}).requires_grad_()
    y = m(x)
    upstream_ = upstream({n}, {config.seed}).to(y.dtype)
    params = [p for p in (m.weight, m.bias) if p is not None]
    grads = torch.autograd.grad(y, [x, *params], upstream_) if y.numel() or params else [None]
    names = ["grad input", "grad weight", "grad bias"][: len(grads)] if params else ["grad input"]
    return {{"output": y, "running_mean": m.running_mean, "running_var": m.running_var,
            "num_batches_tracked": m.num_batches_tracked, **dict(zip(names, grads))}}


results = {{}}
for side, layer in (("bnviz", bnviz.{config.layer}), ("torch", {torch_layer})):
    try:
        results[side] = run(layer)
    except Exception as exc:
        print(f"{{side}} raised {{type(exc).__name__}}: {{exc}}")
if len(results) == 2:
    for name, a in results["bnviz"].items():
        b = results["torch"][name]
        if a is None:
            print(f"{{name:20s}} none")
        else:
            d = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            print(f"{{name:20s}} max |bnviz - torch| = {{d:.2e}}" if d else f"{{name:20s}} max |bnviz - torch| = 0")
'''


def modes_text(report: Report, channel: int) -> str:
    """The train-vs-eval chart in words, with its numbers: train mode gives the batch's own
    statistics (so the output's mean and spread are β and γ), eval mode the running ones."""
    cfg, modes, ch = report.config, report.modes, report.channels
    entry = next((h for h in modes.get("channels", []) if h["channel"] == channel), None)
    if entry is None:
        return "There is nothing to compare: the batch has no values in this channel."
    parts = []
    affine = affine_of(cfg, channel)
    if "train_mean" in entry:
        scaled = (
            f"; then γ = {affine[0]:.3g} scales it and β = {affine[1]:.3g} shifts it, so it comes out with mean "
            if affine
            else ", so it comes out with mean "
        )
        parts.append(
            f"**Train mode** normalizes channel {channel} with this batch's own mean ({_fmt3(ch['mean'][channel])}) "
            f"and variance ({_fmt3(ch['var_biased'][channel])}) — that alone gives mean 0 and standard deviation 1"
            f"{scaled}{_fmt3(entry['train_mean'])}{' (β)' if affine else ''} and standard deviation "
            f"{_fmt3(entry['train_std'])}{' (γ)' if affine else ''}."
        )
        if affine:
            parts.append(
                "(A fresh torch layer starts at γ = 1 and β = 0; this page sets γ from 0.5 to 1.5 and β from −0.5 to "
                "0.5 across the channels, as training would move them, so that you can see them act.)"
            )
    else:
        parts.append(f"**Train mode** refuses this batch: `{modes['errors']['train']}`.")
    before_m, before_v = ch.get("running_mean_before"), ch.get("running_var_before")
    if "eval_mean" in entry and before_m is not None:
        parts.append(
            f"**Eval mode** normalizes with the stored running statistics instead (mean {_fmt3(before_m[channel])}, "
            f"variance {_fmt3(before_v[channel])}), not this batch's: the same values come out with mean "
            f"{_fmt3(entry['eval_mean'])} and standard deviation {_fmt3(entry['eval_std'])}."
        )
    elif "eval_mean" in entry:
        parts.append(
            "**Eval mode** has no running statistics to use (track_running_stats=False), so it normalizes with the "
            "batch's own, exactly like train mode: a sample's prediction then depends on the other samples in its "
            "batch."
        )
    return " ".join(parts)


def _fmt3(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3g}"


def bit_exact_note(report: Report) -> str:
    """How many values of each quantity agree bit for bit (the differences chart leaves them out)."""
    diffs = report.histograms.get("diffs", {})
    parts = [f"{name} {h['exact']:,} of {h['total']:,}" for name, h in diffs.items()]
    return "Bit-identical values, left out of the chart: " + "; ".join(parts) + "." if parts else ""


def channel_rows(report: Report, channel: int) -> list[dict[str, str]]:
    """``channel_table`` in two columns — the quantity with its formula, and the value — so it fits
    beside the picture on a narrow screen."""
    return [
        {"quantity": f"{r['quantity']}: {r['formula']}" if r["formula"] else r["quantity"], "value": r["value"]}
        for r in channel_table(report, channel)
    ]


def _g(v: float) -> str:
    """A small number as the gradient view prints it: ``0.0089``, ``4.6e-10``."""
    return "0" if v == 0 else (f"{v:.2g}" if abs(v) >= 1e-3 else f"{v:.1e}")


def gradient_text(report: Report, channel: int) -> str:
    """The gradient view in words, with channel ``channel``'s numbers (``engine.GradientLesson``): the
    closed form, why it sums to zero and is orthogonal to x̂ in train mode, or why it is the
    upstream gradient rescaled in eval mode; and the closed form against both sides."""
    lesson, config = report.gradients, report.config
    if lesson is None:
        return "No gradient to show: the batch is empty."
    c = min(channel, len(lesson.mean_upstream) - 1)
    against = (f"The formula, evaluated in float64 on this batch, matches bnviz's ∂L/∂x within "
               f"{sci(lesson.closed_vs_bnviz)} and torch's within {sci(lesson.closed_vs_torch)} (its largest value "
               f"is {lesson.closed_scale:.3g}).")  # fmt: skip
    if not lesson.batch_stats:
        return (
            "**In eval mode** the normalizing statistics are the running ones: constants that no value of this batch "
            "moves. So the gradient is the upstream gradient g = ∂L/∂y rescaled, channel by channel:\n\n"
            "∂L/∂x = γ · g / √(running_var + eps)\n\n"
            f"Its mean and its cosine with x̂ are the upstream's, rescaled: on channel {c} the mean goes from "
            f"{_g(lesson.mean_upstream[c])} to {_g(lesson.mean_bnviz[c])} (bnviz; torch {_g(lesson.mean_torch[c])}), "
            f"the cosine stays {_g(lesson.cos_upstream[c])} ({_g(lesson.cos_bnviz[c])}). Nothing is projected out: "
            f"in train mode it would be (switch the mode to see it). {against}"
        )
    return (
        "**In train mode** the mean μ and variance v that normalize a channel are computed from its own values, so "
        "moving one value moves them too, and each value's gradient gets two more terms. With g = ∂L/∂y the upstream "
        "gradient and x̂ = (x − μ)/√(v + eps) the normalized input:\n\n"
        "∂L/∂x = γ / √(v + eps) · ( g − mean(g) − x̂ · mean(g · x̂) )\n\n"
        "- **It sums to zero over each channel.** Adding one number to every value of a channel moves its mean by "
        "that number and nothing else: the output, and so the loss, stays put — the gradient has nothing along that "
        f"direction. On channel {c}: the upstream gradient's mean is {_g(lesson.mean_upstream[c])}, ∂L/∂x's "
        f"{_g(lesson.mean_bnviz[c])} (bnviz) and {_g(lesson.mean_torch[c])} (torch) — zero up to rounding.\n"
        "- **It is orthogonal to x̂.** Stretching a channel's values around their mean stretches √(v + eps) with them "
        "and leaves x̂ where it was (but for eps): nothing along x̂ either. Cosine with x̂ on channel "
        f"{c}: {_g(lesson.cos_upstream[c])} for the upstream gradient, {_g(lesson.cos_bnviz[c])} for ∂L/∂x (bnviz; "
        f"torch {_g(lesson.cos_torch[c])}). Exactly zero needs eps = 0: with eps = {config.eps:g} the formula leaves "
        f"{_g(lesson.cos_closed[c])}, about eps/(v + eps) times the upstream's cosine.\n\n"
        "What reaches the layers before is only the part of the gradient that changes the pattern of values within "
        "a channel, not their level or their spread: those are γ's and β's to learn (∂L/∂β = Σ g, ∂L/∂γ = Σ g · x̂). "
        f"{against}"
    )


def eps_text(report: Report, channel: int) -> str:
    """What eps does, with channel ``channel``'s numbers (``engine.EpsEffect``): the formula, torch's
    and Keras' defaults, and the output's spread at each on this batch and on a quiet copy of it."""
    effect = report.eps
    if effect is None:
        return "eps needs a channel of two values or more to show anything."
    c = min(channel, len(effect.var) - 1)
    torch_eps, keras_eps = TORCH_EPS, KERAS_EPS
    t, k = effect.std[torch_eps][c], effect.std[keras_eps][c]
    qt, qk = effect.quiet_std[torch_eps][c], effect.quiet_std[keras_eps][c]
    v, quiet_v = effect.var[c], effect.var[c] / EPS_SHRINK**2
    chosen = "" if report.config.eps in (1e-5, 1e-3) else f" (this view's eps is {report.config.eps:g})"
    apart = (f"{100 * abs(t - k) / t:.2g} % apart" if t > 0 else
             "both 0: every value of the channel is the same, so x − μ is 0 whatever eps")  # fmt: skip
    return (
        "**eps** is added to the variance under the square root, y = (x − μ)/√(v + eps), so a channel comes out "
        "with spread √(v / (v + eps)) instead of exactly 1: it guards against dividing by a variance of 0, and it "
        "matters only for a channel whose variance comes within a few hundred times of eps. torch's default is "
        f"1e-5 (Flax's too), Keras' 1e-3{chosen}. Measured on this batch with bnviz (its own statistics, before γ and "
        f"β): channel {c} has variance {v:.3g}, and its output's standard deviation is {t:.5f} with eps "
        f"{torch_eps:g} and {k:.5f} with {keras_eps:g} — {apart}. The same values divided "
        f"by {EPS_SHRINK:g} (variance {quiet_v:.2g}, a channel that barely moves): {qt:.3f} and {qk:.3f}. So a model "
        "moved between Keras and torch without setting eps computes different outputs, most in its quietest "
        "channels: pass eps= the original's."
    )


def eps_rows(report: Report) -> list[dict[str, str]]:
    """The eps view's table: per channel, the variance and the output's standard deviation at each
    eps, on the batch and on its quiet copy (values ÷ ``EPS_SHRINK``)."""
    effect = report.eps
    if effect is None:
        return []
    rows = []
    for c, v in enumerate(effect.var):
        row = {"channel": str(c), "variance": f"{v:.3g}"}
        row |= {f"std, eps {e:g}": f"{effect.std[e][c]:.5f}" for e in effect.eps}
        row[f"variance ÷ {EPS_SHRINK ** 2:g}"] = f"{v / EPS_SHRINK**2:.2g}"
        row |= {f"its std, eps {e:g}": f"{effect.quiet_std[e][c]:.3f}" for e in effect.eps}
        rows.append(row)
    return rows


def speed_text(speed: dict[str, float]) -> str:
    """A timing (``timing.measure_config``) in words: both medians with their quartiles, the ratio
    with the spread of the per-round ratios, the thread count, and whether the server was busy."""
    threads = int(speed.get("threads", 1))
    line = (
        f"Medians of interleaved rounds, both layers with {threads} thread{'s' if threads != 1 else ''}: torch "
        f"{speed['torch']:.3f} ms ({speed['torch q1']:.3f}–{speed['torch q3']:.3f}, quartiles), bnviz "
        f"{speed['bnviz']:.3f} ms ({speed['bnviz q1']:.3f}–{speed['bnviz q3']:.3f}); bnviz / torch "
        f"{speed['ratio']:.2f}× ({speed['ratio q1']:.2f}–{speed['ratio q3']:.2f} round by round). "
    )
    load = (f"this server's process used {speed['cpu per s']:.2f} CPU-seconds per second of timing (1 is the timing "
            f"alone), load average {speed['load']:.1f} on {speed['cores']:.0f} cores")  # fmt: skip
    if speed.get("busy"):
        return line + (f"The server was busy ({load}): the times are noisier than on a quiet machine. "
                       "`python -m bnviz.bench` times every shape on your own machine.")  # fmt: skip
    return line + f"The server was quiet ({load})."
