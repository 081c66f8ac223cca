"""Evaluation metrics, each defined once and tested against hand-computed values."""
