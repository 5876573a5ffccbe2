"""The Head protocol every mechanism implements, and the network module they share.

A head is a linear map from convex blocks Z = (Z_1 … Z_G), stacked as a tensor (G, p, q), to
token-level outputs O(X) ∈ R^{s×c} (SPEC.md §2), and at the same time a non-convex network
bilinear in its heads (W1_r, W2_r), grouped by block: head r of block g contributes
vec(W1_r) vec(W2_r)ᵀ to Z_g. Solvers, certificates and reports only use this surface:

- ``bind(s, d, c)``: a copy fixed to the data's sizes, with its gates sampled or checked;
- ``n_blocks``, ``block_shape``, ``w1_shape``, ``w2_shape``;
- ``lift(X)``: the per-sample data the map needs (masks, Gram matrices, FFTs), computed once;
- ``tokens(Z, data)`` (n, s, c) and ``pooled(Z, data)`` (n, c) = mean over tokens: the convex
  map, matrix-free; its adjoint comes from autograd;
- the pooled map is linear in a per-block *pooled design* Φ (n, G, P): p_i = Σ_g Φ_{i,g}
  Z_g.reshape(P, q·p/P). Gated heads build Φ in ``lift`` when it fits ``DESIGN_BUDGET``
  (it turns each iteration into one batched product); otherwise they stay matrix-free;
- ``network_tokens(W1, W2, data)``: the same outputs computed the way the network does, and
  ``network_pooled`` their mean over tokens (heads override it with cheaper forms);
- ``blocks_from_heads`` / ``heads_from_blocks``: the exact weight maps both ways;
- ``network(heads_per_block)``: a :class:`HeadNetwork` (``torch.nn.Module``);
- ``pairs(Z, data)`` and ``network_pairs(W1, W2, data)``: the exact pair contributions
  (n, s, s, c) of SPEC.md §7, from the blocks and from the heads; ``mixing`` and
  ``token_profiles``: the head's own notion of token similarity (``cvxattn.explain``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..checks import check_integer, is_integer
from .gates import check_gates, sample_gates

__all__ = ["Head", "HeadNetwork", "HeadCost", "Collapse"]

ACTIVATIONS = ("linear", "gated")

# Largest pooled design Φ (bytes, all samples) that ``lift`` builds. A pass through Φ is one
# matrix product that reads it once, several times faster than the matrix-free maps of the gated
# Mixer and attention; the memory plan counts it.
DESIGN_BUDGET = 2**31
# Intermediates of one chunk of samples in the matrix-free maps and the design's construction
# (elements): small enough to stay in cache, large enough that each product is a real GEMM.
CHUNK_ELEMENTS = 2**20
# ``lift`` works on chunks of samples whose intermediates hold at most this many times
# CHUNK_ELEMENTS elements (16 MiB in float64), so that its transient memory does not grow with
# n. Larger chunks are no faster, and the allocator keeps what they free: with 8 the peak of a
# gated FNO lift was 60% above its result, with 2 it is 15% above (n = 20,000, 11-30 run).
LIFT_SCALE = 2


def sample_chunks(n: int, per_sample: int, scale: int = 1):
    """Slices of the n samples, each holding at most ``scale·CHUNK_ELEMENTS`` intermediates
    of ``per_sample`` elements a sample."""
    size = max(1, scale * CHUNK_ELEMENTS // per_sample)
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


@dataclass(frozen=True)
class Collapse:
    """A pooled program that is exactly a smaller one (SPEC.md §3 identity 3): the collapsed
    ``head`` on ``tokens(X)`` at β · ``beta_scale`` has the same optimal value and certificate,
    ``collapse(Z)`` maps full blocks to collapsed ones (warm starts) and ``expand(W1, W2)``
    maps the collapsed program's balanced heads to balanced heads of the full program."""

    head: "Head"
    tokens: Callable[[torch.Tensor], torch.Tensor]
    beta_scale: float
    collapse: Callable[[torch.Tensor], torch.Tensor]
    expand: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    description: str


