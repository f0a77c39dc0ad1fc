r"""Exact population statistics for every batch norm of a model: ``recompute_batch_norm_stats``.

In the spirit of ``torch.optim.swa_utils.update_bn`` and fvcore's PreciseBN, but exact. Each
layer's running statistics become those of *all the values that reach it* over the batches, as if
they were one batch. Per layer and channel, over its forward calls b (each holding n_b values):

    call b:   n_b, mean_b, M2_b = Σ (x − mean_b)²          float64, from shifted data (core: row_moments)
    merge:    n = Σ n_b,  mean = Σ n_b · mean_b / n,        Chan's formula (core: merge_moments), one call
              M2 = Σ M2_b + Σ n_b · (mean_b − mean)²        at a time: memory independent of the batches
    ranks:    the same merge of every rank's (n, mean, M2)  SyncBatchNorm under a process group (one
                                                            all_gather per layer: bnviz.sync.gather_moments)
    running_mean ← mean,   running_var ← M2 / (n − 1),   num_batches_tracked ← the number of calls

So ``running_var`` is the unbiased variance of everything together — not the average of the
per-batch variances, which misses the spread of the batch means (the Σ n_b · (mean_b − mean)²
term), and not an average weighted by batches: uneven batches count by their size.

*Which* values reach a layer depends on the layers before it, and that is what the two modes
differ in:

- ``mode="exact"`` (the default): the values each layer receives in **eval mode**, when every
  batch norm called before it already holds its recomputed statistics — what the eval network
  will feed it. The layers are measured in call order, one pass over the batches per layer, each
  forward stopped at the layer being measured (an exception raised in its forward pre-hook), with
  every batch norm in eval mode: the ones upstream normalize with their new statistics, and with
  the *unbiased* ``running_var`` that eval mode uses. For a network of K batch norms that is K
  partial passes — about (K + 1) / 2 full forwards per batch when they are spread evenly — and
  the batches must be iterable again (a list, a tuple, a DataLoader).
- ``mode="one-pass"``: one forward per batch with every batch norm in **training mode**: each
  layer sees inputs normalized by each batch's own statistics upstream (biased variance), which is
  what ``update_bn`` and fvcore's PreciseBN compute (with bnviz's exact merge). Exact for the
  first batch norm, and for a single batch up to the biased/unbiased difference; for later layers
  with several batches it is an approximation whose error grows as batches shrink.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnviz.autograd import BATCH, cast, compute_dtype, merge_moments, row_moments, row_view
from bnviz.modules import BatchNorm
from bnviz.sync import _all_gather, gather_moments

ModelT = TypeVar("ModelT", bound=nn.Module)


@dataclass
class _Moments:
    """Per channel, float64: the count ``n``, ``mean`` and ``m2 = Σ (x − mean)²`` of everything
    that reached one layer, and the number of forward calls that reached it."""

    calls: int = 0
    n: int = 0
    mean: Tensor | None = None
    m2: Tensor | None = None

    def add(self, x: Tensor) -> bool:
        """One forward call's input ``(N, C, *)``, merged in (Chan's formula, two at a time).
        False, and nothing merged, when the call holds a NaN or an infinity (its moments are then
        not finite: the check costs one host sync per call, on two vectors of C values)."""
        self.calls += 1
        n = x.numel() // x.size(1)  # values per channel: a shape, no sync
        if n == 0:  # an empty batch counts as a call and adds nothing
            return True
        _, xv = row_view(cast(x.detach(), compute_dtype(x.dtype)), BATCH)
        mean, m2 = row_moments(xv)  # (N, C, L) -> (C,), float64
        if not bool((mean.isfinite().all() & m2.isfinite().all()).item()):
            return False
        if self.mean is None or self.m2 is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return True
        counts = torch.tensor([self.n, n], dtype=torch.float64, device=mean.device).repeat(mean.numel())
        # (C, 2) channel-major -> (C·2,): the two blocks of each channel merged into one
        self.mean, self.m2 = merge_moments(torch.stack([self.mean, mean], 1).view(-1),
                                           torch.stack([self.m2, m2], 1).view(-1), counts, 2)  # fmt: skip
        self.n += n
        return True


@dataclass
class _Layer:
    """A batch norm with running statistics: its name in the model, its process group (group,
    world size) when it synchronizes, and what reached it."""

    name: str
    module: nn.Module
    sync: tuple[Any, int] | None
    moments: _Moments = field(default_factory=_Moments)

    def __str__(self) -> str:
        return f"layer '{self.name}' ({type(self.module).__name__})"


def _process_group(module: nn.Module) -> tuple[Any, int] | None:
    """(group, world size) for a SyncBatchNorm (bnviz's or torch's) whose training forward
    synchronizes — a process group initialized, more than one rank in it — else None."""
    if not hasattr(module, "process_group") or not (dist.is_available() and dist.is_initialized()):
        return None
    group = dist.group.WORLD if module.process_group is None else module.process_group
    world_size = dist.get_world_size(group)
    return (group, world_size) if world_size > 1 else None


def _batch_norms(model: nn.Module) -> list[_Layer]:
    """Every batch norm with running statistics: torch's ``BatchNorm1d/2d/3d`` and
    ``SyncBatchNorm`` (any ``_BatchNorm``), bnviz's ``BatchNorm`` family and ``SyncBatchNorm``."""
    return [
        _Layer(name or type(module).__name__, module, _process_group(module))
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm | BatchNorm) and module.track_running_stats and module.running_mean is not None
    ]


