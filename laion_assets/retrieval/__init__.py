"""Retrieval over the embeddings: the kNN index, queries, the clip-retrieval-compatible search service."""
