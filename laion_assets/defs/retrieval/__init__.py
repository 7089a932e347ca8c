"""Dagster wiring of retrieval: the knn_index asset."""
