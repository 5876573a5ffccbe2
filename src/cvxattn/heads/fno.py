"""Fourier Neural Operator heads, SPEC.md §2.4–2.5 (paper eqs. 22–31, Lemma 4.3).

circ(X) ∈ R^{s×sd}, circ(X)[t,(u,k)] = X[t ⊕ u, k], ⊕ adding 2-D grid positions cyclically
(row-major tokens t = r·w + q on an h×w grid). A product circ(X) w with a kernel w = K ∈ R^{s×d}
is the 2-D circular cross-correlation (circ(X) w)[t] = Σ_{u,k} X[t⊕u, k] K[u, k]; by the
correlation theorem its DFT is Σ_k X̂_k · conj(K̂_k), so it costs O(s log s · d) with FFTs and
circ(X) is never formed.

- FNO, linear: O = circ(X) Z, Z ∈ R^{sd×c}; network Σ_r (circ(X) w1_r) w2_rᵀ.
- FNO, gated: gates h_j ∈ R^{sd} (shape (m, s, d)), D_j = diag(1{circ(X) h_j ≥ 0});
  O = Σ_j D_j circ(X) Z_j.
- BlockFNO ("B-FNO", AFNO-style): B groups of contiguous features and outputs; group b uses
  X^{(b)} ∈ R^{s×d/B} and blocks Z_b ∈ R^{(sd/B)×(c/B)}; gated: gates (B, m, s, d/B), blocks
  ordered group-major (index b·m + j). The FNO is the BlockFNO with B = 1.
"""

from __future__ import annotations

import math

import torch

from ..checks import is_integer
from .base import Collapse, Head, HeadCost, design_adjoint

__all__ = ["FNO", "BlockFNO"]


