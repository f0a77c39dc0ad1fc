"""``bnviz.recompute_batch_norm_stats`` against population statistics computed directly in float64:
everything that reached each batch norm, concatenated, its mean and unbiased variance. Then against
``torch.optim.swa_utils.update_bn`` where the two must agree, the errors (all or nothing), and
SyncBatchNorm over real gloo ranks (one spawned world of 3, bounded in time).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import update_bn

import bnviz
from bnviz import recompute_batch_norm_stats
from tests.conftest import assert_close
from tests.test_no_torch_norm import OpRecorder
from tests.test_sync import run_world

BATCH_NORMS = (_BatchNorm, bnviz.BatchNorm)


def _tracked(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats}


def _first(batch: Any) -> Tensor:
    return batch[0] if isinstance(batch, tuple | list) else batch


def _values(inputs: list[Tensor]) -> Tensor:
    """Everything that reached a layer, one row per value: (Σ n_b, C)."""
    return torch.cat([x.movedim(1, -1).reshape(-1, x.size(1)) for x in inputs])


def population(model: nn.Module, batches: list[Any], mode: str = "exact") -> dict[str, dict[str, Tensor | int]]:
    """The float64 reference, by another route than bnviz's (whole forwards, every input kept and
    concatenated, ``torch.mean`` and ``torch.var``), per tracked batch norm: the mean and unbiased
    variance of everything that reached it, and its calls.

    "one-pass": the model runs once over the batches with its tracked batch norms in training
    mode (everything else as it is). "exact": layer by layer in call order, the whole eval-mode
    model runs over every batch, the layer's inputs are kept, and its statistics written before the
    next layer is measured — so each layer sees what the ones before it, holding their statistics
    (unbiased variance, as eval mode uses), give it."""
    ref = copy.deepcopy(model).double()
    tracked = _tracked(ref)
    seen: dict[str, list[Tensor]] = {name: [] for name in tracked}

    def keep(name: str) -> Any:
        return tracked[name].register_forward_hook(lambda mod, args, out: seen[name].append(args[0].detach()))

    def run() -> None:
        with torch.no_grad():
            for batch in batches:
                ref(_first(batch).double())

    stats = {}
    if mode == "one-pass":
        hooks = [keep(name) for name in tracked]
        for m in tracked.values():
            m.train()
        run()
        for h in hooks:
            h.remove()
        for name, inputs in seen.items():
            values = _values(inputs)
            stats[name] = {"mean": values.mean(0), "var": values.var(0), "calls": len(inputs)}
        return stats
    for m in tracked.values():
        m.eval()
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: order.append(name))
             for name, m in tracked.items()]  # fmt: skip
    with torch.no_grad():
        ref(_first(batches[0]).double())
    for h in hooks:
        h.remove()
    for name in order:
        hook = keep(name)
        run()
        hook.remove()
        values = _values(seen[name])
        stats[name] = {"mean": values.mean(0), "var": values.var(0), "calls": len(seen[name])}
        with torch.no_grad():
            tracked[name].running_mean.copy_(stats[name]["mean"])
            tracked[name].running_var.copy_(stats[name]["var"])
    return stats


def _state(model: nn.Module) -> dict[str, Any]:
    """What must not change: every parameter, training flag and momentum."""
    return {
        **{f"param {n}": p.detach().clone() for n, p in model.named_parameters()},
        **{f"training {n}": m.training for n, m in model.named_modules()},
        **{f"momentum {n}": m.momentum for n, m in model.named_modules() if isinstance(m, BATCH_NORMS)},
    }


def _buffers(model: nn.Module) -> dict[str, Tensor]:
    return {n: b.clone() for n, b in model.named_buffers()}


def assert_same(got: dict[str, Any], want: dict[str, Any], what: str) -> None:
    """Equal dicts (tensors bitwise), failing with the first difference's two values."""
    assert list(got) == list(want), f"{what}: keys {list(got)} vs {list(want)}"
    for key, value in want.items():
        same = torch.equal(got[key], value) if isinstance(value, Tensor) else got[key] == value
        assert same, f"{what}: {key} changed: before {value!r}, after {got[key]!r}"


