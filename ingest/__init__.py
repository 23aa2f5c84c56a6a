"""Files to `Document`s to `Chunk`s: loaders per format, token-aware chunking, content hashes.

The bottom layer: imports no other ragtune package, no ML model, no HTTP, no environment.
"""
