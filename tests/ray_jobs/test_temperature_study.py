"""The temperature study's fits on Ray Train: one per (temperature, seed), scored on the selection rows."""
import numpy as np
import pytest

from ray_jobs.common.alignment_trainer import ScalingSettings, temperature_runs
from ray_jobs.temperature_study import TemperatureStudyConfig
from recsys.config import ConfigError
from recsys.train_loops.alignment import AlignmentTrainConfig
from tests.ray_jobs.test_alignment_trainer import toy_alignment


def test_the_config_needs_two_seeds_and_two_temperatures():
    with pytest.raises(ConfigError, match="two distinct seeds"):
        TemperatureStudyConfig(seeds=[0])
    with pytest.raises(ConfigError, match="temperatures"):
        TemperatureStudyConfig(temperatures=[0.07, -1.0])


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_one_fit_per_temperature_and_seed(idle_ray, tmp_path):
    features, targets, sizes, encoder = toy_alignment(192, seed=2)
    data = {**features, "target": targets, "label": np.arange(192)}
    train = {k: v[:128] for k, v in data.items()}
    select = {k: v[128:] for k, v in data.items()}
    runs = temperature_runs(train, select, sizes, encoder, AlignmentTrainConfig(epochs=2, batch_size=32, lr=0.01),
                            ScalingSettings(), [0.05, 1.0], [0, 1], tmp_path)
    assert [(r["temperature"], r["seed"]) for r in runs] == [(0.05, 0), (0.05, 1), (1.0, 0), (1.0, 1)]
    assert all(0 <= r["mrr"] <= 1 and 0 <= r["top5"] <= 1 and r["best_epoch"] in (0, 1) for r in runs)
    # another seed is another run (shuffle, initialisation); the same seed again would resume the stored fit
    assert runs[0]["top5"] != runs[1]["top5"] or runs[0]["mrr"] != runs[1]["mrr"]
    assert {p.name for p in tmp_path.iterdir()} == {"t0.05_seed0", "t0.05_seed1", "t1.0_seed0", "t1.0_seed1"}
