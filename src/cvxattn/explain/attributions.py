"""Exact attributions of a fitted head (SPEC.md §7): what each token and token pair adds.

With mean pooling the logit of class k is p_k = (1/s) Σ_a O[a, k] + b_k, and the token outputs
O are linear in the blocks Z for fixed lifted data, so the explanations below are exact sums,
not gradients or approximations:

- token contributions, ``role="output"``: O[a, k] (n, s, c), the output of token a;
- pair contributions C[a, t, k] (n, s, s, c): what source (key) token t adds to the output of
  token a, with Σ_t C[a, t] = O[a] exactly;
- ``role="source"``: Σ_a C[a, t, k], what token t adds as a source to every output;
- ``role="shapley"``: each pair's term given to the tokens it is a product of: for attention,
  C[a, t] = (1/s) M[a,t] x_aᵀ(Σ x_t[k] x_t[l] Z^{(k,l)}) is linear in the receiving token
  x_a too, so it is split evenly between a and t (½ (output + source)); for the Mixer, FNO,
  B-FNO and MLP the receiving token enters C[a, t] only through a gate, so the whole term is
  t's (the source role). When a missing token is a zero token and the gates are held fixed,
  the logit of a set S of tokens is b + Σ_{a,t ∈ S} C[a, t] (attention) or b + Σ_{t ∈ S} Σ_a
  C[a, t] (the others), and this is exactly each token's Shapley value. The training-mean
  token of standardized tokens is zero, so it is the share that predicts deletion.

In every role, the mean over tokens plus the intercept is the logit: (1/s) Σ_t T[t] + b = p.

A model is a :class:`~cvxattn.Solution`, a model read by :func:`cvxattn.io.load_model`, or a
:class:`~cvxattn.heads.HeadNetwork`. Dense blocks are used when the model has them, else the
network's heads (never forming Z); both give the same numbers (SPEC.md §3 identity 1). Work is
done in chunks of samples; a request whose output and intermediates do not fit the memory
budget raises :class:`~cvxattn.MemoryBudgetError` before anything is allocated.

>>> import numpy as np, torch, cvxattn as ca
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(30, 6, 3)), np.arange(30) % 2
>>> solution = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.05), tol=1e-6)
>>> T = ca.explain.token_contributions(solution, X)            # (n, s, c)
>>> bool(torch.allclose(T.mean(1) + solution.intercept, solution.decision_function(X)))
True
>>> C = ca.explain.pair_contributions(solution, X)             # (n, s, s, c)
>>> bool(torch.allclose(C.sum(2), T))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..heads.base import CHUNK_ELEMENTS, Head, HeadNetwork
from ..problem import as_tokens
from ..solvers.memory import MemoryBudgetError, budget_bytes
from ..solvers.solution import FittedBlocks, balanced_heads

__all__ = ["Fitted", "fitted", "token_contributions", "pair_contributions", "ROLES"]

ROLES = ("output", "source", "shapley")


@dataclass(frozen=True)
class Fitted:
    """What the explanations read from a model: the bound head, its dense blocks Z (G, p, q)
    or its heads (W1, W2), the intercept b (c,) (zero without one), and pooling."""

    head: Head
    blocks: torch.Tensor | None
    heads: tuple[torch.Tensor, torch.Tensor] | None
    intercept: torch.Tensor
    pooled: bool

    @property
    def like(self) -> torch.Tensor:
        """A tensor of the model's dtype and device."""
        return self.blocks if self.blocks is not None else self.heads[0]

    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Pooled logits (n, c) of tokens X (n, s, d), intercept included (no pass over the
        pooled design, which may not fit for many samples)."""
        if not self.pooled:
            raise ValueError("model: expected a model of pooled logits (cross-entropy or pooled "
                             "targets), got one of token-level outputs")
        data = self.head.lift(X, design=False)
        if self.blocks is not None:
            return self.head.pooled(self.blocks, data) + self.intercept
        return self.head.network_pooled(*self.heads, data) + self.intercept

    def balanced_heads(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The balanced heads (W1, W2) of the blocks: the SVD split of each Z_g, so that every
        head's ‖W1_r‖ = ‖W2_r‖ = √σ_r and the heads depend on Z only (not on how a network
        happened to be trained)."""
        return balanced_heads(self.head, self.heads, self.blocks)  # one of the two is None


def fitted(model) -> Fitted:
    """The :class:`Fitted` view of a Solution, a loaded model or a HeadNetwork."""
    if isinstance(model, Fitted):
        return model
    if isinstance(model, HeadNetwork):
        W1, W2 = model.W1.detach(), model.W2.detach()
        b = W1.new_zeros(model.head.c) if model.intercept is None else model.intercept.detach()
        return Fitted(model.head, None, (W1, W2), b, model.pooled)
    if isinstance(model, FittedBlocks):
        heads = getattr(model, "heads", None)
        if heads is not None:
            return Fitted(model.head, None, heads, model.intercept, model.pooled)
        return Fitted(model.head, model.blocks, None, model.intercept, model.pooled)
    raise TypeError(f"model: expected a cvxattn.Solution, a model from cvxattn.io.load_model "
                    f"or a cvxattn.heads.HeadNetwork, got {type(model).__name__}")


