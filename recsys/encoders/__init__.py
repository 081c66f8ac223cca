"""Frozen encoders whose embeddings the trained models align to (text: sentence-transformers)."""
