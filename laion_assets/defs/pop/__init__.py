"""Dagster wiring of LAION-POP: the captioning model resource (and the pop assets beside it)."""
