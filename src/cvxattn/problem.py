"""The convex program of a head on data (SPEC.md §1), validated at the boundary.

    P(Z, b) = (1/n) Σ_i ℓ(p_i(Z) + b, y_i) + β Σ_g ‖Z_g‖_*

p_i(Z) are the head's outputs for sample i: mean-pooled logits (n, c) for cross-entropy and
pooled squared targets (n, c), token-level outputs (n, s, c) for token-level targets (n, s, c).
"""

from __future__ import annotations

import copy
import math
from numbers import Real

import numpy as np
import torch

from .checks import check_bool, check_device, check_dtype, is_integer
from .heads.base import Head
from .losses import Loss, get_loss
from .regularizers import BlockNuclearNorm

__all__ = ["Problem", "as_tokens", "checked_lift"]


def as_tokens(X, name: str = "X", dtype=torch.float64, device=None) -> torch.Tensor:
    """Validate tokens (n, s, d) and convert them once to a torch tensor."""
    if torch.is_tensor(X):
        X = X.detach()
        if X.is_complex() or X.dtype == torch.bool:
            raise ValueError(f"{name}: expected real numbers, got dtype {X.dtype}")
    else:
        try:
            X = np.asarray(X)
        except (ValueError, TypeError) as error:  # ragged nested lists
            raise ValueError(f"{name}: expected a 3-D array (n, s, d) of tokens, got "
                             f"{type(X).__name__} that is not one ({error})") from None
        if X.dtype.kind not in "fiu":
            raise ValueError(f"{name}: expected real numbers, got dtype {X.dtype}")
        # np.require copies read-only arrays (memmaps), which torch.from_numpy warns about
        X = torch.from_numpy(np.require(X, requirements=["C", "W"]))
    if X.ndim != 3:
        raise ValueError(f"{name}: expected a 3-D array (n, s, d) of tokens, got shape "
                         f"{tuple(X.shape)}")
    if min(X.shape) == 0:
        raise ValueError(f"{name}: expected non-empty (n, s, d), got shape {tuple(X.shape)}")
    _check_copy(X, dtype, device, name)
    X = X.to(dtype=dtype, device=device)
    check_finite(X, name)
    return X


def _check_copy(X: torch.Tensor, dtype: torch.dtype, device, name: str) -> None:
    """MemoryBudgetError before converting X to ``dtype`` on ``device`` would need more memory
    than is available (the conversion copies X unless it already is that)."""
    from .solvers.memory import MemoryBudgetError, available_memory  # (imports this module)

    target = torch.device(device) if device is not None else X.device
    if X.dtype == dtype and X.device == target:
        return
    need = X.numel() * dtype.itemsize
    free = available_memory(target)
    if need > free:
        raise MemoryBudgetError(
            f"{name}: converting the tokens {tuple(X.shape)} to {dtype} needs "
            f"{need / 2**30:.3g} GiB, over the {free / 2**30:.3g} GiB available; use fewer "
            "samples, or dtype=torch.float32")


def check_finite(values: torch.Tensor, name: str) -> None:
    """ValueError unless every entry of ``values`` is finite and their sum does not overflow.

    The sum is the test (NaN and ±inf propagate through it) because it needs no memory: an
    elementwise ``isfinite`` allocates more than the tensor itself. Finite values whose sum
    overflows are too large for the solver's arithmetic anyway; the message says which case
    it is."""
    total = values.sum()
    if torch.isfinite(total):
        return
    for chunk in values.reshape(-1).split(2**20):
        if not torch.isfinite(chunk).all():
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
    largest = float(values.abs().max())
    raise ValueError(f"{name}: expected values small enough to be summed in {values.dtype}, got "
                     f"entries up to {largest:.3g} whose sum overflows; rescale them")


