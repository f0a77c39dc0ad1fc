"""bnviz: batch normalization and its family from scratch, for any rank, checked against torch.

Functions with torch's signatures and errors: ``batch_norm``, ``layer_norm``, ``group_norm``,
``instance_norm``, ``rms_norm``. Modules with torch's constructors and state: ``BatchNorm`` (any
rank ≥ 2) and ``BatchNorm1d/2d/3d``, ``LayerNorm``, ``GroupNorm``, ``InstanceNorm1d/2d/3d``,
``RMSNorm``. Inference: ``fuse_conv_bn_eval``, ``fuse_linear_bn_eval``, ``fold_batch_norms``,
``freeze_batch_norm`` and ``FrozenBatchNorm``. Statistics: ``recompute_batch_norm_stats``, the exact
population statistics of every batch norm over a set of batches. Checks: ``diagnose``, what is wrong with
the batch norms of a model or a state dict (``python -m bnviz.doctor CHECKPOINT`` on a file). One core
(``bnviz.autograd``) does the maths.
"""

from bnviz.diagnosis import diagnose
from bnviz.fold import FrozenBatchNorm, fold_batch_norms, freeze_batch_norm, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnviz.functional import batch_norm, group_norm, instance_norm, layer_norm, rms_norm
from bnviz.modules import (
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    GroupNorm,
    InstanceNorm1d,
    InstanceNorm2d,
    InstanceNorm3d,
    LayerNorm,
    RMSNorm,
)
from bnviz.stats import recompute_batch_norm_stats
from bnviz.sync import SyncBatchNorm

__all__ = [
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "FrozenBatchNorm",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "LayerNorm",
    "RMSNorm",
    "SyncBatchNorm",
    "batch_norm",
    "diagnose",
    "fold_batch_norms",
    "freeze_batch_norm",
    "fuse_conv_bn_eval",
    "fuse_linear_bn_eval",
    "group_norm",
    "instance_norm",
    "layer_norm",
    "recompute_batch_norm_stats",
    "rms_norm",
]
__version__ = "0.2.0"
