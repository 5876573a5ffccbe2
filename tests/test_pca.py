"""PCA pooling: the PCA against scikit-learn's, fitted on training tokens only and reused for
the test tokens (a leak of test statistics fails these tests), saved with the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.decomposition import PCA

from cvxattn.features import PROJECTION, extract, load
from cvxattn.pca import Moments, TokenPCA
from tests.test_features import F, FakeBackbone, FakeImages

OPTS = dict(d=3, batch_size=3, shard_size=7, progress=False)  # 23 images → 4 shards


def full_tokens(images, first=None):
    chosen = images.images if first is None else images.images[:first]
    return FakeBackbone().tokens(chosen)  # (k, s, F)


def reference(tokens: np.ndarray, d: int) -> PCA:
    return PCA(n_components=d, svd_solver="full").fit(tokens.reshape(-1, tokens.shape[-1]))


def aligned(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """``theirs`` (..., d) with each column's sign matched to ``ours`` (PCA signs are free)."""
    signs = np.sign((ours.reshape(-1, ours.shape[-1]) * theirs.reshape(-1, ours.shape[-1])
                     ).sum(0))
    return theirs * signs


def test_streamed_moments_give_scikit_learns_pca():
    rng = np.random.default_rng(0)
    tokens = rng.normal(size=(50, 6, 5)) @ rng.normal(size=(5, 5)) + 3.0
    moments = Moments(5)
    for k in range(0, 50, 7):  # batches of images
        moments.add(tokens[k:k + 7])
    ours, theirs = TokenPCA.fit(moments, 3), reference(tokens, 3)
    assert ours.n_tokens == 300
    np.testing.assert_allclose(ours.variances, theirs.explained_variance_, rtol=1e-9)
    np.testing.assert_allclose(np.abs(ours.components @ theirs.components_.T), np.eye(3),
                               atol=1e-9)
    projected = ours(tokens)
    np.testing.assert_allclose(projected, aligned(projected, theirs.transform(
        tokens.reshape(-1, 5)).reshape(50, 6, 3)), atol=1e-5)
    assert TokenPCA.from_bytes(ours.to_bytes()).sha256 == ours.sha256


def test_pca_is_fitted_on_the_training_tokens_only_and_reused_for_the_test_tokens(tmp_path):
    train_images = FakeImages()
    test_images = FakeImages(split="test", seed=1)
    train = extract(train_images, FakeBackbone(), tmp_path / "train", pool="pca", **OPTS)
    # the PCA of the first shard's training tokens (its first 7 images), by scikit-learn
    truth = reference(full_tokens(train_images, 7), 3)
    expected_train = truth.transform(full_tokens(train_images).reshape(-1, F))
    np.testing.assert_allclose(train.X, aligned(train.X, expected_train.reshape(train.X.shape)),
                               atol=1e-5)
    assert train.projection.n_tokens == 7 * 6

    test = extract(test_images, FakeBackbone(), tmp_path / "test", pool=train.projection,
                   **OPTS)
    expected_test = truth.transform(full_tokens(test_images).reshape(-1, F))
    np.testing.assert_allclose(test.X, aligned(train.X, expected_test.reshape(test.X.shape)),
                               atol=1e-5)
    assert test.projection is None  # the test cache fits nothing
    assert test.manifest["request"]["pool"]["projection_sha256"] == train.projection.sha256
    # the check above can tell a leak: a PCA fitted on test tokens projects them otherwise
    leaked = reference(full_tokens(test_images, 7), 3).transform(
        full_tokens(test_images).reshape(-1, F)).reshape(test.X.shape)
    assert not np.allclose(test.X, aligned(test.X, leaked), atol=1e-2)
    # a cache made with another training set's PCA is another request: redone
    other = extract(FakeImages(seed=5), FakeBackbone(), tmp_path / "other", pool="pca", **OPTS)
    again = extract(test_images, FakeBackbone(), tmp_path / "test", pool=other.projection,
                    **OPTS)
    assert not np.allclose(again.X, test.X)


def test_the_pca_cache_repeats_its_bytes_and_redoes_everything_when_its_pca_is_lost(tmp_path):
    images = FakeImages()
    first = extract(images, FakeBackbone(), tmp_path / "a", pool="pca", **OPTS)
    extract(images, FakeBackbone(), tmp_path / "b", pool="pca", **OPTS)
    for name in [PROJECTION] + [f"shard-{i:05d}.safetensors" for i in range(4)]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    backbone = FakeBackbone()
    extract(images, backbone, tmp_path / "a", pool="pca", **OPTS)
    assert backbone.n_images == 0  # read back, not recomputed
    (tmp_path / "a" / PROJECTION).write_bytes(b"not a pca")
    with pytest.raises(ValueError, match="projection.safetensors is missing, fails its sha256"):
        load(tmp_path / "a")
    backbone = FakeBackbone()
    again = extract(images, backbone, tmp_path / "a", pool="pca", **OPTS)
    assert backbone.n_images == len(images)  # every shard depends on the PCA: all redone
    np.testing.assert_array_equal(again.X, first.X)


def test_an_edited_projection_entry_is_refused(tmp_path):
    extract(FakeImages(), FakeBackbone(), tmp_path, pool="pca", **OPTS)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["projection"]["file"] = "../elsewhere.safetensors"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="projection: expected"):
        load(tmp_path)


def test_a_pca_of_another_width_is_refused(tmp_path):
    train = extract(FakeImages(), FakeBackbone(), tmp_path / "train", pool="pca", **OPTS)
    with pytest.raises(ValueError, match="pool: expected a PCA from 7 features to d = 4"):
        extract(FakeImages(split="test"), FakeBackbone(), tmp_path / "test",
                pool=train.projection, **{**OPTS, "d": 4})
