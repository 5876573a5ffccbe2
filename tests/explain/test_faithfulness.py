"""Faithfulness measures against hand-computed cases: deletion curves of a linear head, the
areas, gradient × input, the foreground mask on the token grid, Jaccard indices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.explain import token_contributions
from cvxattn.explain.attributions import fitted
from cvxattn.explain.faithfulness import (backbone_view, cluster_jaccard, deletion_auc,
                                          deletion_curves, foreground_tokens,
                                          gradient_times_input, random_orders, top_k_jaccard)
from tests.helpers import S, labels, tokens


@pytest.fixture(scope="module")
def linear_mlp():
    return fitted(ca.solve(ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.05),
                           tol=1e-8))


def test_deletion_curve_of_a_linear_head_is_the_running_sum_of_its_shares(linear_mlp):
    """logit_k(X with the tokens of a set A replaced by 0) = (1/s) Σ_{t ∉ A} x_tᵀ Z_k + b_k."""
    X = tokens(1)
    n = X.shape[0]
    target = np.arange(n) % 3
    order = random_orders(n, S, seed=2)
    curves = deletion_curves(linear_mlp.logits, X, order, torch.zeros(X.shape[2]), target)
    Z, b = linear_mlp.blocks[0], linear_mlp.intercept
    for i in range(n):
        shares = X[i] @ Z[:, target[i]] / S  # (s,)
        for k in range(S + 1):
            kept = sorted(set(range(S)) - set(order[i, :k].tolist()))
            expected = float(shares[kept].sum() + b[target[i]])
            assert curves[i, k] == pytest.approx(expected, abs=1e-12)
    probabilities = deletion_curves(linear_mlp.logits, X, order, torch.zeros(X.shape[2]),
                                    target, probability=True)
    assert ((probabilities > 0) & (probabilities < 1)).all()


def test_gradient_times_input_is_exact_for_a_linear_head(linear_mlp):
    X = tokens(1)
    target = np.arange(X.shape[0]) % 3
    gi = gradient_times_input(linear_mlp.logits, X, target, torch.zeros(X.shape[2]))
    T = token_contributions(linear_mlp, X)[torch.arange(X.shape[0]), :, target] / S
    np.testing.assert_allclose(gi, T.numpy(), atol=1e-12)


def test_deletion_auc_by_hand():
    curves = np.array([[2.0, 1.0, 0.0],      # straight line: area 1/2 after normalizing
                       [2.0, 0.0, 0.0],      # drops at once: 1/4
                       [1.0, 1.0, 1.0]])     # never moves: undefined
    auc = deletion_auc(curves)
    assert auc[0] == pytest.approx(0.5) and auc[1] == pytest.approx(0.25)
    assert np.isnan(auc[2])
    assert deletion_auc(np.array([[1.0, 0.5, 0.0]]), normalize=False)[0] == pytest.approx(0.5)


def test_deletion_refuses_an_order_that_is_not_a_permutation(linear_mlp):
    X = tokens(1)
    order = np.zeros((X.shape[0], S), dtype=int)
    with pytest.raises(ValueError, match="order: expected a permutation"):
        deletion_curves(linear_mlp.logits, X, order, torch.zeros(X.shape[2]),
                        np.zeros(X.shape[0], int))


def test_foreground_is_the_bright_part_of_what_the_backbone_sees():
    image = np.zeros((28, 28), np.uint8)
    image[4:16, 8:20] = 200  # a bright rectangle, rows 4-15, columns 8-19
    mask = foreground_tokens([image], (7, 7))[0].reshape(7, 7)
    expected = np.zeros((7, 7), bool)
    expected[1:4, 2:5] = True  # 4×4-pixel cells fully inside the rectangle
    np.testing.assert_array_equal(mask, expected)
    assert backbone_view(image, 0.5).shape == (14, 14)  # the central square
    colour = np.repeat(image[..., None], 3, 2)
    np.testing.assert_array_equal(foreground_tokens([colour], (7, 7)), [mask.reshape(-1)])


def test_jaccard_indices_by_hand():
    foreground = np.array([[True, True, False, False]])
    scores = np.array([[0.9, 0.1, 0.8, 0.0]])  # top-2 = {0, 2}: 1 shared of 3
    assert top_k_jaccard(scores, foreground)[0] == pytest.approx(1 / 3)
    assert np.isnan(top_k_jaccard(scores, np.zeros((1, 4), bool))[0])
    clusters = np.array([[0, 0, 1, 1], [0, 1, 1, 1]])
    best = cluster_jaccard(clusters, np.array([[True, True, False, False],
                                               [True, True, False, False]]))
    np.testing.assert_allclose(best, [1.0, 1 / 2])
