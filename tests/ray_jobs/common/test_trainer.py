"""fit_torch: a finished fit comes back from its stored result without starting Ray Train again."""
import json
import time

import numpy as np
import pytest
import torch

from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.trainer import RESULT_FILE, finished_fit, fit_key, fit_torch, scaling_config, torch_config
from recsys.train_loops.checkpointing import report_epoch, restore


def tiny_loop(config: dict) -> None:
    """A few 'epochs' of a one-weight model; the score grows with the epoch."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    start_epoch, best_score, history = restore(model, optimizer, scheduler, "cpu")
    for epoch in range(start_epoch, config["epochs"]):
        metrics = {"epoch": epoch, "score": config["lr"] * (epoch + 1)}
        history.append(metrics)
        best_score = max(best_score, metrics["score"])
        report_epoch(metrics, history, model, optimizer, scheduler, best_score, {})


DATA = {"train": {"x": np.arange(8, dtype=np.float32)}}


def test_fit_key_follows_loop_config_and_data():
    key = fit_key(tiny_loop, {"epochs": 2, "lr": 0.1}, DATA, "tiny", "score")
    assert key == fit_key(tiny_loop, {"lr": 0.1, "epochs": 2}, {"train": {"x": np.arange(8, dtype=np.float32)}},
                          "tiny", "score")
    assert key != fit_key(tiny_loop, {"epochs": 3, "lr": 0.1}, DATA, "tiny", "score")
    assert key != fit_key(tiny_loop, {"epochs": 2, "lr": 0.1}, {"train": {"x": np.arange(1, 9, dtype=np.float32)}},
                          "tiny", "score")
    assert key != fit_key(tiny_loop, {"epochs": 2, "lr": 0.1}, DATA, "other", "score")
    # Arrays inside the config count by content, not by their (elided) repr.
    big = np.zeros(5000)
    changed = big.copy()
    changed[2500] = 1
    assert fit_key(tiny_loop, {"stats": big}, DATA, "t", "s") != fit_key(tiny_loop, {"stats": changed}, DATA, "t", "s")


def test_finished_fit_needs_the_same_key_and_the_model_file(tmp_path):
    best_model = tmp_path / "checkpoints" / "best_model.pt"
    best_model.parent.mkdir()
    stored = {"best_model": str(best_model), "history": [{"epoch": 0}], "best_metrics": {"score": 0.5}}
    (best_model.parent / RESULT_FILE).write_text(json.dumps({"key": "k", **stored}))
    assert finished_fit(best_model, "k") is None  # no model file
    best_model.write_bytes(b"weights")
    assert finished_fit(best_model, "k") == stored
    assert finished_fit(best_model, "other") is None


@pytest.mark.ray
def test_a_finished_fit_is_not_launched_again(idle_ray, tmp_path, monkeypatch):
    config = {"epochs": 2, "lr": 0.1}
    fitted = fit_torch(tiny_loop, config, DATA, ScalingSettings(), tmp_path, "tiny", "score")
    assert [h["epoch"] for h in fitted["history"]] == [0, 1]
    assert fitted["best_metrics"]["score"] == pytest.approx(0.2)

    started = time.perf_counter()
    again = fit_torch(tiny_loop, config, DATA, ScalingSettings(), tmp_path, "tiny", "score")
    assert time.perf_counter() - started < 1.0
    assert again == json.loads(json.dumps(fitted))

    # Another loop config launches Ray Train (which would resume from the last checkpoint).
    import ray.train.torch

    class Launched(Exception):
        pass

    def launch(*args, **kwargs):
        raise Launched

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", launch)
    with pytest.raises(Launched):
        fit_torch(tiny_loop, {**config, "epochs": 3}, DATA, ScalingSettings(), tmp_path, "tiny", "score")


def test_gpu_settings_ask_ray_for_one_gpu_per_worker_and_use_nccl():
    """The GPU wiring checked on CPU through what is asked of Ray: no GPU is needed to see the request."""
    gpu = ScalingSettings(num_workers=2, use_gpu=True, cpus_per_worker=4, placement_strategy="SPREAD")
    config = scaling_config(gpu)
    assert config.use_gpu and config.num_workers == 2 and config.placement_strategy == "SPREAD"
    assert config.num_gpus_per_worker == 1 and config.num_cpus_per_worker == 4
    assert config.total_resources == {"CPU": 8, "GPU": 2}  # what the placement group reserves
    assert torch_config(gpu).backend == "nccl"
    cpu = scaling_config(ScalingSettings(num_workers=2, cpus_per_worker=0.5))
    assert not cpu.use_gpu and cpu.total_resources == {"CPU": 1.0}
    assert torch_config(ScalingSettings(num_workers=2)).backend == "gloo"
