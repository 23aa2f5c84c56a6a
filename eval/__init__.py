"""Comparisons of answer modes and performance benchmarks, through the same code the server runs."""