def _input(batch: Any, index: int, device: torch.device | str | None) -> Tensor:
    """A batch's input: the batch itself, or the first element of a tuple or list."""
    x = batch[0] if isinstance(batch, tuple | list) and len(batch) > 0 else batch
    if not isinstance(x, Tensor):
        raise TypeError(
            f"recompute_batch_norm_stats: batch {index} is a {type(batch).__name__}; expected a tensor, or a tuple "
            f"or list whose first element is the input tensor (got {type(x).__name__})"
        )
    return x if device is None else x.to(device)


def _agree(groups: list[tuple[Any, int, torch.device]], status: int, index: int) -> None:
    """Before each batch, every rank of each synchronizing group says whether it has one — 1: a
    batch, 0: no more, −1: one it cannot use — in one all_gather of a flag: all 1 or all 0 goes
    on; anything else raises a clear error on every rank, instead of leaving some waiting forever
    in a SyncBatchNorm's collective."""
    for group, world_size, device in groups:
        flags = _all_gather(torch.tensor([float(status)], device=device), group, world_size).view(-1).tolist()
        if -1.0 in flags and status != -1:
            bad = [r for r, f in enumerate(flags) if f == -1.0]
            raise ValueError(f"recompute_batch_norm_stats: batch {index} of ranks {bad} is not an input tensor")
        if status != -1 and len(set(flags)) > 1:
            done, more = ([r for r, f in enumerate(flags) if f == v] for v in (0.0, 1.0))
            raise ValueError(
                f"recompute_batch_norm_stats: the ranks passed different numbers of batches: ranks {done} of the "
                f"process group (of {world_size}) have {index}, ranks {more} have more; SyncBatchNorm needs every "
                "rank to pass the same number (an empty batch is allowed)"
            )


def _check_values(layer: _Layer, x: Tensor, index: int) -> None:
    """Training-mode batch norm needs more than one value per channel (a layer that synchronizes
    checks the whole group's batch itself)."""
    if layer.sync is None and x.dim() >= 2 and x.size(1) > 0 and x.numel() == x.size(1):
        raise ValueError(
            f"recompute_batch_norm_stats: batch {index} gives {layer} one value per channel (input size "
            f"{tuple(x.shape)}): batch statistics need more than one; mode='exact' takes batches of any size"
        )


def _record(layer: _Layer, x: Tensor, index: int) -> None:
    """One call's input into the layer's moments, refused when it holds a NaN or an infinity."""
    if not layer.moments.add(x):
        bad = int((~x.detach().isfinite()).sum())
        raise ValueError(
            f"recompute_batch_norm_stats: batch {index} gives {layer} {bad} non-finite values (NaN or inf) of "
            f"{x.numel()}: its statistics would be NaN; nothing was changed"
        )


def _totals(layer: _Layer) -> tuple[float, Tensor | None, Tensor | None]:
    """``(n, mean, M2)`` of everything that reached the layer — on every rank of its process group
    when it synchronizes (one all_gather, which every rank joins whatever it saw)."""
    m = layer.moments
    if layer.sync is None:
        return float(m.n), m.mean, m.m2
    zeros = torch.zeros(layer.module.running_mean.numel(), dtype=torch.float64, device=layer.module.running_mean.device)
    n, mean, m2 = gather_moments(m.n, zeros if m.mean is None else m.mean, zeros if m.m2 is None else m.m2, *layer.sync)
    return float(n.item()), mean, m2


