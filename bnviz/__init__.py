"""bnviz: batch normalization from scratch, for any rank, checked against torch.

Public API: ``batch_norm`` (``F.batch_norm``'s signature), ``BatchNorm`` (any rank ≥ 2) and
``BatchNorm1d`` / ``BatchNorm2d`` / ``BatchNorm3d`` (the same layer with torch's input checks).
"""

from bnviz.functional import batch_norm
from bnviz.modules import BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm"]
__version__ = "0.1.0"