def checked_tokens(model: Fitted, X, name: str = "X") -> torch.Tensor:
    """X as a tensor (n, s, d) in the model's dtype and device, with the head's s and d."""
    s, d, _ = model.head.dims
    X = as_tokens(X, name, model.like.dtype, model.like.device)
    if X.shape[1:] != (s, d):
        raise ValueError(f"{name}: expected tokens of shape (n, {s}, {d}) for the model's "
                         f"{type(model.head).__name__}, got {tuple(X.shape)}")
    return X


def sample_slices(n: int, per_sample: int, kept: int, itemsize: int, memory_budget,
                  what: str):
    """Slices of the n samples for a computation that keeps ``kept`` elements a sample (its
    result) and needs ``per_sample`` elements of intermediates a sample, within the budget
    (bytes; None: 60% of the memory available). Raises MemoryBudgetError naming ``what``
    when even one sample beside the whole result does not fit."""
    budget = budget_bytes(memory_budget)
    result = n * kept * itemsize
    if result + per_sample * itemsize > budget:
        raise MemoryBudgetError(
            f"{what} of {n} samples need about {(result + per_sample * itemsize) / 2**30:.3g} "
            f"GiB (the result alone {result / 2**30:.3g} GiB), over the budget of "
            f"{budget / 2**30:.3g} GiB; explain fewer samples at a time or raise memory_budget")
    fits = max(1, (budget - result) // (per_sample * itemsize))
    size = int(min(n, fits, max(1, 16 * CHUNK_ELEMENTS // per_sample)))
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


def _pairs(model: Fitted, X: torch.Tensor) -> torch.Tensor:
    """Pair contributions of one chunk of samples, (rows, s, s, c)."""
    head = model.head
    data = head.lift(X, design=False)
    if model.blocks is not None:
        return head.pairs(model.blocks, data)
    return head.network_pairs(*model.heads, data)


def _elements(model: Fitted) -> int:
    r = None if model.blocks is not None else model.heads[0].shape[1]
    return model.head.pair_elements(r)


def pair_contributions(model, X, *, memory_budget=None) -> torch.Tensor:
    """C (n, s, s, c): C[i, a, t, k] is what source token t adds to the output of token a
    for class k on sample i, exactly (SPEC.md §7); Σ_t C[:, a, t] = O[:, a]."""
    model = fitted(model)
    X = checked_tokens(model, X)
    n, s, _ = X.shape
    c = model.head.c
    slices = sample_slices(n, _elements(model), s * s * c, X.element_size(), memory_budget,
                           "pair contributions")
    out = X.new_empty((n, s, s, c))
    with torch.no_grad():
        for rows in slices:
            out[rows] = _pairs(model, X[rows])
    return out


def token_contributions(model, X, role: str = "output", *, memory_budget=None
                        ) -> torch.Tensor:
    """T (n, s, c) with (1/s) Σ_t T[:, t] + b = the logits (n, c), exactly.

    ``role``: ``"output"`` T[t] = O[t], the output of token t (a query); ``"source"`` T[t] =
    Σ_a C[a, t], what t adds as a source (a key) to every output; ``"shapley"``, each pair
    term shared by the tokens it is a product of (module docstring): ½ (output + source)
    for attention, the source role for the other heads.
    """
    if role not in ROLES:
        raise ValueError(f"role: expected one of {ROLES}, got {role!r}")
    model = fitted(model)
    X = checked_tokens(model, X)
    n, s, _ = X.shape
    head = model.head
    if role == "output":  # the token-level map: the head's own cost model
        cost = head.cost(1 if model.heads is None else model.heads[0].shape[1], pooled=False)
        per_sample = (cost.map if model.blocks is not None else cost.network) + s * head.c
    else:
        per_sample = _elements(model)
    slices = sample_slices(n, per_sample, s * head.c, X.element_size(), memory_budget,
                           "token contributions")
    out = X.new_empty((n, s, head.c))
    with torch.no_grad():
        for rows in slices:
            if role == "output":
                data = head.lift(X[rows], design=False)
                out[rows] = (head.tokens(model.blocks, data) if model.blocks is not None
                             else head.network_tokens(*model.heads, data))
                continue
            C = _pairs(model, X[rows])  # (rows, a, t, c)
            source = C.sum(1)  # (rows, t, c)
            if role == "shapley" and head.pairs_read_receiver:
                source = 0.5 * (source + C.sum(2))  # C.sum(2) = O, the output role
            out[rows] = source
    return out