# --- models ---------------------------------------------------------------------------------------------------------


class Twice(nn.Module):
    """One batch norm called twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.bn = nn.Linear(3, 4), nn.Linear(4, 4), bnviz.BatchNorm1d(4, momentum=None)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.fc2(torch.relu(self.bn(self.fc1(x)))))


def mlp_torch() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4), nn.BatchNorm1d(4))


def conv1d_bnviz() -> nn.Module:
    return nn.Sequential(nn.Conv1d(3, 4, 3), bnviz.BatchNorm1d(4), nn.ReLU(), nn.Conv1d(4, 4, 1), bnviz.BatchNorm1d(4))


def conv2d_mixed() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        bnviz.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 1),
        nn.BatchNorm2d(5, momentum=None),
        nn.ReLU(),
        nn.Conv2d(5, 4, 1),
        bnviz.SyncBatchNorm(4),
    )


def conv3d_mixed() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(2, 3, 1),
        nn.BatchNorm3d(3),
        nn.Conv3d(3, 3, 1),
        bnviz.BatchNorm3d(3),
        nn.Conv3d(3, 3, 1),
        bnviz.BatchNorm(3),
        nn.Conv3d(3, 3, 1),
        nn.SyncBatchNorm(3),
    )


def dropout_before_bn() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.5), nn.BatchNorm1d(6), nn.Linear(6, 4), bnviz.BatchNorm1d(4))


def with_untracked() -> nn.Module:
    """A tracked batch norm beside one without running statistics and an instance norm with them
    (its buffers must stay as they were)."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 1),
        nn.BatchNorm2d(4, track_running_stats=False),
        nn.InstanceNorm2d(4, track_running_stats=True),
        bnviz.BatchNorm2d(4),
    )


def deep_mlp(width: int = 6) -> nn.Module:
    """Four batch norms deep, torch's and bnviz's alternating: where one pass and exact differ."""
    layers: list[nn.Module] = [nn.Linear(3, width)]
    for i in range(4):
        layers += [(nn.BatchNorm1d if i % 2 else bnviz.BatchNorm1d)(width), nn.ReLU(), nn.Linear(width, width)]
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class Case:
    """``build()`` in ``mode``, run over batches of ``sizes`` samples of shape ``sample``, each
    wrapped as ``wrap`` ("tensor", "tuple" or "list"), recomputed in each of ``stats_modes``."""

    id: str
    build: Callable[[], nn.Module]
    sample: tuple[int, ...]
    sizes: tuple[int, ...]
    mode: str = "eval"
    wrap: str = "tensor"
    dtype: torch.dtype = torch.float64
    offset: float = 1.0
    spread: float = 2.0
    stats_modes: tuple[str, ...] = ("exact", "one-pass")


CASES = [
    Case("1d-torch-uneven", mlp_torch, (3,), (4, 7, 2, 9)),
    Case("1d-torch-uneven-train", mlp_torch, (3,), (4, 7, 2, 9), mode="train"),
    Case("1d-NCL-bnviz-tuples", conv1d_bnviz, (3, 6), (3, 5, 2), wrap="tuple"),
    Case("2d-mixed-lists", conv2d_mixed, (3, 5, 4), (2, 6, 3), wrap="list"),
    Case("2d-mixed-one-batch", conv2d_mixed, (3, 5, 4), (5,)),
    Case("3d-mixed-any-rank-sync-without-group", conv3d_mixed, (2, 3, 2, 4), (1, 4, 2), wrap="tuple"),
    Case("deep-mlp-batches-of-8", deep_mlp, (3,), (8,) * 6),
    Case("deep-mlp-batches-of-one", deep_mlp, (3,), (1,) * 7, stats_modes=("exact",)),
    # (twice per forward: exact refuses it; train-mode dropout: exact's passes draw other masks)
    Case("layer-called-twice-per-forward", Twice, (3,), (5, 3, 8), stats_modes=("one-pass",)),
    Case("eval-dropout-before-bn-is-off", dropout_before_bn, (3,), (6, 9, 4)),
    Case("train-dropout-before-bn-is-on", dropout_before_bn, (3,), (6, 9, 4), mode="train", stats_modes=("one-pass",)),
    Case("untracked-and-instance-norm-left-alone", with_untracked, (3, 4, 4), (3, 2), mode="train"),
    Case("float32-large-mean", conv1d_bnviz, (3, 8), (16, 5, 11), dtype=torch.float32, offset=1e3, spread=1e-1),
]
STATS_CASES = [pytest.param(c, m, id=f"{c.id}-{m}") for c in CASES for m in c.stats_modes]