@dataclass(frozen=True)
class HeadCost:
    """Per-sample cost model of a head's passes: sizes in numbers (multiply by the dtype's
    bytes), flops of one forward + adjoint pass. Estimates of the largest intermediates, used to
    choose a solver and a chunk size before anything is allocated; not exact counts."""

    lift: int  # lift(X, design=False), X itself not included
    design: int  # the pooled design Φ, for heads that build one (0: never built)
    map: int  # intermediates of the convex map and its adjoint (FISTA, certificate)
    map_flops: int
    network: int  # intermediates of the network with r heads per block, forward + backward
    network_flops: int
    lift_temp: int = 0  # intermediates of ``lift`` (with the design), freed when it returns

    def lift_peak(self, n: int) -> int:
        """Elements held while lifting n samples beyond the result: one chunk's
        intermediates (``lift`` works in chunks of at most LIFT_SCALE · CHUNK_ELEMENTS)."""
        if self.lift_temp == 0:
            return 0
        return min(n, lift_chunk(self.lift_temp)) * self.lift_temp


def lift_chunk(per_sample: int) -> int:
    """Samples per chunk of ``Head.lift`` for ``per_sample`` intermediates a sample."""
    return max(1, LIFT_SCALE * CHUNK_ELEMENTS // max(per_sample, 1))


class Head:
    """Base class of the convex heads; see the module docstring for the protocol."""

    name: ClassVar[str] = ""
    default_n_gates: ClassVar[int] = 5
    # the pooled design Φ has one row per block row (P = p): the network can run on it
    network_design: ClassVar[bool] = False
    # a pair term C[a, t] is linear in the receiving token x_a as well as in the source x_t
    # (attention: x_aᵀ(…)); elsewhere x_a enters only through a gate (SPEC.md §7)
    pairs_read_receiver: ClassVar[bool] = False

    def __init__(self, activation: str = "linear", n_gates: int | None = None, gates=None,
                 seed: int = 0):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
        for name, value in (("n_gates", n_gates), ("gates", gates)):
            if activation == "linear" and value is not None:
                raise ValueError(f"{name}: expected None for activation='linear' (gates are for "
                                 "activation='gated')")
        if n_gates is not None and not is_integer(n_gates, 1):
            raise ValueError(f"n_gates: expected a positive integer, got {n_gates!r}")
        self.activation = activation
        self.n_gates = None if n_gates is None else int(n_gates)
        self.gates = gates
        self.seed = check_integer(seed, "seed")
        self.dims: tuple[int, int, int] | None = None  # (s, d, c) once bound

    # ------------------------------------------------------------------ binding
    @property
    def gated(self) -> bool:
        return self.activation == "gated"

    def bind(self, s: int, d: int, c: int) -> "Head":
        """A copy fixed to s tokens, d features and c outputs, with resolved gates."""
        head = copy.copy(self)
        head.dims = (int(s), int(d), int(c))
        head._check_dims()
        if self.gated:
            shape = head.gate_shape()
            if self.gates is None:
                m = self.n_gates if self.n_gates is not None else self.default_n_gates
                head.gates = sample_gates(tuple(m if e == -1 else e for e in shape), self.seed)
            else:
                head.gates = check_gates(self.gates, shape, type(self).__name__)
            head.n_gates = head.gates.shape[shape.index(-1)]
        return head

    def _check_dims(self) -> None:
        """Raise ValueError when the head cannot act on (s, d, c); override per head."""

    @property
    def s(self) -> int:
        return self._dims()[0]

    @property
    def d(self) -> int:
        return self._dims()[1]

    @property
    def c(self) -> int:
        return self._dims()[2]

    def _dims(self) -> tuple[int, int, int]:
        if self.dims is None:
            raise RuntimeError(f"{self!r} is not bound to data sizes; call head.bind(s, d, c) "
                               "(ca.Problem does this)")
        return self.dims

    # -------------------------------------------------------------- to override
    def gate_shape(self) -> tuple[int, ...]:
        """Shape of the explicit gates, with -1 at the axis of the m gates."""
        raise NotImplementedError

    @property
    def n_blocks(self) -> int:
        """G, the number of convex blocks (one per gate, or one for a linear head)."""
        return self.n_gates if self.gated else 1

    @property
    def block_shape(self) -> tuple[int, int]:
        raise NotImplementedError

    @property
    def w1_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def w2_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def class_columns(self) -> bool:
        """Whether each block's columns are (group, class) pairs, the class the inner axis, for
        every one of the c classes: then adding one vector to a group's c columns adds a
        constant to all logits of each token, which cross-entropy does not see (true of every
        head but the block FNO with B > 1 groups, whose blocks see c/B classes each)."""
        return True

    def lift(self, X: torch.Tensor, design: bool | None = None) -> dict[str, torch.Tensor]:
        """Per-sample data of the map (every entry has leading axis n); X is (n, s, d).

        ``design``: build the pooled design Φ (True), don't (False), or decide by
        ``DESIGN_BUDGET`` (None). Heads compute it with :meth:`_lift` on chunks of samples
        (``HeadCost.lift_temp`` intermediates each, at most LIFT_SCALE · CHUNK_ELEMENTS in
        all) written into buffers of n rows: the masks' scores and the design's products never
        exist for all n samples at once, which is what the memory plan counts.
        """
        cost = self.cost(1)
        design = bool(cost.design) and self._wants_design(design, X, cost.design)
        n = X.shape[0]
        data: dict[str, torch.Tensor] = {}
        size = lift_chunk(cost.lift_temp)
        for start in range(0, n, size):
            rows = slice(start, min(start + size, n))
            part = self._lift(X[rows], design)
            if size >= n or not part:  # one chunk, or nothing lifted: no buffers
                return {"X": X, **part}
            for key, value in part.items():
                if key not in data:
                    data[key] = self._lift_buffer(key, value, n)
                data[key][rows] = value
        return {"X": X, **data}

    def _lift(self, X: torch.Tensor, design: bool) -> dict[str, torch.Tensor]:
        """The lifted data of the samples X (k, s, d), without X itself: masks, Gram
        matrices, spectra, and the pooled design Φ when ``design``; override per head."""
        raise NotImplementedError

    def _lift_buffer(self, key: str, part: torch.Tensor, n: int) -> torch.Tensor:
        """An empty buffer of n rows for the lifted entry ``key`` (``part``: its first chunk),
        laid out in memory as ``part`` is (its axes in the order of their strides; FFTs and
        permuted masks are not row-major), so that the maps see the same layout whatever n.
        A chunk of one sample has a stride on its first axis that ties with an outer axis;
        the sample axis then goes inside it."""
        order = sorted(range(part.ndim), key=lambda axis: (-part.stride(axis), axis == 0))
        shape = [n if axis == 0 else part.shape[axis] for axis in order]
        inverse = sorted(range(part.ndim), key=order.__getitem__)
        return part.new_empty(shape).permute(inverse)

    @staticmethod
    def _wants_design(design: bool | None, X: torch.Tensor, per_sample: int) -> bool:
        """``design``, or when None whether Φ (``per_sample`` entries per sample of X) fits
        ``DESIGN_BUDGET``."""
        if design is not None:
            return design
        return X.shape[0] * per_sample * X.element_size() <= DESIGN_BUDGET

    @staticmethod
    def _mean_token(data: dict[str, torch.Tensor]) -> torch.Tensor:
        """x̄ = (1/s) Σ_t x_t (n, d): kept by the lifts of heads whose pooled map reads only it,
        else computed."""
        return data["mean"] if "mean" in data else data["X"].mean(1)

    def tokens(self, Z: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token-level outputs O (n, s, c) of the convex map at blocks Z (G, p, q)."""
        raise NotImplementedError

    def pooled(self, Z: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean-pooled outputs (1/s) 1ᵀ O, shape (n, c): through the pooled design Φ when
        ``lift`` built one, else the mean of the token outputs (heads override with cheaper
        forms)."""
        if "design" in data:
            n, G, P = data["design"].shape
            # Σ_g Φ_g Z_g is one product over the stacked (g, p) axis
            return _DesignProduct.apply(data["design"].reshape(n, G * P),
                                        Z.reshape(G * P, -1))  # (n, c)
        return self.tokens(Z, data).mean(1)

    def adjoint(self, weights: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_i A_iᵀ w_i (G, p, q) for weights w (n, c) on the pooled outputs, read straight from
        the pooled design Φ (``has_adjoint``): Σ_i Φ_{i,g}ᵀ w_i, no forward pass."""
        n, G, P = data["design"].shape
        flat = design_adjoint(data["design"].reshape(n, G * P), weights)  # (G·P, c)
        return flat.reshape(G, *self.block_shape)

    def pooled_design(self, data: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Φ (n, D) with pooled outputs = Φ @ Z.reshape(D, c), when ``lift`` built the pooled
        design and the head's pooled map is that product (the default); else None."""
        if "design" not in data:
            return None
        return data["design"].reshape(data["design"].shape[0], -1)

    def gradient_product(self, duals: torch.Tensor, vectors: torch.Tensor,
                         data: dict[str, torch.Tensor], transpose: bool = False
                         ) -> torch.Tensor | None:
        """The gradient blocks N_g = Σ_i A_{i,g}ᵀ λ_i of the pooled program (summed over the
        samples of ``data``, not averaged) applied to vectors in closed form: N_g V_g for right
        vectors V (G, k, q) → (G, k, p), or N_gᵀ U_g for left vectors U (G, k, p) → (G, k, q)
        with ``transpose``; ``duals`` Λ (n, c). One pass over the samples, no network and no
        autograd. None where the head has no such form here (the factorized solver then
        differentiates the network with probe heads, SPEC.md §4).

        This default serves the heads whose pooled design Φ has the blocks' rows
        (``network_design``: p_i = Σ_g Φ_{i,g}ᵀ Z_g within each output group), when ``lift``
        built it: N_g v = Σ_i Φ_{i,g} (λ_{i,g}ᵀ v) and N_gᵀ u = Σ_i λ_{i,g} (Φ_{i,g}ᵀ u),
        λ_{i,g} the duals of block g's output group."""
        design = data.get("design")
        if design is None or not self.network_design:
            return None
        n, G, q = design.shape[0], self.n_blocks, self.block_shape[1]
        groups = self.c // q  # blocks are ordered group-major, each group owns q outputs
        Phi = design.reshape(n, G, -1)  # (n, G, p)
        lam = duals.reshape(n, groups, 1, q).expand(n, groups, G // groups, q).reshape(n, G, q)
        if transpose:
            return torch.einsum("ngq,ngk->gkq", lam, torch.einsum("ngp,gkp->ngk", Phi, vectors))
        return torch.einsum("ngp,ngk->gkp", Phi, torch.einsum("ngq,gkq->ngk", lam, vectors))

    @staticmethod
    def has_adjoint(data: dict[str, torch.Tensor], pooled: bool = True) -> bool:
        """Whether :meth:`adjoint` applies: pooled outputs through a pooled design Φ. Without
        one, the adjoint comes from autograd through the map (a forward and a backward)."""
        return pooled and "design" in data

    def network_tokens(self, W1: torch.Tensor, W2: torch.Tensor,
                       data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token-level outputs (n, s, c) of the network with heads W1 (G, r, *w1_shape),
        W2 (G, r, *w2_shape)."""
        raise NotImplementedError

    def pooled_collapse(self) -> Collapse | None:
        """The smaller program this one equals under mean pooling, or None (the default)."""
        return None

    # ------------------------------------------------- exact attributions (SPEC.md §7)
    def pairs(self, Z: torch.Tensor, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pair contributions C (n, s, s, c) at blocks Z: C[a, t] is what source token t adds
        to the output of token a, exactly, so Σ_t C[a, t] = O[a] (``tokens``)."""
        raise NotImplementedError

    def network_pairs(self, W1: torch.Tensor, W2: torch.Tensor,
                      data: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pair contributions (n, s, s, c) computed from the network's heads (W1, W2); equal
        to :meth:`pairs` at Z = Σ_r vec(W1_r) vec(W2_r)ᵀ (SPEC.md §3 identity 1)."""
        raise NotImplementedError

    def mixing(self, W1: torch.Tensor, W2: torch.Tensor,
               data: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head's token-mixing weights on each sample, (n, K, s, s): K matrices whose entry
        [a, t] is how strongly the network carries source token t into the output of token a
        (the head's own notion of similarity; every head documents its K). Each of the
        network's heads is weighted by the norm of its output map W2, so balanced heads count
        in proportion to their singular value."""
        raise NotImplementedError

    def token_profiles(self, W1: torch.Tensor, W2: torch.Tensor,
                       data: dict[str, torch.Tensor]) -> torch.Tensor:
        """How the head sees each token, (n, s, F): by default its row and its column of every
        mixing matrix (the token as a receiver and as a source), so two tokens have the same
        profile exactly when the head mixes them alike. Heads that do not mix tokens override
        this."""
        S = self.mixing(W1, W2, data)  # (n, K, s, s)
        rows = S.permute(0, 2, 1, 3).flatten(2)  # (n, a, K·s): token a as a receiver
        cols = S.permute(0, 3, 1, 2).flatten(2)  # (n, t, K·s): token t as a source
        return torch.cat([rows, cols], 2)  # (n, s, 2·K·s)

    def pair_elements(self, heads_per_block: int | None) -> int:
        """Intermediates per sample (elements) of :meth:`pairs` (``heads_per_block`` None) or
        :meth:`network_pairs` with r heads per block, output included: the memory plan of the
        explanations. This default counts the output and one token-level product per block."""
        s, d, c = self.dims
        r = 1 if heads_per_block is None else heads_per_block
        return 2 * s * s * c + self.n_blocks * r * s * (s + d + c)

    @staticmethod
    def _diagonal(outputs: torch.Tensor) -> torch.Tensor:
        """Pair contributions of a head that does not mix tokens: C[a, a] = O[a], zero off the
        diagonal; (n, s, c) → (n, s, s, c)."""
        return torch.diag_embed(outputs.transpose(1, 2)).permute(0, 2, 3, 1)

    def cost(self, heads_per_block: int, pooled: bool = True) -> HeadCost:
        """The cost model per sample (see :class:`HeadCost`) with r = ``heads_per_block``.

        This default, for heads without their own model, counts a token-level product per
        block and per head; the heads of SPEC.md §2 override it with their exact shapes.
        """
        s, d, c = self.dims
        G, (p, q) = self.n_blocks, self.block_shape
        heads = G * heads_per_block
        return HeadCost(lift=s * d, design=0, map=3 * G * s * (d + c),
                        map_flops=4 * G * s * p * q // max(min(p, q), 1),
                        network=3 * heads * s * (d + c) + 2 * s * c,
                        network_flops=4 * heads * s * (p + q))

    @staticmethod
    def _fft_flops(size: int) -> int:
        """≈ 5 N log₂ N real operations for a complex FFT of N points (2.5 for real input)."""
        return int(2.5 * size * max(math.log2(max(size, 2)), 1.0))

    def network_pooled(self, W1: torch.Tensor, W2: torch.Tensor,
                       data: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean-pooled network outputs (n, c); heads override with cheaper forms.

        Heads whose design rows match the blocks' rows (``network_design``: the MLP, the gated
        FNO and B-FNO, P = p) use Φ when ``lift`` built it: p = Σ_g Σ_r (Φ_g vec(W1_{g,r})) vec(W2_{g,r}),
        summed within each output group.
        """
        design = data.get("design")
        if design is None or not self.network_design:
            return self.network_tokens(W1, W2, data).mean(1)
        design = design.reshape(design.shape[0], self.n_blocks, -1)  # (n, G, P)
        hidden = torch.einsum("ngp,grp->ngr", design, self.vec_w1(W1))  # (n, G, r)
        out = torch.einsum("ngr,grq->ngq", hidden, self.vec_w2(W2))  # (n, G, q)
        n, G, q = out.shape
        groups = self.c // q  # blocks are ordered group-major, each group owns q outputs
        return out.reshape(n, groups, G // groups, q).sum(2).reshape(n, self.c)

    def network_outputs(self, W1: torch.Tensor, W2: torch.Tensor,
                        data: dict[str, torch.Tensor], pooled: bool) -> torch.Tensor:
        """The network's outputs without intercept: (n, c) pooled or (n, s, c)."""
        if pooled:
            return self.network_pooled(W1, W2, data)
        return self.network_tokens(W1, W2, data)

    # ----------------------------------------------------------- weight maps
    def vec_w1(self, W1: torch.Tensor) -> torch.Tensor:
        """(..., *w1_shape) → (..., p), row-major unless a head says otherwise."""
        return W1.reshape(*W1.shape[: W1.ndim - len(self.w1_shape)], math.prod(self.w1_shape))

    def unvec_w1(self, u: torch.Tensor) -> torch.Tensor:
        return u.reshape(*u.shape[:-1], *self.w1_shape)

    def vec_w2(self, W2: torch.Tensor) -> torch.Tensor:
        return W2.reshape(*W2.shape[: W2.ndim - len(self.w2_shape)], math.prod(self.w2_shape))

    def unvec_w2(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(*v.shape[:-1], *self.w2_shape)

    def blocks_from_heads(self, W1: torch.Tensor, W2: torch.Tensor) -> torch.Tensor:
        """Z_g = Σ_r vec(W1_{g,r}) vec(W2_{g,r})ᵀ, shape (G, p, q)."""
        U = self.vec_w1(W1)  # (G, r, p)
        V = self.vec_w2(W2)  # (G, r, q)
        return U.transpose(1, 2) @ V

    def heads_from_blocks(self, Z: torch.Tensor, heads_per_block: int | None = None,
                          rtol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
        """Balanced split Z_g = Σ_r (u_r √σ_r)(v_r √σ_r)ᵀ from the SVD of each block.

        Singular values below ``rtol`` · max σ are dropped; every block gets the same number of
        heads (the largest rank, or ``heads_per_block``), padded with zero heads. Then
        ½ Σ (‖W1‖² + ‖W2‖²) = Σ_g ‖Z_g‖_* (SPEC.md §1).
        """
        U, S, Vh = torch.linalg.svd(Z, full_matrices=False)  # (G,p,k) (G,k) (G,k,q)
        keep = S > rtol * S.max().clamp_min(torch.finfo(S.dtype).tiny)  # (G, k)
        rank = int(keep.sum(1).max()) if keep.any() else 0
        r = max(rank, 1) if heads_per_block is None else int(heads_per_block)
        if r < rank:
            raise ValueError(f"heads_per_block: expected at least the largest block rank "
                             f"{rank}, got {r}")
        root = (S.sqrt() * keep)[:, :r]  # (G, r')
        u = (U[:, :, :r] * root[:, None, :]).transpose(1, 2)  # (G, r', p)
        v = Vh[:, :r, :] * root[:, :, None]  # (G, r', q)
        pad = r - u.shape[1]
        if pad > 0:
            u = torch.cat([u, u.new_zeros(u.shape[0], pad, u.shape[2])], 1)
            v = torch.cat([v, v.new_zeros(v.shape[0], pad, v.shape[2])], 1)
        return self.unvec_w1(u), self.unvec_w2(v)

    def balance(self, W1: torch.Tensor, W2: torch.Tensor, rtol: float = 0.0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The balanced heads of the blocks Σ_r vec(W1_r) vec(W2_r)ᵀ, without forming them.

        With QR factors Uᵀ = Q1 R1 (p × r) and Vᵀ = Q2 R2 (q × r) of the stacked heads,
        Z_g = Q1 (R1 R2ᵀ) Q2ᵀ, so the SVD of the small r × r core A S Bᵀ gives Z_g's: heads
        Q1 A √S and Q2 B √S (the :meth:`heads_from_blocks` split). Singular values ≤ ``rtol`` ·
        max σ are dropped; blocks are padded with zero heads to the largest rank. Returns
        (W1 (G, r', *w1_shape), W2 (G, r', *w2_shape), σ (G, k) of every block).
        """
        if W1.shape[1] == 0:
            return W1, W2, W1.new_zeros(W1.shape[0], 0)
        U = self.vec_w1(W1).transpose(1, 2)  # (G, p, r)
        V = self.vec_w2(W2).transpose(1, 2)  # (G, q, r)
        Q1, R1 = torch.linalg.qr(U)  # (G, p, k1), (G, k1, r)
        Q2, R2 = torch.linalg.qr(V)  # (G, q, k2), (G, k2, r)
        A, S, Bh = torch.linalg.svd(R1 @ R2.transpose(1, 2))  # (G,k1,k) (G,k) (G,k,k2)
        keep = S > rtol * S.max().clamp_min(torch.finfo(S.dtype).tiny)  # (G, k)
        r = int(keep.sum(1).max())
        root = (S.sqrt() * keep)[:, :r]  # (G, r)
        u = (Q1 @ A[:, :, :r] * root[:, None, :]).transpose(1, 2)  # (G, r, p)
        v = (Q2 @ Bh[:, :r, :].transpose(1, 2) * root[:, None, :]).transpose(1, 2)  # (G, r, q)
        return self.unvec_w1(u), self.unvec_w2(v), S

    def network(self, heads_per_block: int, fit_intercept: bool = True, pooled: bool = True,
                seed: int = 0, scale: float = 0.1) -> "HeadNetwork":
        """The non-convex network with random heads N(0, scale²), ``heads_per_block`` per block."""
        generator = torch.Generator().manual_seed(seed)
        G, r = self.n_blocks, int(heads_per_block)
        W1 = scale * torch.randn((G, r, *self.w1_shape), generator=generator, dtype=torch.float64)
        W2 = scale * torch.randn((G, r, *self.w2_shape), generator=generator, dtype=torch.float64)
        intercept = torch.zeros(self.c, dtype=torch.float64) if fit_intercept else None
        return HeadNetwork(self, W1, W2, intercept, pooled)

    # ----------------------------------------------------------------- misc
    def config(self) -> dict:
        """The constructor's parameters that define this head (as scikit-learn's
        ``get_params``): ``type(head)(**head.config())`` is the same head, unbound, and
        ``heads.create(head.name, **head.config())`` builds it by name. Explicit gates are
        data, not parameters (``head.gates`` once bound); n_gates is there for gated heads."""
        out = {"activation": self.activation, "seed": self.seed}
        if self.gated:
            out["n_gates"] = self.n_gates
        return out

    def __repr__(self) -> str:
        args = [f"activation={self.activation!r}"] + self._repr_args()
        if self.gated:
            args += [f"n_gates={self.n_gates}", f"seed={self.seed}"]
        return f"{type(self).__name__}({', '.join(args)})"

    def _repr_args(self) -> list[str]:
        return []


class _DesignProduct(torch.autograd.Function):
    """Φ W for a fixed design Φ (n, P) and W (P, c). The adjoint Φᵀ G is taken as (Gᵀ Φ)ᵀ,
    which reads Φ row-major: 3× faster than autograd's transposed product on a tall Φ."""

    @staticmethod
    def forward(ctx, design, weights):
        ctx.save_for_backward(design, weights)
        return design @ weights

    @staticmethod
    def backward(ctx, grad):
        design, weights = ctx.saved_tensors
        grad_design = grad @ weights.T if ctx.needs_input_grad[0] else None
        return grad_design, design_adjoint(design, grad)


def design_adjoint(design: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Φᵀ G (P, c) for Φ (n, P), G (n, c), as (Gᵀ Φ)ᵀ."""
    return (grad.T @ design).T


class HeadNetwork(nn.Module):
    """The ordinary network of a head: outputs Σ_heads (bilinear in W1, W2) + intercept.

    ``forward(X)`` returns pooled logits (n, c) (or token outputs (n, s, c) when
    ``pooled=False``), including the intercept. ``weight_decay()`` = ½ Σ (‖W1‖² + ‖W2‖²), so
    the regularized objective is mean loss + β · weight_decay (SPEC.md §1).
    """

    def __init__(self, head: Head, W1: torch.Tensor, W2: torch.Tensor,
                 intercept: torch.Tensor | None = None, pooled: bool = True):
        super().__init__()
        self.head = head
        self.pooled = pooled
        self.W1 = nn.Parameter(W1)  # (G, r, *w1_shape)
        self.W2 = nn.Parameter(W2)  # (G, r, *w2_shape)
        self.intercept = None if intercept is None else nn.Parameter(intercept)  # (c,)

    def tokens(self, X: torch.Tensor) -> torch.Tensor:
        """Token-level outputs without intercept, (n, s, c)."""
        return self.head.network_tokens(self.W1, self.W2, self.head.lift(X, design=False))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        data = self.head.lift(X, design=False)
        out = self.head.network_outputs(self.W1, self.W2, data, self.pooled)  # (n, c)|(n, s, c)
        return out if self.intercept is None else out + self.intercept

    def weight_decay(self) -> torch.Tensor:
        return 0.5 * (self.W1.pow(2).sum() + self.W2.pow(2).sum())

    def blocks(self) -> torch.Tensor:
        """The convex blocks Z (G, p, q) this network equals."""
        return self.head.blocks_from_heads(self.W1.detach(), self.W2.detach())
