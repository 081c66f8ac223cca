"""Ray Train glue shared by every trained stage: numpy columns -> Ray datasets -> TorchTrainer ->
the best checkpoint copied to ``<storage_dir>/checkpoints/best_model.pt``, its result beside it in
``fit_result.json`` (so a finished fit is not launched again)."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from recsys import storage
from recsys.artifacts import location_of, staging_root
from recsys.train_loops.checkpointing import STATE_FILE
from recsys.train_loops.scaling import ScalingSettings

RESULT_FILE = "fit_result.json"
HEALTH_CHECK_INTERVAL_ENV, FAST_HEALTH_CHECK_INTERVAL_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25"


def to_ray_dataset(columns: dict[str, np.ndarray]):
    """Numpy columns (2-D arrays become tensor columns) -> a Ray dataset."""
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    table = pa.table({name: ArrowTensorArray.from_numpy(values) if values.ndim > 1 else pa.array(values)
                      for name, values in columns.items()})
    return ray.data.from_arrow(table)


def scaling_config(scaling: ScalingSettings):
    """Ray Train's ScalingConfig from the stage's settings: ``use_gpu`` asks for one GPU per worker beside
    its CPUs, so Ray places workers only on nodes with a free GPU (and sets CUDA_VISIBLE_DEVICES)."""
    from ray.train import ScalingConfig

    resources = {"CPU": scaling.cpus_per_worker} | ({"GPU": 1} if scaling.use_gpu else {})
    return ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu, resources_per_worker=resources,
                         placement_strategy=scaling.placement_strategy)


def torch_config(scaling: ScalingSettings):
    """The process group's backend, chosen here rather than left to Ray's default: NCCL between GPU
    workers, gloo between CPU workers (the loops read it back: ``recsys.train_loops.steps``)."""
    from ray.train.torch import TorchConfig

    return TorchConfig(backend="nccl" if scaling.use_gpu else "gloo")


def fit_torch(loop: Callable[[dict], None], loop_config: dict, datasets: dict[str, dict[str, np.ndarray]],
              scaling: ScalingSettings, storage_dir: str | Path, name: str, score: str,
              callbacks: list | None = None, max_failures: int = 2) -> dict:
    """Run ``loop`` on a TorchTrainer; ``train`` is split across workers, other datasets are given
    whole to every worker. Keeps the checkpoints best by metric ``score`` (higher is better).
    Returns {"best_model", "history", "best_metrics"}. Re-running with the same ``storage_dir``
    and ``name`` resumes from the last checkpoint; when that run already finished with the same loop,
    config and data, its stored result comes back without starting Ray Train (start-up alone costs
    ~30 s). Runs with ``callbacks`` (a Tune trial reporting to its sweep) always run.
    ``storage_dir`` may be an object-store URI (a Tune trial of a run on object storage, on any node):
    Ray Train's checkpoints go there and ``best_model.pt`` to a node-local scratch folder.
    """
    location = location_of(storage_dir)  # where every worker reaches the checkpoints
    storage_dir = (storage.local_path(storage_dir).resolve() if storage.is_local(storage_dir)
                   else staging_root() / "fits" / hashlib.sha256(location.encode()).hexdigest()[:16])
    target = storage_dir / "checkpoints" / "best_model.pt"
    key = fit_key(loop, loop_config, datasets, name, score)
    if not callbacks and (stored := finished_fit(target, key)):
        return stored

    import ray.data
    import torch
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig

    # Train V2's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s by default)
    # and each step of a run's start and end waits for a poll: at 0.25 s a short fit measured 8-13 s
    # instead of 17-20 s here. A poll is one small remote call per worker; set the variable to override.
    # Not inside Tune trials: there ASHA's early stopping was seen to stop nothing at the fast pace.
    if not callbacks:
        os.environ.setdefault(HEALTH_CHECK_INTERVAL_ENV, FAST_HEALTH_CHECK_INTERVAL_S)
    from ray.train.torch import TorchTrainer

    # The epoch bar of the training loops is the progress; dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    (target.parent / RESULT_FILE).unlink(missing_ok=True)  # an earlier fit's result no longer describes best_model
    trainer = TorchTrainer(
        loop, train_loop_config=loop_config,
        scaling_config=scaling_config(scaling), torch_config=torch_config(scaling),
        datasets={key: to_ray_dataset(columns) for key, columns in datasets.items()},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        # A failed worker group restarts from the last checkpoint (up to max_failures times).
        # Checkpoints go where every worker reaches them: the run's URI when it lives on object storage.
        run_config=RunConfig(name=name, **storage.ray_storage(storage.join(location, "ray_results")),
                             callbacks=callbacks,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2, checkpoint_score_attribute=score,
                                                                checkpoint_score_order="max")),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    best_checkpoint, best_metrics = max(result.best_checkpoints, key=lambda cm: cm[1][score])
    target.parent.mkdir(parents=True, exist_ok=True)
    with best_checkpoint.as_directory() as directory:
        shutil.copy(Path(directory) / STATE_FILE, target)
    with result.checkpoint.as_directory() as directory:
        history = json.loads(torch.load(Path(directory) / STATE_FILE, weights_only=True)["history_json"])
    fitted = {"best_model": str(target), "history": history, "best_metrics": best_metrics}
    try:  # written last: its presence means the copy above is complete
        (target.parent / RESULT_FILE).write_text(json.dumps({"key": key, **fitted}, indent=1, default=float))
    except (TypeError, ValueError):
        pass  # metrics JSON cannot hold: a later call runs (and resumes) Ray Train as before
    return fitted


def fit_key(loop: Callable, loop_config: dict, datasets: dict[str, dict[str, np.ndarray]], name: str,
            score: str) -> str:
    """What decides a fit's result: the loop, its config, the data (every column's bytes) and the run."""
    digest = hashlib.sha256(json.dumps({"loop": f"{loop.__module__}.{loop.__qualname__}", "config": loop_config,
                                        "name": name, "score": score}, sort_keys=True, default=_array_key).encode())
    for split, columns in sorted(datasets.items()):
        for column, values in sorted(columns.items()):
            digest.update(f"{split}/{column}/{_array_key(values)}".encode())
    return digest.hexdigest()


def _array_key(value) -> object:
    """A JSON stand-in for what json cannot encode; arrays by content (their repr elides the middle)."""
    if isinstance(value, np.ndarray):
        data = repr(value.tolist()).encode() if value.dtype == object else np.ascontiguousarray(value).data
        return f"{value.dtype}{value.shape}:{hashlib.sha256(data).hexdigest()}"
    return value.item() if isinstance(value, np.generic) else str(value)


def finished_fit(best_model: Path, key: str) -> dict | None:
    """The stored result of the fit ``key`` when it finished and wrote ``best_model``, else None."""
    result_file = best_model.parent / RESULT_FILE
    if not (result_file.is_file() and best_model.is_file()):
        return None
    stored = json.loads(result_file.read_text())
    if stored.get("key") != key or stored.get("best_model") != str(best_model):
        return None
    return {"best_model": stored["best_model"], "history": stored["history"], "best_metrics": stored["best_metrics"]}
