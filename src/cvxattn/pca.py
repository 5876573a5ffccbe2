"""PCA of token features: the other way to reduce the backbone's F channels to d.

Fitted on training tokens only, by streaming their moments (no (N, F) copy):

    μ = Σ x / N,    C = (Σ x xᵀ − N μ μᵀ) / (N − 1),    C = V Λ Vᵀ (eigenvalues decreasing),

over every token x ∈ ℝ^F of the training images it sees. The projection keeps the top d
eigenvectors W = V[:, :d]ᵀ (d, F), each signed so that its entry of largest magnitude is
positive (eigenvectors are defined up to sign; this makes the bytes repeatable), and maps

    token x ↦ W (x − μ) ∈ ℝ^d.

Test tokens are projected with the training set's μ and W: a token cache of test images records
the sha256 of the projection it used (cvxattn.features).

>>> rng = np.random.default_rng(0)
>>> moments = Moments(3)
>>> moments.add(rng.normal(size=(100, 4, 3)) * [5.0, 1.0, 0.1])
>>> pca = TokenPCA.fit(moments, d=2)
>>> pca(np.zeros((1, 1, 3))).shape, np.round(np.abs(pca.components), 1).tolist()
((1, 1, 2), [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import safetensors.numpy

from .checks import check_integer

__all__ = ["Moments", "TokenPCA"]

FORMAT = "cvxattn.pca/1"


class Moments:
    """Running count, sum and sum of outer products of F-dimensional token features (float64)."""

    def __init__(self, n_features: int):
        F = check_integer(n_features, "n_features", 1)
        self.count = 0
        self.total = np.zeros(F)  # Σ x        (F,)
        self.outer = np.zeros((F, F))  # Σ x xᵀ    (F, F)

    def add(self, tokens: np.ndarray) -> None:
        """Add the tokens (..., F) of a batch."""
        x = np.asarray(tokens, np.float64).reshape(-1, self.total.shape[0])  # (N_b, F)
        self.count += x.shape[0]
        self.total += x.sum(0)
        self.outer += x.T @ x


@dataclass(frozen=True, eq=False)
class TokenPCA:
    """The projection x ↦ W (x − μ): ``mean`` μ (F,), ``components`` W (d, F) with orthonormal
    rows by decreasing variance, ``variances`` (d,) their eigenvalues, ``n_tokens`` how many
    training tokens it was fitted on."""

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    n_tokens: int

    @classmethod
    def fit(cls, moments: Moments, d: int) -> "TokenPCA":
        F = moments.total.shape[0]
        d = check_integer(d, "d", 1)
        if d > F:
            raise ValueError(f"d: expected at most the {F} features, got {d}")
        if moments.count < 2:
            raise ValueError(f"moments: expected at least 2 tokens to fit a PCA, got "
                             f"{moments.count}")
        N = moments.count
        mean = moments.total / N
        cov = (moments.outer - N * np.outer(mean, mean)) / (N - 1)  # (F, F)
        values, vectors = np.linalg.eigh((cov + cov.T) / 2)  # increasing
        top = np.argsort(values)[::-1][:d]
        W = vectors[:, top].T.copy()  # (d, F)
        signs = np.sign(W[np.arange(d), np.abs(W).argmax(1)])
        W *= np.where(signs == 0, 1.0, signs)[:, None]
        return cls(mean, W, np.maximum(values[top], 0.0), int(N))

    @property
    def d(self) -> int:
        return self.components.shape[0]

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens (..., F) → (..., d), float32."""
        x = np.asarray(tokens, np.float64)
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    def to_bytes(self) -> bytes:
        """A safetensors file (one metadata key: byte-identical for identical fits)."""
        return safetensors.numpy.save(
            {"mean": self.mean, "components": self.components, "variances": self.variances,
             "n_tokens": np.array([self.n_tokens], np.int64)}, metadata={"format": FORMAT})

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TokenPCA":
        """The projection saved by :meth:`to_bytes`; a ValueError for anything else."""
        try:
            tensors = safetensors.numpy.load(data)
        except Exception as error:  # safetensors raises its own error type
            raise ValueError(f"projection: not a safetensors file ({error})") from None
        want = {"mean": 1, "components": 2, "variances": 1, "n_tokens": 1}
        if set(tensors) != set(want) or any(tensors[k].ndim != v for k, v in want.items()):
            raise ValueError(f"projection: expected tensors {sorted(want)}, got "
                             f"{ {k: v.shape for k, v in tensors.items()} }")
        mean, W, variances = tensors["mean"], tensors["components"], tensors["variances"]
        if W.shape[1:] != mean.shape or variances.shape != W.shape[:1] \
                or tensors["n_tokens"].shape != (1,) \
                or not all(np.isfinite(a).all() for a in (mean, W, variances)):
            raise ValueError("projection: expected a finite mean (F,), components (d, F) and "
                             "variances (d,)")
        return cls(mean, W, variances, int(tensors["n_tokens"][0]))
