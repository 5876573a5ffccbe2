"""Bad inputs at the API boundary, generated: every argument of ``Problem``, ``solve``, the
heads and ``decision_function`` is drawn from valid values and from wrong ones (wrong types,
shapes, ranges, NaN and inf, bools for integers, huge finite values). The properties:

- all arguments valid: the call succeeds, and a solve's reported objective is the objective
  of its own point and its bounds bracket the true optimum (no silently different result);
- some argument wrong: a one-line ValueError, TypeError or MemoryBudgetError raised by
  cvxattn's own checks (never from inside NumPy or torch) whose message starts with the name of
  one of the wrong arguments.
"""

from __future__ import annotations

import traceback
import warnings

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import cvxattn as ca
from cvxattn.solvers import ConvergenceWarning
from tests.helpers import C, D, GRID, N, S, TEN, labels, tokens

pytestmark = pytest.mark.reliability


def ok(*values):
    """Valid arguments."""
    return st.sampled_from(values).map(lambda v: (v, frozenset()))


def bad(*pairs):
    """Wrong arguments as (value, names): the error must name one of ``names``."""
    return st.sampled_from(pairs).map(lambda pair: (pair[0], frozenset(pair[1])))


def arguments(data, table: dict) -> dict:
    """Tagged arguments drawn from ``table`` {name: (valid strategy, wrong strategy)}: at most
    two wrong ones (often none), so that both outcomes are searched."""
    wrong = data.draw(st.sets(st.sampled_from(sorted(table)), max_size=2), label="wrong")
    return {name: data.draw(table[name][name in wrong], label=name) for name in table}


def call(function, arguments: dict):
    """``function(**arguments)`` for tagged arguments {name: (value, names if wrong)}: the
    result when all are valid, None after checking the error when one is not."""
    wrong = frozenset().union(*(names for _, names in arguments.values()))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # short solves stop early
            result = function(**{k: v for k, (v, _) in arguments.items()})
    except (ValueError, TypeError, MemoryError) as error:
        where = traceback.extract_tb(error.__traceback__)[-1].filename
        message = str(error)
        assert wrong, f"valid arguments refused: {type(error).__name__}: {message}"
        assert "/cvxattn/" in where, f"raised inside a dependency ({where}): {message}"
        assert "\n" not in message, f"not one line: {message!r}"
        named = message.split(":")[0]
        assert named in wrong, f"expected an error naming one of {sorted(wrong)}: {message}"
        event(f"refused, naming {named}")
        return None
    assert not wrong, f"wrong {sorted(wrong)} accepted"
    event("accepted")
    return result


# ------------------------------------------------------------------ values
X0, Y0 = tokens(0), labels(0)


def _with(value, index, X=X0):
    out = X.clone()
    out.view(-1)[index % out.numel()] = value
    return out


X_ = lambda n: ("X",) * n  # noqa: E731
TOKENS = (
    ok(X0, X0.numpy(), X0.numpy().astype(np.float32), X0.tolist(),
       X0.clone().requires_grad_(True), np.round(X0.numpy() * 10).astype(np.int64)),
    st.one_of(
        st.tuples(st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                  st.integers(0, N * S * D - 1)).map(lambda p: (_with(*p), frozenset("X"))),
        bad(*((v, X_(1)) for v in (X0 * 1e308, X0[0], X0[None], X0[:0],
                                   X0.to(torch.complex128), X0 > 0, np.full((N, S, D), "a"),
                                   [[[1.0]], [[1.0, 2.0]]], None)))),
)
LABELS = (
    ok(Y0, Y0.numpy().astype(np.int32), Y0.numpy().astype(np.float64), Y0.tolist()),
    bad(*((v, ("y",)) for v in (np.r_[Y0.numpy()[:-1], -1], Y0.numpy() + 0.5, Y0[:-1],
                                np.r_[Y0.numpy()[:-1], np.nan], Y0[:, None],
                                Y0.numpy().astype(str), np.full(N, 2**63 + 1, dtype=np.uint64),
                                np.full(N, 1e30), Y0 > 2))),
)
PROBLEM = {
    "head": (st.sampled_from(TEN).map(lambda pair: (pair[1], frozenset())),
             bad((None, ("head",)), ("mlp", ("head",)), (ca.heads.MLP, ("head",)))),
    "X": TOKENS,
    "y": LABELS,
    "beta": (ok(0.1, 1e-3, np.float32(0.5), 2),
             bad(*((v, ("beta",)) for v in (0, -1.0, float("nan"), float("inf"), "0.1", True,
                                            None)))),
    "loss": (ok("cross_entropy"), bad(("hinge", ("loss",)), (None, ("loss",)))),
    "fit_intercept": (ok(True, False, np.True_),
                      bad(*((v, ("fit_intercept",)) for v in (1, "yes", None)))),
    "n_classes": (ok(None, C), bad((3, ("y", "n_classes")),
                                   *((v, ("n_classes",)) for v in (0, -2, True, 6.0, "6")))),
    "dtype": (ok(torch.float64, torch.float32),
              bad(*((v, ("dtype",)) for v in (torch.float16, torch.int64, "float64",
                                               np.float64)))),
    "device": (ok(None, "cpu", torch.device("cpu")),
               bad(*((v, ("device",)) for v in ("gpu", "cuda:0", 3)))),
}


