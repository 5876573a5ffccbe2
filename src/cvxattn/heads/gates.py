"""Gates of the gated-ReLU heads (SPEC.md §2): sampled once from a seed, or given explicitly.

A gate fixes the on/off pattern 1{· ≥ 0} of a ReLU so that the program stays convex. Gates are
standard normal by default; several heads may share one gate.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_gates", "check_gates"]


def sample_gates(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal gates of ``shape`` from a private generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def check_gates(gates, expected: tuple[int, ...], head: str) -> torch.Tensor:
    """Validate explicit gates: shape ``expected`` (the first axis, m, is free), all finite."""
    gates = torch.as_tensor(np.asarray(gates) if not torch.is_tensor(gates) else gates)
    gates = gates.detach().to(torch.float64)
    shape = tuple(gates.shape)
    free = [i for i, e in enumerate(expected) if e == -1]
    ok = len(shape) == len(expected) and all(
        e == -1 or e == g for e, g in zip(expected, shape)
    )
    if not ok:
        want = "(" + ", ".join("m" if e == -1 else str(e) for e in expected) + ")"
        raise ValueError(f"gates: expected shape {want} for {head}, got {shape}")
    if any(shape[i] == 0 for i in free):
        raise ValueError(f"gates: expected at least one gate for {head}, got shape {shape}")
    if not torch.isfinite(gates).all():
        raise ValueError(f"gates: expected finite values for {head}, got NaN or inf")
    return gates
