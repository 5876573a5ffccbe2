"""Tokens from any module with timm's ``forward_features`` seam (ViT, Mixer, gMLP, CNNs).

``forward_features(x)`` returns either tokens (n, t, dim) — ViT / Mixer / gMLP style, the first
``num_prefix_tokens`` of them class or distillation tokens, dropped here — or a feature map
(n, C, h, w) — CNN style, flattened row-major to (n, h·w, C); a module with
``output_fmt == "NHWC"`` (timm's Swin) returns (n, h, w, C).

timm is optional (``pip install timm``); weights are only read from a local file, never
downloaded.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from .base import as_images, file_sha256, package_versions, preprocess

__all__ = ["TimmBackbone"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch state-dict file (no pickle code)."""
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as error:
            raise ImportError("weights_path: reading .safetensors needs `pip install "
                              "safetensors`") from error
        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]       # training checkpoints nest the weights
    if not isinstance(state, dict):
        raise TypeError(f"weights_path: expected a state dict in {path}, got "
                         f"{type(state).__name__}")
    return state


def _state_sha256(module: torch.nn.Module) -> str:
    """sha256 over the module's state dict (names, shapes, dtypes and bytes, sorted by name)."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tuple(value.shape)}:{value.dtype};".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


class TimmBackbone:
    """Tokens (n, s, dim) from a module's ``forward_features``, prefix tokens dropped.

    Parameters
    ----------
    model_name_or_module : a timm model name (timm imported lazily, ``pretrained=False``) or an
        ``nn.Module`` with ``forward_features``.
    weights_path : local ``.safetensors`` or state-dict file loaded strictly into the model
        (required with a model name: nothing is downloaded).
    image_size : side S of the square network input.
    mean, std : per-channel normalization in [0, 1] pixel units; default the model's timm
        ``pretrained_cfg``, else ImageNet's.
    crop_fraction : center crop of side crop_fraction · min(H, W) before the bicubic resize;
        default the ``pretrained_cfg`` crop_pct, else 0.875.
    batch_size : images per forward pass.
    name : reported name (default the model name or the module's class name).

    The grid is the module's ``patch_embed.grid_size`` for tokens, the feature map's (h, w) for
    CNNs, else (r, r) when s = r² and (1, s) otherwise; it and ``n_features`` come from one
    probe forward pass at construction.
    """

    def __init__(self, model_name_or_module, weights_path=None, image_size: int = 224,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 crop_fraction: float | None = None, batch_size: int = 32,
                 name: str | None = None):
        if not isinstance(image_size, Integral) or isinstance(image_size, bool) or image_size < 1:
            raise ValueError(f"image_size: expected a positive integer, got {image_size!r}")
        if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.weights_path = None if weights_path is None else Path(weights_path)
        if self.weights_path is not None and not self.weights_path.is_file():
            raise ValueError(f"weights_path: expected an existing file, got {weights_path!r}")
        if isinstance(model_name_or_module, str):
            module = self._create(model_name_or_module)
            default_name = model_name_or_module
        elif isinstance(model_name_or_module, torch.nn.Module):
            if not callable(getattr(model_name_or_module, "forward_features", None)):
                raise TypeError("model_name_or_module: expected a module with timm's "
                                "forward_features(x) method, got "
                                f"{type(model_name_or_module).__name__} without one")
            module = model_name_or_module
            default_name = type(module).__name__
        else:
            raise TypeError("model_name_or_module: expected a timm model name or an nn.Module, "
                            f"got {type(model_name_or_module).__name__}")
        if self.weights_path is not None:
            module.load_state_dict(_load_state_dict(self.weights_path), strict=True)
        self.module = module.eval()
        self.name = default_name if name is None else str(name)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        cfg = getattr(module, "pretrained_cfg", None) or {}
        self.mean = tuple(float(v) for v in (mean if mean is not None
                                             else cfg.get("mean", IMAGENET_MEAN)))
        self.std = tuple(float(v) for v in (std if std is not None
                                            else cfg.get("std", IMAGENET_STD)))
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean, std: expected 3 values each with std > 0, got "
                             f"{self.mean} and {self.std}")
        crop_fraction = cfg.get("crop_pct", 0.875) if crop_fraction is None else crop_fraction
        if not isinstance(crop_fraction, Real) or not 0 < crop_fraction <= 1:
            raise ValueError(f"crop_fraction: expected a number in (0, 1], got {crop_fraction!r}")
        self.crop_fraction = float(crop_fraction)
        self.num_prefix_tokens = int(getattr(module, "num_prefix_tokens", 0) or 0)
        self.weights_sha256 = (file_sha256(self.weights_path) if self.weights_path is not None
                               else _state_sha256(module))
        probe = self._features(np.zeros((1, 3, self.image_size, self.image_size), np.float32))
        self.grid = self._grid(probe)
        self.n_features = probe.shape[-1]

    @staticmethod
    def _create(model_name: str) -> torch.nn.Module:
        try:
            import timm
        except ImportError as error:
            raise ImportError(f"TimmBackbone({model_name!r}) needs timm: `pip install timm` "
                              "(or pass an nn.Module with forward_features)") from error
        return timm.create_model(model_name, pretrained=False)

    def _features(self, batch: np.ndarray) -> np.ndarray:
        """(b, 3, S, S) float32 → tokens (b, s, dim) float32, prefix tokens dropped."""
        with torch.no_grad():
            out = self.module.forward_features(torch.from_numpy(batch))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if out.ndim == 4:
            if getattr(self.module, "output_fmt", "NCHW") != "NHWC":
                out = out.permute(0, 2, 3, 1)                         # (b, h, w, C)
            self._map_grid = tuple(out.shape[1:3])
            out = out.reshape(out.shape[0], -1, out.shape[3])        # (b, h·w, C)
        elif out.ndim == 3:
            out = out[:, self.num_prefix_tokens:]                    # (b, s, dim)
        else:
            raise ValueError(f"{self.name}.forward_features: expected (n, tokens, dim) or "
                             f"(n, C, h, w), got shape {tuple(out.shape)}")
        return out.float().numpy()

    def _grid(self, probe: np.ndarray) -> tuple[int, int]:
        s = probe.shape[1]
        if hasattr(self, "_map_grid"):
            return self._map_grid
        grid_size = getattr(getattr(self.module, "patch_embed", None), "grid_size", None)
        if grid_size is not None and math.prod(grid_size) == s:
            return tuple(int(g) for g in grid_size)
        root = math.isqrt(s)
        return (root, root) if root * root == s else (1, s)

    def tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """images: each (H, W) grey or (H, W, 3) RGB uint8 → float32 (n, s, n_features)."""
        images = as_images(images)
        results = []
        for start in range(0, len(images), self.batch_size):
            batch = preprocess(images[start:start + self.batch_size], self.image_size,
                               self.crop_fraction, self.mean, self.std)       # (b, 3, S, S)
            results.append(self._features(batch))                           # (b, s, D)
        return np.ascontiguousarray(np.concatenate(results), dtype=np.float32)

    def describe(self) -> dict:
        """Everything that determines the tokens (JSON-serializable)."""
        return {
            "name": self.name,
            "image_size": self.image_size,
            "grid": list(self.grid),
            "n_features": self.n_features,
            "num_prefix_tokens_dropped": self.num_prefix_tokens,
            "preprocessing": {
                "input": "uint8 RGB; grey repeated to 3 channels",
                "resize": f"center crop of side {self.crop_fraction:g}·min(H, W), PIL bicubic "
                          f"resize to {self.image_size}x{self.image_size}",
                "normalize": "(pixel/255 - mean) / std",
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "weights": {"file": None if self.weights_path is None else self.weights_path.name,
                        "sha256": self.weights_sha256},
            "runtime": f"torch {package_versions('torch')['torch']}",
            "versions": package_versions("cvxattn", "torch", "numpy", "pillow", "timm"),
        }

    def __repr__(self) -> str:
        return f"TimmBackbone({self.name!r}, image_size={self.image_size})"
