"""Top singular values of implicit matrices, with a stated probabilistic guarantee.

The factorized solver never forms the gradient blocks M_g (p × q); it can only apply them:
``forward(V)`` = M_g v for a batch of vectors, ``backward(U)`` = M_gᵀ u (one pass of the network
with probe heads each, SPEC.md §4). :class:`KrylovNorm` estimates σ_max(M_g) for every block g
at once by block Lanczos on the smaller Gram matrix (MᵀM when q ≤ p, else MMᵀ), with full
re-orthogonalization and a Rayleigh–Ritz step:

    Q = orthonormal basis of K_k(MᵀM, [v_rand, V_warm])   (N × (1 + w)k, N = min(p, q))
    σ̂ = σ_max(M Q)  ≤ σ_max(M)

Every block of start vectors holds a fresh uniformly random unit vector v_rand (plus, when given,
w warm vectors such as the previous top Ritz vectors). The Krylov space of the block contains the
single-vector space K_k(MᵀM, v_rand), so the bound of Kuczyński & Woźniakowski (1992, Thm 4.2(a))
for k Lanczos steps from a uniform random start applies to σ̂²:

    P(σ̂² < (1 − ε) σ_max²) ≤ 1.648 √N · exp(−√ε (2k − 1)).

:meth:`KrylovNorm.epsilon` inverts it: with probability ≥ 1 − δ (union bound over the G blocks),
σ_max(M_g) ≤ σ̂_g / √(1 − ε) for every g. Once the basis spans all N dimensions, σ̂ is exact
(ε = 0). Small sides (N ≤ ``exact_limit``) are applied to the identity instead: exact in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["KrylovNorm", "kw_epsilon"]

Product = Callable[[torch.Tensor], torch.Tensor]


def kw_epsilon(steps: int, dim: int, delta: float) -> float:
    """Smallest ε with 1.648 √dim · exp(−√ε (2·steps − 1)) ≤ delta (Kuczyński–Woźniakowski)."""
    if steps < 1:
        return 1.0
    root = math.log(1.648 * math.sqrt(dim) / delta) / (2 * steps - 1)
    return min(1.0, max(root, 0.0) ** 2)


class KrylovNorm:
    """Block-Lanczos estimate of σ_max(M_g) for G implicit blocks M_g of shape (p, q).

    ``forward(V)`` maps right vectors (G, b, q) to M V (G, b, p); ``backward(U)`` maps left
    vectors (G, b, p) to Mᵀ U (G, b, q). ``warm`` (G, N) or (G, N, k), on the smaller side
    (N = min(p, q)), is an optional start added to the random one: e.g. the previous
    certificate's top Ritz vectors, which a slowly changing M keeps nearly invariant, so the
    estimate settles in a few steps. Call :meth:`step` until :meth:`epsilon` or the estimate suffices.

    >>> import torch
    >>> M = torch.randn(3, 40, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> est = KrylovNorm(lambda V: V @ M.transpose(1, 2), lambda U: U @ M, (3, 40, 30),
    ...                  dtype=M.dtype, seed=0, exact_limit=0)
    >>> for _ in range(30):   # N = 30: the basis then spans R^30 and σ̂ is exact
    ...     _ = est.step()
    >>> est.exact, bool(torch.allclose(est.values, torch.linalg.matrix_norm(M, 2), rtol=1e-12))
    (True, True)
    """

    def __init__(self, forward: Product, backward: Product, shape: tuple[int, int, int],
                 dtype: torch.dtype, device=None, warm: torch.Tensor | None = None,
                 seed: int = 0, exact_limit: int = 64):
        G, p, q = shape
        self.n_blocks = G
        self.dim = min(p, q)
        # work on the smaller side: Krylov vectors live in R^N, "first" maps them to the other
        self.right = q <= p
        self.first, self.second = (forward, backward) if self.right else (backward, forward)
        self.dtype, self.device = dtype, device
        self.steps = 0
        self.basis: list[torch.Tensor] = []  # orthonormal blocks (G, N, b)
        self.images: list[torch.Tensor] = []  # first(basis block) (G, other, b)
        self.values = torch.zeros(G, dtype=dtype, device=device)
        self._ritz = None
        if self.dim <= exact_limit:
            eye = torch.eye(self.dim, dtype=dtype, device=device).expand(G, -1, -1)
            self._add(eye.transpose(1, 2).contiguous())  # one pass applies M to the identity
            return
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(G, self.dim, 1, generator=generator, dtype=torch.float64)
        start = start.to(dtype=dtype, device=device)
        if warm is not None:
            warm = warm.to(start)
            warm = warm[:, :, None] if warm.ndim == 2 else warm  # (G, N, k)
            if warm.shape[:2] == (G, self.dim) and bool(warm.abs().sum() > 0):
                start = torch.cat([start, warm], 2)  # (G, N, 1 + k)
        self._next = self._orthonormalize(start)

    @property
    def exact(self) -> bool:
        """True once the basis spans R^N: the values are then σ_max itself (up to rounding)."""
        return sum(b.shape[2] for b in self.basis) >= self.dim

    def epsilon(self, delta: float) -> float:
        """ε such that, with probability ≥ 1 − δ over the random starts, σ_max(M_g) ≤
        σ̂_g / √(1 − ε) for all G blocks at once (0 when exact)."""
        if self.exact:
            return 0.0
        return kw_epsilon(self.steps, self.dim, delta / self.n_blocks)

    def step(self) -> torch.Tensor:
        """One block-Lanczos step: two passes (M then Mᵀ); returns the new estimates (G,)."""
        if self.exact:
            return self.values
        block = self._next
        self._add(block)
        self.steps += 1
        if not self.exact:
            self._next = self._orthonormalize(self.second(self.images[-1].transpose(1, 2))
                                              .transpose(1, 2))
        return self.values

    def _add(self, block: torch.Tensor) -> None:
        """Append an orthonormal block (G, N, b) and its image; update the Ritz estimate."""
        self.basis.append(block)
        self.images.append(self.first(block.transpose(1, 2)).transpose(1, 2))  # (G, other, b)
        images = torch.cat(self.images, 2)  # (G, other, k·b)
        gram = images.transpose(1, 2) @ images  # (G, kb, kb) = Qᵀ MᵀM Q
        evals, evecs = torch.linalg.eigh(gram)
        self.values = evals[:, -1].clamp_min(0).sqrt()  # (G,)
        self._ritz = evals.flip(-1).clamp_min(0).sqrt(), evecs.flip(-1)  # descending (G, kb)

    def _orthonormalize(self, W: torch.Tensor) -> torch.Tensor:
        """W (G, N, b) orthogonalized twice against the basis, then orthonormalized (CGS2)."""
        for _ in range(2):
            for Q in self.basis:
                W = W - Q @ (Q.transpose(1, 2) @ W)
        Q, _ = torch.linalg.qr(W)
        for Q_old in self.basis:  # a vector already in the span comes back as rounding noise
            Q = Q - Q_old @ (Q_old.transpose(1, 2) @ Q)
        Q, _ = torch.linalg.qr(Q)
        return Q

    def vectors(self, k: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The top ``k`` Ritz pairs: (u (G, p, k), v (G, q, k), values (G, k)), descending.

        Each pair is exact in the sense that matters for descent: M v_i = θ_i u_i with
        ‖u_i‖ = ‖v_i‖ = 1, so uᵢᵀ M vᵢ = θ_i; different pairs are orthogonal on both sides.
        """
        values, coordinates = self._ritz
        k = min(k, values.shape[1])
        coordinates = coordinates[:, :, :k]  # (G, kb, k)
        small = torch.cat(self.basis, 2) @ coordinates  # (G, N, k)
        big = torch.cat(self.images, 2) @ coordinates  # (G, other, k)
        big = big / big.norm(dim=1, keepdim=True).clamp_min(torch.finfo(big.dtype).tiny)
        u, v = (big, small) if self.right else (small, big)
        return u, v, values[:, :k]
