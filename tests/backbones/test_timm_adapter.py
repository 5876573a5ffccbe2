"""TimmBackbone against stand-ins with timm's forward_features interface."""

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from cvxattn.backbones import Backbone, TimmBackbone
from cvxattn.backbones.base import preprocess


class TinyViT(nn.Module):
    """timm ViT-style: patch embedding, num_prefix_tokens class tokens, (n, t, dim) features."""

    def __init__(self, patch=8, dim=5, num_prefix_tokens=1):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.num_prefix_tokens = num_prefix_tokens
        self.prefix = nn.Parameter(torch.full((1, num_prefix_tokens, dim), 100.0))
        self.norm = nn.LayerNorm(dim)

    def forward_features(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)              # (n, h·w, dim)
        x = torch.cat([self.prefix.expand(len(x), -1, -1), x], dim=1)   # (n, p + h·w, dim)
        return self.norm(x)


class TinyCNN(nn.Module):
    """timm CNN-style: (n, C, h, w) features."""

    def __init__(self, channels=7):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 4, stride=4)

    def forward_features(self, x):
        return torch.relu(self.conv(x))                                 # (n, C, h, w)


def _images(rng, n=3):
    sizes = [(30, 26), (24, 24), (17, 40)]
    return [rng.integers(0, 256, size=(*sizes[k % 3], 3), dtype=np.uint8) for k in range(n)]


@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_token_form_drops_prefix_tokens(prefix):
    torch.manual_seed(0)
    module = TinyViT(num_prefix_tokens=prefix)
    backbone = TimmBackbone(module, image_size=24)                      # 3 × 3 patches of 8 px
    assert isinstance(backbone, Backbone)
    assert backbone.grid == (3, 3) and backbone.n_features == 5
    images = _images(np.random.default_rng(1))
    tokens = backbone.tokens(images)
    assert tokens.shape == (3, 9, 5) and tokens.dtype == np.float32
    batch = preprocess(images, 24, 0.875, backbone.mean, backbone.std)
    with torch.no_grad():
        expected = module.forward_features(torch.from_numpy(batch))[:, prefix:]
    np.testing.assert_allclose(tokens, expected.numpy(), atol=1e-6)


def test_feature_map_form_is_row_major():
    torch.manual_seed(0)
    module = TinyCNN()
    backbone = TimmBackbone(module, image_size=20, crop_fraction=1.0, batch_size=2)
    assert backbone.grid == (5, 5) and backbone.n_features == 7
    images = _images(np.random.default_rng(2))
    tokens = backbone.tokens(images)                                    # (3, 25, 7)
    batch = preprocess(images, 20, 1.0, backbone.mean, backbone.std)
    with torch.no_grad():
        fmap = module.forward_features(torch.from_numpy(batch))         # (3, 7, 5, 5)
    assert tokens.shape == (3, 25, 7)
    np.testing.assert_allclose(tokens[:, 1 * 5 + 3], fmap[:, :, 1, 3].numpy(), atol=1e-6)


def test_grey_images_and_describe():
    backbone = TimmBackbone(TinyCNN(), image_size=16, name="tiny")
    grey = np.random.default_rng(3).integers(0, 256, size=(21, 19), dtype=np.uint8)
    tokens = backbone.tokens([grey, np.stack([grey] * 3, axis=2)])
    np.testing.assert_array_equal(tokens[0], tokens[1])
    info = backbone.describe()
    assert info["name"] == "tiny" and info["grid"] == [4, 4] and info["n_features"] == 7
    assert info["runtime"].startswith("torch ") and len(info["weights"]["sha256"]) == 64


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_from_a_local_file(tmp_path, suffix):
    if suffix == ".safetensors":
        safetensors_torch = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    source = TinyViT()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors_torch.save_file(source.state_dict(), str(path))
    else:
        torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    target = TinyViT()
    backbone = TimmBackbone(target, weights_path=path, image_size=16)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value)
    assert backbone.describe()["weights"]["file"] == path.name


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_model_name_without_timm_says_how_to_install():
    with pytest.raises(ImportError, match="pip install timm"):
        TimmBackbone("vit_tiny_patch16_224")


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="expected a module with timm's forward_features"):
        TimmBackbone(nn.Linear(2, 2))
    with pytest.raises(TypeError, match="expected a timm model name or an nn.Module"):
        TimmBackbone(3)
    with pytest.raises(ValueError, match="weights_path: expected an existing file"):
        TimmBackbone(TinyCNN(), weights_path=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="crop_fraction: expected a number in"):
        TimmBackbone(TinyCNN(), crop_fraction=1.5)
