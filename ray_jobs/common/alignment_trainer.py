"""Ray Train entry for JSON-encoder training (stage 1 and stage 2), shared by the K-Fashion
training, the E1 evaluation and Tune, and the Ray Tune (ASHA) sweep over it.

Ray 2.5x+ (Train V2): Tune runs a small driver function per trial that builds the TorchTrainer;
the driver asks for a fraction of a CPU (0 is refused) and the training workers for the rest.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from recsys import storage
from recsys.artifacts import location_of
from recsys.data.json_features import TrainJsonEncoderConfig
from recsys.models.json_encoder import JsonEncoderConfig
from recsys.train_loops.alignment import AlignmentTrainConfig, train_alignment_loop
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs.common.trainer import fit_torch

__all__ = ["ScalingSettings", "SweepConfig", "fit_alignment", "sweep", "temperature_runs"]


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


@dataclass
class SweepConfig:
    data: TrainJsonEncoderConfig = field(default_factory=TrainJsonEncoderConfig)
    output_root: str = "artifacts/tune"
    temperatures: list[float] = field(default_factory=lambda: [0.05, 0.07, 0.1, 0.15])
    batch_sizes: list[int] = field(default_factory=lambda: [32, 64, 128])
    lr_min: float = 1e-4
    lr_max: float = 3e-3
    samples_per_temperature: int = 2
    max_epochs: int = 6
    grace_period: int = 1          # epochs every trial gets before ASHA may stop it
    reduction_factor: int = 2
    max_concurrent_trials: int = 1  # 2 CPUs here: one Train worker at a time
    driver_cpus: float = 0.1
    seed: int = 0


def _trial(config: dict, train: dict, val: dict, vocab_sizes: dict, encoder: dict, training: dict,
           scaling: dict, trials_location: str) -> None:
    """One Tune trial = one Ray Train run with this trial's hyperparameters."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_training = AlignmentTrainConfig(**{**training, "temperature": config["temperature"],
                                             "batch_size": config["batch_size"], "lr": config["lr"]})
    trial_id = tune.get_context().get_trial_id()
    fit_alignment(train, val, vocab_sizes, JsonEncoderConfig(**encoder), trial_training, ScalingSettings(**scaling),
                  storage.join(trials_location, trial_id), f"trial_{trial_id}", callbacks=[TuneReportCallback()])


def _placement_groups() -> dict[str, str]:
    """Every live placement group of the cluster: id (hex) -> the job that created it (hex).

    ``ray.util.placement_group_table()`` leaves the creator out and the state API needs the dashboard
    (tests and small clusters run without it), so GCS's table is read here the way that function reads
    it (``ray._private.state``; checked against Ray 2.60)."""
    from ray._private.state import state
    from ray.core.generated import gcs_pb2

    live = (gcs_pb2.PlacementGroupTableData.PENDING, gcs_pb2.PlacementGroupTableData.PREPARED,
            gcs_pb2.PlacementGroupTableData.CREATED, gcs_pb2.PlacementGroupTableData.RESCHEDULING)
    groups = {}
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if info.state in live:
            groups[info.placement_group_id.hex()] = info.creator_job_id.hex()
    return groups


def _release_orphaned_placement_groups(before: set[str]) -> int:
    """Remove placement groups this job's sweep created that still hold resources after it.

    Seen with Ray 2.60 (Train V2 inside Tune): when ASHA stops a trial, its Ray Train worker
    group's placement group stays reserved, so on a small cluster the next job waits for CPUs
    that never come back. Every trial has finished when this runs, so nothing of ours still uses
    them; groups other jobs created meanwhile (a shared cluster) are not ours and are left alone.
    """
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util import remove_placement_group
    from ray.util.placement_group import PlacementGroup

    ours = ray.get_runtime_context().get_job_id()
    released = 0
    for pg_id, creator in _placement_groups().items():
        if pg_id not in before and creator == ours:
            remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
            released += 1
    return released


