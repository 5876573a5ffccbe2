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


def create(name: str, activation: str = "linear", n_gates: int | None = None, seed: int = 0,
           grid: tuple[int, int] | None = None, groups: int | None = None,
           gates=None) -> Head:
    """The head ``name`` of :data:`REGISTRY`; ``grid`` goes to the heads on a token grid (FNO,
    B-FNO), ``groups`` to the B-FNO, ``n_gates`` and explicit ``gates`` only to gated heads.

    >>> create("bfno", "gated", n_gates=3, grid=(4, 4), groups=2)
    BlockFNO(activation='gated', groups=2, grid=(4, 4), n_gates=3, seed=0)
    """
    if name not in REGISTRY:
        raise ValueError(f"head: expected one of {tuple(REGISTRY)}, got {name!r}")
    kwargs: dict = {"activation": activation, "seed": seed}
    if activation == "gated":
        kwargs.update(n_gates=n_gates, gates=gates)
    if issubclass(REGISTRY[name], BlockFNO):
        kwargs["grid"] = grid
    if name == BlockFNO.name and groups is not None:
        kwargs["groups"] = groups
    return REGISTRY[name](**kwargs)


__all__ = ["Head", "HeadNetwork", "MLP", "SelfAttention", "Mixer", "FNO", "BlockFNO",
           "REGISTRY", "create", "sample_gates"]
