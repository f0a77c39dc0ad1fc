"""The eval-gap page's words: for each section, the symptom in one sentence, what this run
measured (its own numbers, and where they disagree with the claim, that they do), the fix, and
the fix as plain PyTorch. Every number comes from the report; plain text built from numbers and
fixed words only (``code`` is a Python snippet, to be shown as code)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnviz.explorer.eval_gap.engine import ISOLATED_DRAWS, BatchesReport, DropoutReport, LagReport
from bnviz.explorer.eval_gap.measure import VIEW_NOISE
from bnviz.explorer.eval_gap.steps import (
    GRADIENT_BATCHES,
    AccumulationReport,
    CheckpointReport,
    PassesReport,
    adjusted_momentum,
)
from bnviz.explorer.eval_gap.url import twice_momentum
from bnviz.explorer.text import listing, pct, points

SAME = 0.03  # accuracies closer than this (3 points, 11 of 359 test images) are "about the same"
COLLAPSE = 0.3  # a gap of this much (30 points) between train and eval mode is a collapse
CLOSE = 0.1  # a measured ratio within 10 % of its formula "matches"


@dataclass(frozen=True)
class Section:
    """One cause: the symptom, this run's numbers, the fix in words, the fix as plain PyTorch."""

    symptom: str
    measured: str
    fix: str
    code: str


def _ratios(values: tuple[float, ...], digits: int = 2) -> str:
    """Per-layer numbers: ``"1.02, 0.98 and 1.00"``."""
    return listing([f"{v:.{digits}f}" if math.isfinite(v) else "not a number" for v in values])


def _pcts(values: list[float]) -> str:
    return listing([pct(v) for v in values])


def _off(ratio: float) -> str:
    """How far a ratio is from 1, in percent: ``1.08`` → ``"8 %"``."""
    return f"{100 * abs(ratio - 1):.0f} %"


# --- 1. non-i.i.d. batches -------------------------------------------------------------------------