class BlockFNO(Head):
    """Block FNO head with ``groups`` = B (paper eqs. 27–31).

    >>> import cvxattn as ca
    >>> head = ca.heads.BlockFNO(groups=2, grid=(2, 3)).bind(s=6, d=4, c=6)
    >>> head.n_blocks, head.block_shape   # B blocks of (s·d/B, c/B)
    (2, (12, 3))
    """

    name = "bfno"
    default_n_gates = 5
    network_design = True

    def __init__(self, groups: int = 5, grid: tuple[int, int] | None = None,
                 activation: str = "linear", n_gates: int | None = None, gates=None,
                 seed: int = 0):
        super().__init__(activation=activation, n_gates=n_gates, gates=gates, seed=seed)
        if not is_integer(groups, 1):
            raise ValueError(f"groups: expected a positive integer, got {groups!r}")
        if grid is not None:
            if isinstance(grid, (str, bytes)) or not hasattr(grid, "__len__") \
                    or len(grid) != 2 or not all(is_integer(g, 1) for g in grid):
                raise ValueError(f"grid: expected (h, w) with positive integers, got {grid!r}")
            grid = (int(grid[0]), int(grid[1]))
        self.groups = int(groups)
        self.grid = grid

    def pooled_design(self, data):
        # groups see their own design: one product only with a single group
        design = data.get("design")
        if design is None or self.groups != 1:
            return None
        return design.reshape(design.shape[0], -1)

    @property
    def class_columns(self):
        return self.groups == 1  # with B > 1 groups a block's columns are c/B of the classes

    def _check_dims(self):
        s, d, c = self.dims
        if self.grid is None:
            side = math.isqrt(s)
            if side * side != s:
                raise ValueError(f"grid: s = {s} tokens is not a square; pass grid=(h, w) "
                                 "with h·w = s")
            self.grid = (side, side)
        h, w = self.grid
        if h * w != s:
            raise ValueError(f"grid: expected h·w = s = {s}, got grid {self.grid} "
                             f"(h·w = {h * w})")
        B = self.groups
        if d % B or c % B:
            raise ValueError(f"groups: expected B to divide d = {d} and c = {c}, got B = {B}")

    def _repr_args(self):
        return [f"groups={self.groups}", f"grid={self.grid}"]

    def config(self):
        return {**super().config(), "groups": self.groups, "grid": self.grid}

    # ----------------------------------------------------------------- shapes
    @property
    def _J(self) -> int:
        """Blocks per group: m when gated, 1 when linear."""
        return self.n_gates if self.gated else 1

    def gate_shape(self):
        return (self.groups, -1, self.s, self.d // self.groups)

    @property
    def n_blocks(self):
        return self.groups * self._J

    @property
    def block_shape(self):
        return (self.s * self.d // self.groups, self.c // self.groups)

    @property
    def w1_shape(self):
        return (self.s, self.d // self.groups)

    @property
    def w2_shape(self):
        return (self.c // self.groups,)

    # ---------------------------------------------------------------- the map
    def _correlate(self, Xf, K):
        """Circular cross-correlation of every group with kernels K.

        Xf: rfft2 of the grouped tokens, (n, h, w//2+1, B, d/B) complex.
        K: kernels (B, J, h, w, d/B, q) real.  Returns (n, B, J, h, w, q):
        out[n,b,j,t,o] = Σ_{u,k} X^{(b)}[n, t⊕u, k] K[b, j, u, k, o].
        """
        h, w = self.grid
        Kf = torch.fft.rfft2(K, dim=(2, 3))  # (B, J, h, w//2+1, d/B, q)
        Of = torch.einsum("nxybk,bjxyko->nbjxyo", Xf, Kf.conj())
        return torch.fft.irfft2(Of, s=(h, w), dim=(3, 4))

    def _lift(self, X, design):
        n = X.shape[0]
        h, w = self.grid
        B = self.groups
        grouped = X.reshape(n, h, w, B, self.d // B)  # (n, h, w, B, d/B)
        data = {"Xf": torch.fft.rfft2(grouped, dim=(1, 2))}
        if not self.gated:  # pooled, the linear head sees only the mean token
            data["mean"] = X.mean(1)  # (n, d)
            return data
        # FNO gates (m, s, d) and BlockFNO gates (B, m, s, d/B) alike
        kernels = self.gates.to(X).reshape(B, -1, h, w, self.d // B, 1)
        pre = self._correlate(data["Xf"], kernels)[..., 0]  # (n, B, m, h, w)
        data["mask"] = (pre >= 0).to(X.dtype)
        del pre
        if design:
            # Φ_{b,j}[(u,k)] = (1/s) Σ_t D_{b,j}[t] X^{(b)}[t⊕u, k]: a correlation of the
            # tokens with the sample's own mask, by FFT; p_b = Σ_j Φ_{b,j} Z_{b,j}
            Df = torch.fft.rfft2(data["mask"], dim=(3, 4))  # (n, B, m, h, w//2+1)
            Of = torch.einsum("nxybk,nbjxy->nbjxyk", data["Xf"], Df.conj())
            del Df
            design = torch.fft.irfft2(Of, s=(h, w), dim=(3, 4)).div_(self.s)
            data["design"] = design.reshape(n, B, self._J, -1)  # (n, B, m, s·d/B)
        return data

    def _ungroup(self, out):
        """(n, B, h, w, c/B) → (n, s, c) with contiguous output groups."""
        n = out.shape[0]
        return out.permute(0, 2, 3, 1, 4).reshape(n, self.s, self.c)

    def tokens(self, Z, data):
        h, w = self.grid
        B = self.groups
        K = Z.reshape(B, self._J, h, w, self.d // B, self.c // B)  # kernels of the blocks
        C = self._correlate(data["Xf"], K)  # (n, B, J, h, w, c/B)
        if self.gated:
            C = C * data["mask"][..., None]
        return self._ungroup(C.sum(2))

    def adjoint(self, weights, data):
        design = data["design"]  # (n, B, m, s·d/B): group b's outputs see only its design
        n, B = design.shape[:2]
        w = weights.reshape(n, B, -1)  # (n, B, c/B)
        per_group = [design_adjoint(design[:, b].reshape(n, -1), w[:, b]) for b in range(B)]
        return torch.stack(per_group).reshape(self.n_blocks, *self.block_shape)

    def pooled(self, Z, data):
        if "design" in data:
            design = data["design"]  # (n, B, m, s·d/B)
            K = Z.reshape(self.groups, self._J, design.shape[3], -1)  # (B, m, s·d/B, c/B)
            return torch.einsum("nbjp,bjpo->nbo", design, K).reshape(design.shape[0], self.c)
        if self.gated:
            return super().pooled(Z, data)
        # Σ_t X[t⊕u] = Σ_t X[t]: under mean pooling only Σ_u of the kernel matters
        B = self.groups
        xbar = self._mean_token(data).reshape(-1, B, self.d // B)  # (n, B, d/B)
        Ksum = Z.reshape(B, self.s, self.d // B, self.c // B).sum(1)  # (B, d/B, c/B)
        return torch.einsum("nbk,bko->nbo", xbar, Ksum).reshape(xbar.shape[0], self.c)

    def network_tokens(self, W1, W2, data):
        h, w = self.grid
        B, J = self.groups, self._J
        r = W1.shape[1]
        kernels = W1.reshape(B, J * r, h, w, self.d // B, 1)  # one kernel per head
        hidden = self._correlate(data["Xf"], kernels)  # (n, B, J·r, h, w, 1)
        hidden = hidden.reshape(-1, B, J, r, h, w)
        if self.gated:
            hidden = hidden * data["mask"][:, :, :, None]
        out = torch.einsum("nbjrxy,bjro->nbxyo", hidden, W2.reshape(B, J, r, -1))
        return self._ungroup(out)

    def network_pooled(self, W1, W2, data):
        if self.gated:
            return super().network_pooled(W1, W2, data)
        # Σ_t X[t⊕u] = Σ_t X[t]: only the kernel's sum over shifts matters
        B = self.groups
        xbar = self._mean_token(data).reshape(-1, B, self.d // B)  # (n, B, d/B)
        hidden = torch.einsum("nbk,brk->nbr", xbar, W1.sum(2))  # (n, B, r)
        return torch.einsum("nbr,bro->nbo", hidden, W2).reshape(xbar.shape[0], self.c)

    # ------------------------------------------- exact attributions (SPEC.md §7)
    def _offsets(self, device) -> torch.Tensor:
        """u[a, t] = t ⊖ a (s, s): the shift at which source token t enters output token a
        (t = a ⊕ u on the h×w torus, row-major)."""
        h, w = self.grid
        pos = torch.arange(self.s, device=device)
        rows = (pos[None, :] // w - pos[:, None] // w) % h  # (a, t)
        cols = (pos[None, :] % w - pos[:, None] % w) % w
        return rows * w + cols

    def _gather_shifts(self, Y):
        """Y[..., t, u, :] → C[..., a, t, :] = Y[..., t, t ⊖ a, :] for Y (..., s, s, q)."""
        u = self._offsets(Y.device)  # (a, t)
        t = torch.arange(self.s, device=Y.device).expand(self.s, self.s)  # (a, t)
        return Y[..., t, u, :]  # (..., a, t, q)

    def _mask_of_pairs(self, data):
        """D_{b,j}[a] as (n, B, J, s, 1, 1): the gate of the receiving token."""
        n = data["X"].shape[0]
        return data["mask"].reshape(n, self.groups, self._J, self.s, 1, 1)

    def pairs(self, Z, data):
        """C[a, t, (b,o)] = Σ_j D_{b,j}[a] Σ_{k∈b} X[t,k] Z_{b,j}[(t ⊖ a, k), o] (D ≡ 1 linear)."""
        X = data["X"]
        n, B, J = X.shape[0], self.groups, self._J
        Xg = X.reshape(n, self.s, B, self.d // B)  # (n, t, b, k)
        K = Z.reshape(B, J, self.s, self.d // B, self.c // B)  # (b, j, u, k, o)
        Y = torch.einsum("ntbk,bjuko->nbjtuo", Xg, K)  # (n, B, J, t, u, c/B)
        C = self._gather_shifts(Y)  # (n, B, J, a, t, c/B)
        if self.gated:
            C = C * self._mask_of_pairs(data)
        return C.sum(2).permute(0, 2, 3, 1, 4).reshape(n, self.s, self.s, self.c)

    def _hidden_pairs(self, W1, data):
        """h[n, b, j, r, a, t] = D_{b,j}[a] Σ_k X^{(b)}[t,k] W1_{b,j,r}[t ⊖ a, k]: what source t
        adds to hidden unit r at token a (Σ_t h = the unit's pre-output value)."""
        X = data["X"]
        n, B, J, r = X.shape[0], self.groups, self._J, W1.shape[1]
        Xg = X.reshape(n, self.s, B, self.d // B)  # (n, t, b, k)
        kernels = W1.reshape(B, J, r, self.s, self.d // B)  # (b, j, r, u, k)
        Y = torch.einsum("ntbk,bjruk->nbjrtu", Xg, kernels)[..., None]  # (n,B,J,r,t,u,1)
        h = self._gather_shifts(Y)[..., 0]  # (n, B, J, r, a, t)
        if self.gated:
            h = h * self._mask_of_pairs(data)[..., None, :, :, 0]
        return h

    def network_pairs(self, W1, W2, data):
        """C[a, t, (b,o)] = Σ_{j,r} h[b,j,r,a,t] W2_{b,j,r}[o] (see :meth:`_hidden_pairs`)."""
        h = self._hidden_pairs(W1, data)  # (n, B, J, r, a, t)
        n, B, J, r = h.shape[:4]
        out = torch.einsum("nbjrat,bjro->natbo", h, W2.reshape(B, J, r, -1))
        return out.reshape(n, self.s, self.s, self.c)

    def mixing(self, W1, W2, data):
        """K = G·r matrices: the kernel's weight on each source token,
        D_{b,j}[a] Σ_k X^{(b)}[t,k] W1_r[t ⊖ a, k] (the unit's pre-activation share from t),
        times ‖W2_r‖: a global convolution mixes tokens by their offset and content."""
        h = self._hidden_pairs(W1, data)  # (n, B, J, r, a, t)
        weight = W2.norm(dim=-1).reshape(*h.shape[1:4], 1, 1)  # (B, J, r, 1, 1)
        return (h * weight).flatten(1, 3)  # (n, G·r, s, s)

    def pair_elements(self, heads_per_block):
        s, d, c = self.dims
        if heads_per_block is None:
            return 3 * self._J * s * s * c + s * s * c
        return 2 * s * s * c + 3 * self.n_blocks * heads_per_block * s * s

    def pooled_collapse(self):
        """Linear heads under mean pooling see only Σ_u of the kernel (Σ_t X[t⊕u] = Σ_t X[t]):
        p_b = x̄^{(b)}ᵀ W_b with W_b = Σ_u Z_b[(u, ·), ·]. The cheapest Z for a given W_b puts
        W_b/s at every shift, with ‖Z_b‖_* = ‖W_b‖_*/√s, so the program is the block linear
        model of the mean token (a B-FNO on a 1×1 grid) at β/√s (SPEC.md §3 identity 3)."""
        s, d, c = self.dims
        if self.gated or s == 1:  # s = 1: already the collapsed program
            return None
        B, root = self.groups, math.sqrt(s)
        small = BlockFNO(groups=B, grid=(1, 1)).bind(1, d, c)

        def expand(W1, W2):
            # collapsed heads a (B, r, 1, d/B), b (B, r, c/B): Z_u = a bᵀ/s at every shift u,
            # balanced as W1 = a·s^{-3/4} at every shift, W2 = b·s^{-1/4}
            return W1.expand(-1, -1, s, -1) * s ** -0.75, W2 * s ** -0.25

        return Collapse(
            head=small, tokens=lambda X: X.mean(1, keepdim=True),  # (n, 1, d)
            beta_scale=1.0 / root,
            collapse=lambda Z: Z.reshape(B, s, d // B, c // B).sum(1),  # W_b = Σ_u Z_b,u
            expand=expand,
            description=f"solved as its pooled collapse (SPEC.md §3): a block linear model of "
                        f"the mean token at β/√s, s = {s}")

    def cost(self, heads_per_block, pooled=True):
        s, d, c = self.dims
        B, G = self.groups, self.n_blocks
        heads = G * heads_per_block
        h, w = self.grid
        spectrum = 2 * h * (w // 2 + 1) * d  # rfft2 of the tokens: complex, half the columns
        # per head: a kernel spectrum, the correlation (complex) and its inverse FFT, masked
        net = 6 * heads * s + 2 * s * c
        net_flops = heads * (8 * s * d // B + 2 * self._fft_flops(s) + 4 * s * c // B)
        if not self.gated and pooled:
            net, net_flops = 3 * heads + 2 * c + d, 4 * heads * (d + c) // B + s * d
        mask = G * s if self.gated else 0
        mean = 0 if self.gated else d  # the linear head keeps the mean token
        # the lift: the tokens' FFT input; gated, the gates' correlation (complex, then real)
        # and its signs, and for Φ the masks' spectra, the product spectra (complex, twice Φ)
        # and their inverse FFT (Φ again)
        temp = s * d + (4 * G * s + G * h * (w // 2 + 1) * 2 + 4 * G * s * d // B
                        if self.gated else 0)
        return HeadCost(lift=spectrum + mask + mean, lift_temp=temp,
                        design=G * s * d // B if self.gated else 0,
                        map=4 * G * s * c // B + 2 * s * c,
                        map_flops=8 * G * s * d * c // (B * B) + G * self._fft_flops(s) * c // B,
                        network=net, network_flops=net_flops + self._fft_flops(s) * d)

    # ---------------------------------------------- the paper's FFT form (Lemma 4.3)
    def spectral_weights(self, W1: torch.Tensor) -> torch.Tensor:
        """Per-frequency weights of the kernels W1 (G, r, s, d/B): conj(DFT₂(W1)),
        shape (G, r, h, w//2+1, d/B) complex. The kernel map of Lemma 4.3."""
        h, w = self.grid
        K = W1.reshape(*W1.shape[:2], h, w, W1.shape[-1])
        return torch.fft.rfft2(K, dim=(2, 3)).conj()

    def spectral_tokens(self, weights: torch.Tensor, W2: torch.Tensor,
                        data: dict[str, torch.Tensor]) -> torch.Tensor:
        """The FNO in the paper's form: DFT over tokens, a weight per frequency, inverse DFT,
        then the channel map W2 (G, r, c/B). ``weights`` as from :meth:`spectral_weights`."""
        h, w = self.grid
        B, J = self.groups, self._J
        r = weights.shape[1]
        Wf = weights.reshape(B, J * r, h, w // 2 + 1, -1)
        hidden_f = torch.einsum("nxybk,bjxyk->nbjxy", data["Xf"], Wf)
        hidden = torch.fft.irfft2(hidden_f, s=(h, w), dim=(3, 4)).reshape(-1, B, J, r, h, w)
        if self.gated:
            hidden = hidden * data["mask"][:, :, :, None]
        out = torch.einsum("nbjrxy,bjro->nbxyo", hidden, W2.reshape(B, J, r, -1))
        return self._ungroup(out)


class FNO(BlockFNO):
    """FNO head (paper eqs. 22–26): the BlockFNO with a single group.

    >>> import cvxattn as ca
    >>> ca.heads.FNO(grid=(2, 3)).bind(s=6, d=5, c=3).block_shape   # (s·d, c)
    (30, 3)
    """

    name = "fno"

    def __init__(self, grid: tuple[int, int] | None = None, activation: str = "linear",
                 n_gates: int | None = None, gates=None, seed: int = 0):
        super().__init__(groups=1, grid=grid, activation=activation, n_gates=n_gates,
                         gates=gates, seed=seed)

    def gate_shape(self):
        return (-1, self.s, self.d)

    def _repr_args(self):
        return [f"grid={self.grid}"]

    def config(self):
        out = super().config()
        del out["groups"]  # one group: not a parameter of the FNO
        return out
