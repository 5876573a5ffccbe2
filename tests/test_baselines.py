"""Baselines: shapes, learning, and the convex heads' networks trained on the same objective."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from cvxattn.baselines import AttentiveProbe, MLPHead, SoftmaxAttentionHead, train_adamw
from tests.helpers import labels, tokens


def separable(n=60, s=5, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, s, d))
    y = (X[:, :, 0].mean(1) > 0).astype(np.int64)
    return torch.as_tensor(X), torch.as_tensor(y)


@pytest.mark.parametrize("model", [SoftmaxAttentionHead(d=4, c=2, n_heads=2, head_dim=3),
                                   MLPHead(d=4, c=2, width=16),
                                   AttentiveProbe(d=4, c=2, n_queries=2, n_heads=2, head_dim=3)],
                         ids=["attention", "mlp", "attentive-probe"])
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


def test_attentive_probe_equals_a_hand_written_reference():
    """Loops over samples, queries, heads and tokens, written from the formula."""
    import math

    probe = AttentiveProbe(d=4, c=3, n_queries=2, n_heads=2, head_dim=3, seed=5)
    X = tokens(1, n=2, s=5, d=4)
    q, Wk, Wv = probe.queries.detach(), probe.key.detach(), probe.value.detach()
    Wo, b = probe.out.detach(), probe.bias.detach() + 0.1
    with torch.no_grad():
        probe.bias += 0.1
        got = probe(X)
    expected = torch.zeros(2, 3, dtype=torch.float64)
    for n in range(2):
        gathered = []
        for j in range(2):
            for h in range(2):
                cols = slice(3 * h, 3 * h + 3)
                scores = [float(q[j, h] @ (X[n, t] @ Wk)[cols]) / math.sqrt(3) for t in range(5)]
                top = max(scores)
                weights = [math.exp(v - top) for v in scores]
                total = sum(weights)
                z = sum((weights[t] / total) * (X[n, t] @ Wv)[cols] for t in range(5))
                gathered.append(z)
        expected[n] = torch.cat(gathered) @ Wo + b
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    weights = probe.attention(X)
    assert weights.shape == (2, 2, 2, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 2, dtype=torch.float64))
    with torch.no_grad():  # a pooling over tokens: their order does not matter
        torch.testing.assert_close(probe(X), probe(X[:, torch.randperm(5)]))
