"""MLP-Mixer heads, SPEC.md §2.3 (paper eqs. 17–21).

- linear: network Σ_r W1_r X W2_r, W1 ∈ R^{s×s} (token mixing), W2 ∈ R^{d×c}.
  Convex block Z ∈ R^{s²×dc}, Z[(a,t),(k,o)] = Σ_r W1_r[a,t] W2_r[k,o] (both row-major);
  O[a,o] = Σ_{t,k} X[t,k] Z[(a,t),(k,o)].
- gated: gates H_j ∈ R^{s×s} (shape (m, s, s)), masks D_j = 1{H_j X ≥ 0} ∈ {0,1}^{s×d};
  network Σ_j Σ_{r∈j} (D_j ⊙ (W1_r X)) W2_r;
  convex O[a,o] = Σ_j Σ_{t,k} D_j[a,k] X[t,k] Z_j[(a,t),(k,o)].
"""

from __future__ import annotations

import torch

import math

from .base import Collapse, Head, HeadCost, sample_chunks

__all__ = ["Mixer", "TokenWeights"]


class Mixer(Head):
    """MLP-Mixer head (paper eqs. 17–21).

    >>> import cvxattn as ca
    >>> ca.heads.Mixer().bind(s=6, d=5, c=3).block_shape   # (s², d·c)
    (36, 15)
    """

    name = "mixer"
    default_n_gates = 5

    def gate_shape(self):
        return (-1, self.s, self.s)

    @property
    def block_shape(self):
        return (self.s * self.s, self.d * self.c)

    @property
    def w1_shape(self):
        return (self.s, self.s)

    @property
    def w2_shape(self):
        return (self.d, self.c)

    def _grid(self, Z):
        """Z (G, s², dc) → (G, a, t, k, o)."""
        return Z.reshape(Z.shape[0], self.s, self.s, self.d, self.c)

    def _lift(self, X, design):
        if not self.gated:
            return {}
        n, s, d = X.shape
        # masks stored feature-major (d, n, m, s), so that each feature's masks are one
        # contiguous (n, m·s) matrix for the matrix-free map; "mask" is its (n, m, s, d) view
        mixed = torch.einsum("mat,ntk->knma", self.gates.to(X), X)
        data = {"mask": (mixed >= 0).to(X.dtype).permute(1, 2, 3, 0)}
        del mixed
        if design:
            # Φ_j[(a,t,k)] = D_j[a,k] X[t,k] / s: p = Σ_j Φ_j Z_j.reshape(s²d, c)
            design = torch.einsum("nmak,ntk->nmatk", data["mask"], X).div_(s)
            data["design"] = design.reshape(n, self.n_gates, s * s * d)
        return data

    def tokens(self, Z, data):
        X = data["X"]
        n, s, d = X.shape
        Z5 = self._grid(Z)
        if not self.gated:
            Ztk = Z5[0].permute(1, 2, 0, 3).reshape(s * d, s * self.c)  # ((t,k), (a,o))
            return (X.reshape(n, s * d) @ Ztk).reshape(n, s, self.c)
        # one feature k at a time: Σ_t X[t,k] Z_j[(a,t),(k,o)] is a single matrix product
        # (n, s) @ (s, m·s·c), which BLAS runs at full speed; the masks then pick and sum
        m, c = Z5.shape[0], self.c
        out = X.new_zeros((n, s, c))
        for k in range(d):
            Zk = Z5[:, :, :, k, :].permute(2, 0, 1, 3).reshape(s, m * s * c)  # (t, (j,a,o))
            V = (X[:, :, k] @ Zk).reshape(n, m, s, c)  # (n, j, a, o)
            out = out + (data["mask"][..., k, None] * V).sum(1)
        return out

    def pooled(self, Z, data):
        if self.gated:
            if "design" in data:
                return super().pooled(Z, data)
            # p[o] = (1/s) Σ_k Σ_t X[t,k] U_k[t,o] with U_k = Σ_{j,a} D_j[a,k] Z_j[(a,t),(k,o)]:
            # per feature, the masks (rows, m·s) times Z's slice ((j,a), (t,o)) is one matrix
            # product; chunks of samples keep U_k in cache
            X, masks, Zk = data["X"], self._feature_masks(data), self._feature_slices(Z)
            n, s, d = X.shape
            out = X.new_empty((n, self.c))
            for rows in sample_chunks(n, s * self.c):
                Xk = X[rows].permute(2, 0, 1).unsqueeze(2).contiguous()  # (d, rows, 1, s)
                total = 0
                for k in range(d):
                    U = (masks[k, rows] @ Zk[k]).reshape(-1, s, self.c)
                    total = total + torch.bmm(Xk[k], U)
                out[rows] = total[:, 0]
            return out / s
        X = data["X"]
        n, s, d = X.shape
        # token mixing collapses under mean pooling: only the query-mean of Z matters
        Zbar = self._grid(Z)[0].mean(0).reshape(s * d, self.c)  # ((t,k), o)
        return X.reshape(n, s * d) @ Zbar

    def adjoint(self, weights, data):
        if "design" in data:
            return super().adjoint(weights, data)
        # Σ_i Φ_iᵀ w_i feature by feature: masksᵀ (m·s, rows) @ (X[:, t, k] w[:, o]) (rows, s·c)
        X, masks = data["X"], self._feature_masks(data)
        n, s, d = X.shape
        grad = X.new_zeros((d, self.n_gates * s, s * self.c))  # (k, (j,a), (t,o))
        for rows in sample_chunks(n, s * self.c):
            Xk = X[rows].permute(2, 0, 1).unsqueeze(3)  # (d, rows, s, 1)
            w = weights[rows, None, :]
            for k in range(d):
                grad[k].addmm_(masks[k, rows].T, (Xk[k] * w).flatten(1))
        grad = grad.reshape(d, self.n_gates, s, s, self.c).permute(1, 2, 3, 0, 4)
        return grad.reshape(self.n_blocks, *self.block_shape) / s

    def has_adjoint(self, data, pooled=True):
        return pooled and self.gated

    @staticmethod
    def _feature_masks(data):
        """The masks as (d, n, m·s): feature k's is one contiguous matrix."""
        mask = data["mask"].permute(3, 0, 1, 2)  # (d, n, m, s), the stored layout
        return mask.reshape(*mask.shape[:2], -1)

    def _feature_slices(self, Z):
        """Z as (d, m·s, s·c): Zk[k][(j,a), (t,o)] = Z_j[(a,t),(k,o)]."""
        Z5 = self._grid(Z)  # (j, a, t, k, o)
        return Z5.permute(3, 0, 1, 2, 4).reshape(self.d, -1, self.s * self.c)

    def network_tokens(self, W1, W2, data):
        mixed = torch.einsum("grat,ntk->ngrak", W1, data["X"])  # (n, G, r, s, d)
        if self.gated:
            mixed = mixed * data["mask"][:, :, None]
        return torch.einsum("ngrak,grko->nao", mixed, W2)

    def network_pooled(self, W1, W2, data):
        if self.gated:
            return super().network_pooled(W1, W2, data)
        # (1/s) 1ᵀ W1 X W2 = w̄ᵀ X W2 with w̄ the query-mean of the token mixing
        mixed = torch.einsum("grt,ntk->ngrk", W1.mean(2), data["X"])  # (n, G, r, d)
        return torch.einsum("ngrk,grko->no", mixed, W2)

    # ------------------------------------------- exact attributions (SPEC.md §7)
    def pairs(self, Z, data):
        """C[a, t, o] = Σ_j Σ_k D_j[a,k] X[t,k] Z_j[(a,t),(k,o)] (D ≡ 1 linear)."""
        X = data["X"]
        Z5 = self._grid(Z)  # (G, a, t, k, o)
        if not self.gated:
            return torch.einsum("ntk,atko->nato", X, Z5[0])
        out = 0
        for j in range(self.n_blocks):  # one gate at a time: (n, a, t, k) intermediates
            masked = data["mask"][:, j, :, None, :] * X[:, None]  # (n, a, t, k)
            out = out + torch.einsum("natk,atko->nato", masked, Z5[j])
        return out

    def _values(self, W2, data):
        """V[n, g, r, a, t, o] = Σ_k D_g[a,k] X[t,k] W2_r[k,o]; (n, G, r, t, o) when linear
        (no gate, so no dependence on the receiving token a)."""
        X = data["X"]
        if not self.gated:
            return torch.einsum("ntk,grko->ngrto", X, W2)  # (n, G, r, s, c)
        return torch.einsum("ngak,ntk,grko->ngrato", data["mask"], X, W2)  # (n,G,r,s,s,c)

    def network_pairs(self, W1, W2, data):
        """C[a, t, o] = Σ_{g,r} W1_r[a,t] Σ_k D_g[a,k] X[t,k] W2_r[k,o]."""
        values = self._values(W2, data)
        if not self.gated:
            return torch.einsum("grat,ngrto->nato", W1, values)
        return torch.einsum("grat,ngrato->nato", W1, values)

    def mixing(self, W1, W2, data):
        """K = G·r·d matrices: the token mixing W1_r[a,t] of every head, for each feature k as
        the gate passes it at the receiving token (D_g[a,k]; 1 when linear), times the norm of
        the row W2_r[k, :] that carries feature k to the outputs. The linear Mixer mixes by
        position only, so its matrices are the same for every sample."""
        X = data["X"]
        weight = W2.norm(dim=-1)  # (G, r, d)
        gate = data["mask"] if self.gated else X.new_ones((X.shape[0], 1, self.s, self.d))
        S = torch.einsum("grat,ngak,grk->ngrkat", W1, gate, weight)  # (n, G, r, d, s, s)
        return S.flatten(1, 3)  # (n, G·r·d, s, s)

    def pair_elements(self, heads_per_block):
        s, d, c = self.dims
        if heads_per_block is None:
            return 3 * s * s * c + s * s * d
        return 2 * s * s * c + self.n_blocks * heads_per_block * s * s * (c + d)

    def pooled_collapse(self):
        """The linear Mixer under mean pooling sees only the query-mean of its token mixing:
        p = Σ_{t,k} X[t,k] Z̄[t,(k,o)] with Z̄ = (1/s) Σ_a Z[(a,·),·]. The cheapest Z for a given
        Z̄ repeats it for every query a, with ‖Z‖_* = √s ‖Z̄‖_*, so the program is the token-
        weights model of :class:`TokenWeights` at β√s (SPEC.md §3 identity 3)."""
        s, d, c = self.dims
        if self.gated or s == 1:
            return None
        small = TokenWeights().bind(s, d, c)

        def expand(W1, W2):
            # collapsed heads a (1, r, s), b (1, r, d, c): Z[(a,t),·] = Σ_r a_r[t] vec(b_r) for
            # every query a, balanced as W1[a, t] = s^{-1/4} a[t], W2 = s^{1/4} b
            full = W1[:, :, None, :].expand(-1, -1, s, -1) * s ** -0.25  # (1, r, s, s)
            return full, W2 * s ** 0.25

        return Collapse(
            head=small, tokens=lambda X: X, beta_scale=math.sqrt(s),
            collapse=lambda Z: Z.reshape(1, s, s, d * c).mean(1),  # Z̄ = mean over queries
            expand=expand,
            description=f"solved as its pooled collapse (SPEC.md §3): a linear model of the "
                        f"token weights Z̄ (s × d·c) at β√s, s = {s}")

    def cost(self, heads_per_block, pooled=True):
        s, d, c = self.dims
        heads = self.n_blocks * heads_per_block
        mixed = 3 * heads * s * d + 2 * s * c  # W1 X per head, then the outputs
        mixed_flops = 4 * heads * (s * s * d + s * d * c)
        if not self.gated:
            if pooled:  # w̄ᵀ X W2 (einsum copies X into its product's layout)
                net, net_flops = 4 * heads * d + 2 * c + s * d, 4 * heads * (s * d + d * c)
            else:
                net, net_flops = mixed, mixed_flops
            return HeadCost(lift=0, design=0, map=s * d + 3 * s * c,
                            map_flops=4 * s * d * c * (1 if pooled else s), network=net,
                            network_flops=net_flops)
        m = self.n_gates
        # pooled: one feature's (s, c) products at a time; tokens: every feature's (m, s, c)
        work = 3 * s * c if pooled else 3 * m * s * d * c
        # the lift: the gates' mixing and its signs (m·s·d), then the design's outer products
        # (m·s²·d; einsum may copy the masks into its own layout)
        return HeadCost(lift=m * s * d, design=m * s * s * d, map=work,
                        map_flops=4 * m * s * s * d * c, network=mixed,
                        network_flops=mixed_flops + 2 * m * s * s * d,
                        lift_temp=3 * m * s * d + s * d + m * s * s * d)


