"""Ray Tune (ASHA) sweep of the JSON-encoder alignment: temperature, batch size, learning rate.

    python -m ray_jobs.tune --config configs/tune.yaml
    ray job submit -- python -m ray_jobs.tune --config configs/tune.yaml   # on a cluster (README, "On a cluster")

Every trial is a full Ray Train run (TorchTrainer) that reports Top-5/MRR each epoch on the
selection items (carved from training, never the held-out ones) through TuneReportCallback; ASHA
stops the weak trials early. Writes tune_report.json (every trial, the best configuration, the
recommended temperature) and tune_report.png.

The sweep itself (``SweepConfig``, ``sweep``) is ``ray_jobs.common.alignment_trainer``'s; its chart
``recsys.eval.sweep.plot_sweep``.
"""
from __future__ import annotations

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.data.json_features import prepare
from recsys.eval.sweep import plot_sweep
from ray_jobs.common.alignment_trainer import SweepConfig, sweep
from ray_jobs.common.cli import init_ray, load_stage_config, run_main

__all__ = ["SweepConfig", "main", "plot_sweep", "run", "sweep"]


def run(cfg: SweepConfig) -> dict:
    data = prepare(cfg.data)
    run_dir = new_run_dir(cfg.output_root, cfg)
    init_ray(dashboard=True)  # the state API lets Ray Train clean up after trials ASHA stops
    print(f"tune: {len(cfg.temperatures) * cfg.samples_per_temperature} trials, up to {cfg.max_epochs} epochs each, "
          f"ASHA; image targets pretrained: {data.pretrained}")
    report = sweep(data.train, data.select, data.vocab_sizes, data.encoder, cfg.data.train, cfg.data.scaling, cfg, run_dir)
    report["pretrained"] = data.pretrained
    write_json(run_dir / "tune_report.json", report)
    plot_sweep(report, run_dir / "tune_report.png", f"JSON encoder sweep (image encoder pretrained: {data.pretrained})")
    write_manifest(run_dir, "tune", {"items": str(data.items_dir), "image_embeddings": str(data.embeddings_dir)},
                   {"report": str(run_dir / "tune_report.json")})
    print(f"{report['n_trials']} trials, {report['n_stopped_early']} stopped early by ASHA; best {report['best']['config']} "
          f"val top5 {report['best']['best_val_top5']:.3f}; recommended temperature {report['recommended_temperature']}"
          f" (pretrained: {data.pretrained}); report in {run_dir}")
    return report | {"run_dir": location_of(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], SweepConfig, "configs/tune.yaml", argv))


if __name__ == "__main__":
    run_main(main)
