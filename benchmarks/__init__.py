"""Runnable benchmarks: each ``bench_*.py`` measures a hot path beside the raw floor it is built on."""