class TokenWeights(Head):
    """The program the linear Mixer collapses to under mean pooling (SPEC.md §3 identity 3):
    p[o] = Σ_{t,k} X[t,k] Z̄[t,(k,o)], one block Z̄ ∈ R^{s×dc} under β√s ‖Z̄‖_*; its network is
    Σ_r (Σ_t w1_r[t] x_t)ᵀ W2_r, a weighted sum of the tokens and a linear map. Solved in
    place of the full Mixer program, never on its own (pooled outputs only; not in the
    registry).

    >>> import cvxattn as ca
    >>> ca.heads.mixer.TokenWeights().bind(s=6, d=5, c=3).block_shape   # (s, d·c)
    (6, 15)
    """

    name = "token-weights"

    @property
    def block_shape(self):
        return (self.s, self.d * self.c)

    @property
    def w1_shape(self):
        return (self.s,)

    @property
    def w2_shape(self):
        return (self.d, self.c)

    def lift(self, X, design=None):
        n, s, d = X.shape
        # the design is X itself, (n, 1, s·d): Z̄ read as ((t,k), o) is a plain reshape
        return {"X": X, "design": X.reshape(n, 1, s * d)}

    def tokens(self, Z, data):
        raise NotImplementedError("TokenWeights has pooled outputs only (the collapse of a "
                                  "pooled linear Mixer)")

    def network_tokens(self, W1, W2, data):
        raise NotImplementedError("TokenWeights has pooled outputs only (the collapse of a "
                                  "pooled linear Mixer)")

    def network_pooled(self, W1, W2, data):
        pooled = torch.einsum("grt,ntk->ngrk", W1, data["X"])  # (n, G, r, d)
        return torch.einsum("ngrk,grko->no", pooled, W2)

    def cost(self, heads_per_block, pooled=True):
        s, d, c = self.dims
        heads = heads_per_block
        # the design is a view of X: nothing lifted
        return HeadCost(lift=0, design=0, map=2 * c, map_flops=4 * s * d * c,
                        network=4 * heads * d + 2 * c + s * d,  # X copied into the product
                        network_flops=4 * heads * (s * d + d * c))
