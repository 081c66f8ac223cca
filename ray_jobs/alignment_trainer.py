"""Ray Train glue for JSON-encoder alignment: numpy features -> Ray datasets -> TorchTrainer.

Shared by the entrypoints that train a JSON encoder (the E1 evaluation, K-Fashion training, Tune).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from recsys.models.json_encoder import JsonEncoderConfig
from recsys.train_loops.alignment import AlignmentTrainConfig, train_alignment_loop


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


def fit_alignment(train: dict[str, np.ndarray], val: dict[str, np.ndarray], vocab_sizes: dict[str, int],
                  encoder: JsonEncoderConfig, training: AlignmentTrainConfig, scaling: ScalingSettings,
                  storage_dir: Path, name: str, callbacks: list | None = None,
                  init_model: str | None = None) -> dict:
    """Train with TorchTrainer and copy the best checkpoint (by validation Top-5) to
    ``storage_dir/checkpoints/best_model.pt``. Returns {"best_model", "history", "best_metrics"}.

    Re-running with the same ``storage_dir`` and ``name`` resumes from the last checkpoint.
    ``init_model``: a stage-1 ``state.pt`` the first epoch starts from.
    """
    from ray.train import CheckpointConfig, DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import ray.data

    # The per-epoch line of the training loop is the progress; dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    storage_dir = Path(storage_dir).resolve()
    trainer = TorchTrainer(
        train_alignment_loop,
        train_loop_config={"encoder": asdict(encoder), "train": asdict(training), "vocab_sizes": vocab_sizes,
                           "init_model": init_model},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker={"CPU": scaling.cpus_per_worker}),
        datasets={"train": to_ray_dataset(train), "val": to_ray_dataset(val)},
        dataset_config=DataConfig(datasets_to_split=["train"]),  # every worker validates on all of val
        run_config=RunConfig(name=name, storage_path=str(storage_dir / "ray_results"), callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_top5",
                                                                checkpoint_score_order="max")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1]["val_top5"])
    target = storage_dir / "checkpoints" / "best_model.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with best_checkpoint.as_directory() as directory:
        shutil.copy(Path(directory) / "state.pt", target)
    with result.checkpoint.as_directory() as directory:
        import torch

        history = json.loads(torch.load(Path(directory) / "state.pt", weights_only=True)["history_json"])
    return {"best_model": str(target), "history": history, "best_metrics": best_metrics}
