"""Ray Train entry for JSON-encoder training (stage 1 and stage 2), shared by the K-Fashion
training, the E1 evaluation and Tune."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from recsys.models.json_encoder import JsonEncoderConfig
from recsys.train_loops.alignment import AlignmentTrainConfig, train_alignment_loop
from ray_jobs.trainer import ScalingSettings, fit_torch

__all__ = ["ScalingSettings", "fit_alignment"]


def fit_alignment(train: dict[str, np.ndarray], val: dict[str, np.ndarray], vocab_sizes: dict[str, int],
                  encoder: JsonEncoderConfig, training: AlignmentTrainConfig, scaling: ScalingSettings,
                  storage_dir: Path, name: str, callbacks: list | None = None,
                  init_model: str | None = None) -> dict:
    """Train with TorchTrainer and copy the best checkpoint (by validation Top-5) to
    ``storage_dir/checkpoints/best_model.pt``. Returns {"best_model", "history", "best_metrics"}.

    Re-running with the same ``storage_dir`` and ``name`` resumes from the last checkpoint.
    ``init_model``: a stage-1 ``state.pt`` the first epoch starts from.
    """
    return fit_torch(train_alignment_loop,
                     {"encoder": asdict(encoder), "train": asdict(training), "vocab_sizes": vocab_sizes,
                      "init_model": init_model},
                     {"train": train, "val": val}, scaling, storage_dir, name, "val_top5", callbacks)
