"""Self-attention heads, SPEC.md §2.2 (paper eqs. 11–16).

Scores are averaged over keys with a fixed 1/s. G(X) = XᵀX / s ∈ R^{d×d}.

- linear: network Σ_r (X W1_r Xᵀ / s) X W2_r = Σ_r X W1_r G W2_r, W1 ∈ R^{d×d}, W2 ∈ R^{d×c}.
  Convex block Z ∈ R^{d²×dc}, a d×d grid of blocks Z^{(k,l)} ∈ R^{d×c}:
  O = Σ_{k,l} G[k,l] X Z^{(k,l)},  Z = Σ_r vec_col(W1_r) vec_row(W2_r)ᵀ.
  Row index of Z: k·d + i (column k of W1, row i); column index: l·c + o.
- gated: gates H_j ∈ R^{d×d} (shape (m, d, d)); mask M_j = 1{X H_j Xᵀ ≥ 0} (query × key).
  Network Σ_j Σ_{r∈j} ((M_j ⊙ X W1_r Xᵀ) / s) X W2_r; convex, with the masked Gram of query a,
  Γ_{j,a} = (1/s) Σ_t M_j[a,t] x_t x_tᵀ:  O[a] = Σ_j Σ_{k,l} Γ_{j,a}[k,l] x_aᵀ Z_j^{(k,l)}.

The map is applied through the per-token products x_t x_tᵀ (n, s, d, d), never through the
lifted data X ⊗ X.
"""

from __future__ import annotations

import torch

from .base import Head, HeadCost

__all__ = ["SelfAttention"]


