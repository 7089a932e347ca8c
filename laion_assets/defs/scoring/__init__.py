"""Wiring of scoring: aesthetic_scores, re-scoring, training, the predictors resource, the rescore schedule."""
