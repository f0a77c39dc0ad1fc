"""The training page's words: for each experiment, what the paper claims, what this run shows
(its own numbers over every seed, and each claim's verdict: how many seeds it holds on, by
``bnviz.explorer.claims``), and where they differ and why a small reproduction might. A claim is
called "as in the paper" only when it holds on every seed shown. Plain text, built from numbers and
fixed words only."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bnviz.explorer.claims import MIN_SEEDS, ONE_IMAGE, SAME, paired, sentence
from bnviz.explorer.digits import CLASSES
from bnviz.explorer.mlp import PROBE_MULTIPLES, UNIT, Curve
from bnviz.explorer.text import listing, pct, points, seeds_text
from bnviz.explorer.training.engine import DRIFT_MARGIN, TRAINS, SeedsReport, SweepReport
from bnviz.explorer.training.url import PAPER_NOISE, NoiseConfig

NEAR_CHANCE = 0.2  # a final test accuracy at most this is "near chance" (chance is 10 %)
ACTIVATION_NAMES = {"relu": "ReLU", "sigmoid": "sigmoid"}


@dataclass(frozen=True)
class Sentences:
    """The paper's claim, this run's result, and where (and why) they may differ."""

    claim: str
    shows: str
    differs: str


def spread(values: tuple[float, ...]) -> str:
    """Mean and lowest–highest of accuracies over seeds."""
    mean = sum(values) / len(values)
    return pct(mean) if len(values) == 1 else f"{pct(mean)} ({pct(min(values))}–{pct(max(values))})"


def per_seed(differences: tuple[float, ...]) -> str:
    """Paired accuracy differences in points, seed by seed: ``"+1.4, −0.3 and +2.2 points"``."""
    return listing([f"{100 * d:+.1f}".replace("-", "−") for d in differences]) + " points"


def first_reaching(curve: Curve, level: float) -> int | None:
    """The first evaluated step with test accuracy at least ``level``."""
    return next((s for s, a in zip(curve.steps, curve.test_accuracy, strict=True) if a >= level), None)


def diverged(curve: Curve) -> bool:
    return not all(math.isfinite(v) for v in curve.loss)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


# --- experiment 1 ----------------------------------------------------------------------------------


def drift_sentences(report: SeedsReport) -> Sentences:
    """Experiment 1 (Ioffe & Szegedy 2015, Figure 1), over the seeds."""
    c = report.config
    bn, plain = report.curves["bn"], report.curves["plain"]
    f_bn, f_plain = report.finals("bn"), report.finals("plain")
    init = "torch's default initialisation" if c.init_std is None else f"Gaussian initial weights of std {c.init_std:g}"
    claim = (
        "Ioffe & Szegedy (2015, Figure 1) train a network of 3 fully connected hidden layers of 100 sigmoid units "
        "on MNIST (batch 60, plain SGD, weights initialized to small random Gaussian values), once plain and once "
        "with batch norm before each sigmoid. With batch norm the test accuracy rises faster and higher, and the "
        "distribution of a last-layer sigmoid's input (its 15th, 50th and 85th percentiles) stays steady; without "
        "it, that distribution drifts over training. Both networks learn; batch norm learns faster."
    )
    shows = (
        f"{c.steps:,} steps at learning rate {c.lr:g}, {seeds_text(c.seeds)}, {init}, width {c.width}, "
        f"batch {c.batch}. Final test accuracy (mean, lowest–highest over the seeds): {spread(f_bn)} with batch "
        f"norm and {spread(f_plain)} plain (chance: {pct(1 / CLASSES)}). "
    )
    dead = all(a <= NEAR_CHANCE for a in f_plain)
    shows += sentence(report.ahead("bn", "plain"), "batch norm ends ahead", paper=not dead)
    if dead:
        shows += ("The plain network stays near chance on every seed: with these weights it never learns, so this "
                  "compares batch norm against a dead network, not the paper's two learning ones. ")  # fmt: skip
    reach = {name: [first_reaching(cv, 0.9) for cv in curves] for name, curves in (("bn", bn), ("plain", plain))}
    said = []
    for name, steps in reach.items():
        who = "with batch norm" if name == "bn" else "plain"
        got = [s for s in steps if s is not None]
        if len(got) == len(steps):
            said.append(f"{who} at step {statistics.median(got):,.0f} (median over the seeds)")
        elif got:
            said.append(f"{who} on {len(got)} of {len(steps)} seeds")
        else:
            said.append(f"never {who}")
    shows += f"90 % test accuracy is first reached {listing(said)}. "
    diverging = [n for n, curves in (("with batch norm", bn), ("plain", plain)) if any(map(diverged, curves))]
    if diverging:
        shows += f"The training loss stopped being a finite number ({listing(diverging)}, some seed): it diverged. "
    m_bn, m_plain = _mean([cv.moved for cv in bn]), _mean([cv.moved for cv in plain])
    shows += (
        f"The median of sigmoid unit {UNIT}'s input (last hidden layer, test split, eval mode) moved by {m_bn:.2f} "
        f"with batch norm and {m_plain:.2f} plain (mean over the seeds; largest minus smallest over the evaluations "
        f"after step 0, a margin of {DRIFT_MARGIN:g}). "
    )
    shows += sentence(report.drifts_further(), "the median drifts further without batch norm", paper=not dead)
    differs = [
        f"A small reproduction: 8×8 digits (1,438 training images) instead of MNIST's 60,000 images of 28×28, "
        f"{c.steps:,} steps instead of 50,000."
    ]
    if c.init_std is not None and dead:
        gain = 0.25 * c.init_std * math.sqrt(c.width)
        differs.append(
            f"In the paper the plain network learns, only more slowly; here it stays near chance. Passing back "
            f"through a sigmoid layer with weights of std {c.init_std:g} scales the gradient by about "
            f"0.25 × {c.init_std:g} × √{c.width} = {gain:.2g}, so the plain network's first layers barely move in "
            f"{c.steps:,} steps; with batch norm the scale of the weights does not matter. The paper does not give "
            "its std; with 0.1 (this page's default) both networks learn."
        )
    elif c.init_std is not None:
        differs.append(
            f"The paper's weights are \"small random Gaussian values\" without a stated std; with std {c.init_std:g} "
            "both networks learn here, as in the paper. With 0.01 the plain network never learns in "
            f"{c.steps:,} steps (the second view below)."
        )
    else:
        differs.append(
            "This run uses torch's default initialisation (uniform in ±1/√fan-in), not the paper's small Gaussian "
            "weights."
        )
    if m_bn >= 1.0:
        differs.append(
            f"With batch norm the median still moved by {m_bn:.2f}: γ and β are learned, and in eval mode the "
            "sigmoid's input is γ·(x − running mean)/√(running var + ε) + β, so batch norm holds the distribution "
            "steady only up to the scale and shift the network learns — further at a high learning rate."
        )
    return Sentences(claim, shows, " ".join(differs))


# --- experiment 2 ----------------------------------------------------------------------------------


def _lrs(values: list[float]) -> str:
    return listing([f"{v:g}" for v in values])


def sweep_sentences(report: SweepReport) -> Sentences:
    """Experiment 2 (higher learning rates), over the seeds."""
    c = report.config
    claim = (
        "Batch norm lets a network train at higher learning rates (Ioffe & Szegedy 2015, §3.3). Bjorck et al. "
        "(2018) argue that this is most of its benefit: without batch norm a large learning rate makes activations "
        "and gradients grow layer by layer and training diverges, so only small steps are possible."
    )
    act = ACTIVATION_NAMES.get(c.activation, c.activation)
    init = "torch's default initialisation" if c.init_std is None else f"initial weights of std {c.init_std:g}"
    highest = {v: report.highest_training(v) for v in ("bn", "plain")}

    def where(variant: str) -> str:
        tops = highest[variant]
        if all(t == 0 for t in tops):
            return "at no learning rate of the sweep"
        if len(set(tops)) == 1:
            return f"up to learning rate {tops[0]:g} on every seed"
        return f"up to learning rate {min(tops):g}–{max(tops):g} depending on the seed"

    shows = (
        f"{act[0].upper()}{act[1:]} units, {init}, {c.steps:,} steps, {seeds_text(c.seeds)}. A network \"trains\" "
        f"when it ends at {pct(TRAINS)} test accuracy or more: with batch norm {where('bn')}, plain {where('plain')}. "
    )
    shows += sentence(report.higher(), "batch norm trains at a higher learning rate than the plain network", paper=True)
    failures, diverged_runs, failing_runs = [], 0, 0
    for variant, name in (("plain", "plain"), ("bn", "with batch norm")):
        top = min(highest[variant]) if highest[variant] else 0.0
        failing = [i for i, lr in enumerate(c.lrs) if lr > top and report.summary(variant)[i][0] < TRAINS]
        if not failing:
            continue
        runs = [(report.loss[variant][i][k], report.dead[variant][i][k]) for i in failing for k in range(len(c.seeds))]
        diverged = sum(not math.isfinite(loss) for loss, _ in runs)
        dead = [d for loss, d in runs if math.isfinite(loss) and math.isfinite(d)]
        diverged_runs, failing_runs = diverged_runs + diverged, failing_runs + len(runs)
        text = f"{name} at learning rate {_lrs([c.lrs[i] for i in failing])} ({len(runs)} trainings): "
        if diverged:
            text += f"{diverged} diverged (the loss is not a number)" + (", and in the others " if dead else "")
        if dead:
            text += (f"{pct(min(dead))}–{pct(max(dead))} of the last hidden layer's units never fire on a test image "
                     "while the loss stays finite")  # fmt: skip
        failures.append(text)
    if failures:
        mostly = "dead units rather than divergence" if 2 * diverged_runs < failing_runs else "mostly divergence"
        shows += (f"Where the networks fail, the run shows {mostly}: {'; '.join(failures)}. "
                  "A dead ReLU passes no gradient, so it never recovers.")  # fmt: skip
    differs = [
        f"Bjorck et al. train ResNets on CIFAR-10 for many epochs; this is a 3-layer MLP on 8×8 digits for "
        f"{c.steps:,} steps (about {c.steps * c.batch / 1438:.0f} passes over the training images). Their failure "
        "is divergence; here, at these learning rates, it is dying ReLUs."
    ]
    plain = report.summary("plain")
    best_plain = max(range(len(c.lrs)), key=lambda i: plain[i][0])
    slow = [lr for i, lr in enumerate(c.lrs) if i < best_plain and plain[i][0] < TRAINS]
    if slow:
        differs.append(
            f"At the smallest learning rates ({_lrs(slow)}) the plain network has not finished learning in "
            f"{c.steps:,} steps: part of its gap there is speed, not stability."
        )
    return Sentences(claim, shows, " ".join(differs))


# --- experiment 3 ----------------------------------------------------------------------------------


def noise_sentences(report: SeedsReport) -> Sentences:
    """Experiment 3 (Santurkar et al. 2018: noisy batch norm, and smoothness), over the seeds."""
    c: NoiseConfig = report.config  # type: ignore[assignment]
    p = PAPER_NOISE
    claim = (
        "Santurkar et al. (2018, Figure 2) add noise after every batch norm of a VGG network on CIFAR-10: \"at "
        "every time step, our noise model consists of perturbing each activation for each sample in a batch with "
        "noise i.i.d. from a non-zero mean, non-unit variance distribution\" (their Appendix A.2.1) — per step and "
        f"unit a mean μ ~ U(−{p.mu:g}, {p.mu:g}) and a scale σ ~ U(1, {p.sigma:g}), then per sample a ← s·a + m "
        f"with m ~ U(μ − {p.r_mu:g}, μ + {p.r_mu:g}) and s ~ N(σ, {p.r_sigma:g}). The noisy network nearly matches "
        "batch norm and trains much better than the standard network, though its activations shift more: so, they "
        "conclude, batch norm does not help by removing \"internal covariate shift\" but by making the loss smoother, "
        "and they measure that along the gradient. At the end of their §2.1 they add, in one sentence and without a "
        "figure, that \"adding the same amount of noise to the activations of the standard (non-BatchNorm) network "
        "prevents it from training entirely\"."
    )
    f = {v: report.finals(v) for v in report.curves}
    shows = (
        f"{c.steps:,} steps at learning rate {c.lr:g}, {seeds_text(c.seeds)}, the paper's noise model and "
        f"values. Final test accuracy (mean, lowest–highest over the seeds): {spread(f['bn'])} with batch norm, "
        f"{spread(f['noisy-bn'])} with batch norm and the paper's noise, {spread(f['plain'])} plain, and "
        f"{spread(f['noise'])} with the same noise and no batch norm. "
    )
    near = paired(f["noisy-bn"], f["bn"], SAME)
    within = sum(abs(d) <= SAME for d in near.differences)
    if near.n >= MIN_SEEDS:
        shows += (f"Noisy batch norm ends within {points(SAME)} of batch norm on {within} of {near.n} seeds"
                  f"{' — it nearly matches it, as in the paper' if within == near.n else ''}. ")  # fmt: skip
    shows += sentence(report.ahead("noisy-bn", "plain"), "noisy batch norm ends ahead of the plain network", paper=True)
    untrained = sum(a <= NEAR_CHANCE for a in f["noise"])
    shows += f"The paper's noise without batch norm stays near chance on {untrained} of {len(f['noise'])} seeds"
    if untrained == len(f["noise"]):
        shows += ", as the §2.1 sentence says. "
    else:
        mean_noise = sum(f["noise"]) / len(f["noise"])
        shows += (f": with this noise the plain network does train here (mean {pct(mean_noise)}), unlike the §2.1 "
                  "sentence, which no figure of theirs shows. ")  # fmt: skip
    strong = report.finals("noisy-bn-strong")
    shows += (
        f"A stronger noise, this page's earlier one (additive Gaussian, mean in ±{c.noise_mean:g}, standard deviation "
        f"1 to {c.noise_std:g}): batch norm with it ends at {spread(strong)}. "
    )
    shows += sentence(report.ahead("noisy-bn-strong", "plain"), "batch norm with the stronger noise ends ahead of the "
                      "plain network", paper=False)  # fmt: skip
    pairs = [(a, b) for cb, cp in zip(report.curves["bn"], report.curves["plain"], strict=True)
             for s, a, b in zip(cb.probe_steps, cb.smoothness, cp.smoothness, strict=True) if s != 1]  # fmt: skip
    if pairs:
        smoother = sum(a < b for a, b in pairs)
        med_bn, med_plain = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
        shows += (
            f"The loss's range along the gradient is smaller with batch norm at {smoother} of {len(pairs)} probes "
            f"after the first step (median {med_bn:.3g} with batch norm, {med_plain:.3g} plain)"
        )
        shows += ", as in the paper." if smoother == len(pairs) else (
            ", on most of them." if smoother > len(pairs) / 2 else ", unlike the paper.")  # fmt: skip
    etas = f"{PROBE_MULTIPLES[0] * c.lr:g} to {PROBE_MULTIPLES[-1] * c.lr:g}"
    differs = (
        f"Santurkar et al. train VGG networks on CIFAR-10; this is a 3-layer ReLU MLP on 8×8 digits for "
        f"{c.steps:,} steps. Their N(σ, {p.r_sigma:g}) is read here with {p.r_sigma:g} as the standard deviation "
        "(the text does not say). The noise is switched off at test time (as dropout is). The smoothness is probed on "
        f"one minibatch, in training mode, with step sizes {etas} along the gradient, at "
        f"{len(report.curves['bn'][0].probe_steps)} points of training; their plots follow it at every step."
    )
    return Sentences(claim, shows, differs)


# --- experiment 4 ----------------------------------------------------------------------------------


def placement_sentences(report: SeedsReport) -> Sentences:
    """Experiment 4 (batch norm before or after the ReLU), over the seeds."""
    c = report.config
    claim = (
        "Ioffe & Szegedy put batch norm before the nonlinearity, on Wx + b; many people put it after the ReLU "
        "instead. Published comparisons are mixed: neither order is established as better in general."
    )
    before, after = report.finals("before"), report.finals("after")
    v = report.ahead("before", "after")
    shows = (
        f"{seeds_text(c.seeds).capitalize()}, learning rate {c.lr:g}, {c.steps:,} steps, ReLU units with torch's "
        f"default initialisation, both orders from the same weights and minibatches per seed. Final test accuracy "
        f"(mean, lowest–highest): {spread(before)} with Linear → BN → ReLU, {spread(after)} with Linear → ReLU → BN. "
        f"Per seed, before minus after: {per_seed(v.differences)} (one test image is {points(ONE_IMAGE)}, the "
        "margin). "
    )  # fmt: skip
    if v.kind == "holds":
        shows += (f"Batch norm before the ReLU is ahead on all {v.n} seeds, by {points(v.mean)} on average: a "
                  "consistent difference for this network and these settings, and a small one — not a general rule.")
    elif v.kind == "too few seeds":
        shows += sentence(v, "batch norm before the ReLU ends ahead", paper=False)
    elif v.against == v.n:
        shows += (f"Batch norm after the ReLU is ahead on all {v.n} seeds, by {points(-v.mean)} on average: a "
                  "consistent difference for this network and these settings — not a general rule.")
    else:
        shows += (f"Before is ahead on {v.k} of {v.n} seeds and after on {v.against} (the rest within one test "
                  f"image), a mean difference of {100 * v.mean:+.1f} points: ")  # fmt: skip
        shows += ("this run does not tell the two orders apart." if v.kind == "no difference" else
                  "a lead on most seeds, not on every one, and a small one — not a consistent difference.")  # fmt: skip
    differs = (
        f"One small MLP on 8×8 digits, one learning rate, {c.steps:,} steps. The published comparisons use deep "
        "convolutional networks, where the order interacts with the learning rate, the initialisation and dropout; "
        "differences of this size can flip with any of them — and with the seeds: more seeds can turn a lead into "
        "no difference at all."
    )
    return Sentences(claim, shows, differs)
