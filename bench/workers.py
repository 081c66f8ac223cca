"""Training wall time with 1 vs 2 Ray Train workers, the same data, config and global batch.

    python -m bench.workers --config configs/bench_workers.yaml     (make bench-workers)

On a generated corpus (preprocessed and embedded once by the real jobs), each round trains the JSON
encoder (stage 2: alignment to the image vectors, contrastive with negatives gathered across workers)
and the item tower (SimCSE + adapter) once with each worker count; the sides alternate which goes first
so that load from other processes hits both. Two workers get half the per-worker batch, so the global
batch and the steps per epoch stay the same (``scaling.cpus_per_worker`` CPUs each). Reported: the
medians of each stage's fit seconds (Ray Train start-up included, Ray's own start-up not), the ratio
2-worker / 1-worker per round, and the selection scores, which should agree. On one 2-core machine two
workers share the same cores, so the ratio shows the cost of the second process and of gloo's
collectives, not a speed-up; on a cluster each worker brings its own CPUs or GPU.
"""
from __future__ import annotations

import platform
import statistics
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from recsys.artifacts import write_json
from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus, generate_corpus
from recsys.encoders.image import ImageEncoderConfig
from recsys.plots import bar_panels
from recsys.train_loops.scaling import ScalingSettings
from ray_jobs import embed, preprocess, train_item_tower, train_json_encoder
from ray_jobs.common.cli import init_ray, load_stage_config, run_main


@dataclass
class BenchWorkersConfig:
    corpus: SyntheticCorpusConfig = field(default_factory=lambda: SyntheticCorpusConfig(
        out_dir="artifacts/bench/workers/corpus", n_images=300, workers=1))
    out_dir: str = "artifacts/bench/workers"
    rounds: int = 3
    workers: list[int] = field(default_factory=lambda: [1, 2])
    cpus_per_worker: float = 1.0
    json_encoder: train_json_encoder.TrainJsonEncoderConfig = field(
        default_factory=train_json_encoder.TrainJsonEncoderConfig)   # batch_size: of one worker
    item_tower: train_item_tower.TrainItemTowerConfig = field(default_factory=train_item_tower.TrainItemTowerConfig)


def _inputs(cfg: BenchWorkersConfig, out: Path) -> tuple[str, str]:
    """(preprocess root, embed root) of the corpus, made once."""
    if existing_corpus(cfg.corpus) is None:
        generate_corpus(cfg.corpus)
    corpus, pre_root, emb_root = Path(cfg.corpus.out_dir), out / "preprocess", out / "embed"
    if not (pre_root / "LATEST").is_file():
        preprocess.run(preprocess.PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                                                   output_root=str(pre_root)))
    if not (emb_root / "LATEST").is_file():
        embed.run(embed.EmbedConfig(preprocess_root=str(pre_root), output_root=str(emb_root), text_sources=["title"],
                                    image=ImageEncoderConfig(batch_size=32)))
    return str(pre_root), str(emb_root)


def _fit(stage: str, cfg: BenchWorkersConfig, workers: int, pre_root: str, emb_root: str, root: Path) -> dict:
    scaling = ScalingSettings(num_workers=workers, cpus_per_worker=cfg.cpus_per_worker)
    if stage == "json_encoder":
        base = cfg.json_encoder
        result = train_json_encoder.run(replace(
            base, preprocess_root=pre_root, embed_root=emb_root, output_root=str(root), scaling=scaling,
            train=replace(base.train, batch_size=base.train.batch_size // workers)))
        return {"seconds": result["train_seconds"], "score": result["json_to_image"]["full"]["top5"],
                "score_name": "held-out JSON->image top5"}
    base = cfg.item_tower
    result = train_item_tower.run(replace(
        base, catalog=replace(base.catalog, preprocess_root=pre_root), output_root=str(root), scaling=scaling,
        simcse=replace(base.simcse, batch_size=base.simcse.batch_size // workers)))
    split = "val" if "val" in result["adapter_128"] else next(iter(result["adapter_128"]))
    return {"seconds": result["train_seconds"], "score": result["adapter_128"][split]["category_hit@10"],
            "score_name": f"adapter {split} category_hit@10"}


def run(cfg: BenchWorkersConfig) -> dict:
    out = Path(cfg.out_dir)
    init_ray()
    pre_root, emb_root = _inputs(cfg, out)
    rows = []
    for round_ in range(cfg.rounds):
        order = cfg.workers if round_ % 2 == 0 else list(reversed(cfg.workers))
        for stage in ("json_encoder", "item_tower"):
            for workers in order:
                fitted = _fit(stage, cfg, workers, pre_root, emb_root, out / "runs" / f"{stage}-w{workers}-r{round_}")
                rows.append({"round": round_, "stage": stage, "workers": workers, **fitted})
                print(f"round {round_ + 1}/{cfg.rounds} {stage}: {workers} worker(s) {fitted['seconds']} s", flush=True)
    summary = {}
    for stage in ("json_encoder", "item_tower"):
        per = {w: [r for r in rows if r["stage"] == stage and r["workers"] == w] for w in cfg.workers}
        one, two = cfg.workers[0], cfg.workers[-1]
        summary[stage] = {
            **{f"median_seconds_{w}_workers": statistics.median(r["seconds"] for r in runs) for w, runs in per.items()},
            "ratio_per_round": [round(b["seconds"] / a["seconds"], 3) for a, b in zip(per[one], per[two])],
            **{f"scores_{w}_workers": [r["score"] for r in runs] for w, runs in per.items()},
            "score_name": per[one][0]["score_name"]}
        summary[stage]["median_ratio"] = statistics.median(summary[stage]["ratio_per_round"])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    report = {"bench": "workers", "created_utc": stamp, "host": platform.node(), "cpus_per_worker": cfg.cpus_per_worker,
              "corpus_images": cfg.corpus.n_images, "rounds": cfg.rounds, "summary": summary, "runs": rows,
              "note": "same global batch; one machine's cores shared by the workers (see module docstring)"}
    path = write_json(out / f"workers-{stamp}.json", report)
    bar_panels({f"{stage}: median fit seconds": {f"{w} worker(s)": summary[stage][f"median_seconds_{w}_workers"]
                                                 for w in cfg.workers} for stage in summary},
               out / f"workers-{stamp}.png", f"1 vs 2 Ray Train workers ({cfg.rounds} rounds, same global batch)")
    for stage, s in summary.items():
        print(f"{stage}: " + ", ".join(f"{w} worker(s) {s[f'median_seconds_{w}_workers']} s" for w in cfg.workers)
              + f"; 2/1 ratio {s['median_ratio']} (per round {s['ratio_per_round']})")
    print(f"report: {path}")
    return report


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], BenchWorkersConfig, "configs/bench_workers.yaml", argv))


if __name__ == "__main__":
    run_main(main)
