"""Convex attention heads of SPEC.md §2, each a convex program and the network it equals.

``REGISTRY`` maps a short name to each mechanism; the estimator, the command line and the
contract tests iterate over it.
"""

from .attention import SelfAttention
from .base import Head, HeadNetwork
from .fno import FNO, BlockFNO
from .gates import sample_gates
from .mixer import Mixer
from .mlp import MLP

REGISTRY: dict[str, type[Head]] = {
    cls.name: cls for cls in (MLP, SelfAttention, Mixer, FNO, BlockFNO)
}

__all__ = ["Head", "HeadNetwork", "MLP", "SelfAttention", "Mixer", "FNO", "BlockFNO",
           "REGISTRY", "sample_gates"]