def batches_section(report: BatchesReport) -> Section:
    """Section 1: class-sorted against shuffled minibatches."""
    c = report.config
    s, h = report.orders["sorted"], report.orders["shuffled"]
    symptom = (
        "Trained on minibatches sorted by class, a network can look fine in train mode and fail in eval mode: in "
        "train mode each minibatch is normalized with its own statistics, and a one-class minibatch's statistics "
        "tell the layers which class the whole minibatch holds."
    )
    gap = s.train_mode_final - s.eval_test
    m = (
        f"This run: {c.steps:,} SGD steps at learning rate {c.lr:g}, minibatches of {c.batch}, width {c.width}, seed "
        f"{c.seed}, the same initial weights for both orders. Sorted by class (the training split read in class "
        f"order): in train mode {pct(s.train_mode_final)} of the training images are classified right, in the "
        f"minibatches training used; in eval mode {pct(s.eval_test)} of the test images, and {pct(s.eval_train)} of "
        f"the training images themselves — so it is the mode, not overfitting. "
    )
    if gap >= COLLAPSE:
        m += "Train mode looks fine and eval mode collapses, as claimed. "
    elif gap >= SAME:
        m += f"Eval mode is {points(gap)} worse than train mode: a gap, though not the collapse claimed. "
    else:
        m += "Eval mode is not worse than train mode here, unlike the claim. "
    m += (
        f"The same weights in train mode on the same training images, cut into shuffled minibatches instead: "
        f"{pct(s.train_mode_other)} — what the network learned relies on each minibatch holding one class. With the "
        f"exact population statistics in its buffers it scores {pct(s.exact_test)} in eval mode"
    )
    m += (": better statistics do not rescue it, since the weights themselves rely on per-class normalization. "
          if s.exact_test < s.train_mode_final - COLLAPSE else ". ")  # fmt: skip
    m += (
        f"Shuffled (a fresh permutation each epoch): {pct(h.train_mode_final)} in train mode and {pct(h.eval_test)} "
        f"in eval mode on the test split"
    )
    m += (", about the same. " if abs(h.train_mode_final - h.eval_test) <= SAME
          else f", {points(h.train_mode_final - h.eval_test)} apart. ")  # fmt: skip
    m += (
        f"(In train mode on class-sorted minibatches the shuffled network scores {pct(h.train_mode_other)}: any "
        f"network trained with batch norm expects minibatches like its training ones.) The statistics at the first "
        f"batch norm: the class-sorted minibatches' variances average {s.batch_var_ratio[0]:.2f} of the population "
        f"variance — each holds mostly one class and misses the spread between classes — and its running variance "
        f"ends at {s.var_ratio[0]:.2f} of it, its running mean {s.mean_error[0]:.2f} σ off; with shuffled minibatches "
        f"{h.batch_var_ratio[0]:.2f}, {h.var_ratio[0]:.2f} and {h.mean_error[0]:.2f} σ."
    )
    fix = (
        "Shuffle: draw every minibatch at random from the whole training set (a fresh permutation each epoch), so "
        "that each is a fair sample of the classes and its statistics are close to the population's. Data that "
        "arrive grouped (by class, by user, by recording) need shuffling before batching, or a sampler that mixes "
        "the groups. A check worth keeping: accuracy in train mode and in eval mode on the same images should be "
        f"close (here {pct(h.train_mode_final)} and {pct(h.eval_train)} on the training images after shuffling)."
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
    return Section(symptom, m, fix, code)


# --- 2. running statistics that lag ----------------------------------------------------------------


def lag_section(report: LagReport) -> Section:
    """Section 2: running averages at several momenta against PreciseBN."""
    c = report.config
    momenta = c.momenta
    symptom = (
        "Eval-mode accuracy trails the weights: the running statistics are an exponential average over past "
        "minibatches, computed with older weights, and with a small momentum they stay stale for hundreds of steps."
    )
    names = listing([f"{m:g}" for m in momenta])
    m = (
        f"One training ({c.steps:,} steps at learning rate {c.lr:g}, minibatches of {c.batch}, width {c.width}, seed "
        f"{c.seed}) carries the running statistics of momenta {names} side by side — momentum changes no weight, "
        "only the average. At each checkpoint they are compared with the exact population statistics of that "
        "step's weights (PreciseBN: recompute_batch_norm_stats over the 1,438 training images). "
    )
    later = [i for i, s in enumerate(report.steps) if s > 0]
    if later:
        i0, last = later[0], later[-1]
        m += (
            f"At step {report.steps[i0]}, test accuracy is {_pcts([report.accuracy[mo][i0] for mo in momenta])} with "
            f"them and {pct(report.exact[i0])} with the exact statistics; at step {report.steps[last]:,}, "
            f"{_pcts([report.accuracy[mo][last] for mo in momenta])} against {pct(report.exact[last])}. "
        )
        lagging, close = [], []
        for mo in momenta:
            gaps = [report.gap(mo)[i] for i in later]
            worst = max(range(len(gaps)), key=gaps.__getitem__)
            if gaps[worst] > SAME:
                lagging.append(f"{points(gaps[worst])} at momentum {mo:g} (step {report.steps[later[worst]]:,})")
            else:
                close.append(f"{mo:g}")
        if lagging:
            m += f"The largest shortfalls against the exact statistics: {listing(lagging)}. "
        if close:
            m += f"At momentum {listing(close)} the running statistics stay within {points(SAME)} of them throughout. "
        if lagging and close:
            m += ("The lag is there at the small momenta, as Wu & Johnson (2021) describe; at the larger ones the "
                  "average follows the weights closely enough in this run. ")  # fmt: skip
        elif lagging:
            m += "Every momentum lags at some checkpoint here, as Wu & Johnson (2021) describe. "
        else:
            m += "No momentum lags by more than that here: the claim's lag does not show in this run. "
    smallest = min(momenta)
    kept = (1 - smallest) ** c.steps
    m += (
        f"A momentum m keeps (1 − m)^t of what it held t steps ago: after {c.steps:,} steps at momentum "
        f"{smallest:g}, {kept:.2f} of the initial running statistics (mean 0, variance 1) is still in them. (Keras' "
        "default momentum 0.99 is torch's 0.01.) "
    )
    n = c.batch
    m += (
        f"At the end, per batch norm, the mean of the minibatches' unbiased variances (minibatches of {n}) is "
        f"{_ratios(report.batch_var, 3)} of the exact population variance, and of their biased variances "
        f"{_ratios(report.biased_batch_var, 3)} (the factor (n − 1)/n is {(n - 1) / n:.3f}). The average of "
        "per-minibatch variances misses the spread of the minibatch means; for shuffled minibatches that spread is "
        "about one variance per minibatch, which dividing by n − 1 instead of n puts back on average — so here the "
        "gap is small. With non-i.i.d. minibatches it is not (section 1)."
    )
    fix = (
        "Recompute the running statistics for the final weights before evaluating (PreciseBN): one pass over "
        "training data in train mode, without gradients. In plain torch, torch.optim.swa_utils.update_bn does it "
        "with a cumulative average (momentum None): the mean of the minibatch means and of the minibatches' "
        "unbiased variances. bnviz.recompute_batch_norm_stats (mode=\"exact\") gives each layer the exact mean and "
        "variance of what it sees in eval mode, once the layers before it hold theirs. Or keep torch's momentum "
        "0.1 rather than a Keras-style 0.01 or 0.001 carried over by mistake."
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
    return Section(symptom, m, fix, code)


# --- 3. dropout before batch norm ------------------------------------------------------------------


def _verdict_fix(fixed: float, broken: float, reference: float) -> str:
    """How much of the drop from ``reference`` to ``broken`` a fix recovers."""
    if reference - broken <= SAME:
        return "no drop to recover"
    if fixed >= reference - SAME:
        return "it recovers the drop"
    if fixed > broken + SAME:
        return "it recovers part of the drop"
    return "it does not recover the drop here"


def dropout_section(report: DropoutReport) -> Section:
    """Section 3: the variance shift of dropout before batch norm (Li et al. 2019)."""
    c = report.config
    p, layers = c.p, report.layers
    simple = 1 / (1 - p)
    where = ("after a ReLU (Linear → ReLU → Dropout → BN)" if c.placement == "after"
             else "on the Linear's output (Linear → Dropout → BN → ReLU)")  # fmt: skip
    symptom = (
        "Dropout right before a batch norm makes the variance the layer sees in training larger than in eval mode "
        "(the variance shift): the running variance, learned in training, is too large for eval, and the network "
        "does worse in eval mode."
    )
    m = (
        f"This run: dropout p = {p:g} {where}, before each of the 3 batch norms; {c.steps:,} steps at learning rate "
        f"{c.lr:g}, minibatches of {c.batch}, width {c.width}, seed {c.seed}. torch's Dropout(p) zeroes each value "
        f"with probability p and scales the rest by 1/(1 − p). For an input of mean c and variance v it keeps the "
        f"mean, and E[d²] = (v + c²)/(1 − p), so in training Var[d] = (v + c²)/(1 − p) − c², while eval mode sees "
        f"v: the ratio is 1/(1 − p) + p/(1 − p) · c²/v. Li et al. (2019) give 1/(1 − p) = {simple:.3g}, which holds "
        f"for a zero-mean input only. "
    )
    m += (
        f"Measured on each dropout alone, on the same inputs ({ISOLATED_DRAWS} masks over the training images): "
        f"{_ratios(tuple(s.isolated for s in layers))} per batch norm, against the formula's "
        f"{_ratios(tuple(s.isolated_predicted for s in layers))}; on the same inputs centred to zero mean, "
        f"{_ratios(tuple(s.centred for s in layers))}, against 1/(1 − p) = {simple:.2f}. "
    )
    matches = all(abs(s.isolated / s.isolated_predicted - 1) <= CLOSE for s in layers) and all(
        abs(s.centred / s.simple - 1) <= CLOSE for s in layers
    )
    m += "Both match the formula. " if matches else "Not every layer matches the formula within 10 %. "
    m += (
        f"The inputs here are not zero-mean: c²/v averages {_ratios(tuple(s.c2_over_v for s in layers))}, so the "
        f"shift is larger than 1/(1 − p). "
    )
    dead = [f"batch norm {k + 1}: {s.live} of {s.units}" for k, s in enumerate(layers) if s.live < s.units]
    if dead:
        m += f"(Units that never fire in eval mode are left out — {listing(dead)} units are live.) "
    shift = tuple(s.shift for s in layers)
    predicted = tuple(s.predicted for s in layers)
    m += (
        f"In the trained network, Li et al.'s shift max(real/running, running/real) — running variance against the "
        f"eval-mode variance over the test images — is {_ratios(shift)} per batch norm, against the formula's "
        f"{_ratios(predicted)} for those inputs. "
    )
    kinds = {"close to the formula (within 10 %)": [], "larger than the formula": [], "smaller than the formula": []}
    for k, (a, b) in enumerate(zip(shift, predicted, strict=True)):
        key = ("close to the formula (within 10 %)" if abs(a / b - 1) <= CLOSE
               else "larger than the formula" if a > b else "smaller than the formula")  # fmt: skip
        kinds[key].append(str(k + 1))
    said = [f"at batch norm{'s' if len(ks) > 1 else ''} {listing(ks)} {kind}" for kind, ks in kinds.items() if ks]
    m += f"So the network's shift is {listing(said)}. "
    if kinds["larger than the formula"]:
        m += (
            "The formula takes a layer's input to be the same in both modes, but in eval mode each input already "
            "comes through the batch norms before it, whose running variance was too large: the shift compounds "
            "(and a running variance is itself an average over past minibatches). "
        )
    drop = report.eval_mode["none"] - report.eval_mode["before-bn"]
    m += (
        f"Test accuracy in eval mode: {pct(report.eval_mode['before-bn'])} with dropout before each batch norm, "
        f"{pct(report.eval_mode['none'])} without dropout from the same weights and minibatches"
    )
    m += (f": a drop of {points(drop)}. " if drop > SAME
          else f": no clear drop (within {points(SAME)}), unlike Li et al.'s results on larger networks. ")  # fmt: skip
    m += f"In train mode (dropout on, minibatches of {c.batch}): {pct(report.train_mode['before-bn'])}."
    broken, reference = report.eval_mode["before-bn"], report.eval_mode["none"]
    head, exact = report.eval_mode["head"], report.exact_eval
    fix = (
        f"Fix 1 (Li et al.): no dropout between batch norms — one dropout after the last batch norm, before the "
        f"output layer. Measured: {pct(head)} in eval mode ({_verdict_fix(head, broken, reference)}), variance shift "
        f"{_ratios(tuple(s.shift_head for s in layers))} per batch norm. Fix 2: keep the network, and recompute the "
        f"running statistics after training with the model in eval mode (dropout off, batch norms in train mode), so "
        f"they are the statistics eval mode sees. Measured: variance shift "
        f"{_ratios(tuple(s.shift_exact for s in layers))}, accuracy {pct(exact)} "
        f"({_verdict_fix(exact, broken, reference)})"
    )
    if reference - broken > SAME and exact < reference - SAME:
        fix += ": the statistics are right now, but the weights were learned under the shifted ones"
    fix += (
        ". Plain torch below (one pass, the layers upstream in train mode); "
        "bnviz.recompute_batch_norm_stats(model.eval(), train_loader, mode=\"exact\") gives the exact eval-mode "
        "statistics of every layer in one call."
    )
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
    return Section(symptom, m, fix, code)


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
    return Section(symptom, m, fix, code)


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
        "Choose the statistics on purpose. To normalize both halves together and update the running statistics once "
        "per step, concatenate them into one forward. To keep them apart — a discriminator that must not compare "
        "real and fake through shared statistics is often trained on all-real and all-fake batches — keep two "
        "passes, and know that the running statistics then alternate between the two kinds of batch, the last one "
        "weighing most. Either way, recompute the running statistics before evaluating on the data eval mode will "
        "see (update_bn in one pass, or bnviz.recompute_batch_norm_stats with mode=\"exact\")."
    )
    code = """import torch

# One forward over both halves: one set of batch statistics, one running update per step
out = model(torch.cat([x_a, x_b]))
out_a, out_b = out.split([len(x_a), len(x_b)])

# Before evaluating: running statistics from the data eval mode will see (here, real images)
torch.optim.swa_utils.update_bn(real_loader, model)
model.eval()
"""
    return Section(symptom, m, fix, code)


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
    return Section(symptom, m, fix, code)


WORDS = {
    BatchesReport: batches_section, LagReport: lag_section, DropoutReport: dropout_section,
    AccumulationReport: accumulation_section, PassesReport: passes_section, CheckpointReport: checkpoint_section,
}  # fmt: skip


def section(report: object) -> Section:
    """Any section's words."""
    return WORDS[type(report)](report)  # type: ignore[arg-type]
