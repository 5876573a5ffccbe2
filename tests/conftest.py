"""Fixtures shared by the test suite."""

import pytest
import torch

from tests.helpers import TEN, TEN_IDS

# The test problems are tiny: one thread avoids the intra-op threading overhead that dominates
# their run time (and is pathological when the machine is busy).
torch.set_num_threads(1)


@pytest.fixture(params=TEN, ids=TEN_IDS)
def head(request):
    """Each of the ten programs of SPEC.md §2 (unbound)."""
    return request.param[1]
