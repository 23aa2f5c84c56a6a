"""Performance benchmarks, run as `python -m eval.bench.ingest` (`.serve`, `.train`); never tests.

May import serve's core, retrieval, tuning, ingest and the comparisons; never serve's shell.
"""
