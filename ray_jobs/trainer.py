"""Ray Train glue shared by every trained stage: numpy columns -> Ray datasets -> TorchTrainer ->
the best checkpoint copied to ``<storage_dir>/checkpoints/best_model.pt``."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from recsys.train_loops.checkpointing import STATE_FILE


@dataclass
class ScalingSettings:
    """Ray Train ScalingConfig from YAML: CPU workers here, GPUs and many nodes on a cluster."""
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0


def to_ray_dataset(columns: dict[str, np.ndarray]):
    """Numpy columns (2-D arrays become tensor columns) -> a Ray dataset."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    table = pa.table({name: ArrowTensorArray.from_numpy(values) if values.ndim > 1 else pa.array(values)
                      for name, values in columns.items()})
    return ray.data.from_arrow(table)


def fit_torch(loop: Callable[[dict], None], loop_config: dict, datasets: dict[str, dict[str, np.ndarray]],
              scaling: ScalingSettings, storage_dir: Path, name: str, score: str,
              callbacks: list | None = None, max_failures: int = 2) -> dict:
    """Run ``loop`` on a TorchTrainer; ``train`` is split across workers, other datasets are given
    whole to every worker. Keeps the checkpoints best by metric ``score`` (higher is better).
    Returns {"best_model", "history", "best_metrics"}. Re-running with the same ``storage_dir``
    and ``name`` resumes from the last checkpoint.
    """
    import ray.data
    import torch
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # The per-epoch line of the training loops is the progress; dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    storage_dir = Path(storage_dir).resolve()
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker={"CPU": scaling.cpus_per_worker}),
        datasets={key: to_ray_dataset(columns) for key, columns in datasets.items()},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        # A failed worker group restarts from the last checkpoint (up to max_failures times).
        run_config=RunConfig(name=name, storage_path=str(storage_dir / "ray_results"), callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=score,
                                                                checkpoint_score_order="max")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1][score])
    target = storage_dir / "checkpoints" / "best_model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with best_checkpoint.as_directory() as directory:
        shutil.copy(Path(directory) / STATE_FILE, target)
    with result.checkpoint.as_directory() as directory:
        history = json.loads(torch.load(Path(directory) / STATE_FILE, weights_only=True)["history_json"])
    return {"best_model": str(target), "history": history, "best_metrics": best_metrics}
