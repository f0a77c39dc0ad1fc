"""The training page's words: for each experiment, what the paper claims, what this run shows
(its own numbers), and where they differ and why a small reproduction might. Every verdict is
computed from the report — a run that disagrees with the paper says so. Plain text, built from
numbers and fixed words only."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bnviz.explorer.digits import CLASSES
from bnviz.explorer.mlp import PROBE_MULTIPLES, UNIT, Curve
from bnviz.explorer.text import listing, pct, points
from bnviz.explorer.training.engine import DriftReport, SeedsReport, SweepReport
from bnviz.explorer.training.url import NoiseConfig

NEAR_CHANCE = 0.2  # a final test accuracy at most this is "near chance" (chance is 10 %)
TRAINS = 0.8  # a final test accuracy at least this is "trains"
SAME = 0.03  # accuracies closer than this (3 points, 11 of 359 test images) are "about the same"
TEST_IMAGES = 359
ACTIVATION_NAMES = {"relu": "ReLU", "sigmoid": "sigmoid"}


@dataclass(frozen=True)
class Sentences:
    """The paper's claim, this run's result, and where (and why) they may differ."""

    claim: str
    shows: str
    differs: str


def seeds_text(seeds: tuple[int, ...]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {listing([str(s) for s in seeds])}"


def spread(values: tuple[float, ...]) -> str:
    """Mean and lowest–highest of accuracies over seeds."""
    mean = sum(values) / len(values)
    return pct(mean) if len(values) == 1 else f"{pct(mean)} ({pct(min(values))}–{pct(max(values))})"


def first_reaching(curve: Curve, level: float) -> int | None:
    """The first evaluated step with test accuracy at least ``level``."""
    return next((s for s, a in zip(curve.steps, curve.test_accuracy, strict=True) if a >= level), None)


def diverged(curve: Curve) -> bool:
    return not all(math.isfinite(v) for v in curve.loss)


# --- experiment 1 ----------------------------------------------------------------------------------


def drift_sentences(report: DriftReport) -> Sentences:
    """Experiment 1 (Ioffe & Szegedy 2015, Figure 1)."""
    c = report.config
    bn, plain = report.curves["bn"], report.curves["plain"]
    a_bn, a_plain = bn.final_accuracy, plain.final_accuracy
    m_bn, m_plain = bn.moved, plain.moved
    init = "torch's default initialisation" if c.init_std is None else f"Gaussian initial weights of std {c.init_std:g}"
    claim = (
        "Ioffe & Szegedy (2015, Figure 1) train a network of 3 fully connected hidden layers of 100 sigmoid units "
        "on MNIST (batch 60, plain SGD), once plain and once with batch norm before each sigmoid. With batch norm "
        "the test accuracy rises faster and higher, and the distribution of a last-layer sigmoid's input (its 15th, "
        "50th and 85th percentiles) stays steady; without it, that distribution drifts over training."
    )
    shows = (
        f"This run: {c.steps:,} steps at learning rate {c.lr:g}, seed {c.seed}, {init}, width {c.width}, batch "
        f"{c.batch}. Test accuracy is {pct(a_bn)} with batch norm and {pct(a_plain)} plain (chance: "
        f"{pct(1 / CLASSES)}). "
    )
    if a_bn >= a_plain + SAME:
        shows += "Batch norm trains better here, as in the paper"
        shows += ", and the plain network stays near chance. " if a_plain <= NEAR_CHANCE else ". "
    elif a_plain >= a_bn + SAME:
        shows += "Here the plain network does better, unlike the paper. "
    else:
        shows += f"Both end within {points(SAME)} of each other here: no gap, unlike the paper. "
    reach = {name: first_reaching(curve, 0.9) for name, curve in (("bn", bn), ("plain", plain))}
    if reach["bn"] is not None or reach["plain"] is not None:
        said = [f"at step {s:,} {'with batch norm' if n == 'bn' else 'plain'}" if s is not None else
                f"never {'with batch norm' if n == 'bn' else 'plain'}" for n, s in reach.items()]  # fmt: skip
        shows += f"90 % test accuracy is first reached {listing(said)}. "
    if diverged(plain) or diverged(bn):
        which = listing([n for n, cv in (("with batch norm", bn), ("plain", plain)) if diverged(cv)])
        shows += f"The training loss stopped being a finite number ({which}): training diverged. "
    shows += (
        f"The median of sigmoid unit {UNIT}'s input (last hidden layer, test split, eval mode) moved by "
        f"{m_bn:.2f} with batch norm and {m_plain:.2f} plain over the {len(bn.steps)} evaluations (largest minus "
        "smallest). "
    )
    if not (math.isfinite(m_bn) and math.isfinite(m_plain)):
        shows += "One of them is not a finite number, so the drift cannot be compared."
    elif m_plain > m_bn:
        ratio = f"{m_plain / m_bn:.1f} times" if m_bn > 0 else "infinitely"
        shows += f"The median drifts {ratio} further without batch norm, as in the paper."
    else:
        shows += "The median drifts no less with batch norm than without, unlike the paper."
    differs = [
        f"A small reproduction: 8×8 digits (1,438 training images) instead of MNIST's 60,000 images of 28×28, "
        f"{c.steps:,} steps instead of 50,000, one seed."
    ]
    if c.init_std is not None and a_plain <= NEAR_CHANCE:
        gain = 0.25 * c.init_std * math.sqrt(c.width)
        differs.append(
            f"In the paper the plain network learns, only more slowly; here it stays near chance. Passing back "
            f"through a sigmoid layer with weights of std {c.init_std:g} scales the gradient by about "
            f"0.25 × {c.init_std:g} × √{c.width} = {gain:.2g}, so the plain network's first layers barely move in "
            f"{c.steps:,} steps; with batch norm the scale of the weights does not matter."
        )
    if c.init_std is not None:
        differs.append(
            "With torch's default initialisation (uniform in ±1/√fan-in) the plain network starts with larger "
            "weights and gradients: choose it to see how much of the gap is the initialisation."
        )
    else:
        differs.append(
            "This run uses torch's default initialisation (uniform in ±1/√fan-in), not the paper's small Gaussian "
            "weights: the plain network starts with larger weights and gradients than in the paper."
        )
    if m_bn >= 1.0:
        differs.append(
            f"With batch norm the median still moved by {m_bn:.2f}: γ and β are learned, and in eval mode the "
            "sigmoid's input is γ·(x − running mean)/√(running var + ε) + β, so batch norm holds the distribution "
            "steady only up to the scale and shift the network learns — further at a high learning rate."
        )
    return Sentences(claim, shows, " ".join(differs))


# --- experiment 2 ----------------------------------------------------------------------------------


def sweep_sentences(report: SweepReport) -> Sentences:
    """Experiment 2 (higher learning rates)."""
    c = report.config
    claim = (
        "Batch norm lets a network train at higher learning rates (Ioffe & Szegedy 2015, §3.3). Bjorck et al. "
        "(2018) argue that this is most of its benefit: without batch norm a large learning rate makes activations "
        "and gradients grow layer by layer and training diverges, so only small steps are possible."
    )
    works: dict[str, list[float]] = {}
    best: dict[str, tuple[float, float]] = {}
    for variant in ("bn", "plain"):
        means = [m for m, _, _ in report.summary(variant)]
        works[variant] = [lr for lr, m in zip(c.lrs, means, strict=True) if m >= TRAINS]
        i = max(range(len(means)), key=means.__getitem__)
        best[variant] = (means[i], c.lrs[i])

    def where(variant: str) -> str:
        lrs = works[variant]
        return f"learning rates {listing([f'{v:g}' for v in lrs])}" if lrs else "no learning rate of the sweep"

    act = ACTIVATION_NAMES.get(c.activation, c.activation)
    init = "torch's default initialisation" if c.init_std is None else f"initial weights of std {c.init_std:g}"
    shows = (
        f"This run: {act} units, {init}, {c.steps:,} steps, {seeds_text(c.seeds)}. The mean final test "
        f"accuracy is at least {pct(TRAINS)} with batch norm at {where('bn')}, and plain at {where('plain')}. The "
        f"best means are {pct(best['bn'][0])} with batch norm (learning rate {best['bn'][1]:g}) and "
        f"{pct(best['plain'][0])} plain (learning rate {best['plain'][1]:g}). "
    )
    top_bn, top_plain = max(works["bn"], default=None), max(works["plain"], default=None)
    if top_bn is None:
        shows += "Batch norm does not train at any learning rate of this sweep, unlike the claim. "
    elif top_plain is None:
        shows += (f"The plain network reaches {pct(TRAINS)} at no learning rate of this sweep, so the sweep shows that "
                  "batch norm trains here, not that it tolerates a higher learning rate. ")  # fmt: skip
    elif top_bn > top_plain:
        shows += f"So batch norm trains at learning rates up to {top_bn / top_plain:.3g} times higher here, "
        shows += "as claimed. "
    else:
        shows += "Batch norm trains at no higher learning rate than the plain network here, unlike the claim. "
    widths = [(hi - lo, lr, v) for v in ("bn", "plain") for (_, lo, hi), lr in zip(report.summary(v), c.lrs,
                                                                                   strict=True)]  # fmt: skip
    width, lr, variant = max(widths)
    if len(c.seeds) > 1:
        name = "with batch norm" if variant == "bn" else "plain"
        shows += (
            f"The seeds disagree by up to {points(width)} at one learning rate ({name}, learning rate {lr:g}): a "
            "difference smaller than the seeds' spread is noise, not an effect."
        )
    else:
        shows += "With one seed the spread between seeds is unknown: treat small differences as noise."
    epochs = c.steps * c.batch / 1438
    differs = [
        f"Bjorck et al. train ResNets on CIFAR-10 for many epochs; this is a 3-layer MLP on 8×8 digits for "
        f"{c.steps:,} steps (about {epochs:.0f} passes over the training images)."
    ]
    failing_top = [lr for lr in c.lrs if lr > max(works["bn"], default=math.inf)]
    if works["bn"] and failing_top:
        differs.append(
            f"At learning rate {listing([f'{v:g}' for v in failing_top])} batch norm fails too: only the hidden "
            "layers are normalized here, and the output layer, updated with the same large step, can still blow "
            "up the logits."
        )
    plain = report.summary("plain")
    slow = [lr for lr, (m, _, _) in zip(c.lrs, plain, strict=True) if lr < best["plain"][1] and m < TRAINS]
    if slow:
        differs.append(
            f"At the smallest learning rates ({listing([f'{v:g}' for v in slow])}) the plain network has not "
            f"finished learning in {c.steps:,} steps: part of its gap there is speed, not stability."
        )  # fmt: skip
    return Sentences(claim, shows, " ".join(differs))


# --- experiment 3 ----------------------------------------------------------------------------------


def noise_sentences(report: SeedsReport) -> Sentences:
    """Experiment 3 (Santurkar et al. 2018: noisy batch norm, and smoothness)."""
    c: NoiseConfig = report.config  # type: ignore[assignment]
    claim = (
        "Santurkar et al. (2018) add noise after each batch norm, with a non-zero mean and a non-unit variance drawn "
        'afresh at every step: it brings back the shifting input distributions ("internal covariate shift") '
        "that batch norm is said to remove. The network still trains about as well as with plain batch norm, while "
        "the same noise without batch norm does not train. They conclude that batch norm helps by making the loss "
        "smoother, and measure it: along the gradient, the loss changes less with batch norm."
    )
    f = {v: report.finals(v) for v in report.curves}
    mean = {v: sum(a) / len(a) for v, a in f.items()}
    shows = (
        f"This run: {c.steps:,} steps at learning rate {c.lr:g}, {seeds_text(c.seeds)}, noise means drawn in "
        f"±{c.noise_mean:g} and standard deviations in 1 to {c.noise_std:g}. Final test accuracy (mean, lowest–"
        f"highest over the seeds): {spread(f['bn'])} with batch norm, {spread(f['noisy-bn'])} with batch norm and "
        f"noise, {spread(f['noise'])} with the noise and no batch norm, {spread(f['plain'])} plain. "
    )
    gap = mean["bn"] - mean["noisy-bn"]
    if abs(gap) <= SAME:
        shows += f"Batch norm with noise trains about as well as without (within {points(SAME)}), as in the paper; "
    elif gap > 0:
        shows += f"Batch norm with noise ends {points(gap)} below batch norm alone: not quite as well as in the paper; "
    else:
        shows += f"Batch norm with noise ends {points(-gap)} above batch norm alone; "
    if mean["noise"] <= NEAR_CHANCE:
        shows += "the same noise without batch norm stays near chance, as in the paper. "
    elif mean["noise"] < mean["noisy-bn"] - SAME:
        shows += (f"the same noise without batch norm trains, but {points(mean['noisy-bn'] - mean['noise'])} worse "
                  "than with batch norm: the paper's direction, not its size. ")  # fmt: skip
    else:
        shows += "the same noise without batch norm trains as well, unlike the paper. "
    pairs = [(a, b) for cb, cp in zip(report.curves["bn"], report.curves["plain"], strict=True)
             for a, b in zip(cb.smoothness, cp.smoothness, strict=True)]  # fmt: skip
    if pairs:
        smoother = sum(a < b for a, b in pairs)
        med_bn = statistics.median(a for a, _ in pairs)
        med_plain = statistics.median(b for _, b in pairs)
        shows += (
            f"The loss's range along the gradient is smaller with batch norm at {smoother} of {len(pairs)} probes "
            f"(median {med_bn:.3g} with batch norm, {med_plain:.3g} plain)"
        )
        shows += ", as in the paper." if smoother > len(pairs) / 2 else ", unlike the paper."
        first = [(s, a < b) for cb, cp in zip(report.curves["bn"], report.curves["plain"], strict=True)
                 for s, a, b in zip(cb.probe_steps, cb.smoothness, cp.smoothness, strict=True)]  # fmt: skip
        at_start = [smaller for s, smaller in first if s == 1]
        later = [smaller for s, smaller in first if s != 1]
        if at_start and not any(at_start) and later:
            shows += (f" At the first step, from the initial weights, the range is larger with batch norm on every "
                      f"seed; at the later probes it is smaller at {sum(later)} of {len(later)}.")  # fmt: skip
    etas = f"{PROBE_MULTIPLES[0] * c.lr:g} to {PROBE_MULTIPLES[-1] * c.lr:g}"
    differs = (
        f"Santurkar et al. train VGG networks on CIFAR-10; this is a 3-layer ReLU MLP on 8×8 digits for "
        f"{c.steps:,} steps. Their noise parameters are not this page's, and here the noise is switched off at "
        f"test time (as dropout is). The smoothness is probed on one minibatch, in training mode, with step sizes "
        f"{etas} along the gradient, at {len(report.curves['bn'][0].probe_steps)} points of training; "
        "their plots follow it at every step."
    )
    return Sentences(claim, shows, differs)


# --- experiment 4 ----------------------------------------------------------------------------------


def placement_sentences(report: SeedsReport) -> Sentences:
    """Experiment 4 (batch norm before or after the ReLU)."""
    c = report.config
    claim = (
        "Ioffe & Szegedy put batch norm before the nonlinearity, on Wx + b; many people put it after the ReLU "
        "instead. Published comparisons are mixed: neither order is established as better in general."
    )
    before, after = report.finals("before"), report.finals("after")
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    d = sum(diffs) / len(diffs)
    n = len(diffs)
    shows = (
        f"This run: {seeds_text(c.seeds)}, learning rate {c.lr:g}, {c.steps:,} steps, ReLU units with torch's "
        f"default initialisation, both orders from the same weights and minibatches per seed. "
        f"Final test accuracy (mean, lowest–highest): {spread(before)} with Linear → BN → ReLU, {spread(after)} with "
        f"Linear → ReLU → BN. Per seed, after minus before: "
        f"{', '.join(f'{100 * x:+.1f}' for x in diffs)} points (one test image is {points(1 / TEST_IMAGES)}). "
    )  # fmt: skip
    ahead_before, ahead_after = sum(x < 0 for x in diffs), sum(x > 0 for x in diffs)
    if n > 1 and (ahead_before == n or ahead_after == n) and abs(d) > 1 / TEST_IMAGES:
        which = "before" if ahead_before == n else "after"
        shows += (
            f"Batch norm {which} the ReLU is ahead on every seed, by {points(abs(d))} on average: a consistent "
            f"difference for this network and these settings, and a small one — not a general rule."
        )
    else:
        shows += (
            f"{ahead_before} of {n} seeds favour before, {ahead_after} after, with a mean difference (after minus "
            f"before) of {100 * d:+.1f} points: this run does not tell the two orders apart."
        )
    differs = (
        f"One small MLP on 8×8 digits, one learning rate, {c.steps:,} steps. The published comparisons use deep "
        "convolutional networks, where the order interacts with the learning rate, the initialisation and dropout; "
        "differences of this size can flip with any of them."
    )
    return Sentences(claim, shows, differs)
