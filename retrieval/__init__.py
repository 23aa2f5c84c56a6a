"""Embedders, the persistent FAISS + SQLite `Index`, incremental indexing and the `Retriever`.

May import `ingest` only (never `tuning`, `serve`, `eval`, HTTP or the environment).
"""
