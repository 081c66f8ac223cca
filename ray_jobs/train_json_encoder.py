"""Train the attribute-JSON encoder on K-Fashion items (Ray Train), in two stages with two configs.

    python -m ray_jobs.train_json_encoder --config configs/pretrain_json_encoder.yaml   # stage 1
    python -m ray_jobs.train_json_encoder --config configs/train_json_encoder.yaml      # stage 2
    ray job submit -- python -m ray_jobs.train_json_encoder --config configs/train_json_encoder.yaml   # on a cluster (README, "On a cluster")

Stage 1 (``train.objective: json_views``) pretrains the encoder on JSON alone: two field-dropout
views of one item are positives. Stage 2 (``align``) aligns it to frozen image embeddings of the
garment crops, starting from stage 1's weights and vocabulary when ``init_from`` names that run
(``latest``: the newest run under ``pretrain_root``). Augmented image views, when embedded, are
extra positives of their item.

Inputs: canonical items (latest preprocess run) and their image embeddings (latest embed run).
Output run directory: checkpoints/best_model.pt + vocab.json, results/training_results.json,
training_summary.json, training_charts.png and, for stage 2, the evaluation of
``recsys.eval.json_alignment`` under results/ (JSON->image and image->JSON, full gallery and
in-batch-64, per category, similarity search grids, centrality), every plot and report naming the
image encoder's weights (``pretrained: none (stand-in)`` for the offline default).
"""
from __future__ import annotations

import time
from pathlib import Path

from recsys import storage
from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.data.json_features import AlignmentData, TrainJsonEncoderConfig, item_records, prepare, resolve_init
from recsys.models.json_encoder import load_encoder, save_vocabulary
from recsys.plots import training_charts
from ray_jobs.common.alignment_trainer import fit_alignment
from ray_jobs.common.cli import init_ray, load_stage_config, run_main

__all__ = ["TrainJsonEncoderConfig", "item_records", "main", "run"]  # config and records: recsys.data.json_features


def run(cfg: TrainJsonEncoderConfig) -> dict:
    init_model, vocab, encoder = resolve_init(cfg)
    data = prepare(cfg, vocab, encoder)
    stage = "stage 1: JSON-view pretraining" if cfg.train.objective == "json_views" else "stage 2: alignment to images"
    n_train, n_select, n_val = (len(data.train["target"]), len(data.select["target"]), len(data.val["target"]))
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    location = location_of(run_dir)  # the run's URI when output_root is on object storage
    print(f"train_json_encoder ({stage}): {n_train} training rows ({data.n_train_items} items), {n_select} "
          f"selection items (best epoch), {n_val} held-out items; image encoder pretrained: {data.pretrained}"
          + (f"; from stage 1 {Path(init_model).parent.parent.name}" if init_model else ""))
    init_ray()
    started = time.perf_counter()
    fitted = fit_alignment(data.train, data.select, data.vocab_sizes, data.encoder, cfg.train, cfg.scaling,
                           run_dir, "json_encoder", init_model=init_model)
    save_vocabulary(run_dir, data.vocab)
    summary = {"stage": stage, "objective": cfg.train.objective, "init_from": init_model,
               "pretrained": data.pretrained, "image_embeddings": location_of(data.embeddings_dir),
               "items": location_of(data.items_dir), "n_train_rows": int(n_train), "n_select": int(n_select), "n_val": int(n_val),
               "train_seconds": round(time.perf_counter() - started, 1), "best_epoch": fitted["best_metrics"]["epoch"]}
    if cfg.train.objective == "json_views":
        best = fitted["best_metrics"]
        # stage 1 has no held-out report: this is its best epoch's score on the selection items
        summary["json_view_retrieval"] = {k: best[f"val_{k}"] for k in ("top1", "top5", "top10", "mrr")}
        chart_title = "JSON encoder stage 1: a field-dropped view finds its full JSON (selection items)"
    else:
        summary |= data.evaluate(load_encoder(fitted["best_model"]), run_dir / "results", cfg.evaluation)
        chart_title = f"JSON encoder -> image alignment ({data.note})"
    write_json(run_dir / "results" / "training_results.json", {"history": fitted["history"], **summary})
    write_json(run_dir / "training_summary.json", summary)
    training_charts(fitted["history"], run_dir / "training_charts.png", chart_title, "selection items")
    write_manifest(run_dir, "train_json_encoder",
                   {"items": location_of(data.items_dir), "image_embeddings": location_of(data.embeddings_dir),
                    **({"init_model": init_model} if init_model else {})},
                   {"checkpoint": fitted["best_model"], "summary": str(run_dir / "training_summary.json")})
    _print_result(summary, data, storage.join(location, "checkpoints", Path(fitted["best_model"]).name), location)
    return summary | {"run_dir": location}


def _print_result(summary: dict, data: AlignmentData, best_model: str, run_dir) -> None:
    if "json_to_image" in summary:
        full = summary["json_to_image"]["full"]
        print(f"JSON->image (pretrained: {data.pretrained}): full gallery top1 {full['top1']:.3f} top5 "
              f"{full['top5']:.3f} mrr {full['mrr']:.3f}; in-batch-64 top5 "
              f"{summary['json_to_image']['inbatch64']['top5']:.3f}; results in {run_dir}")
    else:
        view = summary["json_view_retrieval"]
        print(f"stage 1 done: dropped view -> full JSON top1 {view['top1']:.3f} top5 {view['top5']:.3f} "
              f"(selection items, best epoch); weights in {best_model}")


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainJsonEncoderConfig,
                                 "configs/train_json_encoder.yaml", argv))


if __name__ == "__main__":
    run_main(main)
