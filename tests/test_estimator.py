"""ConvexHeadClassifier: scikit-learn's estimator checks, token heads, parameters, errors."""

import doctest
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import cvxattn as ca
import cvxattn.estimator
from cvxattn import ConvexHeadClassifier

N, S, D, C = 21, 6, 5, 3  # distinct sizes; the 6 tokens lie on a 2×3 grid
GRID = (2, 3)


def tokens(d: int = D, c: int = C, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, d) standard normal tokens and labels 0..c-1, each class present."""
    X = np.random.default_rng(seed).normal(size=(N, S, d))  # (n, s, d)
    return X, np.arange(N) % c


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))  # (n, c)
    return e / e.sum(1, keepdims=True)


# ------------------------------------------------------------------ scikit-learn API
# The checks fit small 2-D data sets (one token per sample), some badly conditioned (features
# near 100): a short max_iter keeps them fast, so the solver's ConvergenceWarning is expected
# here and ignored here only; convergence is tested below. No check is expected to fail (the
# array-API and pandas checks skip themselves when SCIPY_ARRAY_API or pandas are missing).
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks([ConvexHeadClassifier(head="attention", beta=1e-2, tol=1e-4,
                                               max_iter=100)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------- fitting
HEADS = [
    dict(head="mlp"),
    dict(head="attention", activation="gated", n_gates=2),
    dict(head="mixer", activation="gated", n_gates=2),
    dict(head="fno", grid=GRID),
    dict(head="bfno", activation="gated", n_gates=2, grid=GRID, groups=1),
]


@pytest.mark.parametrize("params", HEADS, ids=lambda p: f"{p['head']}-{p.get('activation')}")
def test_fit_tokens(params):
    X, y = tokens()
    clf = ConvexHeadClassifier(beta=0.05, tol=1e-6, **params).fit(X, y)
    assert clf.solution_.status == "optimal" and clf.dual_gap_ <= 1e-6
    assert (clf.n_iter_, clf.dual_gap_, clf.objective_) == (
        clf.solution_.n_iter, clf.solution_.gap, clf.solution_.objective)
    assert clf.n_features_in_ == D and clf.n_tokens_ == S
    assert clf.head_ is clf.solution_.head and clf.head_.dims == (S, D, C)
    assert_array_equal(clf.classes_, np.arange(C))

    logits = clf.decision_function(X)  # (n, c)
    assert logits.shape == (N, C)
    assert_array_equal(logits, clf.solution_.decision_function(X).numpy())
    proba = clf.predict_proba(X)  # (n, c)
    assert proba.shape == (N, C)
    assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    assert_allclose(proba, softmax(logits), rtol=1e-10)
    assert_allclose(clf.predict_log_proba(X), np.log(proba), rtol=1e-10)
    prediction = clf.predict(X)
    assert prediction.shape == (N,)
    assert_array_equal(prediction, clf.classes_[logits.argmax(1)])
    assert clf.score(X, y) == np.mean(prediction == y)


def test_binary_string_labels_give_logit_difference():
    X, _ = tokens()
    y = np.where(X[:, :, 0].mean(1) > 0, "up", "down")  # both classes occur for this seed
    clf = ConvexHeadClassifier(head="attention", beta=0.05).fit(X, y)
    assert_array_equal(clf.classes_, ["down", "up"])
    logits = clf.solution_.decision_function(X).numpy()  # (n, 2)
    decision = clf.decision_function(X)  # (n,)
    assert decision.shape == (N,)
    assert_allclose(decision, logits[:, 1] - logits[:, 0])
    assert_array_equal(clf.predict(X), np.where(decision > 0, "up", "down"))
    assert_allclose(clf.predict_proba(X)[:, 1], 1 / (1 + np.exp(-decision)), rtol=1e-10)


def test_multiclass_string_labels():
    X, y = tokens()
    names = np.array(["cat", "dog", "emu"])[y]
    clf = ConvexHeadClassifier(head="mlp", beta=0.05).fit(X, names)
    reference = ConvexHeadClassifier(head="mlp", beta=0.05).fit(X, y)
    assert_array_equal(clf.classes_, ["cat", "dog", "emu"])
    assert_array_equal(clf.predict(X), np.array(["cat", "dog", "emu"])[reference.predict(X)])


def test_two_dimensional_input_is_one_token_per_sample():
    X, y = tokens()
    X2 = X[:, 0, :]  # (n, d)
    flat = ConvexHeadClassifier(head="attention", beta=0.05).fit(X2, y)
    one_token = ConvexHeadClassifier(head="attention", beta=0.05).fit(X2[:, None, :], y)
    assert (flat.n_tokens_, flat.n_features_in_) == (1, D)
    assert_allclose(flat.decision_function(X2), one_token.decision_function(X2[:, None, :]))
    assert_allclose(flat.decision_function(X2[:, None, :]), flat.decision_function(X2))


@pytest.mark.parametrize("d, c, groups", [(10, 5, 5), (6, 3, 3), (5, 3, 1)])
def test_block_fno_default_groups(d, c, groups):
    """The largest of 5, 4, 3, 2, 1 dividing both d and the number of classes."""
    X, y = tokens(d, c)
    clf = ConvexHeadClassifier(head="bfno", grid=GRID, beta=0.1).fit(X, y)
    assert clf.head_.groups == groups


def test_cvxpy_method_agrees_with_fista():
    X, y = tokens()
    fista = ConvexHeadClassifier(head="mlp", beta=0.05, tol=1e-8).fit(X, y)
    reference = ConvexHeadClassifier(head="mlp", beta=0.05, method="cvxpy").fit(X, y)
    assert abs(fista.objective_ - reference.objective_) <= 1e-5 * abs(reference.objective_)


def test_warm_start_starts_from_previous_solution():
    X, y = tokens()
    clf = ConvexHeadClassifier(head="attention", beta=0.05, warm_start=True).fit(X, y)
    cold_iterations, cold_objective = clf.n_iter_, clf.objective_
    clf.fit(X, y)  # already optimal: at most one round of iterations
    assert clf.n_iter_ < cold_iterations
    assert abs(clf.objective_ - cold_objective) <= 1e-6 * abs(cold_objective)
    clf.fit(X, y % 2)  # two classes: other shapes, so a cold start
    assert clf.solution_.blocks.shape == (1, D * D, D * 2)


def test_convergence_warning_is_sklearns():
    assert issubclass(ca.ConvergenceWarning, SklearnConvergenceWarning)
    X, y = tokens()
    with pytest.warns(ca.ConvergenceWarning, match="max_iter"):
        clf = ConvexHeadClassifier(beta=1e-3, tol=1e-12, max_iter=3).fit(X, y)
    assert clf.solution_.status == "max_iter" and clf.n_iter_ == 3 and clf.dual_gap_ > 1e-12


def test_pickle_round_trip_on_tokens():
    X, y = tokens()
    clf = ConvexHeadClassifier(head="fno", grid=GRID, beta=0.05).fit(X, y)
    assert_array_equal(pickle.loads(pickle.dumps(clf)).predict_proba(X), clf.predict_proba(X))


# ---------------------------------------------------------------------- parameters
def test_get_set_params_round_trip_and_clone():
    params = dict(head="fno", activation="gated", beta=0.05, n_gates=3, groups=None,
                  grid=GRID, seed=4, fit_intercept=False, method="fista", tol=1e-5,
                  max_iter=3000, warm_start=True)
    clf = ConvexHeadClassifier(**params)
    assert clf.get_params() == params
    assert ConvexHeadClassifier().set_params(**params).get_params() == params
    X, y = tokens()
    clf.fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == params and not hasattr(copy, "solution_")
    assert_array_equal(copy.fit(X, y).predict_proba(X), clf.predict_proba(X))
    assert clf.head_.n_gates == 3 and clf.head_.seed == 4


@pytest.mark.parametrize("params, argument", [
    (dict(head="transformer"), "head"),
    (dict(head=None), "head"),
    (dict(activation="relu"), "activation"),
    (dict(beta=0.0), "beta"),
    (dict(beta=-1e-3), "beta"),
    (dict(beta=float("nan")), "beta"),
    (dict(beta="1e-3"), "beta"),
    (dict(n_gates=3), "n_gates"),  # a linear head has no gates
    (dict(activation="gated", n_gates=0), "n_gates"),
    (dict(groups=2), "groups"),  # only for head="bfno"
    (dict(head="bfno", grid=GRID, groups=0), "groups"),
    (dict(head="bfno", grid=GRID, groups=2), "groups"),  # 2 does not divide d = 5
    (dict(grid=GRID), "grid"),  # only for the FNO heads
    (dict(head="fno", grid=(4, 4)), "grid"),  # h·w ≠ s
    (dict(method="newton"), "method"),
    (dict(tol=0.0), "tol"),
    (dict(tol=1.0), "tol"),  # a gap of 1 proves nothing: it was accepted as "optimal"
    (dict(tol=True), "tol"),
    (dict(max_iter=0), "max_iter"),
    (dict(max_iter=2.5), "max_iter"),
    (dict(seed=1.5), "seed"),
    (dict(fit_intercept="yes"), "fit_intercept"),
    (dict(warm_start=None), "warm_start"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_parameter_is_named(params, argument):
    X, y = tokens()
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        ConvexHeadClassifier(**params).fit(X, y)


# -------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("X", [np.zeros(N), np.zeros((N, S, D, 2)), np.zeros((N, 0, D))],
                         ids=["1-D", "4-D", "no-tokens"])
def test_bad_X_in_fit_is_named(X):
    with pytest.raises(ValueError, match="^X: expected"):
        ConvexHeadClassifier().fit(X, np.arange(N) % C)


def test_predict_checks_token_shape():
    X, y = tokens()
    clf = ConvexHeadClassifier(head="mlp", beta=0.1).fit(X, y)
    for bad in (X[:, :4], X[:, :, :4], X[:, 0], X[0, 0]):  # wrong s, wrong d, 2-D, 1-D
        for method in (clf.predict, clf.predict_proba, clf.decision_function):
            with pytest.raises(ValueError, match="^X: expected"):
                method(bad)


def test_single_class_is_an_error():
    X, _ = tokens()
    with pytest.raises(ValueError, match="^y: expected at least 2 classes, got 1 class"):
        ConvexHeadClassifier().fit(X, np.full(N, "only"))


def test_predict_before_fit():
    with pytest.raises(NotFittedError):
        ConvexHeadClassifier().predict(tokens()[0])


def test_docstring_example():
    result = doctest.testmod(cvxattn.estimator, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
