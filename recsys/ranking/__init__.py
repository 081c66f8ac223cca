"""Reranking recipes over retrieved candidate lists (models: ``recsys.models.rerankers``)."""
