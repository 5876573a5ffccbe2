"""Fixtures shared by the test suite."""

import pytest

from tests.helpers import TEN, TEN_IDS


@pytest.fixture(params=TEN, ids=TEN_IDS)
def head(request):
    """Each of the ten programs of SPEC.md §2 (unbound)."""
    return request.param[1]