def sweep(train: dict, val: dict, vocab_sizes: dict, encoder: JsonEncoderConfig, base: AlignmentTrainConfig,
          scaling: ScalingSettings, cfg: SweepConfig, run_dir: Path) -> dict:
    """Run the ASHA sweep and summarise it (library-level so tests can call it on toy data)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator

    param_space = {"temperature": tune.grid_search(list(cfg.temperatures)),
                   "batch_size": tune.choice(list(cfg.batch_sizes)),
                   "lr": tune.loguniform(cfg.lr_min, cfg.lr_max)}
    trainable = tune.with_parameters(
        _trial, train=train, val=val, vocab_sizes=vocab_sizes, encoder=asdict(encoder),
        training=asdict(replace(base, epochs=cfg.max_epochs, seed=cfg.seed)), scaling=asdict(scaling),
        # trials run on any node: they write where every node reaches (the run's URI, or the shared mount)
        trials_location=storage.join(location_of(run_dir), "trials"))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"CPU": cfg.driver_cpus}),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="val_top5", mode="max", num_samples=cfg.samples_per_temperature,
            # seeded sampling: the same config draws the same learning rates (a sweep can be rerun);
            # the generator holds the concurrency limit (Tune ignores max_concurrent_trials beside it)
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials),
            scheduler=ASHAScheduler(max_t=cfg.max_epochs, grace_period=cfg.grace_period,
                                    reduction_factor=cfg.reduction_factor)),
        run_config=tune.RunConfig(name="sweep", **storage.ray_storage(storage.join(location_of(run_dir), "tune_results"))),
    )
    before = set(_placement_groups())
    results = tuner.fit()
    released = _release_orphaned_placement_groups(before)
    if released:
        print(f"released {released} placement group(s) left behind by trials ASHA stopped")
    trials = []
    for result in results:
        if result.error or result.metrics is None:
            trials.append({"config": result.config, "error": str(result.error)})
            continue
        history = result.metrics_dataframe
        trials.append({"config": {k: result.config[k] for k in ("temperature", "batch_size", "lr")},
                       "epochs_run": int(result.metrics["training_iteration"]),
                       "stopped_early": int(result.metrics["training_iteration"]) < cfg.max_epochs,
                       "val_top5": float(result.metrics["val_top5"]), "val_mrr": float(result.metrics["val_mrr"]),
                       "best_val_top5": float(history["val_top5"].max()),
                       "curve_val_top5": [float(v) for v in history["val_top5"]]})
    finished = [t for t in trials if "error" not in t]
    if not finished:
        raise RuntimeError(f"every trial failed: {[t['error'] for t in trials]}")
    best = max(finished, key=lambda t: t["best_val_top5"])
    by_temperature = defaultdict(list)
    for t in finished:
        by_temperature[t["config"]["temperature"]].append(t["best_val_top5"])
    return {"trials": trials, "best": best, "recommended_temperature": best["config"]["temperature"],
            "best_val_top5_by_temperature": {str(k): max(v) for k, v in sorted(by_temperature.items())},
            "n_trials": len(trials), "n_stopped_early": sum(t.get("stopped_early", False) for t in finished),
            "max_epochs": cfg.max_epochs}


def temperature_runs(train: dict, select: dict, vocab_sizes: dict, encoder: JsonEncoderConfig,
                     base: AlignmentTrainConfig, scaling: ScalingSettings, temperatures: list[float],
                     seeds: list[int], run_dir: Path) -> list[dict]:
    """One fit per (temperature, seed), everything else as ``base``: each run's best selection
    Top-5/MRR (the epoch chosen on the same selection items, as every stage does)."""
    runs = []
    for temperature in temperatures:
        for seed in seeds:
            name = f"t{temperature}_seed{seed}"
            fitted = fit_alignment(train, select, vocab_sizes, encoder, replace(base, temperature=temperature, seed=seed),
                                   scaling, run_dir / name, name)
            best = fitted["best_metrics"]
            runs.append({"temperature": temperature, "seed": seed, "top5": float(best["val_top5"]),
                         "mrr": float(best["val_mrr"]), "best_epoch": int(best["epoch"])})
            print(f"T={temperature} seed {seed}: selection top5 {runs[-1]['top5']:.4f} mrr {runs[-1]['mrr']:.4f} "
                  f"(epoch {runs[-1]['best_epoch'] + 1})", flush=True)
    return runs
