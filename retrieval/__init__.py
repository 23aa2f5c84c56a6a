"""Embedders, the persistent FAISS + SQLite `Index`, incremental indexing and the `Retriever`."""