def _write(layer: _Layer, n: float, mean: Tensor, m2: Tensor) -> None:
    """The statistics into the layer's buffers, cast to their dtypes; the calls counted."""
    module = layer.module
    module.running_mean.copy_(cast(mean, module.running_mean.dtype))
    module.running_var.copy_(cast(m2 / (n - 1), module.running_var.dtype))
    if module.num_batches_tracked is not None:
        module.num_batches_tracked.fill_(layer.moments.calls)


def _finish(layers: list[_Layer]) -> None:
    """Each layer's totals (gathered over its ranks) written to its buffers — refused when its
    calls brought fewer than two values per channel (an unbiased variance needs two); a layer no
    batch reached is left alone. Every rank gathers every layer's totals, in the same order,
    before anything can raise."""
    totals = [_totals(layer) for layer in layers]
    for layer, (n, _, _) in zip(layers, totals, strict=True):
        calls = layer.moments.calls
        if calls > 0 and n < 2:
            what = "no values" if n == 0 else "one value per channel"
            raise ValueError(
                f"recompute_batch_norm_stats: {layer} received {what} in its {calls} calls"
                f"{' (every batch empty)' if n == 0 else ''}: its statistics are undefined"
            )
    for layer, (n, mean, m2) in zip(layers, totals, strict=True):
        if n > 0:
            _write(layer, n, mean, m2)  # type: ignore[arg-type]


def _restore(saved: list[tuple[nn.Module, str, Tensor, Tensor]], skip: set[int]) -> None:
    """Buffers back as they were — the same tensor objects, their values copied back — except in
    the modules whose ids are in ``skip``."""
    for module, name, buf, copy in saved:
        if id(module) not in skip:
            setattr(module, name, buf)
            buf.copy_(copy)


def _hook(hooks: list[Any], module: nn.Module, pre: Any = None, post: Any = None) -> None:
    """A forward pre-hook and/or hook taking the call's input (the first argument), kept for removal."""
    def first(args: tuple, kwargs: dict) -> Any:
        return args[0] if args else next(iter(kwargs.values()))

    if pre is not None:
        hooks.append(module.register_forward_pre_hook(lambda m, a, k: pre(first(a, k)), with_kwargs=True))
    if post is not None:
        hooks.append(module.register_forward_hook(lambda m, a, k, out: post(first(a, k)), with_kwargs=True))


def _inputs(
    batches: Iterable[Any], device: torch.device | str | None, layers: list[_Layer], position: list[int]
) -> Iterator[Tensor]:
    """One pass over ``batches``: each batch's input tensor (its index in ``position[0]``, for the
    hooks' messages), ranks agreeing before each batch (``_agree``). Raises for an empty ``batches``."""
    groups = {id(layer.sync[0]): (*layer.sync, layer.module.running_mean.device) for layer in layers if layer.sync}
    end = object()
    iterator = iter(batches)
    for index in itertools.count():
        position[0] = index
        batch = next(iterator, end)
        x, unusable = None, None
        try:
            x = None if batch is end else _input(batch, index, device)
        except TypeError as exc:
            unusable = exc
        _agree(list(groups.values()), 0 if batch is end else -1 if unusable else 1, index)
        if unusable is not None:
            raise unusable
        if x is None:
            if index == 0:
                raise ValueError("recompute_batch_norm_stats: batches is empty: no statistics to compute")
            return
        yield x


def _forward(model: nn.Module, x: Tensor, index: int, stop: type[BaseException] | None = None) -> None:
    """``model(x)``, an error noted with the batch; ``stop`` (a forward stopped on purpose) caught."""
    try:
        model(x)
    except Exception as exc:
        if stop is not None and isinstance(exc, stop):
            return
        exc.add_note(f"recompute_batch_norm_stats: raised while running batch {index}")
        raise


