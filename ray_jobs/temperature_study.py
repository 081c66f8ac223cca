"""Temperature study of the JSON-encoder alignment: several seeds per temperature, everything else fixed.

    python -m ray_jobs.temperature_study --config configs/temperature_study.yaml   (make temperature-study)

On the latest preprocess + embed runs (the stage-2 data of ``train_json_encoder``): one Ray Train fit
per (temperature, seed), each scored by its best epoch's Top-5/MRR on the selection items carved
from training. ``recsys.eval.temperature`` summarises them (mean and spread per temperature) and
recommends a temperature only when its lead exceeds the seeds' spread. The held-out items are not
read. The ASHA sweep (``ray_jobs.tune``) stays for batch size and learning rate. Writes
temperature_study.json and temperature_study.png.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.data.json_features import TrainJsonEncoderConfig, prepare
from recsys.eval.temperature import plot_temperature_study, temperature_summary
from ray_jobs.common.alignment_trainer import temperature_runs
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class TemperatureStudyConfig:
    data: TrainJsonEncoderConfig = field(default_factory=TrainJsonEncoderConfig)
    output_root: str = "artifacts/temperature_study"
    temperatures: list[float] = field(default_factory=lambda: [0.05, 0.07, 0.1, 0.15])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self):
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: expected at least two distinct seeds (the spread needs them), got {self.seeds}")
        if len(self.temperatures) < 2 or any(t <= 0 for t in self.temperatures):
            raise ConfigError(f"temperatures: expected at least two values > 0, got {self.temperatures}")


def run(cfg: TemperatureStudyConfig) -> dict:
    data = prepare(cfg.data)
    run_dir = new_run_dir(cfg.output_root, cfg)
    init_ray()
    print(f"temperature study: {len(cfg.temperatures)} temperatures x {len(cfg.seeds)} seeds, "
          f"{cfg.data.train.epochs} epochs each; image targets pretrained: {data.pretrained}")
    runs = temperature_runs(data.train, data.select, data.vocab_sizes, data.encoder, cfg.data.train, cfg.data.scaling,
                            cfg.temperatures, cfg.seeds, run_dir / "fits")
    summary = temperature_summary(runs)
    report = {"runs": runs, **summary, "pretrained": data.pretrained, "scored_on": "selection items (from training)"}
    write_json(run_dir / "temperature_study.json", report)
    plot_temperature_study(runs, summary, run_dir / "temperature_study.png",
                           f"JSON encoder temperature study (image encoder pretrained: {data.pretrained})")
    write_manifest(run_dir, "temperature_study", {"items": str(data.items_dir), "image_embeddings": str(data.embeddings_dir)},
                   {"report": str(run_dir / "temperature_study.json")})
    for t, row in summary["per_temperature"].items():
        print(f"T={t}: top5 {row['top5_mean']:.4f} +- {row['top5_std']:.4f}  mrr {row['mrr_mean']:.4f} +- "
              f"{row['mrr_std']:.4f}  ({row['n']} seeds)")
    print(f"{summary['reason']} (pretrained: {data.pretrained}); report in {run_dir}")
    return report | {"run_dir": location_of(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TemperatureStudyConfig, "configs/temperature_study.yaml",
                                 argv))


if __name__ == "__main__":
    run_main(main)
