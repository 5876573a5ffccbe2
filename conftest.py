"""Test-session settings shared by tests/ and the doctests in src/."""

import torch

# The test problems are tiny: one thread avoids the intra-op threading overhead that dominates
# their run time (and is pathological when the machine is busy).
torch.set_num_threads(1)

# Profiles of the property-based reliability suite (tests/reliability, docs/reliability.md):
# a few dozen cases per property in the default run, a thousand with --hypothesis-profile=deep.
from hypothesis import HealthCheck, settings  # noqa: E402

_HYPOTHESIS = dict(deadline=None, print_blob=True,
                   suppress_health_check=[HealthCheck.too_slow,
                                          HealthCheck.function_scoped_fixture,
                                          HealthCheck.data_too_large])
settings.register_profile("default", max_examples=30, **_HYPOTHESIS)
settings.register_profile("deep", max_examples=1000, **_HYPOTHESIS)
settings.load_profile("default")  # --hypothesis-profile=deep replaces it