def _one_pass(
    model: nn.Module, layers: list[_Layer], batches: Iterable[Any], device: torch.device | str | None, hooks: list[Any]
) -> None:
    """mode="one-pass": every batch through ``model`` once with ``layers`` in training mode, each
    call's input merged into its layer's moments; then every layer's totals written."""
    position = [0]  # the batch running now, for the hooks' messages
    for layer in layers:
        layer.module.train()
        _hook(hooks, layer.module, pre=lambda x, layer=layer: _check_values(layer, x, position[0]),
              post=lambda x, layer=layer: _record(layer, x, position[0]))  # fmt: skip
    for x in _inputs(batches, device, layers, position):
        _forward(model, x, position[0])
    _finish(layers)


class _Measured(Exception):
    """Raised by the forward pre-hook of the layer being measured: the rest of the forward is not needed."""


def _call_order(model: nn.Module, layers: list[_Layer], x: Tensor) -> list[_Layer]:
    """The batch norms in the order one forward of ``x`` (eval mode) calls them; a layer called
    twice is refused — its statistics would depend on themselves."""
    calls: list[_Layer] = []
    hooks: list[Any] = []
    try:
        for layer in layers:
            _hook(hooks, layer.module, pre=lambda _x, layer=layer: calls.append(layer))
        _forward(model, x, 0)
    finally:
        for hook in hooks:
            hook.remove()
    twice = [layer for layer in layers if calls.count(layer) > 1]
    if twice:
        raise ValueError(
            f"recompute_batch_norm_stats: {twice[0]} is called {calls.count(twice[0])} times per forward; in "
            "mode='exact' its statistics would depend on themselves (the input of its second call passes through "
            "its first): use mode='one-pass'"
        )
    return [*calls, *(layer for layer in layers if layer not in calls)]


def _exact(
    model: nn.Module, layers: list[_Layer], batches: Iterable[Any], device: torch.device | str | None, hooks: list[Any]
) -> None:
    """mode="exact": every batch norm in eval mode; in call order, one pass over the batches per
    layer, each forward stopped at the layer being measured, whose statistics are then written —
    so each layer measures what the layers before it, holding their new statistics, give it."""
    for layer in layers:
        layer.module.eval()
    position = [0]
    first = next(_inputs(batches, device, layers, position))
    order = _call_order(model, layers, first)
    for k, layer in enumerate(order):

        def measure(x: Tensor, layer: _Layer = layer) -> None:
            _record(layer, x, position[0])
            raise _Measured

        def out_of_order(x: Tensor, other: _Layer, layer: _Layer = layer) -> None:
            raise ValueError(
                f"recompute_batch_norm_stats: batch {position[0]} calls {other} before {layer}, unlike batch 0: "
                "mode='exact' needs the same call order in every batch; use mode='one-pass'"
            )

        pass_hooks: list[Any] = []
        _hook(pass_hooks, layer.module, pre=measure)
        for other in order[k + 1 :]:
            _hook(pass_hooks, other.module, pre=lambda x, other=other: out_of_order(x, other))
        hooks.extend(pass_hooks)
        for x in _inputs(batches, device, layers, position):
            _forward(model, x, position[0], stop=_Measured)
        for hook in pass_hooks:
            hook.remove()
        _finish([layer])


