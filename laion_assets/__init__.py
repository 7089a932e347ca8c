"""laion-assets: the LAION-Aesthetics pipeline as a reproducible Dagster asset graph.

Pure logic (formats, hashing, predictors, filters, stats) lives in the top-level modules and never imports
dagster; the Dagster wiring lives in :mod:`laion_assets.defs`.
"""

__version__ = "0.1.0"
