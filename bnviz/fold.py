r"""Batch norm at inference: folding it into the layer before it, and freezing it for fine-tuning.

In evaluation a batch norm is a fixed affine map per channel c,

.. math::
    y = (x - \hat\mu_c)\,\frac{\gamma_c}{\sqrt{\hat\sigma^2_c + \epsilon}} + \beta_c
      = x \cdot s_c + (\beta_c - \hat\mu_c s_c), \qquad s_c = \frac{\gamma_c}{\sqrt{\hat\sigma^2_c + \epsilon}}

so when ``x = W ⋆ u + b`` comes from a convolution or a linear layer, the pair is one layer:

.. math::
    W'_c = W_c \cdot s_c, \qquad b'_c = (b_c - \hat\mu_c)\,s_c + \beta_c

(``W_c``: the weights that produce output channel c — dim 0 of a conv's or linear's weight, dim 1
of a transposed conv's). That is **folding**: ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval`` for
one pair, with torch's signatures, results and error messages, and ``fold_batch_norms`` for a
whole model, which finds the pairs with ``torch.fx``.

**Freezing** keeps the layer but fixes it: ``FrozenBatchNorm`` normalizes with its stored
statistics in training mode too, and its γ, β are buffers, not parameters, so neither
``model.train()`` nor an optimizer moves anything. Its forward is ``bnviz.batch_norm`` with
``training=False``: the same core as every other bnviz layer.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any, TypeVar

import torch
from torch import Tensor, fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from bnviz.functional import batch_norm
from bnviz.modules import BatchNorm, BatchNorm2d, BatchNorm3d

ConvT = TypeVar("ConvT", bound=_ConvNd)
LinearT = TypeVar("LinearT", bound=nn.Linear)
ModuleT = TypeVar("ModuleT", bound=nn.Module)


# ---------------------------------------------------------------------------------------------
# Folding one pair: torch.nn.utils.fusion's functions, from the formula
# ---------------------------------------------------------------------------------------------


def _defaults(bn_rm: Tensor, bn_w: Tensor | None, bn_b: Tensor | None) -> tuple[Tensor, Tensor]:
    """γ and β, with a batch norm without them (``affine=False``, or ``bias=False``) as γ = 1, β = 0."""
    gamma = torch.ones_like(bn_rm) if bn_w is None else bn_w
    beta = torch.zeros_like(bn_rm) if bn_b is None else bn_b
    return gamma, beta


def fuse_conv_bn_weights(
    conv_w: Tensor,
    conv_b: Tensor | None,
    bn_rm: Tensor,
    bn_rv: Tensor,
    bn_eps: float,
    bn_w: Tensor | None,
    bn_b: Tensor | None,
    transpose: bool = False,
    groups: int = 1,
) -> tuple[nn.Parameter, nn.Parameter]:
    r"""The folded weight and bias, ``W' = W · s`` and ``b' = (b − μ̂) · s + β``, ``s = γ / √(σ̂² + ε)``.

    ``s`` scales the output channels: dim 0 of a conv's ``(C_out, C_in/g, *k)`` weight, dim 1 of
    a transposed conv's ``(C_in, C_out/g, *k)`` weight (``transpose=True``). A grouped transposed
    conv holds only ``C_out/g`` output channels in dim 1 — group ``j``'s rows ``C_in/g · j …``
    produce output channels ``C_out/g · j …`` — so its weight is scaled per group (``groups``);
    torch's ``fuse_conv_bn_weights`` has no ``groups`` and fails there (or silently builds a
    wrong weight). Operations in torch's order, so the results are bit for bit torch's; the
    weight keeps its dtype, the bias takes the conv bias's dtype (the weight's when it has none).
    """
    weight_dtype = conv_w.dtype
    bias_dtype = conv_b.dtype if conv_b is not None else weight_dtype
    if conv_b is None:
        conv_b = torch.zeros_like(bn_rm)  # torch's: requires_grad=False, so the folded bias is frozen
    gamma, beta = _defaults(bn_rm, bn_w, bn_b)
    with torch.no_grad():
        inv_std = torch.rsqrt(bn_rv + bn_eps)  # 1 / √(σ̂² + ε), (C_out,)
        kernel = [1] * (conv_w.dim() - 2)
        if transpose and groups > 1:
            # (C_in, C_out/g, *k) -> (g, C_in/g, C_out/g, *k), scaled by s as (g, 1, C_out/g, 1, …)
            grouped = conv_w.unflatten(0, (groups, -1))
            fused_w = (grouped * (gamma * inv_std).reshape(groups, 1, -1, *kernel)).flatten(0, 1)
        else:
            shape = [1, -1, *kernel] if transpose else [-1, 1, *kernel]
            fused_w = conv_w * (gamma * inv_std).reshape(shape)  # W' = W · s
        fused_b = (conv_b - bn_rm) * inv_std * gamma + beta  # b' = (b − μ̂) · s + β
    return (
        nn.Parameter(fused_w.to(dtype=weight_dtype), conv_w.requires_grad),
        nn.Parameter(fused_b.to(dtype=bias_dtype), conv_b.requires_grad),
    )


def fuse_conv_bn_eval(conv: ConvT, bn: nn.Module, transpose: bool = False) -> ConvT:
    r"""A new conv equal to ``bn(conv(x))`` in evaluation, like ``torch.nn.utils.fusion.fuse_conv_bn_eval``.

    .. math::
        W' = W \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \qquad
        b' = (b - \hat\mu) \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta

    per output channel (``b = 0`` for a conv without bias; ``γ = 1``, ``β = 0`` for a batch norm
    without affine parameters). ``conv`` is deep-copied and neither module is changed.

    Args:
        conv: a ``Conv1d/2d/3d`` or ``ConvTranspose1d/2d/3d``, in eval mode.
        bn: a batch norm over the conv's output channels (torch's or bnviz's), in eval mode, with
            running statistics.
        transpose: ``conv`` is a transposed conv (its output channels are dim 1 of its weight).

    Raises ``AssertionError("Fusion only for eval!")`` if either module is in training mode and
    ``AssertionError`` if ``bn`` has no running statistics — torch's types and messages.
    Unlike torch, a grouped transposed conv is folded correctly (see ``fuse_conv_bn_weights``).
    """
    if conv.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    fused_conv = copy.deepcopy(conv)
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    fused_conv.weight, fused_conv.bias = fuse_conv_bn_weights(
        fused_conv.weight,
        fused_conv.bias,
        bn.running_mean,
        bn.running_var,
        bn.eps,
        bn.weight,
        bn.bias,
        transpose,
        conv.groups if getattr(conv, "transposed", False) else 1,
    )
    return fused_conv


def fuse_linear_bn_weights(
    linear_w: Tensor,
    linear_b: Tensor | None,
    bn_rm: Tensor,
    bn_rv: Tensor,
    bn_eps: float,
    bn_w: Tensor | None,
    bn_b: Tensor | None,
) -> tuple[nn.Parameter, nn.Parameter]:
    r"""``W' = W · s`` (s along dim 0 of the ``(out, in)`` weight) and ``b' = (b − μ̂) · s + β``,
    ``s = γ / √(σ̂² + ε)``, in torch's order (here ``s`` is cast to the weight's dtype first).

    Unlike torch's, a batch norm without γ or β folds (as γ = 1, β = 0) instead of raising
    ``TypeError: unsupported operand type(s) for *: 'NoneType' and 'Tensor'``.
    """
    weight_dtype = linear_w.dtype
    bias_dtype = linear_b.dtype if linear_b is not None else weight_dtype
    if linear_b is None:
        linear_b = torch.zeros_like(bn_rm)
    gamma, beta = _defaults(bn_rm, bn_w, bn_b)
    with torch.no_grad():
        scale = gamma * torch.rsqrt(bn_rv + bn_eps)  # s = γ / √(σ̂² + ε), (out,)
        fused_w = linear_w * scale.unsqueeze(-1).to(dtype=weight_dtype)  # (out, in) · (out, 1)
        fused_b = ((linear_b - bn_rm) * scale + beta).to(dtype=bias_dtype)
    return nn.Parameter(fused_w, linear_w.requires_grad), nn.Parameter(fused_b, linear_b.requires_grad)


def fuse_linear_bn_eval(linear: LinearT, bn: nn.Module) -> LinearT:
    r"""A new linear layer equal to ``bn(linear(x))`` in evaluation, like torch's ``fuse_linear_bn_eval``.

    .. math::
        W' = W \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \qquad
        b' = (b - \hat\mu) \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta

    per output feature, for a batch norm over the linear's ``(N, out_features)`` output
    (``bn.num_features`` equal to ``out_features``, or 1). ``linear`` is deep-copied and neither
    module is changed.

    Raises torch's ``AssertionError``s: either module in training mode, mismatched features, no
    running statistics. Unlike torch, a batch norm without affine parameters folds (γ = 1, β = 0).
    """
    if linear.training or bn.training:
        raise AssertionError("Fusion only for eval!")
    fused_linear = copy.deepcopy(linear)
    if linear.out_features != bn.num_features and bn.num_features != 1:
        raise AssertionError(
            f"To fuse, linear.out_features == bn.num_features or bn.num_features == 1, "
            f"got linear.out_features={linear.out_features} and bn.num_features={bn.num_features}"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise AssertionError("bn.running_mean and bn.running_var must not be None")
    fused_linear.weight, fused_linear.bias = fuse_linear_bn_weights(
        fused_linear.weight, fused_linear.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return fused_linear


# ---------------------------------------------------------------------------------------------
# Freezing: a batch norm with fixed statistics and fixed γ, β
# ---------------------------------------------------------------------------------------------


class FrozenBatchNorm(nn.Module):
    r"""Batch norm with fixed statistics and fixed affine parameters, in every mode.

    .. math::
        y = \frac{x - \hat\mu}{\sqrt{\hat\sigma^2 + \epsilon}} \cdot \gamma + \beta

    with ``weight`` (γ), ``bias`` (β), ``running_mean`` (μ̂) and ``running_var`` (σ̂²) all
    *buffers*: saved in the state dict under torch's names, never returned by ``parameters()``,
    never updated. ``train()`` changes nothing: the forward is always
    ``bnviz.batch_norm(x, running_mean, running_var, weight, bias, training=False, eps=eps)``.
    Gradients still flow to the input. Any rank ≥ 2, channels on dim 1 (like torchvision's
    ``FrozenBatchNorm2d``, for any rank). ``num_batches_tracked`` is kept, unchanged, so the state
    dict has exactly a torch ``BatchNorm*d``'s keys and loads both ways.

    Args:
        num_features: C, the size of dim 1.
        eps: added to the variance under the square root. Default: 1e-5
    """

    def __init__(self, num_features: int, eps: float = 1e-5, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.weight: Tensor
        self.bias: Tensor
        self.running_mean: Tensor
        self.running_var: Tensor
        self.num_batches_tracked: Tensor
        self.register_buffer("weight", torch.ones(num_features, **factory))
        self.register_buffer("bias", torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    @classmethod
    def from_batch_norm(cls, bn: nn.Module) -> FrozenBatchNorm:
        """A frozen copy of ``bn``'s current state (γ = 1, β = 0 where ``bn`` has none).

        Raises ``ValueError`` for a batch norm without running statistics
        (``track_running_stats=False``): it has no statistics to freeze.
        """
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"cannot freeze {type(bn).__name__}({bn.num_features}) with track_running_stats=False: "
                "it normalizes with each batch's statistics and has no running statistics to freeze"
            )
        frozen = cls(bn.num_features, bn.eps, device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        gamma, beta = _defaults(bn.running_mean, bn.weight, bn.bias)
        with torch.no_grad():
            frozen.weight = gamma.detach().clone()
            frozen.bias = beta.detach().clone()
            frozen.running_mean = bn.running_mean.detach().clone()
            frozen.running_var = bn.running_var.detach().clone()
            if getattr(bn, "num_batches_tracked", None) is not None:
                frozen.num_batches_tracked = bn.num_batches_tracked.detach().clone()
        return frozen

    def forward(self, input: Tensor) -> Tensor:
        return batch_norm(
            input, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, local_metadata: dict[str, Any], *args: Any
    ) -> None:
        # torchvision's FrozenBatchNorm2d saves no num_batches_tracked: accept such state dicts.
        key = prefix + "num_batches_tracked"
        if key not in state_dict:
            state_dict[key] = torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


BATCH_NORMS = (_BatchNorm, BatchNorm)  # torch's (1d/2d/3d, Sync) and bnviz's (universal, 1d/2d/3d)


def _replace_children(model: nn.Module, new: dict[int, nn.Module]) -> None:
    """Every child slot that holds a module ``m`` with ``id(m)`` in ``new`` gets ``new[id(m)]``,
    under every name it is registered by (one module may hang in several places)."""
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):  # named_children() skips repeats
            if child is not None and id(child) in new:
                setattr(parent, name, new[id(child)])


def freeze_batch_norm(model: ModuleT) -> ModuleT | FrozenBatchNorm:
    r"""Replace every batch norm in ``model`` by a ``FrozenBatchNorm`` of its current state, **in place**.

    .. math::
        y = (x - \hat\mu)\,\frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta
        \quad\text{with } \hat\mu, \hat\sigma^2, \gamma, \beta \text{ fixed}

    Like ``nn.SyncBatchNorm.convert_sync_batchnorm``: ``model``'s children are swapped in place
    and ``model`` is returned — except when ``model`` is itself a batch norm, when a new
    ``FrozenBatchNorm`` is returned (so always use the return value). A batch norm registered
    under several names becomes one frozen layer under all of them. The frozen layers' γ and β
    are buffers: build the optimizer *after* freezing (or from ``model.parameters()`` again),
    since an optimizer built before still holds the old parameters.

    Freezes torch's ``BatchNorm1d/2d/3d`` (and ``SyncBatchNorm``) and bnviz's ``BatchNorm``,
    ``BatchNorm1d/2d/3d``; raises ``ValueError`` for one without running statistics.
    """
    if isinstance(model, BATCH_NORMS):
        return FrozenBatchNorm.from_batch_norm(model)
    frozen: dict[int, nn.Module] = {}
    for module in model.modules():
        if isinstance(module, BATCH_NORMS) and id(module) not in frozen:
            frozen[id(module)] = FrozenBatchNorm.from_batch_norm(module)
    _replace_children(model, frozen)
    return model


# ---------------------------------------------------------------------------------------------
# Folding a whole model: torch.fx finds which layer feeds which batch norm
# ---------------------------------------------------------------------------------------------

FOLDABLE_NORMS = (*BATCH_NORMS, FrozenBatchNorm)
_NOT_AFTER_LINEAR = (nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm2d, BatchNorm3d)  # they never see (N, F)


class _PairTracer(fx.Tracer):
    """fx's tracer, stopping at convs, linears and batch norms (bnviz's are Python all the way
    down, and their input checks cannot be traced)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        pair_member = isinstance(m, (*FOLDABLE_NORMS, _ConvNd, nn.Linear))
        return pair_member or super().is_leaf_module(m, module_qualified_name)


