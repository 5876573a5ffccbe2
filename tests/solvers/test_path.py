"""solve_path: the same optima as independent solves, in order from large β to small, with
shared lifted data, early stopping on a score, and checked arguments."""

from __future__ import annotations

import warnings

import pytest

import cvxattn as ca
from tests.helpers import labels, tokens

BETAS = [0.01, 0.1, 0.03]  # given out of order on purpose


@pytest.mark.parametrize("head", [ca.heads.MLP(activation="gated", n_gates=3),
                                  ca.heads.SelfAttention(),
                                  ca.heads.Mixer(activation="gated", n_gates=2, seed=1)],
                         ids=["mlp-gated", "attention-linear", "mixer-gated"])
def test_a_path_gives_the_solutions_of_independent_solves(head):
    problem = ca.Problem(head, tokens(0), labels(0), beta=1.0)
    tol = 1e-7
    path = ca.solve_path(problem, BETAS, tol=tol)
    assert path.betas == (0.1, 0.03, 0.01) and len(path) == 3 and not path.stopped_early
    assert path.scores is None and path.best is None and len(path.seconds) == 3
    for beta, solution in zip(path.betas, path.solutions):
        alone = ca.solve(problem.with_beta(beta), tol=tol)
        assert solution.beta == beta and solution.status == "optimal"
        # both certified within tol of the same optimum
        assert solution.objective == pytest.approx(alone.objective, rel=3 * tol)
        assert solution.lower_bound <= alone.objective * (1 + 1e-12)
        assert alone.lower_bound <= solution.objective * (1 + 1e-12)


def test_the_beta_problems_share_the_lifted_data(monkeypatch):
    problem = ca.Problem(ca.heads.MLP(activation="gated", n_gates=3), tokens(0), labels(0),
                         beta=1.0)
    other = problem.with_beta(0.5)
    assert other.X is problem.X and other.beta == 0.5 and problem.beta == 1.0
    lifted = problem.data
    assert problem.with_beta(0.2).data is lifted  # shared once lifted
    calls = []
    lift = type(problem.head).lift
    monkeypatch.setattr(type(problem.head), "lift",
                        lambda self, *a, **k: calls.append(1) or lift(self, *a, **k))
    fresh = ca.Problem(ca.heads.MLP(activation="gated", n_gates=3), tokens(0), labels(0),
                       beta=1.0)
    ca.solve_path(fresh, [0.1, 0.03, 0.01], tol=1e-6, method="fista")
    assert len(calls) == 1  # the whole path lifted the data once


def test_early_stopping_on_a_score_keeps_the_best():
    problem = ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=1.0)
    betas = [1.0, 0.3, 0.1, 0.03, 0.01]
    scores = iter([0.5, 0.7, 0.6, 0.6, 0.9])  # best at 0.3, then two without improvement
    path = ca.solve_path(problem, betas, score=lambda s: next(scores), patience=2, tol=1e-6)
    assert path.stopped_early and path.betas == (1.0, 0.3, 0.1, 0.03)
    assert path.scores == (0.5, 0.7, 0.6, 0.6) and path.best == 1
    ties = iter([0.5, 0.5])
    path = ca.solve_path(problem, [0.1, 0.3], score=lambda s: next(ties), tol=1e-6)
    assert path.best == 0 and path.betas[0] == 0.3  # ties: the larger β


def test_non_converged_solves_keep_their_status_and_warn():
    problem = ca.Problem(ca.heads.SelfAttention(), tokens(0), labels(0), beta=1.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = ca.solve_path(problem, [0.1, 0.01], tol=1e-12, max_iter=3)
    assert [s.status for s in path.solutions] == ["max_iter", "max_iter"]
    assert sum(issubclass(w.category, ca.ConvergenceWarning) for w in caught) == 2


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(betas=[]), ValueError, "betas: expected distinct finite numbers > 0"),
    (dict(betas=[0.1, 0.1]), ValueError, "betas: expected distinct"),
    (dict(betas=[0.1, -1]), ValueError, "betas: expected"),
    (dict(betas=[0.1, float("nan")]), ValueError, "betas: expected"),
    (dict(betas=[0.1], patience=2), ValueError, "patience: expected None without a score"),
    (dict(betas=[0.1], score=len, patience=0), ValueError, "patience: expected a positive"),
    (dict(betas=[0.1], score=3), TypeError, "score: expected a callable"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, message):
    problem = ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=1.0)
    with pytest.raises(error, match=message):
        ca.solve_path(problem, **kwargs)
    with pytest.raises(TypeError, match="problem: expected a cvxattn.Problem"):
        ca.solve_path("problem", [0.1])
    with pytest.raises(ValueError, match="beta: expected a finite number > 0"):
        problem.with_beta(0)


@pytest.mark.parametrize("method", ["fista", "factorized"])
def test_a_solution_keeps_no_reference_to_the_training_data(method):
    import gc
    import weakref

    problem = ca.Problem(ca.heads.SelfAttention(activation="gated", n_gates=2), tokens(0),
                         labels(0), beta=0.05)
    solution = ca.solve(problem, method=method, tol=1e-4)
    watched = [weakref.ref(problem), weakref.ref(problem.X), weakref.ref(problem.y),
               *(weakref.ref(t) for t in problem.data.values())]
    assert (solution.beta, solution.n_samples, solution.loss_name) == (0.05, 7,
                                                                      "cross_entropy")
    del problem
    gc.collect()
    assert all(ref() is None for ref in watched)
    assert solution.decision_function(tokens(1)).shape == (7, 6)  # still usable


def test_status_and_certificate_are_typed_records():
    problem = ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=0.05)
    solution = ca.solve(problem, tol=1e-6)
    assert solution.status is ca.Status.OPTIMAL and solution.status == "optimal"
    assert f"{solution.status}" == str(solution.status) == "optimal"
    assert "within tol" in solution.status.advice
    assert isinstance(solution.certificate, ca.CertificateInfo)
    assert solution.certificate == ca.CertificateInfo("exact SVD")
    assert str(solution.certificate) == "exact SVD"
    with pytest.warns(ca.ConvergenceWarning):
        early = ca.solve(problem, tol=1e-12, max_iter=2)
    assert early.status is ca.Status.MAX_ITER and "raise max_iter" in early.status.advice
    lanczos = ca.CertificateInfo("block Lanczos via probe heads", exact=False, steps=40,
                                 epsilon=1e-3, probability=0.999, checks=1)
    assert "ε = 1.00e-03, with probability ≥ 0.999" in str(lanczos)


def test_zero_solutions_above_beta_max_do_not_count_towards_patience():
    """Above β_max every solution is zero (the intercept alone), the same model with the same
    score: a path that starts there must not stop before it fits anything."""
    problem = ca.Problem(ca.heads.MLP(), tokens(0), labels(0), beta=1.0)
    betas = [100.0, 30.0, 10.0, 0.1, 0.03, 0.01]
    path = ca.solve_path(problem, betas, tol=1e-6, patience=1,
                         score=lambda s: 0.2 if s.n_heads == 0 else 0.5)
    assert [s.n_heads == 0 for s in path.solutions[:3]] == [True, True, True]
    # the first nonzero solution is the best; the next one does not beat it: stop there
    assert path.stopped_early and path.betas == (100.0, 30.0, 10.0, 0.1, 0.03)
    assert path.best == 3
