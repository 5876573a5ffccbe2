"""Problem validates at the boundary: every bad input is a ValueError naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cvxattn as ca
from tests.helpers import C, D, GRID, N, S, TEN, labels, tokens


def make(head=None, X=None, y=None, beta=0.1, **kwargs):
    head = ca.heads.MLP() if head is None else head
    X = tokens(0) if X is None else X
    y = labels(0) if y is None else y
    return ca.Problem(head, X, y, beta, **kwargs)


def test_sizes_and_defaults():
    problem = make()
    assert (problem.n, problem.s, problem.d, problem.c) == (N, S, D, C)
    assert problem.pooled and problem.fit_intercept and problem.loss.name == "cross_entropy"
    assert problem.X.dtype == torch.float64


def test_numpy_float32_and_read_only_input_are_accepted():
    X = tokens(0).numpy().astype(np.float32)
    X.setflags(write=False)
    assert make(X=X).X.dtype == torch.float64


@pytest.mark.parametrize("X, message", [
    (np.zeros((N, S)), "X: expected a 3-D array"),
    (np.zeros((N, S, D, 1)), "X: expected a 3-D array"),
    (np.zeros((0, S, D)), "X: expected non-empty"),
    (np.full((N, S, D), np.nan), "X: expected finite"),
    (np.full((N, S, D), np.inf), "X: expected finite"),
    (np.zeros((N, S, D), dtype=complex), "X: expected real"),
    (np.array([["a"]]), "X: expected real"),
])
def test_bad_tokens(X, message):
    with pytest.raises(ValueError, match=message):
        make(X=X)


@pytest.mark.parametrize("y, message", [
    (np.zeros(N - 1, dtype=int), r"y: expected 7 labels"),
    (np.zeros((N, 1), dtype=int), r"y: expected 7 labels"),
    (np.r_[np.arange(C), -np.ones(N - C, dtype=int)], r"y: expected labels in \[0, "),
    (np.r_[np.arange(C), np.full(N - C, 0.5)], "y: expected integer class labels"),
    (np.r_[np.arange(C), np.full(N - C, np.nan)], "y: expected integer class labels"),
    (np.r_[0, 2, np.full(N - 2, 2)], r"y: 1 of the 3 classes have no sample \(e.g. \[1\]\)"),
])
def test_bad_labels(y, message):
    with pytest.raises(ValueError, match=message):
        make(y=y)


def test_n_classes_bounds_the_labels():
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 3\)"):
        make(y=labels(0), n_classes=3)
    assert make(y=labels(0), n_classes=C + 1, fit_intercept=False).c == C + 1


@pytest.mark.parametrize("y, message", [
    (np.zeros((N - 1, 3)), "y: expected targets of shape"),
    (np.zeros((N, S + 1, 3)), "y: expected targets of shape"),
    (np.full((N, 3), np.inf), "y: expected finite"),
    (np.zeros((N, 0)), "y: expected at least one output"),
])
def test_bad_squared_targets(y, message):
    with pytest.raises(ValueError, match=message):
        make(y=y, loss="squared")


def test_squared_targets_choose_pooled_or_token_level():
    assert make(y=np.zeros((N, 3)), loss="squared").pooled
    assert not make(y=np.zeros((N, S, 3)), loss="squared").pooled


@pytest.mark.parametrize("beta", [0, -1.0, float("nan"), float("inf"), "0.1", True])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta: expected a finite number > 0"):
        make(beta=beta)


def test_bad_loss_intercept_and_head():
    with pytest.raises(ValueError, match="loss: expected one of"):
        make(loss="hinge")
    with pytest.raises(ValueError, match="fit_intercept: expected True or False"):
        make(fit_intercept="yes")
    with pytest.raises(TypeError, match="head: expected a cvxattn.heads.Head"):
        make(head="attention")


@pytest.mark.parametrize("head, message", [
    (ca.heads.MLP(activation="gated", gates=np.zeros((3, D + 1))), r"gates: expected shape \(m, 4\)"),
    (ca.heads.SelfAttention(activation="gated", gates=np.zeros((3, D, D + 1))), "gates: expected shape"),
    (ca.heads.Mixer(activation="gated", gates=np.zeros((3, S, S, 1))), "gates: expected shape"),
    (ca.heads.FNO(grid=GRID, activation="gated", gates=np.zeros((3, S, D - 1))), "gates: expected shape"),
    (ca.heads.BlockFNO(groups=2, grid=GRID, activation="gated", gates=np.zeros((3, 2, S, D // 2))),
     r"gates: expected shape \(2, m, 10, 2\)"),
    (ca.heads.MLP(activation="gated", gates=np.zeros((0, D))), "gates: expected at least one"),
    (ca.heads.MLP(activation="gated", gates=np.full((2, D), np.nan)), "gates: expected finite"),
    (ca.heads.FNO(grid=(3, 3)), "grid: expected h·w = s"),
    (ca.heads.BlockFNO(groups=4, grid=GRID), "groups: expected B to divide"),
])
def test_bad_head_configuration(head, message):
    with pytest.raises(ValueError, match=message):
        make(head=head)


def test_explicit_gates_are_used_as_given():
    gates = np.random.default_rng(0).normal(size=(3, D, D))
    problem = make(head=ca.heads.SelfAttention(activation="gated", gates=gates))
    assert problem.head.n_gates == 3 and problem.head.n_blocks == 3
    np.testing.assert_array_equal(problem.head.gates.numpy(), gates)


def test_sampled_gates_follow_the_seed():
    a = make(head=ca.heads.MLP(activation="gated", n_gates=4, seed=3)).head.gates
    b = make(head=ca.heads.MLP(activation="gated", n_gates=4, seed=3)).head.gates
    c = make(head=ca.heads.MLP(activation="gated", n_gates=4, seed=4)).head.gates
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == (4, D)


def test_bad_head_arguments():
    with pytest.raises(ValueError, match="activation: expected one of"):
        ca.heads.MLP(activation="relu")
    with pytest.raises(ValueError, match="n_gates: expected None for activation='linear'"):
        ca.heads.SelfAttention(n_gates=3)
    with pytest.raises(ValueError, match="gates: expected None for activation='linear'"):
        ca.heads.Mixer(gates=np.zeros((1, S, S)))
    with pytest.raises(ValueError, match="n_gates: expected a positive integer"):
        ca.heads.MLP(activation="gated", n_gates=0)


def test_bad_solver_arguments():
    problem = make()
    with pytest.raises(ValueError, match="method: expected one of"):
        ca.solve(problem, method="sgd")
    for tol in (0, -1e-3, 1, 1.5, float("nan"), True):
        with pytest.raises(ValueError, match=r"tol: expected a relative gap in \(0, 1\)"):
            ca.solve(problem, tol=tol)
    with pytest.raises(ValueError, match=r"tol: expected a relative gap in \(0, 1\)"):
        ca.solve_path(problem, [0.1, 0.01], tol=2.0)
    with pytest.raises(ValueError, match="max_iter: expected a positive integer"):
        ca.solve(problem, max_iter=None)
    with pytest.raises(TypeError, match="problem: expected a cvxattn.Problem"):
        ca.solve("problem")
    with pytest.raises(ValueError, match="init: expected blocks"):
        ca.solve(problem, init=(torch.zeros(2, 2, 2), torch.zeros(C)))


def test_decision_function_checks_token_shape():
    sol = ca.solve(make(), tol=1e-6)
    with pytest.raises(ValueError, match="X: expected tokens of shape"):
        sol.decision_function(np.zeros((2, S + 1, D)))


@pytest.mark.parametrize("name,head", [t for t in TEN if t[0] in (
    "mlp-gated", "attention-linear", "fno-gated")], ids=["mlp-gated", "attention-linear",
                                                         "fno-gated"])
@pytest.mark.parametrize("targets", ["labels", "tokens"])
def test_centered_outputs_are_an_exact_change_of_variables(name, head, targets):
    """f(Z, b) equals the loss of the centered outputs at b' = b + p̄(Z), and the centered
    gradient is the adjoint of the centered duals, A*(λ − λ̄) (finite differences agree)."""
    rng = np.random.default_rng(3)
    X = tokens(3) + 2.0  # far from centred, as real tokens are
    y = labels(3) if targets == "labels" else torch.as_tensor(rng.normal(size=(N, S, C)))
    problem = ca.Problem(head, X, y, beta=0.1, loss="cross_entropy" if targets == "labels"
                         else "squared")
    Z = torch.as_tensor(rng.normal(size=(problem.head.n_blocks, *problem.head.block_shape)))
    b = torch.as_tensor(rng.normal(size=C))
    out = problem.outputs(Z)
    shifted = b + problem.output_mean(out)
    assert torch.allclose(problem.loss_of_outputs(problem.centered(out), shifted),
                          problem.loss_value(Z, b), rtol=1e-12, atol=0)
    value, gZ, gb = problem.loss_and_gradient(Z, shifted, centered=True)
    duals = problem.loss.gradient(problem.centered(out) + shifted, problem.y)
    duals = duals - duals.mean(dim=tuple(range(duals.ndim - 1)))
    V = torch.as_tensor(rng.normal(size=Z.shape))
    eps = 1e-6
    numeric = (problem.loss_and_gradient(Z + eps * V, shifted, centered=True)[0]
               - problem.loss_and_gradient(Z - eps * V, shifted, centered=True)[0]) / (2 * eps)
    assert float((gZ * V).sum()) == pytest.approx(float(numeric), rel=1e-6)
    # A*(λ − λ̄)/n paired with V equals ⟨λ − λ̄, A V⟩/n
    assert float((gZ * V).sum()) == pytest.approx(
        float((duals * problem.outputs(V)).sum()) / problem.n, rel=1e-9)


def test_without_intercept_nothing_is_centered():
    problem = ca.Problem(ca.heads.MLP(), tokens() + 1.0, labels(), beta=0.1,
                         fit_intercept=False)
    out = problem.outputs(torch.ones(1, D, C, dtype=torch.float64))
    assert torch.equal(problem.centered(out), out)
    assert torch.equal(problem.output_mean(out), torch.zeros(C, dtype=out.dtype))


def test_converting_tokens_beyond_the_memory_available_is_refused_before_allocating(
        monkeypatch):
    """Before, Problem copied the tokens to float64 (and checked them with a temporary larger
    than the copy) before any memory check; now a copy that cannot fit is refused first."""
    from cvxattn.solvers import memory

    X = tokens(0).to(torch.float32)
    monkeypatch.setattr(memory, "available_memory", lambda device=None: X.numel() * 8 - 1)
    with pytest.raises(ca.MemoryBudgetError, match=r"X: converting the tokens .* to "
                                                   r"torch.float64 needs"):
        make(X=X)
    assert make(X=X, dtype=torch.float32).X.data_ptr() == X.data_ptr()  # no copy: no check


def test_huge_finite_tokens_whose_lifted_data_overflow_are_refused():
    """Finite tokens near the float64 limit gave a problem whose lifted data (Gram matrices,
    FFT spectra) were inf, and a solve that reported NaN; now the lift is checked."""
    X = tokens(0) * 1e200
    problem = ca.Problem(ca.heads.SelfAttention(), X, labels(0), beta=0.1)
    for method in ("fista", "factorized"):  # the dense maps and the network's passes
        with pytest.raises(ValueError, match=r"X: expected tokens whose lifted data \('\w+' "
                                             r"of the attention head\) are finite .* up to "
                                             r"3.11e\+200"):
            ca.solve(problem, method=method)
    with pytest.raises(ValueError, match="X: expected values small enough to be summed"):
        make(X=torch.full((N, S, D), 1e308, dtype=torch.float64))
    with pytest.raises(ValueError, match="X: expected finite values, got NaN or inf"):
        make(X=torch.full((N, S, D), float("nan"), dtype=torch.float64))


def test_many_classes_without_samples_are_named_without_counting_each(monkeypatch):
    """n_classes far above n (a typo, 10**12) used to allocate a count per class."""
    with pytest.raises(ValueError, match=rf"y: {10**12 - C} of the {10**12} classes have no "
                                         r"sample \(e.g. \[6, 7, 8"):
        make(y=labels(0), n_classes=10**12)
