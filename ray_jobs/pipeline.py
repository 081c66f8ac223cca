"""The whole chain on one config: what `make demo` runs.

    python -m ray_jobs.pipeline --config configs/pipeline.yaml
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/pipeline.yaml

Stages so far: synthetic K-Fashion corpus (skipped when an identical one exists) -> Ray Data
preprocessing (canonical items, quarantine, reconciliation report).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus
from ray_jobs import generate_corpus, preprocess
from ray_jobs.cli import load_stage_config, run_main


@dataclass
class PipelineConfig:
    preprocess: preprocess.PreprocessConfig
    corpus: SyntheticCorpusConfig | None = field(default_factory=SyntheticCorpusConfig)  # null: real labels
    regenerate_corpus: bool = False


def run(cfg: PipelineConfig) -> dict:
    if cfg.corpus is not None:
        manifest = None if cfg.regenerate_corpus else existing_corpus(cfg.corpus)
        if manifest:
            print(f"[1/2] corpus: reusing {Path(cfg.corpus.out_dir).resolve()} "
                  f"({manifest['n_label_files']} label files, same config)")
        else:
            print("[1/2] corpus: generating the synthetic K-Fashion corpus")
            generate_corpus.run(cfg.corpus)
    print("[2/2] preprocess: Ray Data over the label corpus")
    report = preprocess.run(cfg.preprocess)
    run_dir = Path(report["run_dir"])
    print("\nDone. Results:")
    print(f"  canonical items (parquet): {run_dir / 'items'}")
    print(f"  quarantine:                {run_dir / 'quarantine.parquet'}")
    print(f"  reconciliation report:     {run_dir / 'reconciliation.json'}")
    print(f"  distribution plot:         {run_dir / 'distribution.png'}")
    print(f"  garment crops:             {run_dir / 'crops'}")
    return {"preprocess": report}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], PipelineConfig, "configs/pipeline.yaml", argv))


if __name__ == "__main__":
    run_main(main)
