"""Aesthetic predictors: loading and identity, scoring stored embeddings, staleness, training, the active config."""
