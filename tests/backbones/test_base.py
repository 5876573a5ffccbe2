"""pool_features against torch's adaptive_avg_pool1d; image validation."""

import numpy as np
import pytest
import torch

from cvxattn.backbones import pool_features
from cvxattn.backbones.base import as_images


@pytest.mark.parametrize("D, d", [(1280, 100), (13, 5), (13, 13), (7, 1), (5, 3), (11, 4)])
def test_pool_features_matches_adaptive_avg_pool1d(D, d):
    rng = np.random.default_rng(D * d)
    tokens = rng.normal(size=(3, 7, D)).astype(np.float32)                  # (n, s, D)
    expected = torch.nn.functional.adaptive_avg_pool1d(
        torch.from_numpy(tokens).reshape(21, 1, D), d).reshape(3, 7, d).numpy()
    pooled = pool_features(tokens, d)
    assert pooled.shape == (3, 7, d) and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("d", [0, -1, 14, 2.0, True, None])
def test_pool_features_rejects_bad_d(d):
    with pytest.raises(ValueError, match=r"d: expected an integer in \[1, 13\]"):
        pool_features(np.zeros((2, 3, 13)), d)


def test_pool_features_rejects_bad_tokens():
    with pytest.raises(ValueError, match="tokens: expected a 3-D array"):
        pool_features(np.zeros((3, 13)), 2)


def test_as_images_validation():
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6)
    (rgb,) = as_images([grey])
    assert rgb.shape == (5, 6, 3) and (rgb == grey[:, :, None]).all()
    assert len(as_images(np.zeros((2, 4, 4, 3), np.uint8))) == 2
    with pytest.raises(ValueError, match=r"images\[0\]: expected dtype uint8"):
        as_images([np.zeros((4, 4, 3))])
    with pytest.raises(ValueError, match=r"images\[1\]: expected shape \(H, W\) grey"):
        as_images([grey, np.zeros((4, 4, 4), np.uint8)])
    with pytest.raises(TypeError, match="wrap a single image in a list"):
        as_images(grey)
    with pytest.raises(ValueError, match="at least one image"):
        as_images([])
