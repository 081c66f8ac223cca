"""Evaluate a trained JSON encoder against image embeddings (the K-Fashion evaluation, as a command).

    python -m ray_jobs.evaluate_json_encoder                       # latest stage-2 run
    python -m ray_jobs.evaluate_json_encoder --run artifacts/train_json_encoder/<run> \
        [--embeddings DIR] [--items DIR] [--search-k 50] [--samples 8] [--out DIR]

Rebuilds the run's validation split (same seed, the run's saved vocabulary and weights), or
evaluates the encoder on other image embeddings of the same items with ``--embeddings`` (e.g. a
real image encoder's), and writes the report of ``recsys.eval.json_alignment`` to
``<run>/evaluation/<timestamp>/`` (or ``--out``): metrics.json (JSON->image and image->JSON, full
gallery and in-batch-64, P/R@K, MRR, similarity, per category, centrality), plots, search grids.
Training writes the same report under ``<run>/results/``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from recsys.artifacts import latest_run, write_json
from recsys.config import ConfigError, load_config
from recsys.data.json_features import TrainJsonEncoderConfig, prepare
from recsys.eval.json_alignment import JsonEvalConfig
from recsys.models.json_encoder import CHECKPOINT_FILE, VOCAB_FILE, has_json_encoder, load_json_encoder
from ray_jobs.common.cli import run_main


def evaluate_run(run_dir: Path, out_dir: Path | None = None, items: str | None = None,
                 embeddings: str | None = None, evaluation: JsonEvalConfig | None = None) -> dict:
    summary_path = run_dir / "training_summary.json"
    if not (has_json_encoder(run_dir) and summary_path.is_file()):
        raise ConfigError(f"{run_dir}: expected {CHECKPOINT_FILE}, {VOCAB_FILE} and "
                          f"training_summary.json of a train_json_encoder run")
    summary = json.loads(summary_path.read_text())
    if summary.get("objective") == "json_views":
        raise ConfigError(f"{run_dir} is a stage-1 (JSON-view pretraining) run; evaluate a stage-2 run")
    cfg = load_config(run_dir / "config.yaml", TrainJsonEncoderConfig)
    # The run's own inputs unless told otherwise, so the validation split is the one it held out.
    cfg = replace(cfg, items=items or summary["items"], embeddings=embeddings or summary["image_embeddings"],
                  evaluation=evaluation or cfg.evaluation, init_from=None)
    encoder, vocab = load_json_encoder(run_dir)
    data = prepare(cfg, vocab, encoder.config)  # the run's vocabulary and architecture
    out_dir = out_dir or run_dir / "evaluation" / datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    metrics = data.evaluate(encoder, out_dir, cfg.evaluation)
    write_json(out_dir / "inputs.json", {"run": str(run_dir), "items": str(data.items_dir),
                                         "image_embeddings": str(data.embeddings_dir)})
    for direction in ("json_to_image", "image_to_json"):
        full, inbatch = metrics[direction]["full"], metrics[direction][f"inbatch{cfg.evaluation.inbatch}"]
        print(f"{direction} ({data.note}): full gallery ({full['n_queries']}) top1 {full['top1']:.3f} top5 "
              f"{full['top5']:.3f} top10 {full['top10']:.3f} mrr {full['mrr']:.3f}; in-batch-"
              f"{cfg.evaluation.inbatch} top1 {inbatch['top1']:.3f} top5 {inbatch['top5']:.3f}")
    print(f"report: {out_dir / 'metrics.json'}")
    return metrics | {"out_dir": str(out_dir)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="train_json_encoder run directory (default: the latest)")
    parser.add_argument("--runs-root", default="artifacts/train_json_encoder")
    parser.add_argument("--items", help="items parquet directory (default: the run's)")
    parser.add_argument("--embeddings", help="image_embeddings parquet directory (default: the run's)")
    parser.add_argument("--search-k", type=int, help="images per similarity-search grid (1..100, default 20)")
    parser.add_argument("--samples", type=int, help="queries drawn as grids/panels (default 4)")
    parser.add_argument("--out", help="report directory (default <run>/evaluation/<timestamp>)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run) if args.run else latest_run(args.runs_root)
    evaluation = None
    if args.search_k is not None or args.samples is not None:
        base = load_config(run_dir / "config.yaml", TrainJsonEncoderConfig).evaluation
        try:
            evaluation = replace(base, search_k=args.search_k or base.search_k,
                                 search_samples=args.samples or base.search_samples)
        except ValueError as exc:
            raise ConfigError(f"--search-k: {exc}") from exc
    return evaluate_run(run_dir, Path(args.out) if args.out else None, args.items, args.embeddings, evaluation)


if __name__ == "__main__":
    run_main(main)
