"""LAION-POP: concept centroids, kNN selection with resolution and watermark filters, VLM captions."""