def _first_training_norm(model: nn.Module) -> str | None:
    """The name of the model (``"model"``) or of its first batch norm in training mode, or None."""
    if model.training:
        return "model"
    return next((name for name, m in model.named_modules() if isinstance(m, BATCH_NORMS) and m.training), None)


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    """``layer`` folded with ``bn``, or None where the fold would not be the same function."""
    if bn.running_mean is None or bn.running_var is None:  # untracked: batch statistics in eval too
        return None
    weight = layer.weight
    if (weight.dtype, weight.device) != (bn.running_mean.dtype, bn.running_mean.device):
        return None  # the unfolded pair would raise or convert: keep its behaviour
    if isinstance(layer, _ConvNd) and layer.out_channels == bn.num_features:
        return fuse_conv_bn_eval(layer, bn, transpose=layer.transposed)
    if isinstance(layer, nn.Linear) and layer.out_features == bn.num_features and not isinstance(bn, _NOT_AFTER_LINEAR):
        return fuse_linear_bn_eval(layer, bn)
    return None


def fold_batch_norms(model: nn.Module) -> nn.Module:
    r"""A new eval-mode copy of ``model`` with each batch norm folded into the conv or linear before it.

    For each pair ``bn(layer(x))`` the layer becomes ``fuse_conv_bn_eval`` /
    ``fuse_linear_bn_eval``'s

    .. math::
        W' = W \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \qquad
        b' = (b - \hat\mu) \cdot \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}} + \beta

    and the batch norm an ``nn.Identity``; the model keeps its class and its ``forward``. The
    pairs are found by tracing with ``torch.fx`` (``nn.Sequential``, nested or not, and any model
    ``torch.fx.symbolic_trace`` can trace). A pair is folded only when that is the same function:

    - the layer's output goes to the batch norm and nowhere else (not also to a residual add);
    - the layer and the batch norm are each called once (a shared layer used elsewhere without
      the batch norm would change there too), and their parameters are not read directly;
    - the batch norm has running statistics, and the layer's dtype and device;
    - the batch norm normalizes the layer's output channels: ``num_features`` equal to a conv's
      ``out_channels``, or to a linear's ``out_features`` with a batch norm that takes ``(N, F)``
      (bnviz's ``BatchNorm``/``BatchNorm1d``, torch's ``BatchNorm1d``; a linear applied to a
      ``(N, F, F)`` input, with features on dim 2, is the one case this cannot tell apart).

    Everything else is left as it was. ``model`` itself is never changed.

    Raises:
        ValueError: ``model`` or one of its batch norms is in training mode — training uses
            each batch's statistics, folding uses the running ones; call ``model.eval()`` first.
            Also when ``torch.fx`` cannot trace the model.
    """
    offender = _first_training_norm(model)
    if offender is not None:
        raise ValueError(
            f"fold_batch_norms needs a model in eval mode ({offender!r} is in training mode): folding bakes in "
            "the running statistics, which training mode does not use; call model.eval() first"
        )
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    new: dict[int, nn.Module] = {}
    for layer_name, bn_name in conv_bn_pairs(folded, "fold_batch_norms"):
        layer, bn = modules[layer_name], modules[bn_name]
        if id(layer) in new:
            continue
        fused = _fold(layer, bn)
        if fused is not None:
            new[id(layer)], new[id(bn)] = fused, nn.Identity().eval()
    _replace_children(folded, new)
    return folded


