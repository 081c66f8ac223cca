"""Shared stores: PostgreSQL (embedded or external, with pgvector) and the vector index on it."""
