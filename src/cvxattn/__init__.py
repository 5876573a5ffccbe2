"""cvxattn: convex attention heads solved to certified global optimality.

Sahiner et al., "Unraveling Attention via Convex Duality" (ICML 2022): a self-attention,
MLP-Mixer or FNO block equals a convex program with a block nuclear-norm regularizer. Each head
here is that program and the network it equals; ``solve`` returns the global optimum with a
duality-gap certificate.
"""

from . import explain, heads
from .estimator import ConvexHeadClassifier
from .problem import Problem
from .solvers import (CertificateInfo, ConvergenceWarning, MemoryBudgetError,
                      RegularizationPath, Solution, Status, certify, solve, solve_path)

__all__ = ["heads", "explain", "Problem", "solve", "solve_path", "RegularizationPath",
           "certify", "Solution", "Status", "CertificateInfo", "ConvergenceWarning",
           "MemoryBudgetError",
           "ConvexHeadClassifier"]
__version__ = "0.1.0"