def conv_bn_pairs(model: nn.Module, caller: str = "conv_bn_pairs") -> list[tuple[str, str]]:
    """``(layer name, batch norm name)`` for each conv or linear whose output goes to a batch norm
    and nowhere else, each called once and neither read as an attribute — the pairs
    ``fold_batch_norms`` folds where dtypes, devices and channel counts allow, and the ones whose
    bias the batch norm's mean subtraction cancels (``bnviz.diagnose``'s ``bias-before-norm``).
    Found by tracing with ``torch.fx``, in the order the forward calls them.

    Raises:
        ValueError: ``torch.fx`` cannot trace the model (the message starts with ``caller``).
    """
    if isinstance(model, (*FOLDABLE_NORMS, _ConvNd, nn.Linear)) or not any(
        isinstance(m, FOLDABLE_NORMS) for m in model.modules()
    ):
        return []
    try:
        graph = _PairTracer().trace(model)
    except Exception as exc:
        raise ValueError(
            f"{caller} finds conv → batch norm pairs with torch.fx, which cannot trace this model: {exc}"
        ) from exc
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    read_attrs = [str(node.target) for node in graph.nodes if node.op == "get_attr"]

    def names(m: nn.Module) -> list[str]:
        return [name for name, other in model.named_modules(remove_duplicate=False) if other is m]

    def reads_attrs(m: nn.Module) -> bool:
        return any(attr.startswith(name + ".") for name in names(m) for attr in read_attrs)

    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), FOLDABLE_NORMS):
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        layer, bn = modules[source.target], modules[node.target]
        if not isinstance(layer, (_ConvNd, nn.Linear)) or calls[source.target] != 1 or calls[node.target] != 1:
            continue
        if reads_attrs(layer) or reads_attrs(bn):
            continue
        pairs.append((str(source.target), str(node.target)))
    return pairs
