"""``/inference``'s sentences with a report's numbers: fixed text and numbers only, never a
visitor's text, so the page can render them as Markdown."""

from __future__ import annotations

from typing import Any

from bnviz.explorer.inference.engine import SHIFT_SCALE, InferenceReport
from bnviz.explorer.inference.url import CLASSES, VARIANTS
from bnviz.explorer.text import sci


def _g(v: float) -> str:
    """A value as the page prints it: six significant digits, a true minus sign."""
    return f"{v:.6g}".replace("-", "−")


def _g7(v: float) -> str:
    """A score with the 7 significant digits float32 carries."""
    return f"{v:.7g}".replace("-", "−")


def _paren(v: float) -> str:
    """A value to subtract or multiply: negative ones in parentheses."""
    return f"({_g(v)})" if v < 0 else _g(v)


def verdict_detail(report: InferenceReport) -> str:
    """The badge's line: how far the folded output is from the unfolded one, against the rounding allowed."""
    out, dtype = report.outputs, report.config.dtype
    allowed = f"allowed: {out['atol']:g} + {out['rtol']:g} × |value|"
    if report.verdict == "match":
        return (
            f"Folding is exact: the folded network's outputs equal the unfolded one's up to {sci(out['max_abs'])}, "
            f"{dtype} rounding ({allowed})."
        )
    return f"The folded network's outputs differ from the unfolded one's by up to {sci(out['max_abs'])} ({allowed})."


def network_text(report: InferenceReport) -> str:
    """The network and its training, in one paragraph."""
    config, c = report.config, report.config.channels
    losses = report.train_losses
    trained = (
        f"It is trained for {len(losses)} SGD steps (loss {losses[0]:.3g} → {losses[-1]:.3g})"
        if losses
        else "It is not trained (0 steps), so its running statistics are still their starting values 0 and 1"
    )
    return (
        f"Conv2d({CLASSES}→{c}) → **BatchNorm2d({c})** → ReLU → Conv2d({c}→{c}, no bias) → **BatchNorm2d({c})** → "
        f"ReLU → average pool → Linear({c}→{CLASSES}), with bnviz's batch-norm layers. {trained} on batches of "
        f"{config.batch_size} random {config.image_size}×{config.image_size} images in {CLASSES} classes (class k "
        "brightens input channel k), then put in eval mode with `model.eval()`. Every comparison below runs on one "
        f"fixed probe batch of {config.batch_size} more images from the same task."
    )


def pair_text(pair: dict[str, Any]) -> str:
    """The fold of one conv → batch norm pair for one channel, with the numbers in the formula."""
    c, eps, scale = pair["channel"], f"{pair['eps']:g}", _g(pair["scale"])
    conv = f"bias b = {_g(pair['b_before'])}" if pair["has_bias"] else "no bias, so b = 0 (the folded conv gets one)"
    lines = [
        f"**{pair['pair']}, channel {c}**",
        f"- batch norm: γ = {_g(pair['gamma'])}, β = {_g(pair['beta'])}, mean = {_g(pair['running_mean'])}, "
        f"var = {_g(pair['running_var'])}, eps = {eps}",
        f"- conv: {pair['weights']} weights W make channel {c}; {conv}",
        f"- s = γ / √(var + eps) = {_g(pair['gamma'])} / √({_g(pair['running_var'])} + {eps}) = **{scale}**",
        f"- W′ = W · s: every weight times {scale} (the first {len(pair['w_before'])} in the table)",
        f"- b′ = (b − mean) · s + β = ({_g(pair['b_before'])} − {_paren(pair['running_mean'])}) · {scale} + "
        f"{_paren(pair['beta'])} = **{_g(pair['b_after'])}**",
    ]
    return "\n".join(lines)


def weight_rows(pair: dict[str, Any]) -> list[dict[str, str]]:
    """The first weights of the pair's channel, before and after folding."""
    return [
        {"W": _g(w), "W′ = W · s": _g(w_folded)} for w, w_folded in zip(pair["w_before"], pair["w_after"], strict=True)
    ]


def output_rows(report: InferenceReport) -> list[dict[str, str]]:
    """The first probe image's class scores, unfolded and folded (both in eval mode)."""
    out = report.outputs
    return [{"unfolded": _g7(u), "folded": _g7(f)} for u, f in zip(out["unfolded"], out["folded"], strict=True)]


def difference_text(report: InferenceReport) -> str:
    """What the difference chart shows, with its numbers."""
    out, train = report.outputs, report.train_mode
    h = out["histogram"]
    return (
        f"Over the {h['total']} scores of the {report.config.batch_size} probe images, folded and unfolded differ by "
        f"at most {sci(out['max_abs'])} (mean {sci(out['mean_abs'])}); {h['exact']} of them are bit-identical (a "
        "zero has no place on a log axis). The differences come from rounding: the folded network multiplies by s "
        "before summing, the unfolded one after. The grey bars are the training-mode network's scores against the "
        f"folded ones: up to {_g(train['max_abs'])}."
    )


def timing_text(report: InferenceReport) -> str:
    """The forward times of both networks."""
    t = report.timing
    return (
        f"One forward pass of the {report.config.batch_size} probe images (median of {t['repeats']}): unfolded "
        f"{t['unfolded_ms']:.3f} ms, folded {t['folded_ms']:.3f} ms, so the folded network is {t['speedup']:.2f}× "
        "as fast: two layers fewer to run. The gain depends on the machine and the network; here it is measured, "
        "on this server's CPU."
    )


