"""The eval-gap page's words: for each section, the symptom in one sentence, what this run
measured (its own numbers, and where they disagree with the claim, that they do), the fix, and
the fix as plain PyTorch. Every number comes from the report; plain text built from numbers and
fixed words only (``code`` is a Python snippet, to be shown as code)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnviz.explorer.claims import SAME, sentence
from bnviz.explorer.eval_gap.engine import COLLAPSE, ISOLATED_DRAWS, BatchesReport, DropoutReport, LagReport
from bnviz.explorer.eval_gap.measure import VIEW_NOISE
from bnviz.explorer.eval_gap.steps import (
    GRADIENT_BATCHES,
    AccumulationReport,
    CheckpointReport,
    PassesReport,
    adjusted_momentum,
)
from bnviz.explorer.eval_gap.url import twice_momentum
from bnviz.explorer.text import listing, pct, points, seeds_text


@dataclass(frozen=True)
class Section:
    """One cause: the symptom, this run's numbers, the fix in words, the fix as plain PyTorch, and
    ``gap``: the measured gap in one sentence (the cause's card; the rest is its detail)."""

    symptom: str
    measured: str
    fix: str
    code: str
    gap: str = ""


def _spread(values: tuple[float, ...]) -> str:
    """Mean and lowest–highest of accuracies over seeds."""
    finite = [v for v in values if math.isfinite(v)]
    mean = sum(finite) / len(finite) if finite else math.nan
    return pct(mean) if len(finite) <= 1 else f"{pct(mean)} ({pct(min(finite))}–{pct(max(finite))})"


def _ratios(values: tuple[float, ...], digits: int = 2) -> str:
    """Per-layer numbers: ``"1.02, 0.98 and 1.00"``."""
    return listing([f"{v:.{digits}f}" if math.isfinite(v) else "not a number" for v in values])


def _pcts(values: list[float]) -> str:
    return listing([pct(v) for v in values])


def _mean_of(values: tuple[float, ...]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _off(ratio: float) -> str:
    """How far a ratio is from 1, in percent: ``1.08`` → ``"8 %"``."""
    return f"{100 * abs(ratio - 1):.0f} %"


# --- 1. non-i.i.d. batches -------------------------------------------------------------------------


def batches_section(report: BatchesReport) -> Section:
    """Section 1: class-sorted against shuffled minibatches, over the seeds; the detail of the first seed."""
    c = report.config
    first = report.runs[0]
    s, h = first.orders["sorted"], first.orders["shuffled"]
    sorted_train = tuple(r.orders["sorted"].train_mode_final for r in report.runs)
    sorted_eval = tuple(r.orders["sorted"].eval_test for r in report.runs)
    shuffled_train = tuple(r.orders["shuffled"].train_mode_final for r in report.runs)
    shuffled_eval = tuple(r.orders["shuffled"].eval_test for r in report.runs)
    collapse = report.collapse()
    symptom = (
        "Trained on minibatches sorted by class, a network can look fine in train mode and fail in eval mode: in "
        "train mode each minibatch is normalized with its own statistics, and a one-class minibatch's statistics "
        "tell the layers which class the whole minibatch holds."
    )
    m = (
        f"This run: {c.steps:,} SGD steps at learning rate {c.lr:g}, minibatches of {c.batch}, width {c.width}, "
        f"{seeds_text(c.seeds)}, the same initial weights for both orders. Sorted by class: {_spread(sorted_train)} of "
        f"the training images right in train mode, in the minibatches training used, and {_spread(sorted_eval)} of "
        f"the test images in eval mode (mean, lowest–highest over the seeds). "
    )
    m += sentence(collapse, f"eval mode falls {points(COLLAPSE)} or more below train mode")
    close = sum(abs(d) <= SAME for d in report.shuffled_gap())
    m += (f"Shuffled (a fresh permutation each epoch): {_spread(shuffled_train)} in train mode and "
          f"{_spread(shuffled_eval)} in eval mode, within {points(SAME)} of each other on {close} of "
          f"{len(report.runs)} seeds. ")  # fmt: skip
    m += (
        f"On seed {first.seed}, in detail: sorted, {pct(s.eval_train)} of the training images themselves are right in "
        f"eval mode — so it is the mode, not overfitting; the same weights in train mode on the training images cut "
        f"into shuffled minibatches instead score {pct(s.train_mode_other)} — what the network learned relies on "
        f"each minibatch holding one class. With the exact population statistics in its buffers it scores "
        f"{pct(s.exact_test)} in eval mode"
    )
    m += (": better statistics do not rescue it, since the weights themselves rely on per-class normalization. "
          if s.exact_test < s.train_mode_final - COLLAPSE else ". ")  # fmt: skip
    m += (
        f"(In train mode on class-sorted minibatches the shuffled network scores {pct(h.train_mode_other)}: any "
        f"network trained with batch norm expects minibatches like its training ones.) The statistics at the first "
        f"batch norm: the class-sorted minibatches' variances average {s.batch_var_ratio[0]:.2f} of the population "
        f"variance — each holds mostly one class and misses the spread between classes — and its running variance "
        f"ends at {s.var_ratio[0]:.2f} of it, its running mean {s.mean_error[0]:.2f} σ off; with shuffled minibatches "
        f"{h.batch_var_ratio[0]:.2f}, {h.var_ratio[0]:.2f} and {h.mean_error[0]:.2f} σ."
    )
    gap = (f"Sorted by class: {_spread(sorted_train)} in train mode, {_spread(sorted_eval)} in eval mode; "
           f"shuffled: {_spread(shuffled_train)} and {_spread(shuffled_eval)}. "
           f"{sentence(collapse, 'eval mode collapses')}")  # fmt: skip
    fix = (
        "Shuffle: draw every minibatch at random from the whole training set (a fresh permutation each epoch), so "
        "that each is a fair sample of the classes and its statistics are close to the population's. Data that "
        "arrive grouped (by class, by user, by recording) need shuffling before batching, or a sampler that mixes "
        "the groups. A check worth keeping: accuracy in train mode and in eval mode on the same images should be "
        f"close (here, seed {first.seed}: {pct(h.train_mode_final)} and {pct(h.eval_train)} on the training images "
        "after shuffling)."
    )
    code = f"""import copy
import torch

loader = torch.utils.data.DataLoader(train_set, batch_size={c.batch}, shuffle=True, drop_last=True)

# The check: one minibatch in train mode and in eval mode (on a copy: a train-mode
# forward updates the running statistics).
probe = copy.deepcopy(model)
with torch.no_grad():
    train_acc = (probe.train()(x).argmax(1) == y).float().mean()
    eval_acc = (probe.eval()(x).argmax(1) == y).float().mean()
"""
    return Section(symptom, m, fix, code, gap)


# --- 2. running statistics that lag ----------------------------------------------------------------


def _points_spread(values: tuple[float, ...]) -> str:
    """Accuracy differences in points over seeds: mean (lowest–highest)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "not a number"
    mean = sum(finite) / len(finite)
    one = f"{100 * mean:.1f}"
    return f"{one} points" if len(finite) == 1 else f"{one} points ({100 * min(finite):.1f}–{100 * max(finite):.1f})"


def lag_section(report: LagReport) -> Section:
    """Section 2: running averages at several momenta against PreciseBN, over the seeds."""
    c = report.config
    momenta = c.momenta
    first = report.runs[0]
    symptom = (
        "Eval-mode accuracy trails the weights: the running statistics are an exponential average over past "
        "minibatches, computed with older weights, and with a small momentum they stay stale for hundreds of steps."
    )
    names = listing([f"{m:g}" for m in momenta])
    m = (
        f"This run: one training per seed ({c.steps:,} steps at learning rate {c.lr:g}, minibatches of {c.batch}, "
        f"width {c.width}, {seeds_text(c.seeds)}) carries the running statistics of momenta {names} side by side — "
        "momentum changes no weight, only the average. At each checkpoint they are compared with the exact population "
        "statistics of that step's weights (PreciseBN: recompute_batch_norm_stats in exact mode over the 1,438 "
        "training images). The largest shortfall of test accuracy against the exact statistics after step 0 (mean, "
        "lowest–highest over the seeds): "
    )
    m += listing([f"{_points_spread(report.lags(mo).differences)} at momentum {mo:g}" for mo in momenta]) + ". "
    for mo in momenta:
        v = report.lags(mo)
        m += sentence(v, f"momentum {mo:g} falls {points(SAME)} or more behind the exact statistics at some checkpoint")
    smallest = min(momenta)
    kept = (1 - smallest) ** c.steps
    unbiased = report.lags_unbiased(smallest)
    m += (
        f"Part of a small momentum's shortfall is not lag behind the weights but the initial buffers (mean 0, "
        f"variance 1): momentum m keeps (1 − m)^t of what it held t updates ago, and after {c.steps:,} steps at "
        f"momentum {smallest:g}, {kept:.2f} of the initial values is still in the average. Taking that share out "
        f"((running − (1 − m)^t · initial) ÷ (1 − (1 − m)^t), as Adam corrects its first steps), the largest "
        f"shortfall at momentum {smallest:g} is {_points_spread(unbiased.differences)} instead of "
        f"{_points_spread(report.lags(smallest).differences)}: "
    )
    m += ("most of it was the initial values. " if _mean_of(unbiased.differences) < 0.5 * _mean_of(
        report.lags(smallest).differences) else "the initial values are not most of it here. ")  # fmt: skip
    m += (
        "Keras and Flax write momentum the other way round: their default 0.99 weights the old average, so it is "
        "torch's momentum 0.01 — the same average, a correct translation, which lags behind the weights while a "
        "training is short. The mistake is carrying the number across unchanged: torch's momentum 0.99 keeps 1 % of "
        "the old average, so the running statistics are nearly the last minibatch's alone. "
    )
    n = c.batch
    m += (
        f"At the end of seed {first.seed}, per batch norm, the mean of the minibatches' unbiased variances "
        f"(minibatches of {n}) is {_ratios(first.batch_var, 3)} of the exact population variance, and of their "
        f"biased variances {_ratios(first.biased_batch_var, 3)} (the factor (n − 1)/n is {(n - 1) / n:.3f}). The "
        "average of per-minibatch variances misses the spread of the minibatch means; for shuffled minibatches "
        "that spread is about one variance per minibatch, which dividing by n − 1 instead of n puts back on "
        "average — so here the gap is small. With non-i.i.d. minibatches it is not (section 1)."
    )
    shortfalls = listing([f"{_points_spread(report.lags(mo).differences)} at momentum {mo:g}" for mo in momenta])
    gap = (f"Largest shortfall against the exact statistics: {shortfalls}; at {smallest:g} with the initial "
           f"buffers' share taken out, {_points_spread(unbiased.differences)}.")  # fmt: skip
    fix = (
        "Recompute the running statistics for the final weights before evaluating (PreciseBN): a pass over the "
        "training data without gradients. In plain torch, torch.optim.swa_utils.update_bn does it in one pass with "
        "the batch norms in train mode and a cumulative average (momentum None): the mean of the minibatch means and "
        "of the minibatches' unbiased variances. bnviz.recompute_batch_norm_stats (mode=\"exact\") gives each layer "
        "the exact mean and variance of what it sees in eval mode, once the layers before it hold theirs. For a "
        "short training, a larger momentum (torch's default 0.1) follows the weights closer than 0.01."
    )
    code = """import torch

# Plain torch: reset the running statistics, then average them over the data (cumulative)
torch.optim.swa_utils.update_bn(train_loader, model)
model.eval()

# bnviz: the exact population statistics of what each layer sees in eval mode, layer by
# layer (one pass over the loader per batch norm; mode="one-pass" is update_bn's single pass)
import bnviz

bnviz.recompute_batch_norm_stats(model.eval(), train_loader, mode="exact")
"""
    return Section(symptom, m, fix, code, gap)


# --- 3. dropout before batch norm ------------------------------------------------------------------


def dropout_section(report: DropoutReport) -> Section:
    """Section 3: the variance shift of dropout before batch norm (Li et al. 2019), over the seeds;
    the per-layer detail of the first seed."""
    c = report.config
    p = c.p
    first = report.runs[0]
    layers = first.layers
    simple = 1 / (1 - p)
    where = ("after a ReLU (Linear → ReLU → Dropout → BN)" if c.placement == "after"
             else "on the Linear's output (Linear → Dropout → BN → ReLU)")  # fmt: skip
    runs = report.runs
    broken = tuple(r.eval_mode["before-bn"] for r in runs)
    reference = tuple(r.eval_mode["none"] for r in runs)
    train = tuple(r.train_mode["before-bn"] for r in runs)
    head = tuple(r.eval_mode["head"] for r in runs)
    exact = tuple(r.exact_eval for r in runs)
    symptom = (
        "Dropout right before a batch norm makes the variance the layer sees in training larger than in eval mode "
        "(the variance shift): the running variance, learned in training, is too large for eval, and the network "
        "does worse in eval mode than the same network trained without dropout."
    )
    m = (
        f"This run: dropout p = {p:g} {where}, before each of the 3 batch norms; {c.steps:,} steps at learning rate "
        f"{c.lr:g}, minibatches of {c.batch}, width {c.width}, {seeds_text(c.seeds)}. torch's Dropout(p) zeroes each "
        f"value with probability p and scales the rest by 1/(1 − p): for an input of mean c and variance v, training "
        f"sees the variance (v + c²)/(1 − p) − c² where eval mode sees v — the arithmetic of Li et al.'s (2019) "
        f"variance shift; their Figure 1 illustrates it on zero-mean inputs, where the ratio is 1/(1 − p) = "
        f"{simple:.3g}. Test accuracy in eval mode (mean, lowest–highest over the seeds): {_spread(broken)} with "
        f"dropout before each batch norm, {_spread(reference)} without dropout, from the same weights and "
        "minibatches. "
    )
    m += sentence(report.drop(), "dropout before batch norm does worse in eval mode than without dropout")
    m += (
        f"The same dropout network in train mode (dropout on, minibatches of {c.batch}) scores {_spread(train)}. "
    )
    m += sentence(report.eval_above_train(), "it scores higher in eval mode than in its own train mode")
    m += (
        "So the drop in eval mode is against a different network — the one trained without dropout — not against "
        "its own train mode: there, dropout itself costs more than the shift does. "
    )
    m += (
        f"On seed {first.seed}, per batch norm (medians over the live units — one near-dead unit can make a mean "
        f"over units anything): each dropout alone, on the same inputs ({ISOLATED_DRAWS} masks over the training "
        f"images), raises the variance by {_ratios(tuple(s.isolated for s in layers))}, against the arithmetic's "
        f"{_ratios(tuple(s.isolated_predicted for s in layers))}; on the same inputs centred to zero mean, "
        f"{_ratios(tuple(s.centred for s in layers))}, against 1/(1 − p) = {simple:.2f}. The inputs here are not "
        f"zero-mean (c²/v is {_ratios(tuple(s.c2_over_v for s in layers))}), so the shift is larger than "
        f"1/(1 − p). In the trained network, Li et al.'s shift max(real/running, running/real) — running variance "
        f"against the eval-mode variance over the test images — is {_ratios(tuple(s.shift for s in layers))}, "
        f"against the arithmetic's {_ratios(tuple(s.predicted for s in layers))} for those inputs; after the first "
        "batch norm each input already comes through layers whose running variance was too large, so the shift "
        "compounds."
    )
    dead = [f"batch norm {k + 1}: {s.live} of {s.units}" for k, s in enumerate(layers) if s.live < s.units]
    if dead:
        m += f" (Units that never fire in eval mode are left out — {listing(dead)} units are live.)"
    fix = (
        f"Fix 1 (Li et al.): no dropout between batch norms — one dropout after the last batch norm, before the "
        f"output layer. Measured in eval mode: {_spread(head)}. "
        + sentence(report.fix_head(), "fix 1 beats the broken network")
        + "Fix 2 (Hendrycks & Gimpel 2016: \"we simply update Batch Normalization's variance moving averages with "
        "dropout off\"): keep the network and, after training, re-estimate the running statistics with dropout off. "
        "They update the variance only; here both the mean and the variance are recomputed, exactly "
        f"(bnviz.recompute_batch_norm_stats in exact mode, the model in eval mode). Measured: {_spread(exact)}. "
        + sentence(report.fix_exact(), "fix 2 beats the broken network")
        + f"(Seed {first.seed}: variance shift {_ratios(tuple(s.shift_exact for s in layers))} after fix 2, "
        f"{_ratios(tuple(s.shift_head for s in layers))} with fix 1.) The statistics are then right, but the "
        "weights were learned under the shifted ones. Plain torch below (one pass, the layers upstream in train "
        "mode); bnviz.recompute_batch_norm_stats(model.eval(), train_loader, mode=\"exact\") gives the exact "
        "eval-mode statistics of every layer in one call."
    )
    gap = (f"Eval mode: {_spread(broken)} with dropout before each batch norm, {_spread(reference)} without dropout; "
           f"train mode of the same dropout network: {_spread(train)}. "
           + sentence(report.drop(), "dropout before batch norm does worse in eval mode than without"))  # fmt: skip
    if c.placement == "after":
        blocks = "\n".join([f"    nn.Linear({fan}, {c.width}), nn.ReLU(), nn.BatchNorm1d({c.width}),"
                            for fan in (64, c.width, c.width)])  # fmt: skip
    else:
        blocks = "\n".join([f"    nn.Linear({fan}, {c.width}), nn.BatchNorm1d({c.width}), nn.ReLU(),"
                            for fan in (64, c.width, c.width)])  # fmt: skip
    code = f"""import torch
from torch import nn

# Fix 1: no dropout between batch norms; dropout only after the last one
model = nn.Sequential(
{blocks}
    nn.Dropout({p:g}), nn.Linear({c.width}, 10),
)

# Fix 2: after training, running statistics from eval-mode inputs (dropout off)
model.eval()
for m in model.modules():
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the pass
        m.train()
with torch.no_grad():
    for x, _ in train_loader:
        model(x)
model.eval()
"""
    return Section(symptom, m, fix, code, gap)


# --- 4. micro-batches and gradient accumulation ----------------------------------------------------


def accumulation_section(report: AccumulationReport) -> Section:
    """Section 4: k micro-batches of n against one batch of k·n."""
    c = report.config
    k, n, kn = c.micro, c.micro_batch, c.batch
    symptom = (
        "With gradient accumulation batch norm sees k micro-batches of n, not one batch of k·n: each micro-batch is "
        "normalized with its own, noisier statistics, the gradient changes, and the running statistics take k "
        "updates per optimizer step."
    )
    ms, vs = report.mean_spread, report.var_spread
    m = (
        f"This run: k = {k} micro-batches of n = {n} against one batch of k·n = {kn}, from the same weights on the "
        f"same images, {c.steps:,} SGD steps at learning rate {c.lr:g}, momentum {c.momentum:g}, seed {c.seed}. "
        f"At the first batch norm the minibatch means scatter by {ms[n][0]:.2f} σ around the population mean for "
        f"micro-batches and {ms[kn][0]:.2f} σ for the batch of {kn} (1/√n = {1 / math.sqrt(n):.2f}, 1/√(kn) = "
        f"{1 / math.sqrt(kn):.2f}), and their variances by {vs[n][0]:.2f} and {vs[kn][0]:.2f} of the population "
        f"variance. At the next batch norms the means scatter little ({_ratios(ms[n][1:])} σ for micro-batches) — "
        f"their inputs were normalized per micro-batch just before — but the variances as much "
        f"({_ratios(vs[n][1:])}). "
        f"The gradient: at the initial weights the accumulated gradient differs from the batch of {kn}'s by "
        f"{100 * report.grad_difference:.0f} % of its length (cosine {report.grad_cosine:.2f}), averaged over "
        f"{GRADIENT_BATCHES} batches. "
    )
    cnt = report.counted
    m += (
        f"The buffers: after {c.steps:,} steps num_batches_tracked is {cnt['big']:,} for the batch of {kn} and "
        f"{cnt['micro']:,} with accumulation. Against the exact statistics of their own weights, the running "
        f"variance is off by {_ratios(report.var_error['big'])} (one batch) and {_ratios(report.var_error['micro'])} "
        f"(micro-batches) per batch norm, the running mean by {_ratios(report.mean_error['big'])} σ (one batch) and "
        f"{_ratios(report.mean_error['micro'])} σ (micro-batches). Test accuracy in eval mode: "
        f"{pct(report.eval_running['big'])} and "
        f"{pct(report.eval_running['micro'])}; with the exact statistics {pct(report.eval_exact['big'])} and "
        f"{pct(report.eval_exact['micro'])}."
    )
    adj = adjusted_momentum(c.momentum, k)
    va, vm = report.var_error["micro-adjusted"], report.var_error["micro"]
    fix = (
        f"For the running statistics: a momentum of 1 − (1 − m)^(1/k) = {adj:.4f} makes k updates decay the old "
        f"value as one update of m does. Measured, carried beside the micro-batched training: running variance off "
        f"by {_ratios(va)} per batch norm (against {_ratios(vm)}); num_batches_tracked still counts micro-batches. "
        f"What the momentum cannot fix: in training, the layers after the first see inputs normalized with n-sample "
        f"statistics, which eval mode never produces — recomputing the statistics at the end fixes the buffers "
        f"({pct(report.eval_exact['micro'])} against {pct(report.eval_running['micro'])} here). The normalization "
        "itself has no fix inside accumulation: larger micro-batches, SyncBatchNorm across devices, or a norm that "
        "does not depend on the batch (GroupNorm, LayerNorm)."
    )
    code = f"""import torch.nn.functional as F
from torch import nn

k, m = {k}, {c.momentum:g}
for mod in model.modules():
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        mod.momentum = 1 - (1 - m) ** (1 / k)  # k updates per step decay like one of m

optimizer.zero_grad()
for xc, yc in zip(x.chunk(k), y.chunk(k)):
    (F.cross_entropy(model(xc), yc) / k).backward()
optimizer.step()
"""
    running = report.eval_running
    gap = (f"{k} micro-batches of {n} take {report.counted['micro']:,} running updates where one batch of {kn} "
           f"takes {report.counted['big']:,}; eval-mode accuracy with the running statistics: {pct(running['micro'])} "
           f"against {pct(running['big'])} (seed {c.seed}).")  # fmt: skip
    return Section(symptom, m, fix, code, gap)


# --- 5. two forward passes against one concatenated batch ------------------------------------------


def passes_section(report: PassesReport) -> Section:
    """Section 5: two forward passes against one concatenated forward."""
    c = report.config
    what = ("real training images (A) and fakes (B: each a real image with its pixels shuffled — the same "
            "intensities, no digit), as a GAN's discriminator sees them" if c.pair == "real-fake" else
            f"two views of the same training images (each with its own Gaussian pixel noise of std {VIEW_NOISE:g}), "
            "as in contrastive learning")  # fmt: skip
    symptom = (
        "Two forward passes — real then fake batches in a GAN's discriminator, or two views in contrastive learning "
        "— are not one pass over both: each pass is normalized with its own batch statistics, and each counts as a "
        "batch in the running statistics."
    )
    m = (
        f"This run: a network trained {c.steps:,} steps on real digits (seed {c.seed}), then {c.pairs} pairs of "
        f"{c.batch} images: {what}. A's outputs in train mode, alone against as the first half of cat([A, B]): "
        f"logits differ by {report.mean_logit_difference:.3g} on average and {report.max_logit_difference:.3g} at "
        f"most (the logits' mean size is {report.logit_scale:.3g}), and {pct(report.changed)} of A's predicted "
        f"classes change ({pct(report.accuracy_separate)} right alone, {pct(report.accuracy_together)} together). "
    )
    m += (
        f"The running statistics, from the trained network's: the pairs add {report.counted['separate']} to "
        f"num_batches_tracked as two passes and {report.counted['together']} as one. The two ways' running means "
        f"differ by {_ratios(report.between_mean, 3)} σ per batch norm and their running variances by "
        f"{_ratios(report.between_var, 3)} (relative). Against the exact statistics of the real training images, the "
        f"first batch norm's running mean is {report.real_mean_error['separate'][0]:.2f} σ off after two passes and "
        f"{report.real_mean_error['together'][0]:.2f} σ after one. Test accuracy in eval mode on real digits: "
        f"{pct(report.eval_accuracy['trained'])} with the statistics as trained, "
        f"{pct(report.eval_accuracy['separate'])} after the pairs as two passes and "
        f"{pct(report.eval_accuracy['together'])} as one."
    )
    fix = (
        "Choose the statistics on purpose: one concatenated forward normalizes both halves together and updates the "
        "running statistics once per step; two passes normalize each apart and update twice. To keep them apart — "
        "a discriminator that must not compare real and fake through shared statistics is often trained on all-real "
        "and all-fake batches — keep two passes, and know that the running statistics then alternate between the "
        "two kinds of batch, the last one weighing most. Either way, recompute the running statistics before "
        "evaluating on the data eval mode will see (update_bn in one pass, or bnviz.recompute_batch_norm_stats with "
        "mode=\"exact\")."
    )
    code = """import torch

# One forward over both halves: one set of batch statistics, one running update per step
out = model(torch.cat([x_a, x_b]))
out_a, out_b = out.split([len(x_a), len(x_b)])

# Before evaluating: running statistics from the data eval mode will see (here, real images)
torch.optim.swa_utils.update_bn(real_loader, model)
model.eval()
"""
    gap = (f"A's logits differ by {report.mean_logit_difference:.3g} on average between two passes and one; "
           f"{pct(report.changed)} of A's predicted classes change (seed {c.seed}).")  # fmt: skip
    return Section(symptom, m, fix, code, gap)


# --- 6. activation checkpointing -------------------------------------------------------------------


def checkpoint_section(report: CheckpointReport) -> Section:
    """Section 6: torch's and bnviz's batch norm under activation checkpointing."""
    c = report.config
    cnt = report.counted
    symptom = (
        "Under activation checkpointing torch's batch norm updates its running statistics twice per step: the "
        "checkpointed block's forward runs again during backward (pytorch#96136)."
    )
    modes = ("reentrant", "non-reentrant")
    torch_twice = all(cnt[f"torch-{mode}"][0] == 2 * cnt["torch"][0] for mode in modes)
    bnviz_once = all(cnt[f"bnviz-{mode}"][0] == cnt["bnviz"][0] for mode in modes)
    m = (
        f"This run: Linear → BN → ReLU three times, each hidden block under torch.utils.checkpoint, {c.steps} SGD "
        f"steps at learning rate {c.lr:g}, momentum {c.momentum:g}, seed {c.seed}; torch's nn.BatchNorm1d and "
        f"bnviz's, each also without checkpointing, all from the same weights on the same minibatches. "
        f"num_batches_tracked after {c.steps} steps: torch {cnt['torch'][0]} without checkpointing, "
        f"{cnt['torch-reentrant'][0]} (reentrant) and {cnt['torch-non-reentrant'][0]} (non-reentrant) with it; "
        f"bnviz {cnt['bnviz'][0]}, {cnt['bnviz-reentrant'][0]} and {cnt['bnviz-non-reentrant'][0]}. "
    )
    m += ("torch's layer counts each step twice and bnviz's once, as claimed. " if torch_twice and bnviz_once
          else "This run does not show torch counting twice and bnviz once, unlike the claim. ")  # fmt: skip
    dm = max(report.mean_difference["torch-reentrant"], report.mean_difference["torch-non-reentrant"])
    dv = max(report.var_difference["torch-reentrant"], report.var_difference["torch-non-reentrant"])
    bm = max(report.mean_difference["bnviz-reentrant"], report.mean_difference["bnviz-non-reentrant"],
             report.var_difference["bnviz-reentrant"], report.var_difference["bnviz-non-reentrant"])  # fmt: skip
    wd = max(report.weight_difference.values())
    m += (
        f"With momentum {c.momentum:g} updated twice, torch's running statistics move by 1 − (1 − m)² = "
        f"{1 - (1 - c.momentum) ** 2:.3g} of the way to each batch instead of {c.momentum:g}: against the unchecked "
        f"network they differ by up to {dm:.3g} (running_mean) and {dv:.3g} (running_var). bnviz's buffers under "
        f"checkpointing differ from its unchecked network's by {bm:.3g}"
        + (" — bit for bit the same. " if bm == 0 else ". ")
        + (
            "The weights are the same bit for bit with and without checkpointing"
            if wd == 0
            else f"The weights differ by at most {wd:.3g} with and without checkpointing"
        )
        + ": checkpointing changes no output or gradient, only the buffers. "
        f"Test accuracy in eval mode: {pct(report.eval_accuracy['torch'])} unchecked, "
        f"{pct(report.eval_accuracy['torch-non-reentrant'])} with torch's layer checkpointed"
    )
    same = abs(report.eval_accuracy["torch"] - report.eval_accuracy["torch-non-reentrant"]) <= SAME
    m += ": the double update does not change the accuracy here, only the buffers." if same else "."
    twice = twice_momentum(c.momentum)
    fd = max(report.mean_difference["torch-fix"], report.var_difference["torch-fix"])
    fix = (
        f"bnviz's batch norms recognise the recomputation (it runs inside the autograd engine's backward) and update "
        f"once. In plain torch: keep batch norms out of checkpointed blocks, or set the momentum to 1 − √(1 − m) = "
        f"{twice:.4f}, so that two updates with the same batch statistics make one of m. Measured: torch's layer "
        f"checkpointed with it differs from the unchecked network by {fd:.2g} (float rounding); its "
        f"num_batches_tracked still counts {cnt['torch-fix'][0]} — which matters only with momentum=None."
    )
    code = f"""from torch import nn
from torch.utils.checkpoint import checkpoint

m = {c.momentum:g}
for mod in model.modules():
    if isinstance(mod, nn.modules.batchnorm._BatchNorm):
        mod.momentum = 1 - (1 - m) ** 0.5  # updated twice per step: (1 - m')**2 == 1 - m

h = checkpoint(block, x, use_reentrant=False)  # num_batches_tracked still counts 2 per step
"""
    gap = (f"After {c.steps} checkpointed steps torch's num_batches_tracked counts {cnt['torch-non-reentrant'][0]}, "
           f"bnviz's {cnt['bnviz-non-reentrant'][0]}.")  # fmt: skip
    return Section(symptom, m, fix, code, gap)


WORDS = {
    BatchesReport: batches_section, LagReport: lag_section, DropoutReport: dropout_section,
    AccumulationReport: accumulation_section, PassesReport: passes_section, CheckpointReport: checkpoint_section,
}  # fmt: skip


def section(report: object) -> Section:
    """Any section's words."""
    return WORDS[type(report)](report)  # type: ignore[arg-type]
