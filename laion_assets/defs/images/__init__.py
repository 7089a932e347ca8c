"""Wiring of the URL chain: images and image_embeddings, the downloader and CLIP resources."""
