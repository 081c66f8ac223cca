"""Entrypoints (``python -m ray_jobs.<stage>`` / ``ray job submit -- python -m ray_jobs.<stage>``).

Each stage parses a YAML config into a typed dataclass, builds the Ray Data / Train / Tune work
around functions from ``recsys`` and writes a run directory of artifacts. Kept thin on purpose.
"""
