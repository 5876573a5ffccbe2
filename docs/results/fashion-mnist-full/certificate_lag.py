"""Where the small-β solves of the full table spend their time: the fit or its certificate?

The gated FNO (the table's gates and grid) on N images drawn from the cached full training
tokens (standardized as the table does), down the path 1e-3, 3e-4, 1e-4 (each to a gap of
1e-2, as the table's path does), then 3e-5 for 3,000 iterations. Printed: each solve's end;
along the last one, the objective's distance to its final value against the certified gap;
last, where the final point's gap comes from. With Λ = ∇ℓ at the final point and
θ = min(1, β / max_g σ_g), σ_g the spectral norm of block g's gradient, P − D(θΛ) is the sum
of P − D(Λ), zero at the optimum (Fenchel–Young: it is Σ_g β‖Z_g‖_* + ⟨∇_g, Z_g⟩), and
D(Λ) − D(θΛ), the price of scaling Λ into the dual-norm ball because some σ_g > β. A
negative first term means P falls along the ray t ↦ P(tZ) at t = 1: the point is not yet
optimal; the best t along that ray (intercept re-fitted) is printed with P's fall there.

    python docs/results/fashion-mnist-full/certificate_lag.py \\
        features/fashion-mnist-train-efficientnet-lite0-224-d10-pca-all 6000

(the cache is made by `cvxattn features --split train --d 10 --pool pca`: 8 minutes here).
Output of 2026-12-07 on this repository's 2-core CPU, one thread: certificate_lag.txt.
"""

import sys

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from cvxattn import Problem, features, heads, solve
from cvxattn.solvers.certificate import certify

cache, n = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(1)  # a script, like the command line: it may set threads
tokens = features.load(cache, verify=False)
X = np.asarray(tokens.X, np.float32)
flat = X.reshape(-1, X.shape[2]).astype(np.float64)
X = ((X - flat.mean(0)) / flat.std(0)).astype(np.float32)
index = np.random.default_rng(0).choice(len(tokens.y), n, replace=False)
X, y = X[index], np.asarray(tokens.y)[index]
head = heads.create("fno", "gated", grid=tuple(tokens.grid))
init = None
for beta in (1e-3, 3e-4, 1e-4, 3e-5):
    last = beta == 3e-5
    log = []
    problem = Problem(head, X, y, beta=beta, n_classes=10, dtype=torch.float32)
    init = solve(problem, tol=1e-4 if last else 1e-2, max_iter=3000 if last else 10000,
                 init=init, callback=log.append)
    print(f"beta {beta:g}: {init.status} gap {init.gap:.2e} after {init.n_iter} iterations, "
          f"{init.seconds:.0f} s ({init.method})", flush=True)
final = log[-1].objective
for c in log[::max(1, len(log) // 25)]:
    print(f"  iteration {c.iteration:5d}  (P - P_final)/P_final {(c.objective - final) / final:.2e}"
          f"  gap {c.gap:.2e}")

problem = problem.astype(torch.float64)  # the final point's certificate, in float64
Z = init.blocks.double()
cert = certify(problem, Z, init.intercept.double())
beta, sigma = problem.beta, cert.spectral_norms
nuclear = torch.linalg.svdvals(Z).sum(-1)  # ‖Z_g‖_* per block
active = nuclear > 1e-6 * float(nuclear.max())
over = sigma > beta
unscaled = float(problem.loss.dual_value(cert.duals, problem.y))
P, D = cert.objective, cert.lower_bound
print(f"final point: {len(sigma)} blocks of {tuple(Z.shape[1:])}, {int(active.sum())} nonzero; "
      f"{int(over.sum())} with sigma_g > beta ({int((over & active).sum())} of them nonzero), "
      f"max sigma_g / beta = 1 + {float(sigma.max()) / beta - 1:.2e}, "
      f"theta = 1 - {1 - cert.theta:.2e}")
print(f"  gap (P - D(theta L))/P {(P - D) / P:.2e} = (P - D(L))/P {(P - unscaled) / P:.2e}"
      f" + (D(L) - D(theta L))/P {(unscaled - D) / P:.2e}")
print(f"  beta * sum_g |Z_g|_* / P = {beta * float(nuclear.sum()) / P:.3f}")

ray = minimize_scalar(lambda t: certify(problem, t * Z, cert.intercept).objective,
                      bounds=(0.5, 2.0), method="bounded", options={"xatol": 1e-4})
print(f"  along t Z: P(t) is least at t = {ray.x:.4f}, where P falls by {(P - ray.fun) / P:.2e}"
      f" of P (so P - P* >= that much)")
