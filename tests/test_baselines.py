"""Baselines: shapes, learning, and the convex heads' networks trained on the same objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.baselines import MLPHead, SoftmaxAttentionHead, train_adamw
from tests.helpers import labels, tokens


def separable(n=60, s=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, s, d))
    y = (X[:, :, 0].mean(1) > 0).astype(np.int64)
    return torch.as_tensor(X), torch.as_tensor(y)


@pytest.mark.parametrize("model", [SoftmaxAttentionHead(d=4, c=2, n_heads=2, head_dim=3),
                                   MLPHead(d=4, c=2, width=16)], ids=["attention", "mlp"])
def test_baselines_learn_a_separable_task(model):
    X, y = separable()
    result = train_adamw(model, X, y, lr=3e-2, epochs=60, batch_size=16)
    with torch.no_grad():
        accuracy = float((result.model(X).argmax(1) == y).double().mean())
    assert accuracy >= 0.95 and result.objective < 0.3


def test_softmax_attention_rows_mix_tokens():
    """Permuting the tokens leaves the pooled output unchanged (attention + mean pooling)."""
    model = SoftmaxAttentionHead(d=4, c=3, n_heads=2, head_dim=2)
    X = tokens(0, n=3, s=6, d=4)
    with torch.no_grad():
        torch.testing.assert_close(model(X), model(X[:, torch.randperm(6)]))


def test_penalty_trains_the_convex_heads_network_on_the_same_objective():
    X, y = tokens(0, n=8, s=3, d=4), labels(0, n=8, c=6)
    problem = ca.Problem(ca.heads.MLP(activation="gated", n_gates=2), X, y, beta=0.05)
    optimum = ca.solve(problem, tol=1e-9)
    net = problem.head.network(heads_per_block=int(optimum.ranks.max()) + 2, scale=0.3)
    result = train_adamw(net, problem.X, problem.y, lr=3e-2, epochs=400, batch_size=8,
                         penalty=problem.beta)
    assert optimum.lower_bound <= result.objective <= optimum.objective * (1 + 1e-2)


def test_bad_training_arguments():
    X, y = separable(n=4)
    with pytest.raises(ValueError, match="lr, epochs, batch_size"):
        train_adamw(MLPHead(4, 2), X, y, lr=0)
