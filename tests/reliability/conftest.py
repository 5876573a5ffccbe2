"""Profiles of the property-based reliability suite (docs/reliability.md).

The default run draws a few dozen cases per property; the deep profile, for a longer search::

    python -m pytest tests/reliability -m reliability --hypothesis-profile=deep
"""

from hypothesis import HealthCheck, settings

_SETTINGS = dict(deadline=None, derandomize=False, print_blob=True,
                 suppress_health_check=[HealthCheck.too_slow,
                                        HealthCheck.function_scoped_fixture,
                                        HealthCheck.data_too_large])
settings.register_profile("default", max_examples=30, **_SETTINGS)
settings.register_profile("deep", max_examples=1000, **_SETTINGS)
settings.load_profile("default")  # --hypothesis-profile=deep replaces it
