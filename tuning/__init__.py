"""Generators (llama.cpp, transformers + peft, remote, echo), LoRA training, adapter registry.

May import `ingest` only (never `retrieval`, `serve`, `eval`, HTTP or the environment).
"""
