"""Checks of arguments at the public boundary, each a one-line error naming the argument, what
was expected and what was received. Python's bool is an int and NumPy's integers are not
Python ints: these checks accept ``numbers.Integral`` but never a bool.

>>> check_integer(3, "n_gates", low=1)
3
>>> check_integer(True, "n_gates", low=1)
Traceback (most recent call last):
    ...
ValueError: n_gates: expected an integer ≥ 1, got True
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import torch

__all__ = ["is_integer", "check_integer", "check_bool", "check_dtype", "check_device"]

FLOAT_DTYPES = (torch.float32, torch.float64)


def is_integer(value, low: int | None = None) -> bool:
    """An integer (Python's or NumPy's, not a bool), at least ``low`` when given."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_)) \
        and (low is None or value >= low)


def check_integer(value, name: str, low: int = 0) -> int:
    """``value`` as an int if it is an integer ≥ ``low``, else a ValueError."""
    if not is_integer(value, low):
        raise ValueError(f"{name}: expected an integer ≥ {low}, got {value!r}")
    return int(value)


def check_bool(value, name: str) -> bool:
    """``value`` as a bool if it is True or False (NumPy's too), else a ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_dtype(dtype, name: str = "dtype") -> torch.dtype:
    """``dtype`` if it is torch.float32 or torch.float64 (what the solvers compute in)."""
    if dtype not in FLOAT_DTYPES or not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name}: expected torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_device(device, name: str = "device") -> torch.device | None:
    """``device`` as a torch.device that this process can use; None stays None (the data's
    own device)."""
    if device is None:
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name}: expected a torch device such as 'cpu' or 'cuda', got "
                         f"{device!r} ({str(error).splitlines()[0][:80]})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}: expected an available device, got {str(device)!r} and this "
                         "process has no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name}: expected 'cpu' or a 'cuda' device, got {str(device)!r}")
    return device
