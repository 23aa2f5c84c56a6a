"""Generators, LoRA training and the adapter registry (see the tuning issue)."""