def _batches(case: Case, seed: int = 0) -> list[Any]:
    g = torch.Generator().manual_seed(seed)
    out: list[Any] = []
    for i, n in enumerate(case.sizes):
        x = torch.randn((n, *case.sample), generator=g, dtype=torch.float64) * case.spread + case.offset + i
        x = x.to(case.dtype)
        out.append({"tensor": x, "tuple": (x, torch.zeros(n)), "list": [x, i]}[case.wrap])
    return out


def _model(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return case.build().to(case.dtype).train(case.mode == "train")


@pytest.mark.parametrize("case, stats_mode", STATS_CASES)
def test_population_statistics(case, stats_mode):
    """Each tracked batch norm's running_mean and running_var are the mean and unbiased variance
    of everything that reached it — in eval mode with the layers before it recomputed (exact), or
    with every batch norm in training mode (one pass) — against the float64 reference of the same
    mode; num_batches_tracked its calls; parameters, training flags, momentum and every other
    buffer as before; the model itself returned."""
    model, batches = _model(case), _batches(case)
    before, buffers = _state(model), _buffers(model)
    torch.manual_seed(1)  # the same dropout masks (train mode) for the reference
    want = population(model, batches, stats_mode)
    torch.manual_seed(1)
    assert recompute_batch_norm_stats(model, batches, mode=stats_mode) is model
    assert_same(_state(model), before, case.id)
    tracked = _tracked(model)
    assert set(tracked) == set(want) and tracked, f"layers {set(tracked)} vs {set(want)}"
    scale = case.offset if case.dtype == torch.float32 else 1.0
    for name, layer in tracked.items():
        dtype = layer.running_mean.dtype
        assert_close(layer.running_mean, want[name]["mean"].to(dtype), f"{name} running_mean", scale=scale)
        assert_close(layer.running_var, want[name]["var"].to(dtype), f"{name} running_var", scale=scale)
        assert int(layer.num_batches_tracked) == want[name]["calls"], (
            f"{name} num_batches_tracked {int(layer.num_batches_tracked)}, calls {want[name]['calls']}"
        )
    untouched = {n: b for n, b in _buffers(model).items() if n.rsplit(".", 1)[0] not in tracked}
    assert_same(untouched, {n: buffers[n] for n in untouched}, f"{case.id} other buffers")


def test_exact_and_one_pass_differ_after_the_first_layer():
    """Batches of 8 through four batch norms: one pass gives the first layer the exact statistics
    and the later ones statistics measurably off the exact reference (inputs normalized by each
    batch's own statistics); exact mode matches the reference (test_population_statistics)."""
    case = next(c for c in CASES if c.id == "deep-mlp-batches-of-8")
    want = population(_model(case), _batches(case), "exact")
    model = recompute_batch_norm_stats(_model(case), _batches(case), mode="one-pass")
    off = {name: ((layer.running_var - want[name]["var"]).abs() / want[name]["var"]).max().item()
           for name, layer in _tracked(model).items()}  # fmt: skip
    first, *later = off.values()
    assert first < 1e-12, f"one pass, first layer: relative error of running_var {first:.2e}"
    assert max(later) > 1e-2, f"one pass, later layers: relative errors {later} (expected a visible error)"


def test_eval_mode_statistics_are_those_without_dropout():
    """The eval-mode model's statistics differ from the train-mode model's (dropout on) — so the
    table's eval case shows dropout off."""
    case = next(c for c in CASES if c.id == "eval-dropout-before-bn-is-off")
    got = {}
    for mode in ("eval", "train"):
        model = _model(case).train(mode == "train")
        torch.manual_seed(1)
        recompute_batch_norm_stats(model, _batches(case))
        got[mode] = model[2].running_var
    assert (got["eval"] - got["train"]).abs().max() > 1e-2, f"eval {got['eval']} train {got['train']}"


def test_device_argument_and_a_one_shot_iterator():
    """``device`` moves each input there; in one pass a generator is iterated once; exact mode
    refuses it (it runs the batches once per batch norm) with a TypeError naming one-pass."""
    model, batches = _model(CASES[0]), _batches(CASES[0])
    want = population(model, batches, "one-pass")
    recompute_batch_norm_stats(model, (x for x in batches), mode="one-pass", device="cpu")
    assert_close(model[4].running_var, want["4"]["var"], "running_var")
    assert int(model[4].num_batches_tracked) == len(batches), int(model[4].num_batches_tracked)
    with pytest.raises(TypeError, match="not a one-shot generator: pass a list, or mode='one-pass'"):
        recompute_batch_norm_stats(model, (x for x in batches))
    with pytest.raises(ValueError, match="mode must be 'exact' or 'one-pass', not 'precise'"):
        recompute_batch_norm_stats(model, batches, mode="precise")  # type: ignore[arg-type]


def test_exact_mode_over_a_data_loader_of_tuples():
    """A DataLoader (iterable again) of (input, target) pairs, as the pages' snippets pass it."""
    case = CASES[0]
    x = torch.cat([_first(b) for b in _batches(case)])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(len(x))), batch_size=5)
    model = _model(case)
    want = population(model, [batch[0] for batch in loader], "exact")
    recompute_batch_norm_stats(model, loader)
    for name, layer in _tracked(model).items():
        assert_close(layer.running_var, want[name]["var"], f"{name} running_var")


