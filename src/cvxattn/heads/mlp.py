"""Token-wise MLP heads, the baselines of SPEC.md §2.1 (paper eqs. 6 and 8).

- linear: O = X Z, one block Z ∈ R^{d×c}; network Σ_r (X w1_r) w2_rᵀ. Under mean pooling its
  design is the mean token, Φ = x̄ = (1/s) Σ_t x_t.
- gated:  O = Σ_j D_j X Z_j with D_j = diag(1{X h_j ≥ 0}), gates h_j ∈ R^d (shape (m, d));
  network Σ_j Σ_{r∈j} (D_j X w1_r) w2_rᵀ.
"""

from __future__ import annotations

import torch

from .base import Head, HeadCost

__all__ = ["MLP"]


class MLP(Head):
    """Token-wise MLP head (paper eqs. 6, 8).

    >>> import torch, cvxattn as ca
    >>> head = ca.heads.MLP(activation="gated", n_gates=3).bind(s=6, d=5, c=3)
    >>> head.n_blocks, head.block_shape
    (3, (5, 3))
    """

    name = "mlp"
    default_n_gates = 100
    network_design = True

    def gate_shape(self):
        return (-1, self.d)

    @property
    def block_shape(self):
        return (self.d, self.c)

    @property
    def w1_shape(self):
        return (self.d,)

    @property
    def w2_shape(self):
        return (self.c,)

    def _lift(self, X, design):
        data = {}
        if not self.gated:
            if design:
                data["design"] = X.mean(1, keepdim=True)  # (n, 1, d): the mean token x̄
            return data
        data["mask"] = (X @ self.gates.to(X).T >= 0).to(X.dtype)  # (n, s, m)
        if design:  # gate-masked token means Φ_j = (1/s) Σ_t D_j[t] x_t
            data["design"] = torch.einsum("nsm,nsd->nmd", data["mask"], X) / X.shape[1]
        return data

    def tokens(self, Z, data):
        X = data["X"]
        if not self.gated:
            return X @ Z[0]  # (n, s, c)
        XZ = torch.einsum("nsd,mdc->nsmc", X, Z)  # (n, s, m, c)
        return torch.einsum("nsm,nsmc->nsc", data["mask"], XZ)

    def pooled(self, Z, data):
        if not self.gated and "design" not in data:
            return self._mean_token(data) @ Z[0]  # (n, c)
        return super().pooled(Z, data)

    def network_tokens(self, W1, W2, data):
        hidden = torch.einsum("nsd,grd->nsgr", data["X"], W1)  # (n, s, G, r)
        if self.gated:
            hidden = hidden * data["mask"][..., None]
        return torch.einsum("nsgr,grc->nsc", hidden, W2)

    def network_pooled(self, W1, W2, data):
        if self.gated or "design" in data:
            return super().network_pooled(W1, W2, data)
        hidden = torch.einsum("nd,grd->ngr", self._mean_token(data), W1)  # (n, G, r)
        return torch.einsum("ngr,grc->nc", hidden, W2)

    # Tokens do not mix: each output row depends on its own token only (SPEC.md §7).
    def pairs(self, Z, data):
        return self._diagonal(self.tokens(Z, data))  # (n, s, s, c)

    def network_pairs(self, W1, W2, data):
        return self._diagonal(self.network_tokens(W1, W2, data))  # (n, s, s, c)

    def token_profiles(self, W1, W2, data):
        """The hidden units of every token, D_j[t] x_tᵀ w1_r · ‖w2_r‖ (n, s, G·r): an MLP does
        not mix tokens, so two tokens are alike for it when they excite its units alike."""
        hidden = torch.einsum("nsd,grd->nsgr", data["X"], W1)  # (n, s, G, r)
        if self.gated:
            hidden = hidden * data["mask"][..., None]
        return (hidden * W2.norm(dim=-1)).flatten(2)  # (n, s, G·r)

    def pair_elements(self, heads_per_block):
        s, d, c = self.dims
        r = self.c if heads_per_block is None else heads_per_block
        return 2 * s * s * c + s * self.n_blocks * r

    def cost(self, heads_per_block, pooled=True):
        s, d, c = self.dims
        hidden = self.n_blocks * heads_per_block  # G·r hidden units
        if not self.gated:
            net = 2 * hidden + c if pooled else 2 * s * (hidden + c)
            net_flops = 4 * hidden * (d + c) if pooled else 4 * s * hidden * (d + c)
            return HeadCost(lift=0, design=d, map=s * c + d, map_flops=4 * d * c * (1 if pooled
                            else s), network=net, network_flops=net_flops + s * d)
        m = self.n_gates
        return HeadCost(lift=s * m, design=m * d, map=3 * s * m * c,
                        map_flops=4 * s * m * d * c, network=3 * s * hidden + 2 * s * c,
                        network_flops=4 * s * hidden * (d + c),
                        lift_temp=2 * s * m + s * d + 2 * m * d)