@given(data=st.data())
def test_problem_arguments(data):
    args = arguments(data, PROBLEM)
    problem = call(ca.Problem, args)
    if problem is not None:
        assert (problem.n, problem.s, problem.d, problem.c) == (N, S, D, C)
        assert problem.X.dtype == args["dtype"][0] and not problem.X.requires_grad


# ------------------------------------------------------------------ solve
_PROBLEM = ca.Problem(ca.heads.MLP(activation="gated", n_gates=2, seed=1), X0, Y0, beta=0.05)
_OPTIMUM = ca.solve(_PROBLEM, method="fista", tol=1e-10, max_iter=20000).objective
_Z, _B = _PROBLEM.zeros()
SEEDS = (ok(0, 7, np.int64(3)), bad(*((v, ("seed",)) for v in (-1, 1.5, "a", True))))
SOLVE = {
    "method": (ok("auto", "fista", "hybrid", "factorized"),
               bad(("newton", ("method",)), (None, ("method",)))),
    "tol": (ok(1e-3, 0.5, np.float64(1e-6)),
            bad(*((v, ("tol",)) for v in (0, 1, 2.0, -1e-3, float("nan"), "1e-3", True)))),
    "max_iter": (st.integers(1, 30).map(lambda k: (k, frozenset())),
                 bad(*((v, ("max_iter",)) for v in (0, -3, 2.5, True, "10")))),
    "init": (ok(None, (_Z, _B), (_Z.numpy(), _B.numpy()), (_Z + 0.01, _B.tolist())),
             bad(*((v, ("init",)) for v in ((_Z[:, :-1], _B), (_Z * float("nan"), _B),
                                             (_Z, _B, _B), (_Z,), "zeros", (_Z, "b"))))),
    "seed": SEEDS,
    "verbose": (ok(False), bad(("yes", ("verbose",)), (1, ("verbose",)))),
    "memory_budget": (ok(None, 2**33),
                      bad(*((v, ("memory_budget",)) for v in (-1, 0, "1GB", float("nan"), True,
                                                              1000)))),
    "callback": (ok(None, lambda checkpoint: None),
                 bad((3, ("callback",)), ("print", ("callback",)))),
}


@given(data=st.data())
def test_solve_arguments(data):
    args = arguments(data, SOLVE)
    solution = call(lambda **kw: ca.solve(_PROBLEM, **kw), args)
    if solution is not None:  # what it reports is true of its own point and of the optimum
        scale = max(1.0, abs(_OPTIMUM))
        own = _PROBLEM.objective(solution.blocks, solution.intercept)
        assert abs(own - solution.objective) <= 1e-8 * scale
        assert solution.lower_bound <= _OPTIMUM + 1e-9 * scale
        assert _OPTIMUM <= solution.objective + 1e-9 * scale
        assert solution.status in ("optimal", "max_iter", "stalled", "inaccurate")
        if solution.status == "optimal":
            assert solution.gap <= args["tol"][0]


# ------------------------------------------------------------------ heads
HEADS = {
    "name": (ok("mlp", "attention", "mixer", "fno", "bfno"), bad(("transformer", ("head",)))),
    "activation": (ok("linear", "gated"), bad(("relu", ("activation",)))),
    "n_gates": (ok(None, 1, 3), bad(*((v, ("n_gates",)) for v in (0, True, 2.5, "2")))),
    "seed": SEEDS,
    "grid": (ok(GRID, list(GRID), None),
             bad(*((v, ("grid",)) for v in ((3, 3), "2x5", (2.0, 5.0), (True, 10), (2, 5, 1),
                                            10)))),
    "groups": (ok(None, 1, 2), bad(*((v, ("groups",)) for v in (3, 0, True, 1.0)))),
}


@given(data=st.data())
def test_head_arguments(data):
    args = arguments(data, HEADS)
    name, activation, n_gates, grid, groups = (args[k] for k in ("name", "activation",
                                                                  "n_gates", "grid", "groups"))
    # create passes each argument only to the heads that take it: n_gates to gated heads, grid
    # to the FNO heads, groups to the B-FNO; elsewhere it is ignored, whatever it is
    if activation[0] != "gated":
        n_gates = (n_gates[0], frozenset())
    if "fno" not in str(name[0]):
        grid = (grid[0], frozenset())
    if name[0] != "bfno":
        groups = (groups[0], frozenset())
    if name[0] in ("fno", "bfno") and grid[0] is None:  # s = 10 is no square: a grid is needed
        grid = (None, frozenset({"grid"}))
    if name[0] == "bfno" and groups[0] is None:  # the default, 5 groups, divides neither d nor c
        groups = (None, frozenset({"groups"}))

    def build(**kw):
        return ca.heads.create(**kw).bind(S, D, C)

    head = call(build, {**args, "n_gates": n_gates, "grid": grid, "groups": groups})
    if head is not None:
        data = head.lift(X0)
        Z = torch.zeros(head.n_blocks, *head.block_shape, dtype=torch.float64)
        assert head.pooled(Z, data).shape == (N, C)


# ------------------------------------------------------------------ predictions
_SOLUTION = ca.solve(_PROBLEM, tol=1e-6)


@given(data=st.data())
def test_decision_function_input(data):
    out = call(_SOLUTION.decision_function, arguments(data, {"X": TOKENS}))
    if out is not None:
        assert out.shape == (N, C) and bool(torch.isfinite(out).all())
