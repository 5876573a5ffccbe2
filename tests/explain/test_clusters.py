"""Token clusters: a planted case with a known answer, determinism, invariance to the order of
the samples, the spectral step on hand-made affinities, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.explain import token_clusters
from cvxattn.explain.clusters import affinity, spectral_clusters
from tests.helpers import labels, tokens


def planted(n, seed, s=9, d=4):
    """Tokens from two latent groups (x_t ≈ 2·e_0 or 2·e_1, noise 0.1), at least two tokens
    in each; the label is the majority group. Returns X (n, s, d), y (n,), groups z (n, s)."""
    rng = np.random.default_rng(seed)
    mu = np.zeros((2, d))
    mu[0, 0] = mu[1, 1] = 2.0
    z = np.zeros((n, s), dtype=int)
    for i in range(n):
        z[i, rng.permutation(s)[:rng.integers(2, s - 1)]] = 1
    X = mu[z] + 0.1 * rng.normal(size=(n, s, d))
    return X, (z.sum(1) > s / 2).astype(int), z


def same_partition(a, b) -> bool:
    """Whether two labelings of the same tokens define the same partition."""
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("head", [ca.heads.SelfAttention(),
                                  ca.heads.SelfAttention(activation="gated", n_gates=2, seed=0),
                                  ca.heads.MLP(activation="gated", n_gates=5),
                                  ca.heads.FNO(grid=(3, 3))],
                         ids=["attention-linear", "attention-gated", "mlp-gated", "fno-linear"])
def test_a_head_fitted_on_two_latent_groups_clusters_its_tokens_into_them(head):
    X, y, _ = planted(60, seed=0)
    solution = ca.solve(ca.Problem(head, X, y, beta=1e-2), tol=1e-4)
    X_new, _, z = planted(20, seed=1)
    clusters = token_clusters(solution, X_new, max_clusters=4)
    assert (clusters.n_clusters == 2).all()
    for found, truth in zip(clusters.labels, z):
        assert same_partition(found, truth)


def test_the_linear_mixer_clusters_by_position_the_same_way_for_every_image():
    """Its token mixing W1 does not depend on the tokens: one partition for all images."""
    X, y, _ = planted(60, seed=0)
    solution = ca.solve(ca.Problem(ca.heads.Mixer(), X, y, beta=1e-2), tol=1e-4)
    clusters = token_clusters(solution, planted(5, seed=1)[0], max_clusters=4)
    assert (clusters.labels == clusters.labels[0]).all()
    np.testing.assert_allclose(clusters.affinity, clusters.affinity[:1].repeat(5, 0),
                               atol=1e-12)


@pytest.fixture(scope="module")
def gated_attention():
    head = ca.heads.SelfAttention(activation="gated", n_gates=2, seed=1)
    return ca.solve(ca.Problem(head, tokens(0), labels(0), beta=0.05), tol=1e-4)


def test_clusters_are_deterministic_and_do_not_depend_on_the_order_of_samples(gated_attention):
    X = tokens(2, n=9)
    first = token_clusters(gated_attention, X, max_clusters=5, seed=3)
    again = token_clusters(gated_attention, X, max_clusters=5, seed=3)
    np.testing.assert_array_equal(first.labels, again.labels)
    perm = np.random.default_rng(0).permutation(9)
    moved = token_clusters(gated_attention, X[perm], max_clusters=5, seed=3)
    np.testing.assert_array_equal(moved.labels, first.labels[perm])
    np.testing.assert_array_equal(moved.n_clusters, first.n_clusters[perm])
    alone = token_clusters(gated_attention, X[4:5], max_clusters=5, seed=3)  # no batch effect
    np.testing.assert_array_equal(alone.labels[0], first.labels[4])


def test_labels_affinity_and_counts_are_consistent(gated_attention):
    clusters = token_clusters(gated_attention, tokens(2), max_clusters=4)
    A = clusters.affinity
    np.testing.assert_allclose(A, A.transpose(0, 2, 1), atol=1e-14)
    assert (A >= 0).all() and (A <= 1 + 1e-12).all()
    np.testing.assert_allclose(np.diagonal(A, axis1=1, axis2=2), 1.0)
    for row, k in zip(clusters.labels, clusters.n_clusters):
        assert 2 <= k <= 4 and sorted(set(row.tolist())) == list(range(k))
        first_seen = [row.tolist().index(j) for j in range(k)]
        assert first_seen == sorted(first_seen)  # numbered by first appearance


def test_spectral_step_finds_planted_blocks_and_their_number():
    blocks = np.array([0, 0, 1, 1, 1, 2, 2, 0, 2])
    A = np.where(blocks[:, None] == blocks[None, :], 1.0, 0.02)
    labels_, k, eigenvalues = spectral_clusters(A, max_clusters=5)
    assert k == 3 and same_partition(labels_, blocks)
    assert eigenvalues[0] == pytest.approx(0, abs=1e-12) and np.all(np.diff(eigenvalues) > -1e-12)
    two = np.array([0, 1, 0, 1, 1, 0])
    labels_, k, _ = spectral_clusters(np.where(two[:, None] == two[None, :], 1.0, 0.0), 3)
    assert k == 2 and same_partition(labels_, two)


def test_affinity_is_scale_free():
    P = torch.as_tensor(np.random.default_rng(0).normal(size=(2, 8, 5)))
    np.testing.assert_allclose(affinity(P), affinity(3.0 * P), atol=1e-12)


def test_bad_input_is_refused_by_name(gated_attention):
    X = tokens(2)
    with pytest.raises(ValueError, match=r"max_clusters: expected an integer in \[2, 10\]"):
        token_clusters(gated_attention, X, max_clusters=11)
    with pytest.raises(ValueError, match="max_clusters"):
        token_clusters(gated_attention, X, max_clusters=True)
    with pytest.raises(ValueError, match="seed: expected an integer ≥ 0"):
        token_clusters(gated_attention, X, seed=-1)
    with pytest.raises(ValueError, match="X: expected tokens of shape"):
        token_clusters(gated_attention, tokens(2, s=9))


def test_clusters_in_chunks_equal_clusters_at_once(gated_attention):
    """A small memory budget splits the profiles into chunks; nothing changes."""
    X = tokens(2, n=9)
    whole = token_clusters(gated_attention, X, max_clusters=5)
    chunked = token_clusters(gated_attention, X, max_clusters=5, memory_budget=400_000)
    np.testing.assert_array_equal(chunked.labels, whole.labels)
    np.testing.assert_allclose(chunked.affinity, whole.affinity, atol=1e-13)
    from cvxattn.explain import token_profiles
    assert token_profiles(gated_attention, X).shape[:2] == (9, 10)
