"""Dagster wiring: assets, checks, resources, partitions and sensors over the pure modules of laion_assets."""
