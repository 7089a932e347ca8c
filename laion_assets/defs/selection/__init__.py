"""Wiring of selection: tags, subsets with their checks, bucket embeddings and histogram, the release gate."""
