"""Comparisons of answer modes (benchmarks: `eval.bench`), through the same code the server runs.

May import serve's core (Pipeline, Settings), retrieval, tuning, ingest; never serve's shell.
"""
