"""Token clusters: the paper's "attention clusters tokens by latent similarity", made visible.

For each image, tokens are grouped by what the fitted head itself computes, nothing else:

1. Profiles. Each token's profile is how the head treats it (``Head.token_profiles``, from the
   balanced heads of the certified blocks, so it depends on Z only):
   - attention: its row and its column of every head's score matrix (M_g ⊙ X W1_r Xᵀ)/s, the
     learned bilinear similarity x_aᵀ W1_r x_t with the gates' masks, times ‖W2_r‖ — the
     token as a query and as a key;
   - Mixer: its row and column of every head's token mixing W1_r, per feature as the gate
     passes it at the receiving token, times the norm of the W2 row of that feature;
   - FNO and B-FNO: its row and column of every head's kernel weights on each source token,
     D[a] Σ_k x_t[k] W1_r[t ⊖ a, k], times ‖W2_r‖;
   - MLP (tokens do not mix): its hidden units D_j[t] x_tᵀ w1_r · ‖w2_r‖.
   Two tokens have the same profile exactly when the head mixes (or, for the MLP, encodes)
   them alike.
2. Affinity A[a, t] = exp(−‖φ_a − φ_t‖² / (σ_a σ_t)) with σ_a the distance from token a to
   its 7th nearest token (self-tuning local scales, Zelnik-Manor and Perona 2004): scale
   free (a head that scales all its weights by 2 clusters alike), and a small group of
   tokens far from the rest stays together.
3. Spectral clustering (Ng, Jordan and Weiss 2002): the normalized affinity D^{-1/2} A D^{-1/2};
   the number of clusters k ∈ [2, ``max_clusters``] at the largest gap between consecutive
   eigenvalues of the normalized Laplacian (the eigengap); the rows of its top-k eigenvectors,
   normalized, grouped by k-means (k-means++ starts from ``seed``, 10 restarts, the lowest
   inertia kept). Labels are numbered by first appearance in token order.

Every image is clustered on its own with a generator seeded by ``seed`` alone, so the result
is deterministic and does not depend on which other images are in the batch or their order.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
import torch

from .attributions import checked_tokens, fitted, sample_slices

__all__ = ["TokenClusters", "token_clusters", "token_profiles", "spectral_clusters"]


@dataclass(frozen=True, eq=False)
class TokenClusters:
    """Clusters of the tokens of n images: ``labels`` (n, s) in [0, n_clusters[i]),
    ``n_clusters`` (n,), the ``affinity`` (n, s, s) they were computed from, and the normalized
    Laplacian's ``eigenvalues`` (n, s), ascending (the eigengap chose each k)."""

    labels: np.ndarray
    n_clusters: np.ndarray
    affinity: np.ndarray
    eigenvalues: np.ndarray


def token_profiles(model, X, *, memory_budget=None) -> torch.Tensor:
    """Each token's profile (n, s, F) as the head sees it (see the module docstring)."""
    model = fitted(model)
    X = checked_tokens(model, X)
    return torch.cat(list(_profile_chunks(model, X, None, memory_budget)))


def _profile_chunks(model, X, kept: int | None, memory_budget):
    """The profiles (rows, s, F) of successive chunks of samples, sized so that a chunk's
    profiles and intermediates fit beside ``kept`` elements a sample of results (None: the
    profiles themselves, all kept)."""
    head = model.head
    W1, W2 = model.balanced_heads()
    s = X.shape[1]
    width = head.token_profiles(W1, W2, head.lift(X[:1], design=False)).shape[2]  # F
    kept = s * width if kept is None else kept
    slices = sample_slices(X.shape[0], 5 * s * width + head.pair_elements(W1.shape[1]), kept,
                           X.element_size(), memory_budget, "token profiles")
    with torch.no_grad():
        for rows in slices:
            yield head.token_profiles(W1, W2, head.lift(X[rows], design=False))


def affinity(profiles: torch.Tensor, neighbours: int = 7) -> np.ndarray:
    """A[a, t] = exp(−‖φ_a − φ_t‖² / (σ_a σ_t)), σ_a the distance from token a to its
    ``neighbours``-th nearest token (self-tuning local scales, Zelnik-Manor and Perona 2004:
    a small group of tokens far from the rest keeps its members together); (n, s, F) → (n, s, s)
    float64. Scales that are zero (tokens with identical neighbours) count as the smallest
    positive scale of the image, or 1 when all profiles coincide."""
    P = profiles.detach().to("cpu", torch.float64)
    n, s, _ = P.shape
    sq = (P * P).sum(2)  # (n, s)
    dist = (sq[:, :, None] + sq[:, None, :] - 2 * P @ P.transpose(1, 2)).clamp_min(0)  # (n,s,s)
    dist = (dist + dist.transpose(1, 2)) / 2
    dist.diagonal(dim1=1, dim2=2).zero_()
    k = min(neighbours, s - 1)
    scale = dist.sort(2).values[:, :, k].sqrt() if k > 0 else torch.ones(n, s)  # (n, s)
    positive = torch.where(scale > 0, scale, torch.full_like(scale, torch.inf))
    floor = positive.min(1, keepdim=True).values  # (n, 1)
    floor = torch.where(torch.isfinite(floor), floor, torch.ones_like(floor))
    scale = torch.where(scale > 0, scale, floor)
    return torch.exp(-dist / (scale[:, :, None] * scale[:, None, :])).numpy()


