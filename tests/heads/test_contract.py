"""One contract over every head of the registry: SPEC.md §3 identity 1 and the Head protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from tests.heads import naive
from tests.helpers import C, D, N, S, tokens

ATOL = 1e-10


def bound(head):
    return head.bind(S, D, C)


def random_blocks(head, seed=0):
    G, (p, q) = head.n_blocks, head.block_shape
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(G, p, q)))


def random_heads(head, r=3, seed=0):
    rng = np.random.default_rng(seed)
    W1 = rng.normal(size=(head.n_blocks, r, *head.w1_shape))
    W2 = rng.normal(size=(head.n_blocks, r, *head.w2_shape))
    return torch.as_tensor(W1), torch.as_tensor(W2)


def test_registry_holds_the_five_mechanisms():
    assert set(ca.heads.REGISTRY) == {"mlp", "attention", "mixer", "fno", "bfno"}


def test_create_builds_every_registry_head():
    for name, cls in ca.heads.REGISTRY.items():
        for activation in ("linear", "gated"):
            head = ca.heads.create(name, activation, n_gates=3, grid=(2, 5), groups=2)
            assert type(head) is cls
            bound = head.bind(S, D, C)
            assert bound.n_blocks == (1 if activation == "linear" else 3) * (
                2 if name == "bfno" else 1)
    assert ca.heads.create("fno", grid=(2, 5)).grid == (2, 5)
    with pytest.raises(ValueError, match="head: expected one of"):
        ca.heads.create("transformer")


@pytest.mark.parametrize("name", sorted(ca.heads.REGISTRY))
@pytest.mark.parametrize("activation", ["linear", "gated"])
def test_config_rebuilds_every_registry_head(name, activation):
    """Head.config() is the constructor's parameters: the class and heads.create rebuild the
    same head from it (what io, the estimator and the table rely on instead of names)."""
    head = ca.heads.create(name, activation, n_gates=3, seed=4, grid=(2, 5), groups=2)
    config = head.config()
    assert set(config) <= set(ca.heads.parameters(name))
    for rebuilt in (type(head)(**config), ca.heads.create(name, **config)):
        assert rebuilt.config() == config and repr(rebuilt) == repr(head)
        assert torch.equal(rebuilt.bind(S, D, C).gates, head.bind(S, D, C).gates) \
            if activation == "gated" else rebuilt.gates is None
    assert ca.heads.DEFAULT_GATES[name] == type(head).default_n_gates


def test_block_shapes_follow_spec(head):
    h = bound(head)
    m = 2 if h.gated else 1
    expected = {
        "mlp": (m, (D, C)),
        "attention": (m, (D * D, D * C)),
        "mixer": (m, (S * S, D * C)),
        "fno": (m, (S * D, C)),
        "bfno": (2 * m, (S * D // 2, C // 2)),
    }[h.name]
    assert (h.n_blocks, h.block_shape) == expected


def test_convex_map_matches_the_literal_formula(head):
    h = bound(head)
    X, Z = tokens(1), random_blocks(h)
    out = h.tokens(Z, h.lift(X))  # (n, s, c)
    assert out.shape == (N, S, C)
    for i in range(N):
        expected = naive.convex(h, X[i].numpy(), Z.numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=ATOL, rtol=0)


def test_network_matches_the_literal_formula(head):
    h = bound(head)
    X = tokens(2)
    W1, W2 = random_heads(h)
    out = h.network_tokens(W1, W2, h.lift(X))
    for i in range(N):
        expected = naive.network(h, X[i].numpy(), W1.numpy(), W2.numpy())
        np.testing.assert_allclose(out[i].numpy(), expected, atol=ATOL, rtol=0)


def test_network_output_equals_convex_output_at_mapped_weights(head):
    """Identity 1: network(W1, W2) = convex(Z) with Z_g = Σ_r vec(W1_r) vec(W2_r)ᵀ."""
    h = bound(head)
    X = tokens(3)
    W1, W2 = random_heads(h, r=4, seed=3)
    data = h.lift(X)
    Z = h.blocks_from_heads(W1, W2)
    torch.testing.assert_close(h.network_tokens(W1, W2, data), h.tokens(Z, data),
                               atol=1e-8, rtol=0)
    net = ca.heads.HeadNetwork(h, W1, W2, intercept=torch.arange(C, dtype=X.dtype))
    with torch.no_grad():
        torch.testing.assert_close(net(X), h.pooled(Z, data) + torch.arange(C), atol=1e-8,
                                   rtol=0)


@pytest.mark.parametrize("design", [True, False], ids=["design", "matrix-free"])
def test_pooled_map_equals_mean_of_token_outputs(head, design):
    """Both routes of the pooled map: through the pooled design Φ and matrix-free."""
    h = bound(head)
    X, Z = tokens(4), random_blocks(h, seed=4)
    data = h.lift(X, design=design)
    # heads that build a design say so in their cost model (the gated ones and the linear MLP)
    assert ("design" in data) == (design and h.cost(1).design > 0)
    torch.testing.assert_close(h.pooled(Z, data), h.tokens(Z, data).mean(1), atol=ATOL, rtol=0)


@pytest.mark.parametrize("design", [True, False], ids=["design", "matrix-free"])
def test_explicit_adjoint_equals_the_adjoint_of_the_map(head, design):
    """⟨A Z, w⟩ = ⟨Z, Aᵀ w⟩: an explicit adjoint (the design's, or a head's matrix-free one)
    is the autograd adjoint of the pooled map."""
    h = bound(head)
    X, Z = tokens(4), random_blocks(h, seed=5)
    data = h.lift(X, design=design)
    assert not h.has_adjoint(data, pooled=False)
    if design:
        assert h.has_adjoint(data) == (h.cost(1).design > 0)
    if not h.has_adjoint(data):
        return
    w = torch.as_tensor(np.random.default_rng(6).normal(size=(X.shape[0], C)))
    Zr = Z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(h.pooled(Zr, data), Zr, grad_outputs=w)
    torch.testing.assert_close(h.adjoint(w, data), expected, atol=ATOL, rtol=0)


def test_chunked_maps_equal_one_chunk(head, monkeypatch):
    """Maps and designs built in chunks of samples do not depend on the chunk size."""
    h = bound(head)
    X, Z = tokens(4), random_blocks(h, seed=7)
    w = torch.as_tensor(np.random.default_rng(8).normal(size=(X.shape[0], C)))
    whole = {design: h.lift(X, design=design) for design in (True, False)}
    monkeypatch.setattr(ca.heads.base, "CHUNK_ELEMENTS", 1)  # maps: one sample per chunk
    # lifts: two samples per chunk (with one, the first axis's stride is ambiguous)
    monkeypatch.setattr(ca.heads.base, "lift_chunk", lambda per_sample: 2)
    for design, data in whole.items():
        chunked = h.lift(X, design=design)
        for key in data:
            torch.testing.assert_close(chunked[key], data[key], atol=ATOL, rtol=0)
            # the same memory layout (the strides of axes of size 1 do not matter)
            assert [st for st, size in zip(chunked[key].stride(), data[key].shape) if size > 1] \
                == [st for st, size in zip(data[key].stride(), data[key].shape) if size > 1], key
        torch.testing.assert_close(h.pooled(Z, chunked), h.pooled(Z, data), atol=ATOL, rtol=0)
        if h.has_adjoint(data):
            torch.testing.assert_close(h.adjoint(w, chunked), h.adjoint(w, data), atol=ATOL,
                                       rtol=0)


def test_weight_decay_bounds_nuclear_norm_with_equality_when_balanced(head):
    h = bound(head)
    X = tokens(5)
    W1, W2 = random_heads(h, r=2, seed=5)
    net = ca.heads.HeadNetwork(h, W1, W2)
    Z = net.blocks()
    nuclear = torch.linalg.svdvals(Z).sum()
    assert float(net.weight_decay().detach()) >= float(nuclear) - 1e-12
    W1b, W2b = h.heads_from_blocks(Z)
    balanced = ca.heads.HeadNetwork(h, W1b, W2b)
    torch.testing.assert_close(balanced.weight_decay().detach(), nuclear, atol=1e-8, rtol=0)
    torch.testing.assert_close(balanced.blocks(), Z, atol=1e-8, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(balanced(X), net(X), atol=1e-8, rtol=0)


def test_heads_from_blocks_pads_with_zero_heads(head):
    h = bound(head)
    W1, W2 = random_heads(h, r=1, seed=6)
    Z = h.blocks_from_heads(W1, W2)  # rank one per block
    P1, P2 = h.heads_from_blocks(Z, heads_per_block=3)
    assert P1.shape == (h.n_blocks, 3, *h.w1_shape)
    torch.testing.assert_close(h.blocks_from_heads(P1, P2), Z, atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match="heads_per_block"):
        h.heads_from_blocks(h.blocks_from_heads(*random_heads(h, r=2)), heads_per_block=1)


def test_random_network_has_the_requested_heads(head):
    h = bound(head)
    net = h.network(heads_per_block=3, seed=0)
    assert net.W1.shape == (h.n_blocks, 3, *h.w1_shape)
    assert net(tokens(0)).shape == (N, C)
    token_net = h.network(heads_per_block=2, pooled=False, fit_intercept=False)
    assert token_net(tokens(0)).shape == (N, S, C)


def test_unbound_head_says_how_to_bind():
    with pytest.raises(RuntimeError, match="bind"):
        ca.heads.MLP().block_shape


def test_design_product_gradients_match_autograd():
    from cvxattn.heads.base import _DesignProduct

    design = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_DesignProduct.apply, (design, weights))
