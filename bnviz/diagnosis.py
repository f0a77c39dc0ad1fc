r"""``bnviz.diagnose``: what is wrong with the batch norms of a model or a state dict.

One row per batch norm (name, kind, channels, momentum, eps, ``num_batches_tracked``, quantiles of
its running statistics and of γ) and a list of findings, each with a stable check id, a severity,
the layer, a one-line message with the measured value, the fix, and a path into the app where a
page explains it. Thresholds, severities and the reason for each are in ``docs/doctor.md``
(and ``CHECKS`` below).

Three sources of evidence, and the checks each allows:

- the state alone (a state dict is enough): ``stats-never-updated``, ``nonfinite-stats``,
  ``tiny-running-var``, ``dead-channels``;
- the model (momentum, eps, modes and the graph live in the module, not the state):
  ``tf-momentum``, ``tf-eps``, ``bias-before-norm``, ``foldable``, ``train-mode-at-eval``,
  ``frozen-but-updating``;
- batches: ``stats-mismatch`` and ``batch-too-small``, and a recalibration with
  ``recompute_batch_norm_stats`` (exact mode) whose before/after the report shows.

With batches, each layer's input is measured with the model in eval mode (what the eval network
feeds it), per channel c over everything that reaches it (float64, Chan's merge, as in
``bnviz.stats``), and compared with the running statistics:

.. math::
    z_c = \frac{\bar x_c - \hat\mu_c}{\sqrt{\hat\sigma^2_c + \epsilon}}, \qquad
    r_c = \ln\frac{s^2_c + \epsilon}{\hat\sigma^2_c + \epsilon}

and the layer's shift is the root mean square of z and of r over its channels.

Nothing of the caller's model is changed: the checks read it, and everything that runs a forward
runs on a deep copy.
"""

from __future__ import annotations

import copy
import html
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from bnviz.fold import conv_bn_pairs
from bnviz.stats import _batch_norms, _hook, _input, _Moments, recompute_batch_norm_stats

