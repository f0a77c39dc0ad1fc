"""bnviz: batch normalization from scratch, for any rank, checked against torch.

Public API: ``batch_norm`` (``F.batch_norm``'s signature), ``BatchNorm`` (any rank ≥ 2) and
``BatchNorm1d`` / ``BatchNorm2d`` / ``BatchNorm3d`` (the same layer with torch's input checks).
"""

from bnviz.fold import FrozenBatchNorm, fold_batch_norms, freeze_batch_norm, fuse_conv_bn_eval, fuse_linear_bn_eval
from bnviz.functional import batch_norm
from bnviz.modules import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = [
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "FrozenBatchNorm",
    "batch_norm",
    "fold_batch_norms",
    "freeze_batch_norm",
    "fuse_conv_bn_eval",
    "fuse_linear_bn_eval",
]
__version__ = "0.1.0"
