"""The paper's zero-duality-gap claim, checked: a network trained from random initialization by
Adam on the same regularized objective never ends below the certified optimum, and with enough
heads per block (m ≥ m*) it reaches it."""

from __future__ import annotations

import pytest
import torch

import cvxattn as ca
from tests.helpers import labels, ten_heads, tokens

HEADS = ten_heads(grid=(1, 3))
BETA = 0.05


def problem(head):
    return ca.Problem(head, tokens(0, n=8, s=3, d=4), labels(0, n=8, c=6), BETA)


def train_adam(problem, heads_per_block, steps=2000, lr=3e-2, seed=0):
    """Full-batch Adam with cosine decay on mean loss + β · weight_decay; its final value."""
    net = problem.head.network(heads_per_block=heads_per_block, seed=seed, scale=0.3)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def objective():
        return problem.loss.value(net(problem.X), problem.y) + problem.beta * net.weight_decay()

    for _ in range(steps):
        optimizer.zero_grad()
        objective().backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return float(objective())


@pytest.mark.parametrize("name,head", HEADS, ids=[n for n, _ in HEADS])
def test_adam_with_enough_heads_reaches_but_never_beats_the_certified_optimum(name, head):
    prob = problem(head)
    sol = ca.solve(prob, tol=1e-10, max_iter=20_000)
    trained = train_adam(prob, heads_per_block=int(sol.ranks.max()) + 2)
    assert trained >= sol.lower_bound
    assert (trained - sol.objective) / sol.objective <= 1e-3


def test_too_few_heads_cannot_reach_the_optimum():
    prob = problem(HEADS[1][1])  # linear attention: one block of rank ≥ 2 at this β
    sol = ca.solve(prob, tol=1e-10, max_iter=20_000)
    assert int(sol.ranks.max()) >= 2
    trained = train_adam(prob, heads_per_block=1)
    assert (trained - sol.objective) / sol.objective > 1e-4
