"""CVXPY reference solver for small problems (the test oracle).

The head's linear map is written out as a dense matrix A (rows: outputs, columns: vec(Z) in
C order) and handed to CVXPY with log-sum-exp or squared loss and one ``normNuc`` per block.
This builds the lifted data explicitly, so it is for tiny instances only.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..problem import Problem
from .certificate import certify
from .solution import CertificateInfo, Solution, Status

__all__ = ["solve_cvxpy", "map_matrix"]


def map_matrix(problem: Problem) -> torch.Tensor:
    """The dense matrix of Z ↦ p(Z): shape (number of outputs, G·p·q)."""
    Z0, _ = problem.zeros()
    jac = torch.autograd.functional.jacobian(problem.outputs, Z0, vectorize=True)
    return jac.reshape(-1, Z0.numel())


def solve_cvxpy(problem: Problem, solver: str | None = None, verbose: bool = False
                ) -> Solution:
    """Solve with CVXPY (Clarabel by default, SCS if asked) and certify the result."""
    try:
        import cvxpy as cp
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        raise ImportError("method='cvxpy' needs CVXPY: pip install 'cvxattn[reference]'") \
            from error
    start = time.perf_counter()
    solver = solver or "CLARABEL"
    G, (p, q) = problem.head.n_blocks, problem.head.block_shape
    n, c = problem.n, problem.c
    A = map_matrix(problem).cpu().numpy()  # (outputs, G·p·q)
    blocks = [cp.Variable((p, q)) for _ in range(G)]
    z = cp.hstack([cp.vec(Zg, order="C") for Zg in blocks])
    b = cp.Variable(c) if problem.fit_intercept else np.zeros(c)
    rows = A.shape[0] // c
    out = cp.reshape(A @ z, (rows, c), order="C") + np.ones((rows, 1)) @ cp.reshape(b, (1, c), order="C")
    y = problem.y.cpu().numpy()
    if problem.loss.name == "cross_entropy":
        onehot = np.eye(c)[y]
        loss = (cp.sum(cp.log_sum_exp(out, axis=1)) - cp.sum(cp.multiply(onehot, out))) / n
    else:
        loss = 0.5 * cp.sum_squares(out - y.reshape(rows, c)) / n
    objective = loss + problem.beta * sum(cp.normNuc(Zg) for Zg in blocks)
    program = cp.Problem(cp.Minimize(objective))
    options = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10} \
        if solver == "CLARABEL" else {"eps": 1e-9, "max_iters": 200_000}
    program.solve(solver=solver, verbose=verbose, **options)
    if blocks[0].value is None:
        raise RuntimeError(f"CVXPY ({solver}) found no solution: status {program.status}")
    Z = torch.as_tensor(np.stack([Zg.value for Zg in blocks])).to(problem.X)
    b0 = torch.as_tensor(b.value if problem.fit_intercept else b).to(problem.X)
    cert = certify(problem, Z, b0)
    return Solution.of(problem, dense=Z, intercept=cert.intercept,
                       objective=cert.objective, lower_bound=cert.lower_bound, gap=cert.gap,
                       status=Status.OPTIMAL if program.status == "optimal"
                       else Status.INACCURATE,
                       method=f"cvxpy-{solver.lower()}", n_iter=0,
                       seconds=time.perf_counter() - start,
                       certificate=CertificateInfo(cert.method))