Severity = Literal["error", "warning", "note"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")
SCHEMA_VERSION = 1

TORCH_EPS = 1e-5  # torch's default eps: what a state dict alone is assumed to use
TF_MOMENTUM = 0.5  # torch weights the new batch by momentum (default 0.1); Keras weights the old estimate (0.99)
TF_EPS = 1e-3  # Keras' and TensorFlow's default eps
DEAD_GAMMA = 1e-4  # |γ| under this: the channel's normalized signal is scaled below 1e-4 (γ starts at 1)
MISMATCH_Z = 0.5  # RMS over channels of the mean's shift, in running standard deviations
MISMATCH_LOG_VAR = math.log(2.0)  # RMS over channels of ln(batch var / running var): a factor of 2
SMALL_BATCH_VALUES = 16  # values per channel per batch under which batch statistics are noisy


@dataclass(frozen=True)
class Check:
    """One check: its stable id, what it needs (``state``, ``model`` or ``batches``), its severity,
    the reason for its threshold, and the page that explains it."""

    id: str
    needs: Literal["state", "model", "batches"]
    severity: Severity
    reason: str
    link: str


CHECKS: dict[str, Check] = {c.id: c for c in (
    Check("stats-never-updated", "state", "error",
          "running mean exactly 0 and variance exactly 1 in every channel, or num_batches_tracked 0: eval mode "
          "then normalizes with the initial values, not the data's", "/eval-gap"),
    Check("nonfinite-stats", "state", "error",
          "a NaN or inf in running_mean or running_var makes every eval output of that channel NaN", "/eval-gap"),
    Check("tiny-running-var", "state", "warning",
          "running variance below eps: the eval output's variance var/(var + eps) is under 1/2, so eps, not the "
          "data, sets the scale, and the gain 1/√(var + eps) amplifies whatever reaches the channel",
          "/?eps=0.001"),
    Check("dead-channels", "state", "warning",
          f"|γ| < {DEAD_GAMMA:g}: the channel passes β only (an error when a trained layer's every γ is 0; a note when "
          "the statistics were never updated, as with a residual block's last norm initialised to zero on purpose)",
          "/family"),
    Check("tf-momentum", "model", "error",
          f"momentum ≥ {TF_MOMENTUM}: torch's running = (1 − m)·running + m·batch, so Keras' 0.99 keeps 99 % of the "
          "last batch — the running statistics are one batch's, not the population's; torch's equivalent is 0.01",
          "/?momentum=0.99&steps=20"),
    Check("tf-eps", "model", "note",
          f"eps = {TF_EPS:g}, Keras' default (torch's is 1e-5): harmless if trained so, a difference when weights "
          "come from Keras", "/?eps=0.001"),
    Check("bias-before-norm", "model", "note",
          "a conv or linear bias feeding a batch norm is cancelled by its mean subtraction in training: a "
          "parameter that learns nothing (bias=False)", "/inference"),
    Check("foldable", "model", "note",
          "conv/linear → batch norm pairs that bnviz.fold_batch_norms can fold into one layer for inference",
          "/inference"),
    Check("train-mode-at-eval", "model", "error",
          "batch norms in training mode inside a model in eval mode use each batch's statistics at inference (an "
          "error); the reverse — frozen batch norms in a training model — is a note, often on purpose", "/eval-gap"),
    Check("frozen-but-updating", "model", "warning",
          "γ and β frozen (requires_grad False) while the layer, in training mode, still updates its running "
          "statistics: usually meant to be frozen (call .eval() on it, or FrozenBatchNorm)", "/eval-gap"),
    Check("stats-mismatch", "batches", "warning",
          f"RMS over channels of z > {MISMATCH_Z} or of ln(var ratio) > ln 2: the eval-mode input is not what the "
          "running statistics describe; the first such layer is where an eval gap starts", "/eval-gap"),
    Check("batch-too-small", "batches", "warning",
          f"fewer than {SMALL_BATCH_VALUES} values per channel per batch: statistics of batches this small are noisy "
          "(training mode) and this recalibration rests on few values", "/training"),
)}

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
QUANTILE_NAMES = ("min", "q25", "median", "q75", "max")


@dataclass(frozen=True)
class Finding:
    """One problem (or remark) about one layer: ``check`` is a key of ``CHECKS``."""

    check: str
    severity: Severity
    layer: str
    message: str
    fix: str
    link: str


@dataclass
class LayerRow:
    """One batch norm: what the state and, where there is one, the module say."""

    name: str
    kind: str
    channels: int
    momentum: float | None  # None: a cumulative average, or unknown (a state dict)
    eps: float | None  # None: unknown (a state dict; torch's 1e-5 is assumed)
    num_batches_tracked: int | None
    training: bool | None
    running_mean: dict[str, float | None]
    running_var: dict[str, float | None]
    weight: dict[str, float | None] | None


@dataclass
class Shift:
    """A layer's eval-mode input against its running statistics: RMS over channels of z and of
    ln(var ratio), the values per channel per batch (smallest batch), and the batches seen."""

    layer: str
    mean_z: float
    log_var_ratio: float
    values_per_batch: int
    batches: int


@dataclass
class Report:
    """What ``diagnose`` found. ``to_dict()`` is JSON-ready (``docs/doctor.md`` gives the schema);
    ``str(report)`` is a text table, and a notebook shows an HTML table."""

    source: Literal["model", "state_dict"]
    layers: list[LayerRow]
    findings: list[Finding]
    unavailable: dict[str, str] = field(default_factory=dict)  # check id -> why it did not run
    before: list[Shift] | None = None
    after: list[Shift] | None = None

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def exit_status(self) -> int:
        """0 when no finding is an error, 1 otherwise (the command line's exit status)."""
        return 1 if self.errors else 0

    def to_dict(self) -> dict[str, Any]:
        """Plain lists, dicts, strings, numbers and None (a non-finite number becomes None), so
        that ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        from bnviz import __version__

        return _finite({
            "schema": SCHEMA_VERSION,
            "bnviz": __version__,
            "source": self.source,
            "layers": [asdict(r) for r in self.layers],
            "findings": [asdict(f) for f in self.findings],
            "unavailable": dict(self.unavailable),
            "recalibration": None if self.before is None else {
                "before": [asdict(s) for s in self.before],
                "after": [asdict(s) for s in self.after or []],
            },
        })

    def table(self) -> list[list[str]]:
        """The layer table as rows of strings, header first."""
        rows = [["layer", "kind", "C", "momentum", "eps", "tracked", "running mean (min / median / max)",
                 "running var (min / median / max)", "γ (min / max)"]]
        for r in self.layers:
            rows.append([
                r.name, r.kind, str(r.channels), _num(r.momentum, "?" if r.eps is None else "None"),
                _num(r.eps, "?"), _num(r.num_batches_tracked, "?"),
                " / ".join(_num(r.running_mean[k]) for k in ("min", "median", "max")),
                " / ".join(_num(r.running_var[k]) for k in ("min", "median", "max")),
                "—" if r.weight is None else f"{_num(r.weight['min'])} / {_num(r.weight['max'])}",
            ])
        return rows

    def __str__(self) -> str:
        rows = self.table()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append("")
        if not self.findings:
            lines.append("No findings.")
        for f in self.findings:
            lines.append(f"{f.severity:<7} {f.check:<20} '{f.layer}': {f.message}")
            lines.append(f"{'':<28} fix: {f.fix} (explained at {f.link})")
        if self.before is not None and self.after is not None:
            lines += ["", "Recalibration (recompute_batch_norm_stats, exact): RMS z and RMS ln(var ratio), "
                      "before → after"]
            for b, a in zip(self.before, self.after, strict=True):
                lines.append(f"  {b.layer}: z {b.mean_z:.3g} → {a.mean_z:.3g};  ln ratio {b.log_var_ratio:.3g} → "
                             f"{a.log_var_ratio:.3g}")
        for why, checks in by_reason(self.unavailable).items():
            lines.append(f"not checked: {', '.join(checks)} — {why}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The notebook's view: the layer table and the findings, every name escaped."""
        e = html.escape
        rows = self.table()
        head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        items = "".join(
            f"<li><b>{e(f.severity)}</b> <code>{e(f.check)}</code> {e(f.layer)}: {e(f.message)} — fix: {e(f.fix)}</li>"
            for f in self.findings
        )
        return f"<table><tr>{head}</tr>{body}</table><ul>{items or '<li>No findings.</li>'}</ul>"


def by_reason(unavailable: Mapping[str, str]) -> dict[str, list[str]]:
    """The checks that did not run (check id -> why), grouped by their reason."""
    reasons: dict[str, list[str]] = {}
    for check, why in unavailable.items():
        reasons.setdefault(why, []).append(check)
    return reasons


def _num(v: float | int | None, none: str = "—") -> str:
    if v is None:
        return none
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _quantiles(t: Tensor | None) -> dict[str, float | None]:
    """min, quartiles and max of ``t``'s finite values (None when it has none)."""
    if t is None:
        return dict.fromkeys(QUANTILE_NAMES)
    v = t.detach().double().reshape(-1).cpu()
    v = v[v.isfinite()]
    if v.numel() == 0:
        return dict.fromkeys(QUANTILE_NAMES)
    q = torch.quantile(v, torch.tensor(QUANTILES, dtype=torch.float64))
    return dict(zip(QUANTILE_NAMES, (float(x) for x in q), strict=True))


# ---------------------------------------------------------------------------------------------
# The layers: from a model's modules, or from a state dict's keys
# ---------------------------------------------------------------------------------------------


@dataclass
class _Norm:
    """A batch norm's tensors and, for a module, the module itself."""

    name: str
    running_mean: Tensor
    running_var: Tensor
    weight: Tensor | None
    num_batches_tracked: Tensor | None
    module: nn.Module | None = None


def _from_state(state: Mapping[str, Any]) -> list[_Norm]:
    """Every ``<prefix>running_mean`` with a ``<prefix>running_var``, in the state dict's order.

    Raises:
        ValueError: no such pair, or shapes that do not agree within a layer.
    """
    norms = []
    for key, mean in state.items():
        if not (isinstance(key, str) and key.endswith("running_mean") and isinstance(mean, Tensor)):
            continue
        prefix = key[: -len("running_mean")]
        var = state.get(prefix + "running_var")
        if not isinstance(var, Tensor):
            continue
        name = prefix.rstrip(".") or "(top level)"
        weight, tracked = state.get(prefix + "weight"), state.get(prefix + "num_batches_tracked")
        if mean.dim() != 1 or var.shape != mean.shape:
            raise ValueError(f"diagnose: layer {name!r} has running_mean {tuple(mean.shape)} and running_var "
                             f"{tuple(var.shape)}: a batch norm's are two vectors of the same length")
        if isinstance(weight, Tensor) and weight.shape != mean.shape:
            raise ValueError(f"diagnose: layer {name!r} has weight {tuple(weight.shape)} but {mean.numel()} channels "
                             "of running statistics")
        norms.append(_Norm(name, mean, var, weight if isinstance(weight, Tensor) else None,
                           tracked if isinstance(tracked, Tensor) else None))
    if not norms:
        raise ValueError(
            "diagnose: the state dict holds no batch norm (no '<name>.running_mean' with a '<name>.running_var'); "
            "layers built with track_running_stats=False have nothing to check"
        )
    return norms


def _from_model(model: nn.Module) -> list[_Norm]:
    norms = [
        _Norm(layer.name, layer.module.running_mean, layer.module.running_var, layer.module.weight,
              layer.module.num_batches_tracked, layer.module)
        for layer in _batch_norms(model)
    ]
    if not norms:
        raise ValueError(
            "diagnose: the model has no batch norm with running statistics (BatchNorm1d/2d/3d, SyncBatchNorm or "
            "bnviz.BatchNorm* with track_running_stats=True)"
        )
    return norms


def _row(n: _Norm) -> LayerRow:
    m = n.module
    return LayerRow(
        name=n.name,
        kind=type(m).__name__ if m is not None else "batch norm (from a state dict)",
        channels=n.running_mean.numel(),
        momentum=None if m is None or m.momentum is None else float(m.momentum),
        eps=None if m is None else float(m.eps),
        num_batches_tracked=None if n.num_batches_tracked is None else int(n.num_batches_tracked),
        training=None if m is None else bool(m.training),
        running_mean=_quantiles(n.running_mean),
        running_var=_quantiles(n.running_var),
        weight=None if n.weight is None else _quantiles(n.weight),
    )


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def _finding(check: str, layer: str, message: str, fix: str, severity: Severity | None = None) -> Finding:
    c = CHECKS[check]
    return Finding(check, severity or c.severity, layer, message, fix, c.link)


def _state_checks(n: _Norm, eps: float, assumed: bool) -> list[Finding]:
    out = []
    mean, var = n.running_mean.detach().double(), n.running_var.detach().double()
    bad = int((~mean.isfinite()).sum() + (~var.isfinite()).sum())
    if bad:
        out.append(_finding("nonfinite-stats", n.name, f"{bad} NaN or inf values in running_mean/running_var "
                            f"(of {2 * mean.numel()})",
                            "recompute the statistics on clean data (bnviz.recompute_batch_norm_stats) and find the "
                            "batch that put them there (it refuses non-finite inputs)"))
    tracked = None if n.num_batches_tracked is None else int(n.num_batches_tracked)
    initial = bool((mean == 0).all() and (var == 1).all())
    if initial or tracked == 0:
        why = "running mean exactly 0 and variance exactly 1 in every channel" if initial else "num_batches_tracked 0"
        if initial and tracked:
            why += f" (yet num_batches_tracked {tracked})"
        out.append(_finding("stats-never-updated", n.name, f"{why}: the statistics were never updated",
                            "run training-mode forwards, or bnviz.recompute_batch_norm_stats(model.eval(), batches), "
                            "before evaluating"))
    finite = var.isfinite()
    tiny = finite & (var < eps)
    if bool(tiny.any()):
        gain = float((1 / torch.sqrt(var[tiny] + eps)).max())
        out.append(_finding("tiny-running-var", n.name,
                            f"{int(tiny.sum())} of {var.numel()} channels have running_var < eps = {eps:g}"
                            f"{' (torch default, assumed: a state dict holds no eps)' if assumed else ''}; "
                            f"smallest {float(var[finite].min()):.3g}, gain 1/√(var+eps) up to {gain:.4g}",
                            "check the channel is alive (a dead ReLU upstream gives variance 0); eps then sets "
                            "its scale"))
    if n.weight is not None:
        w = n.weight.detach().double()
        dead = w.abs() < DEAD_GAMMA
        k = int(dead.sum())
        if k == w.numel() and k > 0:
            if initial or tracked == 0:
                out.append(_finding("dead-channels", n.name, f"every γ is 0 ({k} channels) and the statistics were "
                                    "never updated: a zero-initialised last norm of a residual block, before training",
                                    "nothing, if on purpose (zero_init_residual)", "note"))
            else:
                out.append(_finding("dead-channels", n.name, f"every γ is 0 ({k} channels) after training: the layer "
                                    "outputs β alone", "check weight decay on γ and the learning rate", "error"))
        elif k:
            out.append(_finding("dead-channels", n.name, f"{k} of {w.numel()} channels have |γ| < {DEAD_GAMMA:g}",
                                "those channels carry β only; prune them or look at weight decay on γ"))
    return out


def _model_checks(model: nn.Module, norms: list[_Norm], unavailable: dict[str, str]) -> list[Finding]:
    out = []
    for n in norms:
        m = n.module
        assert m is not None
        if m.momentum is not None and m.momentum >= TF_MOMENTUM:
            out.append(_finding("tf-momentum", n.name, f"momentum {m.momentum:g}: each batch replaces "
                                f"{m.momentum:.0%} of the running statistics",
                                f"momentum={1 - m.momentum:.3g} (torch's convention is 1 − Keras')"))
        if math.isclose(m.eps, TF_EPS, rel_tol=1e-6):
            out.append(_finding("tf-eps", n.name, f"eps {m.eps:g}, Keras' default; torch's is 1e-5",
                                "keep it if the weights were trained with it; otherwise eps=1e-5"))
        frozen = m.weight is not None and not m.weight.requires_grad and (m.bias is None or not m.bias.requires_grad)
        if frozen and m.training:
            out.append(_finding("frozen-but-updating", n.name, "γ and β have requires_grad False, yet the layer is in "
                                "training mode and updates its running statistics on every forward",
                                "call .eval() on the frozen batch norms after model.train(), or "
                                "bnviz.freeze_batch_norm"))
    odd = [n.name for n in norms if n.module is not None and n.module.training != model.training]
    if odd:  # batch norms in the other mode than their model
        where = ", ".join(odd[:4]) + (" …" if len(odd) > 4 else "")
        if model.training:
            out.append(_finding("train-mode-at-eval", where, f"the model is in training mode but {len(odd)} of "
                                f"{len(norms)} batch norms are in eval mode (frozen statistics)",
                                "nothing, if frozen on purpose", "note"))
        else:
            out.append(_finding("train-mode-at-eval", where, f"the model is in eval mode but {len(odd)} of "
                                f"{len(norms)} batch norms are in training mode: they use each batch's statistics "
                                "at inference", "call model.eval() after anything that sets modules back to train()"))
    try:
        pairs = conv_bn_pairs(model)
    except ValueError as exc:
        unavailable["bias-before-norm"] = unavailable["foldable"] = str(exc)
        return out
    modules = dict(model.named_modules())
    for layer_name, bn_name in pairs:
        layer, bn = modules[layer_name], modules[bn_name]
        width = getattr(layer, "out_channels", getattr(layer, "out_features", None))
        if getattr(layer, "bias", None) is not None and width == bn.num_features:
            out.append(_finding("bias-before-norm", bn_name, f"'{layer_name}' ({type(layer).__name__}) has a bias "
                                "that this batch norm's mean subtraction cancels", f"'{layer_name}': bias=False"))
    if pairs:
        names = ", ".join(f"'{a}' → '{b}'" for a, b in pairs[:3]) + (" …" if len(pairs) > 3 else "")
        out.append(_finding("foldable", f"{len(pairs)} pairs", f"{names} can be folded for inference",
                            "bnviz.fold_batch_norms(model.eval())"))
    return out


# ---------------------------------------------------------------------------------------------
# With batches: each layer's eval-mode input against its running statistics
# ---------------------------------------------------------------------------------------------


def _measure(model: nn.Module, batches: list[Any]) -> list[Shift]:
    """Run ``model`` (a copy, in eval mode) on ``batches`` and compare what reaches each batch
    norm with its running statistics."""
    layers = _batch_norms(model)
    moments = {id(layer.module): _Moments() for layer in layers}
    smallest = dict.fromkeys(moments, 2**62)
    hooks: list[Any] = []
    poisoned: set[int] = set()

    def pre(key: int) -> Callable[[Tensor], None]:
        def seen(x: Tensor) -> None:
            if key in poisoned:  # counted as a call, nothing merged
                moments[key].calls += 1
            elif not moments[key].add(x):
                poisoned.add(key)  # a NaN upstream (a batch's, or a NaN running statistic's): no shift to report
            smallest[key] = min(smallest[key], x.numel() // max(x.size(1), 1))

        return seen

    for layer in layers:
        _hook(hooks, layer.module, pre=pre(id(layer.module)))
    device = next((p.device for p in model.parameters()), None)
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                model(_input(batch, i, device))
    finally:
        for h in hooks:
            h.remove()
    shifts = []
    for layer in layers:
        mo, m = moments[id(layer.module)], layer.module
        if id(m) in poisoned:
            shifts.append(Shift(layer.name, math.nan, math.nan, smallest[id(m)], mo.calls))
            continue
        if mo.mean is None or mo.m2 is None or mo.n < 2:
            continue
        rm, rv = m.running_mean.double(), m.running_var.double()
        keep = rm.isfinite() & rv.isfinite()  # a poisoned channel is nonfinite-stats' finding, not a shift
        if not bool(keep.any()):
            shifts.append(Shift(layer.name, math.nan, math.nan, smallest[id(m)], mo.calls))
            continue
        var = (mo.m2 / (mo.n - 1))[keep]
        z = (mo.mean[keep] - rm[keep]) / torch.sqrt(rv[keep] + m.eps)
        r = torch.log((var + m.eps) / (rv[keep] + m.eps))
        shifts.append(Shift(layer.name, float(z.pow(2).mean().sqrt()), float(r.pow(2).mean().sqrt()),
                            smallest[id(layer.module)], mo.calls))
    return shifts


def _batch_checks(shifts: list[Shift]) -> list[Finding]:
    out = []
    first = True
    for s in shifts:
        if math.isnan(s.mean_z):
            out.append(_finding("stats-mismatch", s.layer, "non-finite values reach this layer in eval mode (a NaN "
                                "in an input or in a running statistic upstream)", "find the NaN: nonfinite-stats "
                                "names a poisoned buffer; recompute_batch_norm_stats refuses non-finite batches"))
            first = False
            continue
        if s.mean_z > MISMATCH_Z or s.log_var_ratio > MISMATCH_LOG_VAR:
            where = " — the first layer that is off: the eval gap starts here" if first else ""
            out.append(_finding("stats-mismatch", s.layer, f"RMS z of the mean {s.mean_z:.3g}, RMS ln(var ratio) "
                                f"{s.log_var_ratio:.3g} (factor {math.exp(s.log_var_ratio):.3g}){where}",
                                "bnviz.recompute_batch_norm_stats(model.eval(), batches) on data like these "
                                "(the recalibration below shows what it gives)"))
            first = False
        if s.values_per_batch < SMALL_BATCH_VALUES:
            out.append(_finding("batch-too-small", s.layer, f"{s.values_per_batch} values per channel in the "
                                f"smallest batch (under {SMALL_BATCH_VALUES})",
                                "larger batches, or a norm without batch statistics (GroupNorm, LayerNorm)"))
    return out


def diagnose(model_or_state_dict: nn.Module | Mapping[str, Any], batches: Iterable[Any] | None = None) -> Report:
    """The batch norms of a model or a state dict, checked (see the module docstring and ``CHECKS``).

    Args:
        model_or_state_dict: an ``nn.Module``, or a state dict (a mapping of names to tensors, as
            ``model.state_dict()`` or ``bnviz.safe_load.load_state_dict_file`` return).
        batches: optional, a model only: an iterable of inputs, or of ``(input, …)`` tuples, as
            ``recompute_batch_norm_stats`` takes. Iterated several times (a one-shot iterator is
            first turned into a list).

    Returns:
        A ``Report``. The caller's model and tensors are left unchanged.

    Raises:
        TypeError: neither a module nor a mapping; batches with a state dict (it cannot run).
        ValueError: no batch norm with running statistics; shapes that disagree within a layer.
            (A batch giving a batch norm a NaN or an infinity is a finding, and the recalibration
            is then listed in ``unavailable``.)
    """
    unavailable: dict[str, str] = {}
    if isinstance(model_or_state_dict, nn.Module):
        model = model_or_state_dict
        norms = _from_model(model)
        findings = [f for n in norms for f in _state_checks(n, float(n.module.eps), False)]  # type: ignore[union-attr]
        findings += _model_checks(model, norms, unavailable)
        source: Literal["model", "state_dict"] = "model"
    elif isinstance(model_or_state_dict, Mapping):
        if batches is not None:
            raise TypeError("diagnose: batches need a model to run; a state dict cannot run them")
        model = None
        norms = _from_state(model_or_state_dict)
        findings = [f for n in norms for f in _state_checks(n, TORCH_EPS, True)]
        why = "a state dict holds no momentum, eps, modes or graph: pass the model (bnviz.diagnose(model))"
        unavailable.update({c.id: why for c in CHECKS.values() if c.needs == "model"})
        source = "state_dict"
    else:
        raise TypeError(f"diagnose: expected an nn.Module or a state dict (a mapping of names to tensors), not "
                        f"{type(model_or_state_dict).__name__}")
    report = Report(source, [_row(n) for n in norms], findings, unavailable)
    if model is None or batches is None:  # a state dict comes with no batches (refused above)
        report.unavailable.update({c.id: "needs batches: diagnose(model, batches)" for c in CHECKS.values()
                                   if c.needs == "batches"})
        return _sorted(report)
    listed = list(batches) if isinstance(batches, Iterator) else batches
    work = copy.deepcopy(model).eval()
    report.before = _measure(work, listed)  # type: ignore[arg-type]
    report.findings += _batch_checks(report.before)
    try:
        recompute_batch_norm_stats(work, listed, mode="exact")
        report.after = _measure(work, listed)  # type: ignore[arg-type]
    except ValueError as exc:
        report.unavailable["recalibration"] = str(exc)
    return _sorted(report)


def _sorted(report: Report) -> Report:
    """Errors first, then warnings, then notes; the network's order within each."""
    order = {name: i for i, name in enumerate(r.name for r in report.layers)}
    report.findings.sort(key=lambda f: (SEVERITIES.index(f.severity), order.get(f.layer, len(order))))
    return report
