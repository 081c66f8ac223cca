"""Paired bootstrap over users: the one resampling both evaluation protocols (E2, E3) report."""
from __future__ import annotations

import numpy as np


def bootstrap_means(difference: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``samples`` resamples (with replacement) of per-user differences A - B."""
    difference = np.asarray(difference, dtype=np.float64)
    return np.array([difference[rng.integers(0, len(difference), len(difference))].mean() for _ in range(samples)])
