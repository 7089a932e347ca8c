"""Wiring of the release: KV, galleries, release, hf_release, and their resources."""