def recompute_batch_norm_stats(
    model: ModelT,
    batches: Iterable[Any],
    *,
    mode: Literal["exact", "one-pass"] = "exact",
    device: torch.device | str | None = None,
) -> ModelT:
    r"""Set every batch norm's running statistics to the exact statistics of all the values that
    reach it over ``batches``.

    .. math::
        \hat\mu = \frac{1}{n}\sum_i x_i, \qquad \hat\sigma^2 = \frac{1}{n - 1}\sum_i (x_i - \hat\mu)^2

    over the n values (per channel) that reached the layer in all the batches together, merged from
    each call's float64 moments with Chan's formula (see ``bnviz.stats``) — not the mean of
    per-batch variances, and weighted by batch size.

    Which values reach a layer is what ``mode`` decides:

    - ``"exact"`` (default): those it receives with the model in eval mode once every batch norm
      called before it holds its recomputed statistics — so the eval-mode network's every layer
      normalizes with the mean and unbiased variance of exactly what it will be given. One pass
      over ``batches`` per batch norm, each forward stopped at the layer measured (see
      ``bnviz.stats``): ``batches`` must be iterable again (a list, a tuple, a DataLoader; a
      one-shot generator is refused), and every batch must call the batch norms in the same order,
      each once per forward. Batches of any size, one sample included.
    - ``"one-pass"``: one forward per batch with the batch norms in training mode, as
      ``torch.optim.swa_utils.update_bn`` and fvcore's PreciseBN do: each layer sees inputs
      normalized upstream by every batch's own statistics (biased variance). Exact for the first
      batch norm; an approximation for the later ones that grows with smaller batches. Any
      iterable, iterated once.

    Every other module keeps its mode: after ``model.eval()`` dropout is off and the statistics
    are those the eval-mode network sees; after ``model.train()`` dropout is on (``update_bn``'s
    setting). Afterwards each such layer — torch's ``BatchNorm1d/2d/3d`` and ``SyncBatchNorm``,
    bnviz's ``BatchNorm*`` and ``SyncBatchNorm`` — holds ``running_mean`` (the mean),
    ``running_var`` (the unbiased variance, n − 1) and ``num_batches_tracked`` (the forward calls
    that reached it: the number of batches, in either mode, for a layer called once per forward).
    Every module's training flag, every momentum, every parameter and every other buffer are as
    they were; a layer no batch reaches is left alone, and so are layers without running statistics
    (``track_running_stats=False``). The model runs under ``no_grad``.

    All or nothing: if anything raises — a NaN or an infinity reaching a batch norm among them —
    every buffer of the model is as it was before the call, bit for bit.

    Under a process group, a ``SyncBatchNorm`` that synchronizes ends with the statistics of all
    ranks' batches together (one all_gather of (n, mean, M2) per layer); an empty batch on a rank
    is allowed. Before each batch the ranks agree that each has one, so ranks passing different
    numbers of batches get a ``ValueError`` on every rank instead of a hang. (A rank that raises
    inside the model's forward cannot warn the others: they wait in the next collective until the
    process group's timeout, as in training.)

    Cost (measured, ``docs/library.md``): exact mode runs a forward per batch norm, cut short at it.

    Args:
        model: any module with batch norms; it is returned, updated in place.
        batches: an iterable of input tensors, or of ``(input, …)`` tuples or lists (the first
            element is the input), like ``update_bn``'s loader.
        mode: ``"exact"`` or ``"one-pass"``. Default: ``"exact"``
        device: if given, each input is moved there first. Default: None

    Returns:
        ``model`` itself.

    Raises:
        ValueError: no batch norm with running statistics in ``model``; ``batches`` empty; a batch
            giving a layer a NaN or an infinity, or (one-pass) one value per channel (the message
            names the batch and the layer); too few values for a layer over all batches; (exact)
            a batch norm called twice per forward, or batches calling them in different orders;
            ranks passing different numbers of batches; an unknown ``mode``.
        TypeError: a batch that is neither a tensor nor a tuple or list starting with one; (exact)
            a one-shot iterator such as a generator.
        Any error of the model's forward, with a note naming the batch.
    """
    if mode not in ("exact", "one-pass"):
        raise ValueError(f"recompute_batch_norm_stats: mode must be 'exact' or 'one-pass', not {mode!r}")
    if mode == "exact" and isinstance(batches, Iterator):
        raise TypeError(
            f"recompute_batch_norm_stats: mode='exact' runs the batches once per batch norm, so it needs batches it "
            f"can iterate again (a list, a tuple, a DataLoader), not a one-shot {type(batches).__name__}: pass a "
            "list, or mode='one-pass'"
        )
    layers = _batch_norms(model)
    if not layers:
        raise ValueError(
            "recompute_batch_norm_stats: the model has no batch norm with running statistics "
            "(BatchNorm1d/2d/3d, SyncBatchNorm or bnviz.BatchNorm* with track_running_stats=True)"
        )
    modes = [(module, module.training) for module in model.modules()]
    saved = [(module, name, buf, buf.clone()) for module in model.modules()
             for name, buf in module.named_buffers(recurse=False)]  # fmt: skip
    hooks: list[Any] = []
    try:
        with torch.no_grad():
            (_exact if mode == "exact" else _one_pass)(model, layers, batches, device, hooks)
            # Every other module's buffers as they were (an instance norm's running statistics, say).
            _restore(saved, skip={id(layer.module) for layer in layers})
    except BaseException:
        with torch.no_grad():
            _restore(saved, skip=set())
        raise
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in modes:
            module.training = training
    return model
