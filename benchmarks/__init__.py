"""Reproducible measurements: `python -m benchmarks.NAME --json`."""
