"""A scikit-learn classifier around ``Problem`` + ``solve`` (SPEC.md §1, DESIGN.md)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, validate_data

from . import heads
from .heads import REGISTRY, create
from .heads.base import ACTIVATIONS, Head
from .problem import Problem
from .solvers import METHODS, check_tol, solve

__all__ = ["ConvexHeadClassifier"]

_GROUP_CHOICES = (5, 4, 3, 2, 1)  # default B of the B-FNO: the paper's 5, else the largest divisor


class ConvexHeadClassifier(ClassifierMixin, BaseEstimator):
    """A convex attention head fitted to global optimality, as a scikit-learn classifier.

    Fits the convex program of one head (SPEC.md §1–2) on tokens X_i ∈ R^{s×d}:

        min_{Z, b}  (1/n) Σ_i [logsumexp(p_i) − p_{i, y_i}] + β Σ_g ‖Z_g‖_*,
        p_i = (1/s) 1ᵀ O(X_i; Z) + b ∈ R^c

    (mean softmax cross-entropy of the mean-pooled logits, block nuclear norm; the convex
    programs of paper eqs. 6–31, one per head), solved by ``cvxattn.solve`` to a certified
    relative duality gap ≤ ``tol``.

    Parameters
    ----------
    head : {"mlp", "attention", "mixer", "fno", "bfno"}, default="attention"
        The mechanism, a key of ``cvxattn.heads.REGISTRY``.
    activation : {"linear", "gated"}, default="linear"
    beta : float > 0, default=1e-3
        β, the weight of the block nuclear norm (the loss is a mean, so β does not scale
        with n).
    n_gates : int or None, default=None
        Gates m of a gated head (None: the head's default); must be None for a linear head.
    groups : int or None, default=None
        B of the B-FNO (``head="bfno"`` only; B must divide d and the number of classes).
        None: the largest of 5, 4, 3, 2, 1 that divides both (the paper's B = 5 when it can).
    grid : (h, w) or None, default=None
        Token grid of the FNO / B-FNO, h·w = s (None: a square grid). FNO heads only.
    seed : int, default=0
        Seed of the sampled gates (gated heads).
    fit_intercept : bool, default=True
        Fit the unregularized intercept b.
    method : {"auto", "fista", "hybrid", "factorized", "cvxpy"}, default="auto"
        Solver, see ``cvxattn.solve``.
    tol : float > 0, default=1e-6
        Stop when the certified relative duality gap (P − D)/|P| is ≤ tol.
    max_iter : int ≥ 1, default=5000
        Iteration limit; hitting it emits ``cvxattn.ConvergenceWarning`` (a subclass of
        scikit-learn's ``ConvergenceWarning``).
    warm_start : bool, default=False
        Start from the previous fit's solution when the blocks and intercept have the same
        shapes (same head, sizes and number of classes), e.g. along a path of β values.

    Attributes
    ----------
    classes_ : (c,) the sorted labels seen in fit; labels of any type.
    n_features_in_ : int, d, the features of a token.
    n_tokens_ : int, s, the tokens of a sample (1 for 2-D input).
    feature_names_in_ : (d,) column names, when fitted on a 2-D DataFrame.
    solution_ : ``cvxattn.Solution``, the certified optimum (blocks, intercept, network).
    head_ : ``cvxattn.heads.Head``, the head bound to (s, d, c), gates sampled.
    n_iter_ : int, solver iterations.
    dual_gap_ : float, the certified relative duality gap of the solution.
    objective_ : float, the objective P at the solution.

    Notes
    -----
    X is (n, s, d) tokens. A 2-D array (n, d) is one token per sample, (n, 1, d); then
    every head acts on that one token (the attention head on x xᵀ x). ``decision_function``
    returns the logits p (n, c); with two classes it returns p_1 − p_0 (n,), positive for
    ``classes_[1]``, as scikit-learn's binary classifiers do. ``predict_proba`` is softmax(p).
    A single class in y is an error (the loss is then zero for every Z). Computation is float64.

    Examples
    --------
    >>> import numpy as np
    >>> from cvxattn import ConvexHeadClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6, 5))                  # 40 samples, 6 tokens of 5 features
    >>> y = np.where(X[:, :, 0].mean(1) > 0, "cat", "dog")
    >>> clf = ConvexHeadClassifier(head="attention", beta=1e-2).fit(X, y)
    >>> clf.classes_
    array(['cat', 'dog'], dtype='<U3')
    >>> clf.predict_proba(X[:3]).shape, clf.dual_gap_ <= 1e-6
    ((3, 2), True)
    """

    def __init__(self, head: str = "attention", activation: str = "linear", beta: float = 1e-3,
                 n_gates: int | None = None, groups: int | None = None,
                 grid: tuple[int, int] | None = None, seed: int = 0, fit_intercept: bool = True,
                 method: str = "auto", tol: float = 1e-6, max_iter: int = 5000,
                 warm_start: bool = False):
        self.head = head
        self.activation = activation
        self.beta = beta
        self.n_gates = n_gates
        self.groups = groups
        self.grid = grid
        self.seed = seed
        self.fit_intercept = fit_intercept
        self.method = method
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start

    # ------------------------------------------------------------------ fit
    def fit(self, X, y) -> "ConvexHeadClassifier":
        """Solve the convex program on tokens X (n, s, d) or (n, d) and labels y (n,)."""
        self._check_params()
        X, y = self._validate_tokens(X, y, reset=True)  # (n, s, d), (n,)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)  # (c,), (n,) in [0, c)
        if len(classes) < 2:
            raise ValueError(f"y: expected at least 2 classes, got 1 class ({classes[0]!r})")
        problem = Problem(self._make_head(X.shape[2], len(classes)), X, y_index,
                          beta=float(self.beta), fit_intercept=bool(self.fit_intercept))
        solution = solve(problem, method=self.method, tol=float(self.tol),
                         max_iter=int(self.max_iter), init=self._warm_start_point(problem))
        self.classes_ = classes
        self.solution_ = solution
        self.head_ = problem.head
        self.n_iter_ = solution.n_iter
        self.dual_gap_ = solution.gap
        self.objective_ = solution.objective
        return self

    def _check_params(self) -> None:
        """Validate the parameters (one-line ValueErrors naming the argument)."""
        if not isinstance(self.head, str) or self.head not in REGISTRY:
            raise ValueError(f"head: expected one of {tuple(REGISTRY)}, got {self.head!r}")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got "
                             f"{self.activation!r}")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        _check_positive("beta", self.beta)
        check_tol(self.tol)
        _check_positive("max_iter", self.max_iter, integer=True)
        if self.n_gates is not None:
            if self.activation != "gated":
                raise ValueError(f"n_gates: expected None for activation='linear', got "
                                 f"{self.n_gates!r}")
            _check_positive("n_gates", self.n_gates, integer=True)
        takes = heads.parameters(self.head)
        if self.groups is not None:
            if "groups" not in takes:
                raise ValueError(f"groups: expected None for head={self.head!r} (it takes no "
                                 f"groups), got {self.groups!r}")
            _check_positive("groups", self.groups, integer=True)
        if self.grid is not None and "grid" not in takes:
            raise ValueError(f"grid: expected None for head={self.head!r} (it takes no token "
                             f"grid), got {self.grid!r}")
        if not isinstance(self.seed, Integral) or isinstance(self.seed, bool):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        for name in ("fit_intercept", "warm_start"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")

    def _make_head(self, d: int, c: int) -> Head:
        """The unbound head of the parameters, for d features and c classes."""
        groups = self.groups
        if "groups" in heads.parameters(self.head) and groups is None:
            groups = next(B for B in _GROUP_CHOICES if d % B == 0 and c % B == 0)
        return create(self.head, self.activation, self.n_gates, self.seed, self.grid, groups)

    def _warm_start_point(self, problem: Problem) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(Z, b) of the previous fit when warm_start is on and its shapes fit ``problem``."""
        previous = getattr(self, "solution_", None)
        if not self.warm_start or previous is None:
            return None
        head = problem.head
        if tuple(previous.blocks.shape) != (head.n_blocks, *head.block_shape) \
                or tuple(previous.intercept.shape) != (head.c,):
            return None
        return previous.blocks, previous.intercept

    # -------------------------------------------------------------- predict
    def decision_function(self, X) -> np.ndarray:
        """Logits p (n, c); for two classes p_1 − p_0 (n,) (positive: ``classes_[1]``)."""
        logits = self._logits(X)  # (n, c)
        return logits[:, 1] - logits[:, 0] if len(self.classes_) == 2 else logits

    def predict_proba(self, X) -> np.ndarray:
        """softmax(p), (n, c); column k is the probability of ``classes_[k]``."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """log softmax(p), (n, c)."""
        logits = torch.from_numpy(self._logits(X))  # (n, c)
        return torch.log_softmax(logits, dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """``classes_[argmax_k p_k]``, (n,)."""
        logits = self._logits(X)  # (n, c)
        return self.classes_[logits.argmax(1)]

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._validate_tokens(X, reset=False)  # (n, s, d)
        return self.solution_.decision_function(X).cpu().numpy()  # (n, c)

    # ----------------------------------------------------------- validation
    def _validate_tokens(self, X, y="no_validation", reset: bool = True):
        """X as float64 tokens (n, s, d) (a 2-D X is (n, 1, d)); with y, also the labels (n,).

        2-D input goes through ``validate_data`` (``n_features_in_``, feature names). For 3-D
        input ``n_features_in_`` is d, the features of one token (scikit-learn would count s).
        """
        ndim = getattr(X, "ndim", None)
        ndim = np.asarray(X).ndim if ndim is None else ndim
        no_y = isinstance(y, str) and y == "no_validation"
        if ndim == 2:
            if no_y:
                X = validate_data(self, X, reset=reset, dtype=np.float64)  # (n, d)
            else:
                X, y = validate_data(self, X, y, reset=reset, dtype=np.float64)
            tokens = X[:, None, :]  # (n, 1, d)
        elif ndim == 3:
            if no_y:
                X = check_array(X, allow_nd=True, dtype=np.float64, estimator=self)
            else:
                X, y = check_X_y(X, y, allow_nd=True, dtype=np.float64, estimator=self)
            if 0 in X.shape[1:]:
                raise ValueError(f"X: expected at least 1 token and 1 feature, got shape "
                                 f"{X.shape}")
            if reset:
                self.n_features_in_ = X.shape[2]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            tokens = X  # (n, s, d)
        else:
            raise ValueError(f"X: expected a 2-D array (n, d) or a 3-D array (n, s, d) of "
                             f"tokens, got a {ndim}-D array of shape {np.asarray(X).shape}. "
                             "Reshape your data, e.g. X.reshape(1, -1) for one sample of one token")
        if reset:
            self.n_tokens_ = tokens.shape[1]
        elif tokens.shape[1:] != (self.n_tokens_, self.n_features_in_):
            raise ValueError(f"X: expected tokens of shape (n, {self.n_tokens_}, "
                             f"{self.n_features_in_}) as in fit, got shape {X.shape}")
        # torch.from_numpy warns on read-only arrays (memmaps): np.require copies those.
        tokens = torch.from_numpy(np.require(tokens, requirements=["C", "W"]))  # (n, s, d)
        return tokens if no_y else (tokens, y)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


def _check_positive(name: str, value, integer: bool = False) -> None:
    """ValueError unless ``value`` is a finite number > 0 (an integer when ``integer``)."""
    kind = Integral if integer else Real
    if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value) \
            or value <= 0:
        expected = "a positive integer" if integer else "a finite number > 0"
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