def test_no_normalization_kernel_for_a_bnviz_model():
    """On a model of bnviz's layers, nothing dispatches one of torch's normalization kernels."""
    model, batches = _model(CASES[2]), _batches(CASES[2])
    with OpRecorder() as rec:
        recompute_batch_norm_stats(model, batches)
    assert rec.ops, "the recorder saw nothing"
    assert not [op for op in rec.ops if "norm" in op.lower()], sorted(set(rec.ops))


# --- against torch.optim.swa_utils.update_bn --------------------------------------------------------------------------


def conv2d_torch() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 1),
        nn.BatchNorm2d(5, momentum=None),
    )


def conv3d_torch() -> nn.Module:
    return nn.Sequential(nn.Conv3d(2, 3, 1), nn.BatchNorm3d(3), nn.Conv3d(3, 3, 1), nn.SyncBatchNorm(3))


class TwiceTorch(Twice):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(4)


UPDATE_BN = [
    pytest.param(build, sample, sizes, id=f"{build.__name__}-{len(sizes)}x{sizes[0]}")
    for build, sample, sizes in [
        (mlp_torch, (3,), (6, 6, 6)),
        (conv2d_torch, (3, 5, 4), (3, 3, 3, 3)),
        (conv3d_torch, (2, 3, 2, 4), (2, 2)),
        (TwiceTorch, (3,), (5, 5)),
    ]
]


@pytest.mark.parametrize("build, sample, sizes", UPDATE_BN)
def test_agrees_with_update_bn_on_equal_batches(build, sample, sizes):
    """One pass, equal batch sizes, train mode (update_bn's): the same running_mean — update_bn's
    cumulative average of the batch means — and the same num_batches_tracked. (update_bn knows
    torch's layers only: these models have no others.)"""
    case = Case("update_bn", build, sample, sizes, mode="train")
    ours, theirs = _model(case), _model(case)
    batches = _batches(case)
    recompute_batch_norm_stats(ours, batches, mode="one-pass")
    update_bn(batches, theirs)
    for (name, a), b in zip(_tracked(ours).items(), _tracked(theirs).values(), strict=True):
        assert_close(a.running_mean, b.running_mean, f"{name} running_mean")
        assert int(a.num_batches_tracked) == int(b.num_batches_tracked), (
            f"{name} num_batches_tracked: ours {int(a.num_batches_tracked)}, update_bn {int(b.num_batches_tracked)}"
        )