def checked_lift(head: Head, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``data`` (``head.lift`` of finite tokens) if every lifted entry is finite, else a
    ValueError: finite but huge tokens overflow in their products (Gram matrices, scores,
    spectra), and a solve on them would report NaN."""
    X = data["X"]
    for key, value in data.items():
        if key != "X" and not torch.isfinite(value.sum()):
            raise ValueError(f"X: expected tokens whose lifted data ({key!r} of the "
                             f"{head.name} head) are finite in {X.dtype}, got tokens up to "
                             f"{float(X.abs().max()):.3g} whose products overflow; rescale "
                             "them")
    return data


def _checked_beta(beta) -> float:
    if not isinstance(beta, Real) or isinstance(beta, bool) or not math.isfinite(beta) \
            or beta <= 0:
        raise ValueError(f"beta: expected a finite number > 0, got {beta!r}")
    return float(beta)


class Problem:
    """A head, tokens, targets, a loss and β: the convex program to solve.

    Parameters
    ----------
    head : a :class:`cvxattn.heads.Head` (bound here to the data's sizes, gates sampled).
    X : (n, s, d) tokens, NumPy or torch.
    y : (n,) integer labels in [0, c) for ``loss="cross_entropy"``; (n, c) pooled or
        (n, s, c) token-level targets for ``loss="squared"``.
    beta : β > 0, the weight of the block nuclear norm (objective is a mean over samples).
    fit_intercept : add the unregularized intercept b ∈ R^c.
    n_classes : c for cross-entropy (default max(y) + 1).

    >>> import numpy as np, cvxattn as ca
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(7, 6, 5)), np.array([0, 1, 2, 0, 1, 2, 0])
    >>> problem = ca.Problem(ca.heads.MLP(), X, y, beta=0.1)
    >>> problem.n, problem.s, problem.d, problem.c, problem.head.block_shape
    (7, 6, 5, 3, (5, 3))
    """

    def __init__(self, head: Head, X, y, beta: float, loss: str = "cross_entropy",
                 fit_intercept: bool = True, n_classes: int | None = None,
                 dtype: torch.dtype = torch.float64, device=None):
        if not isinstance(head, Head):
            raise TypeError(f"head: expected a cvxattn.heads.Head, got {type(head).__name__}")
        check_bool(fit_intercept, "fit_intercept")
        if n_classes is not None and not is_integer(n_classes, 1):
            raise ValueError(f"n_classes: expected None or an integer ≥ 1, got {n_classes!r}")
        self.loss: Loss = get_loss(loss)
        self.X = as_tokens(X, "X", check_dtype(dtype), check_device(device))
        n, s, d = self.X.shape
        self.y, c = self._check_targets(y, n, s, n_classes, bool(fit_intercept))
        self.pooled = self.y.ndim < 3  # token-level targets are (n, s, c)
        self.beta = _checked_beta(beta)
        self.fit_intercept = bool(fit_intercept)
        self.head = head.bind(s, d, c)
        self.regularizer = BlockNuclearNorm()
        self._data = None
        # data passes made so far: applications of the map or of its adjoint to all n samples
        # (solvers report the difference as ``Solution.n_passes``)
        self.passes = 0

    def with_beta(self, beta: float) -> "Problem":
        """The same head, data and loss at another β; the lifted data (if already computed)
        is shared, not recomputed."""
        other = copy.copy(self)  # (copying drops the lifted data: __getstate__)
        other.beta = _checked_beta(beta)
        other._data = self._data
        return other

    def collapsed(self):
        """(the smaller program, its :class:`~cvxattn.heads.base.Collapse`) when this pooled
        program equals one (SPEC.md §3 identity 3: the linear FNO, B-FNO and Mixer), else
        None. The smaller program shares the tokens and targets."""
        collapse = self.head.pooled_collapse() if self.pooled else None
        if collapse is None:
            return None
        small = Problem(collapse.head, collapse.tokens(self.X), self.y,
                        self.beta * collapse.beta_scale, loss=self.loss.name,
                        fit_intercept=self.fit_intercept, n_classes=self.c,
                        dtype=self.X.dtype, device=self.X.device)
        return small, collapse

    def astype(self, dtype: torch.dtype) -> "Problem":
        """The same problem with its tokens (and real targets) in ``dtype``; lifted anew."""
        other = copy.copy(self)
        other.X = self.X.to(dtype)
        if self.y.is_floating_point():
            other.y = self.y.to(dtype)
        other._data = None
        return other

    def _check_targets(self, y, n, s, n_classes, fit_intercept):
        y = y.detach().cpu().numpy() if torch.is_tensor(y) else np.asarray(y)
        if self.loss.name == "cross_entropy":
            if y.ndim != 1 or len(y) != n:
                raise ValueError(f"y: expected {n} labels (shape ({n},)) to match X's n, got "
                                 f"shape {y.shape}")
            if y.dtype.kind not in "iuf" or (y.dtype.kind == "f" and not (
                    np.isfinite(y).all() and (y == np.round(y)).all())):
                raise ValueError(f"y: expected integer class labels, got dtype {y.dtype}")
            if y.min() < 0 or y.max() >= 2**63:  # before int64 wraps them around
                raise ValueError(f"y: expected labels in [0, {n_classes or 'c'}), got values in "
                                 f"[{y.min()}, {y.max()}]")
            y = y.astype(np.int64)
            c = int(y.max()) + 1 if n_classes is None else int(n_classes)
            if y.min() < 0 or y.max() >= c:
                raise ValueError(f"y: expected labels in [0, {c}), got values in "
                                 f"[{y.min()}, {y.max()}]")
            present = np.unique(y)  # (not a count per class: c may be far above n)
            if fit_intercept and len(present) < c:
                missing = np.setdiff1d(np.arange(min(c, len(present) + 11)), present)[:10]
                raise ValueError(f"y: {c - len(present)} of the {c} classes have no sample "
                                 f"(e.g. {missing.tolist()}); with an intercept their optimum "
                                 "is at -inf (drop them, or relabel)")
            return torch.from_numpy(y).to(self.X.device), c
        if y.dtype.kind not in "iuf":
            raise ValueError(f"y: expected real targets, got dtype {y.dtype}")
        if y.ndim not in (2, 3) or y.shape[0] != n or (y.ndim == 3 and y.shape[1] != s):
            raise ValueError(f"y: expected targets of shape ({n}, c) or ({n}, {s}, c), got "
                             f"shape {y.shape}")
        if y.shape[-1] == 0:
            raise ValueError(f"y: expected at least one output, got shape {y.shape}")
        if not np.isfinite(y).all():
            raise ValueError("y: expected finite values, got NaN or inf")
        return torch.from_numpy(np.require(y, requirements=["C", "W"])).to(self.X), y.shape[-1]

    # ------------------------------------------------------------- sizes
    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def s(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    @property
    def c(self) -> int:
        return self.head.c

    def zeros(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A starting point (Z, b) = (0, 0) with Z of shape (G, p, q)."""
        Z = self.X.new_zeros((self.head.n_blocks, *self.head.block_shape))
        return Z, self.X.new_zeros(self.c)

    # ---------------------------------------------------------- the map
    @property
    def data(self) -> dict[str, torch.Tensor]:
        """The head's lifted data of X, computed once."""
        if self._data is None:
            self._data = checked_lift(self.head, self.head.lift(self.X))
        return self._data

    def outputs(self, Z: torch.Tensor, data: dict | None = None) -> torch.Tensor:
        """p(Z) without intercept: (n, c) pooled or (n, s, c) token-level."""
        data = self.data if data is None else data
        self.passes += 1
        return self.head.pooled(Z, data) if self.pooled else self.head.tokens(Z, data)

    def loss_value(self, Z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(1/n) Σ_i ℓ(p_i(Z) + b, y_i)."""
        return self.loss_of_outputs(self.outputs(Z), b)

    def loss_of_outputs(self, outputs: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(1/n) Σ_i ℓ(p_i + b, y_i) for outputs p = ``outputs`` (without intercept)."""
        return self.loss.value(outputs + self._intercept(b), self.y)

    def objective(self, Z: torch.Tensor, b: torch.Tensor) -> float:
        """P(Z, b) = mean loss + β Σ_g ‖Z_g‖_*."""
        with torch.no_grad():
            return float(self.loss_value(Z, b) + self.beta * self.regularizer.value(Z))

    def centered(self, outputs: torch.Tensor) -> torch.Tensor:
        """Outputs minus their mean over samples (and tokens): p_i(Z) − p̄(Z).

        With an intercept this is an exact change of variables, b' = b + p̄(Z): the loss at
        (Z, b) equals the loss of the centered outputs at (Z, b'), and the regularizer does not
        see b. Solvers use it because the mean direction of the data (tokens are rarely
        centred) otherwise couples Z with b and makes the program badly conditioned. Without an
        intercept the outputs are returned unchanged."""
        return outputs - self.output_mean(outputs) if self.fit_intercept else outputs

    def output_mean(self, outputs: torch.Tensor) -> torch.Tensor:
        """p̄ (c,): the mean of outputs over samples (and tokens), zero without an intercept
        (b' = b + p̄ maps an intercept to the centered coordinates of :meth:`centered`)."""
        if not self.fit_intercept:
            return outputs.new_zeros(outputs.shape[-1])
        return outputs.mean(dim=tuple(range(outputs.ndim - 1)))

    def loss_and_gradient(self, Z: torch.Tensor, b: torch.Tensor,
                          outputs: torch.Tensor | None = None, centered: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean loss f(Z, b) and its gradients (∇_Z f (G, p, q), ∇_b f (c,)).

        ∇_Z f = (1/n) Σ_i A_iᵀ λ_i with λ_i = ∇ℓ(p_i): the adjoint of the head's map, taken by
        autograd. ∇_b f is zero without an intercept. ``outputs``: p(Z) when the caller has it;
        heads with an explicit adjoint (``Head.has_adjoint``) then need no forward pass.
        ``centered``: the loss of the centered outputs (:meth:`centered`) at intercept b', and
        its gradients, ∇_Z = (1/n) Σ_i A_iᵀ (λ_i − λ̄).
        """
        center = self.centered if centered else (lambda out: out)
        if outputs is not None and self.head.has_adjoint(self.data, self.pooled):
            outputs = outputs.detach().requires_grad_(True)
            b = b.detach().requires_grad_(True)
            with torch.enable_grad():
                value = self.loss_of_outputs(center(outputs), b)
                grad_out, grad_b = torch.autograd.grad(value, (outputs, b), allow_unused=True)
            grad_b = torch.zeros_like(b) if grad_b is None else grad_b
            self.passes += 1
            return value.detach(), self.head.adjoint(grad_out, self.data), grad_b
        Z = Z.detach().requires_grad_(True)
        b = b.detach().requires_grad_(True)
        with torch.enable_grad():
            value = self.loss_of_outputs(center(self.outputs(Z)), b)
            grad_Z, grad_b = torch.autograd.grad(value, (Z, b), allow_unused=True)
        self.passes += 1  # the adjoint (the forward counted in ``outputs``)
        if grad_b is None:
            grad_b = torch.zeros_like(b)
        return value.detach(), grad_Z, grad_b

    def _intercept(self, b: torch.Tensor) -> torch.Tensor:
        return b if self.fit_intercept else torch.zeros_like(b)

    def __getstate__(self):
        # the lifted data is a cache of X: recomputed on demand, never stored
        return {**self.__dict__, "_data": None}

    def __repr__(self) -> str:
        return (f"Problem({self.head!r}, n={self.n}, s={self.s}, d={self.d}, c={self.c}, "
                f"loss={self.loss.name!r}, beta={self.beta:g}, "
                f"fit_intercept={self.fit_intercept})")
