"""Files to `Document`s to `Chunk`s: loaders per format, token-aware chunking, content hashes."""