def test_uneven_batches_and_the_spread_of_batch_means_count_unlike_update_bn():
    """Batches of 2 and 30 values with different means: ours is the mean and unbiased variance of
    the 32 values; update_bn's the plain mean of the two batch means and the mean of the two
    batch variances, which misses their spread."""
    batches = [torch.tensor([[10.0], [11.0]]), torch.randn(30, 1, generator=torch.Generator().manual_seed(0))]
    ours, theirs = nn.Sequential(nn.BatchNorm1d(1)), nn.Sequential(nn.BatchNorm1d(1))
    recompute_batch_norm_stats(ours, batches)
    update_bn(batches, theirs)
    values = torch.cat(batches)
    assert_close(ours[0].running_mean, values.mean(0), "running_mean")
    assert_close(ours[0].running_var, values.var(0), "running_var")
    assert (theirs[0].running_mean - values.mean(0)).abs().item() > 1.0, f"update_bn {theirs[0].running_mean}"
    assert (theirs[0].running_var - values.var(0)).abs().item() > 1.0, f"update_bn {theirs[0].running_var}"


# --- errors: clear, and nothing changed -------------------------------------------------------------------------------


def _wrong_channels() -> list[Tensor]:
    return [torch.randn(4, 3, 5, 4), torch.randn(4, 3, 5, 4), torch.randn(4, 2, 5, 4)]


