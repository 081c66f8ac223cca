"""Shared fixtures: the real data in ../shared/data and one Ray runtime for the whole session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FASHIONREC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (the real K-Fashion samples, Myntra catalog and H&M subset)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} does not exist (set FASHIONREC_SHARED_DATA "
                    "to its location to run the real-data tests)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kfashion_samples(shared_data) -> Path:
    path = shared_data / "kfashion_samples"
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray for every test that needs it (starting Ray costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield ray
    ray.shutdown()
