"""The property-based reliability suite (docs/reliability.md). Its hypothesis profiles are
registered in the repository's top conftest.py, which pytest reads before its options:
``default`` (30 cases per property) and ``deep`` (1000)::

    python -m pytest -m reliability --hypothesis-profile=deep
"""