class Swapping(nn.Module):
    """Two batch norms called in an order that depends on the batch size."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.BatchNorm1d(3), bnviz.BatchNorm1d(3)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(self.a(x)) if x.size(0) % 2 else self.a(self.b(x))


def _with_value(value: float) -> list[Tensor]:
    """Three batches, one pixel of the third ``value`` (NaN or ±inf)."""
    batches = [torch.randn(2, 3, 5, 4) for _ in range(3)]
    batches[2][1, 0, 2, 3] = value
    return batches


BOTH, ONE_PASS, EXACT = ("exact", "one-pass"), ("one-pass",), ("exact",)
ERRORS = [
    pytest.param(conv2d_mixed, lambda: [], ValueError, "batches is empty", BOTH, id="empty-iterable"),
    pytest.param(
        lambda: nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3, track_running_stats=False)),
        lambda: [torch.randn(4, 3)],
        ValueError,
        "no batch norm with running statistics",
        BOTH,
        id="no-tracked-batch-norm",
    ),
    pytest.param(
        mlp_torch,
        lambda: [torch.randn(4, 3), torch.randn(1, 3)],
        ValueError,
        "batch 1 gives layer '1' (BatchNorm1d) one value per channel",
        ONE_PASS,
        id="one-value-1d",
    ),
    pytest.param(
        conv2d_mixed,
        lambda: [torch.randn(2, 3, 5, 4), torch.randn(3, 3, 5, 4), torch.randn(1, 3, 1, 1)],
        ValueError,
        "batch 2 gives layer '1' (BatchNorm2d) one value per channel",
        ONE_PASS,
        id="one-value-2d",
    ),
    pytest.param(
        mlp_torch,
        lambda: [torch.randn(1, 3)],
        ValueError,
        "layer '1' (BatchNorm1d) received one value per channel in its 1 calls: its statistics are undefined",
        EXACT,
        id="one-value-in-all",
    ),
    pytest.param(
        conv2d_mixed,
        lambda: _with_value(math.nan),
        ValueError,
        "batch 2 gives layer '1' (BatchNorm2d) 24 non-finite values (NaN or inf) of 160",
        BOTH,
        id="a-nan-pixel",
    ),
    pytest.param(
        mlp_torch,
        lambda: [torch.randn(4, 3), torch.tensor([[1.0, 2.0, 3.0], [0.0, math.inf, 1.0]])],
        ValueError,
        "batch 1 gives layer '1' (BatchNorm1d)",
        BOTH,
        id="an-infinite-value",
    ),
    pytest.param(
        conv2d_mixed, _wrong_channels, RuntimeError, "while running batch 2", BOTH, id="wrong-channels-midway"
    ),
    pytest.param(
        lambda: nn.Sequential(bnviz.BatchNorm2d(3), nn.BatchNorm2d(3)),
        _wrong_channels,
        RuntimeError,
        "while running batch 2",
        BOTH,
        id="wrong-channels-at-a-batch-norm-midway",
    ),
    pytest.param(
        mlp_torch,
        lambda: [torch.randn(4, 3), {"x": torch.randn(4, 3)}],
        TypeError,
        "batch 1 is a dict",
        BOTH,
        id="not-a-tensor",
    ),
    pytest.param(
        mlp_torch, lambda: [torch.randn(4, 3), ("x",)], TypeError, "batch 1 is a tuple", BOTH, id="tuple-of-str"
    ),
    pytest.param(
        mlp_torch,
        lambda: [torch.randn(0, 3), torch.randn(0, 3)],
        ValueError,
        "received no values in its 2 calls",
        BOTH,
        id="every-batch-empty",
    ),
    pytest.param(
        Twice,
        lambda: [torch.randn(4, 3)],
        ValueError,
        "layer 'bn' (BatchNorm1d) is called 2 times per forward; in mode='exact'",
        EXACT,
        id="called-twice",
    ),
    pytest.param(
        Swapping,
        lambda: [torch.randn(3, 3), torch.randn(4, 3)],
        ValueError,
        "batch 1 calls layer 'b' (BatchNorm1d) before layer 'a' (BatchNorm1d), unlike batch 0",
        EXACT,
        id="call-order-differs",
    ),
    pytest.param(mlp_torch, lambda: iter([torch.randn(4, 3)]), TypeError, "list_iterator", EXACT, id="an-iterator"),
]
ERROR_CASES = [pytest.param(*p.values[:4], m, id=f"{p.id}-{m}") for p in ERRORS for m in p.values[4]]


def _message(exc: BaseException) -> str:
    return "\n".join([str(exc), *getattr(exc, "__notes__", [])])


@pytest.mark.parametrize("build, batches, error, message, stats_mode", ERROR_CASES)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_errors_change_nothing(build, batches, error, message, stats_mode, mode):
    """The error's type and message (with its note naming the batch); afterwards every buffer,
    parameter, training flag and momentum as before, bit for bit — even where earlier batches
    ran, and (exact) earlier layers' statistics were written."""
    torch.manual_seed(0)
    model = build().train(mode == "train")
    with torch.no_grad():  # non-trivial running statistics to keep
        for layer in _tracked(model).values():
            layer.running_mean.uniform_(-1, 1)
            layer.running_var.uniform_(0.5, 2)
            layer.num_batches_tracked.fill_(7)
    before, buffers = _state(model), _buffers(model)
    with pytest.raises(error) as info:
        recompute_batch_norm_stats(model, batches(), mode=stats_mode)
    assert message in _message(info.value), f"message {_message(info.value)!r} lacks {message!r}"
    assert_same(_state(model), before, "after the error")
    assert_same(_buffers(model), buffers, "buffers after the error")
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert not hooks, f"hooks left on {hooks}"


# --- SyncBatchNorm over gloo ranks -----------------------------------------------------------------------------------


def sync_model(kind: str) -> nn.Module:
    """torch's layers converted to bnviz's SyncBatchNorm (torch's own refuses CPU tensors)."""
    torch.manual_seed(0)
    model = mlp_torch() if kind == "1d" else conv2d_mixed()
    return bnviz.SyncBatchNorm.convert_sync_batchnorm(model.double().eval())


@dataclass(frozen=True)
class SyncCase:
    """``sizes[r][b]``: the samples of batch b on rank r (its batch count: ``len(sizes[r])``)."""

    id: str
    kind: str  # "1d" or "2d"
    sizes: tuple[tuple[int, ...], ...]
    error: str | None = None  # the message every rank raises

    @property
    def sample(self) -> tuple[int, ...]:
        return (3,) if self.kind == "1d" else (3, 5, 4)


