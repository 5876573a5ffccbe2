"""Benchmarks of cvxattn against the peers a practitioner would use, as ratios.

``python -m bench SUITE --json PATH [--quick] [options]`` with SUITE one of ``cvxpy``,
``adamw``, ``sklearn``, ``scale``, ``roofline`` (docs/performance.md). Each suite prints a table
of ratios against a peer measured in the same run and writes every raw number to PATH.
"""