class SelfAttention(Head):
    """Self-attention head (paper eqs. 11–16).

    >>> import cvxattn as ca
    >>> head = ca.heads.SelfAttention().bind(s=6, d=5, c=3)
    >>> head.block_shape   # (d², d·c)
    (25, 15)
    """

    name = "attention"
    default_n_gates = 5
    pairs_read_receiver = True

    def gate_shape(self):
        return (-1, self.d, self.d)

    @property
    def block_shape(self):
        return (self.d * self.d, self.d * self.c)

    @property
    def w1_shape(self):
        return (self.d, self.d)

    @property
    def w2_shape(self):
        return (self.d, self.c)

    # W1 enters Z column-major: vec_col(W1)[k·d + i] = W1[i, k].
    def vec_w1(self, W1):
        return W1.transpose(-1, -2).reshape(*W1.shape[:-2], self.d * self.d)

    def unvec_w1(self, u):
        return u.reshape(*u.shape[:-1], self.d, self.d).transpose(-1, -2)

    def _grid(self, Z):
        """Z (G, d², dc) → Z4 (G, k, i, l, o)."""
        return Z.reshape(Z.shape[0], self.d, self.d, self.d, self.c)

    def _lift(self, X, design):
        n, s, d = X.shape
        if not self.gated:
            data = {"gram": X.transpose(1, 2) @ X / s,  # (n, d, d)
                    "mean": X.mean(1)}  # (n, d): pooled, the queries enter through x̄
            if design:
                # pooled p = Σ G[k,l] x̄[i] Z[(k,i),(l,o)]: the design Φ[(k,i,l)] = G[k,l] x̄[i]
                data["design"] = (data["gram"][:, :, None, :] * data["mean"][:, None, :, None]
                                  ).reshape(n, 1, d ** 3)
            return data
        H = self.gates.to(X)  # (m, d, d)
        scores = torch.einsum("nai,mik,ntk->nmat", X, H, X)  # (n, m, s, s)
        data = {"mask": (scores >= 0).to(X.dtype)}
        del scores
        queries = self._key_queries(X, data["mask"])  # (n, m, s, d)
        if not design:
            data["key_queries"] = queries
            return data
        # Φ_j[(k,i,l)] = (1/s²) Σ_t x_t[k] Q_j[t,i] x_t[l] (n, m, d³), so that
        # p = Σ_j Φ_j Z_j.reshape(d³, c): one batched product
        kq = (X[:, None, :, :, None] * queries[:, :, :, None, :]).flatten(3)  # (n, m, t, (k,i))
        del queries
        data["design"] = (kq.transpose(2, 3) @ X[:, None]).flatten(2).div_(s * s)
        return data

    @staticmethod
    def _key_queries(X, mask):
        """Key-side sums of the masked queries, Q_j[t] = Σ_a M_j[a,t] x_a: (n, m, s, d)."""
        n, m, s, _ = mask.shape  # one batched product (twice as fast as a broadcast matmul)
        X = X[:, None].expand(n, m, *X.shape[1:]).reshape(n * m, *X.shape[1:])
        return torch.bmm(mask.reshape(n * m, s, s).transpose(1, 2), X).reshape(n, m, s, -1)

    def _token_products(self, Z, X):
        """Y_j[t, i, o] = Σ_{k,l} x_t[k] x_t[l] Z_j^{(k,l)}[i, o], shape (n, G, s, d, c)."""
        n, s, d = X.shape
        outer = torch.einsum("ntk,ntl->ntkl", X, X).reshape(n * s, d * d)  # (n·s, d²)
        Zkl = self._grid(Z).permute(0, 1, 3, 2, 4).reshape(Z.shape[0], d * d, d * self.c)
        Y = torch.einsum("Nq,gqr->gNr", outer, Zkl)  # (G, n·s, d·c)
        return Y.reshape(-1, n, s, d, self.c).transpose(0, 1)  # (n, G, s, d, c)

    def _weighted_models(self, Z, gram):
        """T[i, o] = Σ_{k,l} G[k,l] Z^{(k,l)}[i, o] for the one linear block, (n, d, c)."""
        d = self.d
        Zkl = self._grid(Z)[0].permute(0, 2, 1, 3).reshape(d * d, d * self.c)  # ((k,l),(i,o))
        return (gram.reshape(-1, d * d) @ Zkl).reshape(-1, d, self.c)

    def tokens(self, Z, data):
        X = data["X"]
        if not self.gated:
            return X @ self._weighted_models(Z, data["gram"])  # (n, s, c)
        s = X.shape[1]
        Y = self._token_products(Z, X)  # (n, m, s, d, c)
        per_query = torch.einsum("nmat,nmtio->nmaio", data["mask"], Y) / s  # (n, m, s, d, c)
        return torch.einsum("nai,nmaio->nao", X, per_query)

    def pooled(self, Z, data):
        X = data["X"]
        if not self.gated and "design" not in data:
            T = self._weighted_models(Z, data["gram"])  # (n, d, c)
            return torch.einsum("ni,nio->no", self._mean_token(data), T)
        if "design" in data:
            return super().pooled(Z, data)
        s = X.shape[1]
        Y = self._token_products(Z, X)  # (n, m, s, d, c)
        return torch.einsum("nmti,nmtio->no", data["key_queries"], Y) / (s * s)

    def gradient_product(self, duals, vectors, data, transpose=False):
        """Pooled linear attention in closed form (no design needed): the gradient block is
        N[(k,i),(l,o)] = Σ_n G_n[k,l] x̄_n[i] λ_n[o], so for V (d × c) and U (d × d),
        N vec(V) = Σ_n vec(G_n V λ_n ⊗ x̄_n) and Nᵀ vec(U) = Σ_n vec(G_n U x̄_n ⊗ λ_n), O(d² + dc)
        per sample and vector (G_n symmetric). Gated heads: the default."""
        if self.gated:
            return super().gradient_product(duals, vectors, data, transpose)
        d, c = self.d, self.c
        gram, mean = data["gram"], self._mean_token(data)  # (n, d, d), (n, d)
        if transpose:  # U[k, i] = u[k·d + i]
            keys = torch.einsum("jki,ni->njk", vectors[0].reshape(-1, d, d), mean)  # U x̄
            keys = torch.einsum("nkl,njk->njl", gram, keys)  # G U x̄
            return torch.einsum("njl,no->jlo", keys, duals).reshape(1, -1, d * c)
        values = torch.einsum("jlo,no->njl", vectors[0].reshape(-1, d, c), duals)  # V λ
        values = torch.einsum("nkl,njl->njk", gram, values)  # G V λ
        return torch.einsum("njk,ni->jki", values, mean).reshape(1, -1, d * d)

    def network_tokens(self, W1, W2, data):
        X = data["X"]
        s = X.shape[1]
        scores = torch.einsum("nai,grik,ntk->ngrat", X, W1, X) / s  # (n, G, r, s, s)
        if self.gated:
            scores = scores * data["mask"][:, :, None]
        values = torch.einsum("ntl,grlo->ngrto", X, W2)  # (n, G, r, s, c)
        return torch.einsum("ngrat,ngrto->nao", scores, values)

    def network_pooled(self, W1, W2, data):
        X = data["X"]
        if not self.gated:
            # (1/s) 1ᵀ X W1 G W2 = x̄ᵀ W1 G W2: no s × s scores
            a = torch.einsum("ni,grik->ngrk", self._mean_token(data), W1)  # (n, G, r, d)
            a = torch.einsum("ngrk,nkl->ngrl", a, data["gram"])  # (n, G, r, d)
            return torch.einsum("ngrl,grlo->no", a, W2)
        if "key_queries" not in data:
            return super().network_pooled(W1, W2, data)
        # (1/s²) Σ_t (Q_j[t]ᵀ W1 x_t)(x_tᵀ W2) with Q_j[t] = Σ_a M_j[a,t] x_a
        s = X.shape[1]
        scores = torch.einsum("ngti,grik,ntk->ngrt", data["key_queries"], W1, X)  # (n, G, r, s)
        pooled_values = torch.einsum("ngrt,ntl->ngrl", scores, X)  # (n, G, r, d)
        return torch.einsum("ngrl,grlo->no", pooled_values, W2) / (s * s)

    # ------------------------------------------- exact attributions (SPEC.md §7)
    def pairs(self, Z, data):
        """C[a, t] = (1/s) Σ_j M_j[a,t] x_aᵀ Σ_{k,l} x_t[k] x_t[l] Z_j^{(k,l)} (M ≡ 1 linear)."""
        X = data["X"]
        s = X.shape[1]
        Y = self._token_products(Z, X)  # (n, G, s, d, c): Y_j[t] = Σ_kl x_t[k] x_t[l] Z_j^(k,l)
        per_pair = torch.einsum("nai,ngtio->ngato", X, Y)  # (n, G, s, s, c)
        if self.gated:
            per_pair = per_pair * data["mask"][..., None]
        return per_pair.sum(1) / s  # (n, s, s, c)

    def _scores(self, W1, W2, data):
        """The network's attention scores (M_g ⊙ X W1_r Xᵀ)/s, (n, G, r, s, s)."""
        X = data["X"]
        scores = torch.einsum("nai,grik,ntk->ngrat", X, W1, X) / X.shape[1]  # (n, G, r, s, s)
        return scores * data["mask"][:, :, None] if self.gated else scores

    def network_pairs(self, W1, W2, data):
        """C[a, t] = Σ_{g,r} ((M_g ⊙ X W1_r Xᵀ)[a,t] / s) x_tᵀ W2_r."""
        values = torch.einsum("ntl,grlo->ngrto", data["X"], W2)  # (n, G, r, s, c)
        return torch.einsum("ngrat,ngrto->nato", self._scores(W1, W2, data), values)

    def mixing(self, W1, W2, data):
        """K = G·r matrices: the attention scores (M_g ⊙ X W1_r Xᵀ)/s of every head, the
        learned bilinear similarity x_aᵀ W1_r x_t of query a and key t, times ‖W2_r‖."""
        scores = self._scores(W1, W2, data)  # (n, G, r, s, s)
        weight = W2.flatten(2).norm(dim=-1)  # (G, r)
        return (scores * weight[:, :, None, None]).flatten(1, 2)  # (n, G·r, s, s)

    def pair_elements(self, heads_per_block):
        s, d, c = self.dims
        G = self.n_blocks
        if heads_per_block is None:
            return 2 * s * s * c + G * s * (d * c + 2 * s * c)
        return 2 * s * s * c + 2 * G * heads_per_block * s * (s + c)

    def cost(self, heads_per_block, pooled=True):
        s, d, c = self.dims
        heads = self.n_blocks * heads_per_block  # G·r
        # token-level network: X W1 (s·d), scores (s²) and values (s·c) per head
        tokens = 3 * heads * (s * d + s * s + s * c) + 2 * s * c
        tokens_flops = 4 * heads * (s * d * d + s * s * d + s * s * c + s * d * c)
        if not self.gated:
            if pooled:  # x̄ᵀ W1 G W2
                net, net_flops = 3 * heads * d + 2 * c, 4 * heads * (2 * d * d + d * c)
            else:
                net, net_flops = tokens, tokens_flops
            return HeadCost(lift=d * d + d, design=d ** 3, map=3 * d * c + s * c,
                            map_flops=4 * d ** 3 * c + 2 * s * d * d, network=net,
                            network_flops=net_flops + 2 * s * d * d,
                            lift_temp=2 * d * d + d ** 3)
        m = self.n_gates
        if pooled:  # key-side sums: (Q_j[t]ᵀ W1) x_t, then Σ_t scores x_t W2
            net = 3 * heads * (s * d + s + d) + 2 * c
            net_flops = 4 * heads * (s * d * d + 2 * s * d + d * c)
        else:
            net, net_flops = tokens, tokens_flops
        # the lift: X H (m·s·d), the scores (m·s²) and their signs, X copied per gate and
        # the key-side queries (m·s·d each), the products x_t ⊗ Q_j[t] (m·s·d², and a copy
        # for the batched product) and the design (m·d³)
        return HeadCost(lift=m * s * s + m * s * d, design=m * d ** 3,
                        map=s * d * d + 3 * m * s * d * c,
                        map_flops=4 * m * s * d ** 3 * c + 2 * m * s * s * d, network=net,
                        network_flops=net_flops + 2 * m * s * s * d,
                        lift_temp=3 * m * s * d + 2 * m * s * s + 2 * m * s * d * d
                        + 2 * m * d ** 3)