def _kmeans(points: np.ndarray, k: int, seed: int, restarts: int = 10,
            max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ starts from ``seed``; labels of the lowest inertia."""
    rng = np.random.default_rng(seed)
    m = len(points)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centers = [points[rng.integers(m)]]
        for _ in range(1, k):  # k-means++: the next start ∝ squared distance to the nearest
            d2 = ((points[:, None] - np.asarray(centers)[None]) ** 2).sum(2).min(1)
            total = d2.sum()
            pick = rng.choice(m, p=d2 / total) if total > 0 else rng.integers(m)
            centers.append(points[pick])
        centers = np.asarray(centers)
        for _ in range(max_iter):
            d2 = ((points[:, None] - centers[None]) ** 2).sum(2)  # (m, k)
            labels = d2.argmin(1)
            moved = np.array([points[labels == j].mean(0) if (labels == j).any()
                              else centers[j] for j in range(k)])
            if np.allclose(moved, centers, rtol=0, atol=1e-12):
                break
            centers = moved
        inertia = ((points - centers[labels]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels, inertia
    return best


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Relabel so that clusters are numbered in the order their first token appears."""
    order = {}
    for label in labels.tolist():
        order.setdefault(label, len(order))
    return np.array([order[label] for label in labels.tolist()], dtype=np.int64)


def spectral_clusters(A: np.ndarray, max_clusters: int, seed: int = 0
                      ) -> tuple[np.ndarray, int, np.ndarray]:
    """Spectral clustering of one symmetric affinity A (s, s) ≥ 0: (labels (s,), k, the
    normalized Laplacian's eigenvalues ascending (s,)); k from the eigengap in
    [2, max_clusters]."""
    s = A.shape[0]
    degree = A.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(degree, np.finfo(float).tiny))
    M = inv[:, None] * A * inv[None, :]
    mu, vectors = np.linalg.eigh((M + M.T) / 2)  # ascending μ; Laplacian λ = 1 − μ
    lam = 1.0 - mu[::-1]
    vectors = vectors[:, ::-1]
    top = min(max_clusters, s - 1)
    gaps = lam[2:top + 1] - lam[1:top]  # gap after the k-th eigenvalue, k = 2..top
    k = 2 + int(np.argmax(gaps)) if top >= 2 else min(2, s)
    U = vectors[:, :k]
    norms = np.linalg.norm(U, axis=1, keepdims=True)
    U = U / np.where(norms > 0, norms, 1.0)
    return _first_appearance(_kmeans(U, k, seed)), k, lam


def token_clusters(model, X, max_clusters: int = 6, seed: int = 0, *,
                   memory_budget=None) -> TokenClusters:
    """Cluster each image's tokens by the head's own similarity (module docstring).

    >>> import numpy as np, cvxattn as ca
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(30, 6, 3)), np.arange(30) % 2
    >>> solution = ca.solve(ca.Problem(ca.heads.SelfAttention(), X, y, beta=0.05), tol=1e-6)
    >>> clusters = ca.explain.token_clusters(solution, X[:4], max_clusters=3)
    >>> clusters.labels.shape, bool((clusters.n_clusters >= 2).all())
    ((4, 6), True)
    """
    model = fitted(model)
    X = checked_tokens(model, X)
    s = X.shape[1]
    if not isinstance(max_clusters, Integral) or isinstance(max_clusters, bool) \
            or not 2 <= max_clusters <= s:
        raise ValueError(f"max_clusters: expected an integer in [2, {s}] (the tokens per "
                         f"image), got {max_clusters!r}")
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an integer ≥ 0, got {seed!r}")
    # profiles chunk by chunk, each turned into its affinity at once: only (n, s, s) is kept
    A = np.concatenate([affinity(P) for P in _profile_chunks(model, X, s * s,
                                                               memory_budget)])  # (n, s, s)
    labels = np.empty(A.shape[:2], dtype=np.int64)
    counts = np.empty(A.shape[0], dtype=np.int64)
    eigenvalues = np.empty(A.shape[:2])
    for i, Ai in enumerate(A):
        labels[i], counts[i], eigenvalues[i] = spectral_clusters(Ai, int(max_clusters),
                                                                 int(seed))
    return TokenClusters(labels, counts, A, eigenvalues)