SYNC_CASES = [
    SyncCase("1d-uneven", "1d", ((3, 5, 2), (2, 1, 6), (4, 1, 1))),
    SyncCase("1d-empty-batch-on-a-rank", "1d", ((3, 5), (0, 2), (4, 0))),
    SyncCase("2d-uneven-empty", "2d", ((2, 1), (0, 3), (1, 1))),
    SyncCase(
        "1d-different-numbers-of-batches",
        "1d",
        ((3, 5, 2), (2, 1), (4, 1, 1)),
        error="passed different numbers of batches: ranks [1]",
    ),
    SyncCase("2d-one-rank-passes-none", "2d", ((2, 2), (), (1, 1)), error="ranks [1] of the process group (of 3)"),
    SyncCase("1d-every-rank-passes-none", "1d", ((), (), ()), error="batches is empty"),
]


def _sync_batches(case: SyncCase, rank: int) -> list[Tensor]:
    g = torch.Generator().manual_seed(10 * rank + len(case.id))
    return [
        torch.randn((n, *case.sample), generator=g, dtype=torch.float64) * 2 + 1 + b
        for b, n in enumerate(case.sizes[rank])
    ]


def _sync_worker(rank: int, world: int) -> dict[str, Any]:
    """Every case in turn on this rank: its buffers afterwards, or the error it raised (and
    whether the buffers stayed as they were)."""
    results: dict[str, Any] = {}
    for case in SYNC_CASES:
        for stats_mode in ("exact", "one-pass"):
            model = sync_model(case.kind)
            before = _buffers(model)
            try:
                recompute_batch_norm_stats(model, _sync_batches(case, rank), mode=stats_mode)
                results[case.id, stats_mode] = {"buffers": _buffers(model), "training": model.training}
            except Exception as exc:
                results[case.id, stats_mode] = {
                    "error": f"{type(exc).__name__}: {_message(exc)}",
                    "unchanged": all(torch.equal(b, before[n]) for n, b in model.named_buffers()),
                }
    return results


@pytest.fixture(scope="module")
def sync_world() -> list[dict[str, Any]]:
    """One spawned world of 3 gloo ranks runs the whole table (bounded: killed after 90 s)."""
    return run_world(_sync_worker, 3, timeout=90).check()


@pytest.mark.parametrize("stats_mode", ["exact", "one-pass"])
@pytest.mark.parametrize("case", SYNC_CASES, ids=lambda c: c.id)
def test_sync_batch_norm_over_gloo(sync_world, case, stats_mode):
    """Every rank ends with the statistics of all ranks' batches together — one pass: the
    population of the per-step concatenated batches run through the same model unsynchronized;
    exact: the exact reference over every rank's batches (eval mode treats each sample alone, so
    how they are grouped does not matter) — or, for batch counts that differ, every rank raises a
    clear ValueError and keeps its buffers."""
    if case.error is not None:
        for rank, result in enumerate(sync_world):
            got = result[case.id, stats_mode]
            assert "error" in got and case.error in got["error"], f"rank {rank}: {got}"
            assert got["error"].startswith("ValueError"), f"rank {rank}: {got['error']}"
            assert got["unchanged"], f"rank {rank}: buffers changed after the error"
        return
    steps = len(case.sizes[0])
    per_rank = [_sync_batches(case, r) for r in range(3)]
    plain = bnviz.SyncBatchNorm.convert_sync_batchnorm(sync_model(case.kind))  # no group here: plain batch norm
    if stats_mode == "one-pass":
        concatenated = [torch.cat([per_rank[r][b] for r in range(3)]) for b in range(steps)]
        want = population(plain, concatenated, "one-pass")
    else:
        want = population(plain, [b for batches in per_rank for b in batches if len(b)], "exact")
    for rank, result in enumerate(sync_world):
        got = result[case.id, stats_mode]
        assert "buffers" in got, f"rank {rank}: {got}"
        for name, stats in want.items():
            assert_close(got["buffers"][f"{name}.running_mean"], stats["mean"], f"rank {rank} {name} running_mean")
            assert_close(got["buffers"][f"{name}.running_var"], stats["var"], f"rank {rank} {name} running_var")
            assert int(got["buffers"][f"{name}.num_batches_tracked"]) == steps, f"rank {rank} {name}"
        assert got["training"] is False, f"rank {rank}: the model's training flag changed"