def train_mode_text(report: InferenceReport) -> str:
    """Why the training-mode network cannot be folded, and by how much the fold would be off."""
    train, out = report.train_mode, report.outputs
    first = f"first probe image's scores: ({', '.join(_g(v) for v in train['train_output'])}) in training mode, " + (
        f"({', '.join(_g(v) for v in train['folded'])}) folded"
    )
    if train["max_abs"] <= out["atol"] + out["rtol"] * train["output_scale"]:
        return (
            "In training mode a batch norm normalizes with the statistics of the batch it is given, not the running "
            f"ones. Here the training-mode scores happen to equal the folded ones (up to {sci(train['max_abs'])}; "
            f"the {first}): this network's output no longer depends on its batch norms (every ReLU may be silent, "
            "as a large learning rate can make them). In general they differ, and folding a training-mode network "
            "is refused:"
        )
    return (
        "**Folding a network in training mode gives the wrong answer.** In training mode a batch norm normalizes "
        "with the mean and variance of the batch it is given; the fold bakes in the running ones. On the probe "
        f"batch the training-mode scores differ from the folded ones by up to {_g(train['max_abs'])} (mean "
        f"{_g(train['mean_abs'])}), {train['relative']:.3g}× the scores' mean size of {_g(train['output_scale'])}; "
        f"the {first}. So `bnviz.fold_batch_norms` refuses a model in training mode (torch's and bnviz's "
        "`fuse_conv_bn_eval` raise `AssertionError: Fusion only for eval!`):"
    )


def finetune_text(report: InferenceReport) -> str:
    """How the fine-tuning runs."""
    config = report.config
    shown = report.freezing["channels"]
    channels = f"channel {shown[0]}" if len(shown) == 1 else f"channels {shown[0]}–{shown[-1]}"
    return (
        f"The trained network is fine-tuned on new data, its inputs scaled by {SHIFT_SCALE:g} and shifted by "
        f'{_g(config.shift)}, for {config.finetune_steps} SGD steps, in {len(VARIANTS)} copies. Each copy "freezes" '
        "its batch norms in one common way, and the loop calls `model.train()` before every step, as training loops "
        f"do. The charts follow the first batch norm (layer 1), {channels}, on the same scales for all of them."
    )


def variant_text(report: InferenceReport, variant: str) -> str:
    """What happened to the first batch norm in one freezing variant, with the numbers."""
    v = report.freezing["variants"][variant]
    moved = v["moved"]
    steps = len(v["bn_training"])
    training = sum(v["bn_training"])
    stats = f"running_mean moved by up to {_g(moved['running_mean'])} and running_var by {_g(moved['running_var'])}"
    if variant == "requires_grad":
        return (
            f"γ and β stop learning (γ moved by {_g(moved['weight'])}), but the layer is still in training mode: it "
            f"normalizes each batch with that batch's own statistics and keeps updating its running ones — {stats}. "
            "`requires_grad` stops the optimizer; the running statistics are not learned, they are updated by the "
            "forward pass itself."
        )
    if variant == "bn_eval":
        return (
            "`bn.eval()` puts the batch norm in eval mode — until the loop's `model.train()`, which sets every "
            f"submodule back to training mode: the batch norm was in training mode at {training} of {steps} steps. "
            f"The freeze is silently undone: {stats}, and γ, still learnable, by {_g(moved['weight'])}."
        )
    if variant == "eval_after_train":
        still = "nothing moved" if not any(moved.values()) else f"{stats}, γ by {_g(moved['weight'])}"
        return (
            "The fix in plain PyTorch is the order: put the batch norms in eval *after* `model.train()`, at every "
            f"step, and stop their parameters' gradients. The batch norm was in training mode at {training} of "
            f"{steps} steps, and {still}."
        )
    still = (
        "nothing moved: running_mean, running_var and γ are exactly their step-0 values"
        if not any(moved.values())
        else f"{stats}, γ by {_g(moved['weight'])}"
    )
    return (
        "`freeze_batch_norm` replaces each batch norm by a FrozenBatchNorm holding the same numbers. It normalizes "
        "with its stored statistics in every mode, and its γ, β are buffers, not parameters, so neither "
        f"`model.train()` nor the optimizer reaches them. It was in training mode at {training} of {steps} steps, "
        f"and {still}."
    )


def drift_text(report: InferenceReport) -> str:
    """What the output-drift chart shows, with each variant's last value."""
    variants = report.freezing["variants"]
    last = ", ".join(f"{i}: {_g(v['bn_drift'][-1])}" for i, v in enumerate(variants.values(), start=1))
    still = [f"{i}" for i, v in enumerate(variants.values(), start=1) if not any(v["bn_drift"])]
    held = (f"{' and '.join(still)} keep{'s' if len(still) == 1 else ''} it at zero" if still
            else "none keeps it at zero")  # fmt: skip
    return (
        "How much the network's eval-mode scores on the probe images changed since step 0 (mean |change|). Top: the "
        "part due to the batch norms alone — today's network against today's with step 0's batch norms put back — "
        f"after the last step: {last}; {held}. Bottom: all of the change; it grows in every variant, as it should: "
        "the convs and the linear layer are being fine-tuned."
    )
