"""Convex attention heads of SPEC.md §2, each a convex program and the network it equals.

``REGISTRY`` maps a short name to each mechanism; the estimator, the command line and the
contract tests iterate over it.
"""

import inspect

from .attention import SelfAttention
from .base import Head, HeadNetwork
from .fno import FNO, BlockFNO
from .gates import sample_gates
from .mixer import Mixer
from .mlp import MLP

REGISTRY: dict[str, type[Head]] = {
    cls.name: cls for cls in (MLP, SelfAttention, Mixer, FNO, BlockFNO)
}


# the gates m of each gated head when none are given: one place, the classes themselves
DEFAULT_GATES: dict[str, int] = {name: cls.default_n_gates for name, cls in REGISTRY.items()}


def parameters(name: str) -> tuple[str, ...]:
    """The constructor parameters of the head ``name`` (e.g. whether it takes a grid or
    groups), read from its signature: callers ask this instead of branching on names."""
    if name not in REGISTRY:
        raise ValueError(f"head: expected one of {tuple(REGISTRY)}, got {name!r}")
    return tuple(inspect.signature(REGISTRY[name]).parameters)


def create(name: str, activation: str = "linear", n_gates: int | None = None, seed: int = 0,
           grid: tuple[int, int] | None = None, groups: int | None = None,
           gates=None) -> Head:
    """The head ``name`` of :data:`REGISTRY`. Each argument goes to the heads whose
    constructor takes it (``grid`` to the FNO heads, ``groups`` to the B-FNO; ``n_gates``
    and explicit ``gates`` only to gated heads); None leaves the head's default.

    >>> create("bfno", "gated", n_gates=3, grid=(4, 4), groups=2)
    BlockFNO(activation='gated', groups=2, grid=(4, 4), n_gates=3, seed=0)
    >>> head = create("fno", grid=(2, 3))
    >>> create(head.name, **head.config()).config() == head.config()
    True
    """
    accepted = parameters(name)
    offered = {"activation": activation, "seed": seed, "grid": grid, "groups": groups}
    if activation == "gated":
        offered.update(n_gates=n_gates, gates=gates)
    return REGISTRY[name](**{k: v for k, v in offered.items()
                            if k in accepted and (v is not None or k == "seed")})


__all__ = ["DEFAULT_GATES", "parameters", "Head", "HeadNetwork", "MLP", "SelfAttention",
           "Mixer", "FNO", "BlockFNO", "REGISTRY", "create", "sample_gates"]
