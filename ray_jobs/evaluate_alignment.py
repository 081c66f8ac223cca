"""Protocol E1: train the JSON encoder against frozen title embeddings and report it beside the
zero-shot baseline, full gallery and in-batch-64, with and without the brand column.

    python -m ray_jobs.evaluate_alignment --catalog styles_full.parquet --text-col productDisplayName \
        --fields gender,masterCategory,subCategory,articleType,baseColour,season,usage --out DIR

MiniLM's work (title vectors, the zero-shot baseline) is a Ray task declaring ``text_task``.

Writes DIR/metrics.json, DIR/comparison.png and, per trained variant, DIR/<variant>/
(checkpoints/best_model.pt, training_charts.png, results/training_results.json).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import numpy as np

from recsys.artifacts import write_json
from recsys.config import config_hash
from recsys.data.result import read_table_file
from recsys.eval.alignment import (AlignmentEvalConfig, default_fields, e1_split, find_brand_column,
                                   records_from_frame, selection_split, short_summary, target_labels, text_side)
from recsys.metrics.retrieval import evaluate_pairs
from recsys.models.json_encoder import (JsonEncoderConfig, encode_features, featurize, load_encoder,
                                        orthonormal_lift, save_vocabulary)
from recsys.plots import grouped_bars, training_charts
from recsys.train_loops.scaling import TaskResources
from recsys.vocab import AttributeVocabulary
from ray_jobs.common.alignment_trainer import fit_alignment
from ray_jobs.common.cli import init_ray, run_main, stage_config, stage_parser
from ray_jobs.common.tasks import run_task


def train_variant(name: str, fields: list[str], records: dict, targets: dict, train_labels,
                  cfg: AlignmentEvalConfig, out: Path) -> dict:
    """``records``/``targets``: {"train", "select", "val"}; the best epoch is chosen on "select"."""
    encoder = JsonEncoderConfig(**{**asdict(cfg.encoder), "fields": fields,
                                   "multi_fields": [f for f in cfg.encoder.multi_fields if f in fields]})
    vocab = AttributeVocabulary.build(records["train"], std_fields=fields, re_fields=[])
    vocab_sizes = {f: vocab.std.size(f) for f in fields}
    train = {**featurize(vocab, records["train"], encoder), "target": targets["train"], "label": train_labels}
    select, val = ({**featurize(vocab, records[part], encoder), "target": targets[part],
                    "label": np.arange(len(targets[part]), dtype=np.int64)} for part in ("select", "val"))
    variant_dir = out / name
    print(f"[{name}] fields {fields}; vocab sizes {vocab_sizes}")
    # The config hash in the run name: Ray Train resumes a run of the same name, which must only
    # happen for the same settings (a re-run with other settings trains afresh).
    fitted = fit_alignment(train, select, vocab_sizes, encoder, cfg.train, cfg.scaling, variant_dir,
                           f"{name}-{config_hash(replace(cfg, text_task=TaskResources()))}")  # not resources
    save_vocabulary(variant_dir, vocab)

    # The reported numbers: the best checkpoint (chosen on the selection rows), on the validation rows, once.
    queries = encode_features(load_encoder(fitted["best_model"]), val)
    evaluation = evaluate_pairs(queries, targets["val"], 64)
    write_json(variant_dir / "results" / "training_results.json",
               {"history": fitted["history"], "best_epoch": fitted["best_metrics"]["epoch"],
                "evaluation": evaluation, "fields": fields, "vocab_sizes": vocab_sizes})
    training_charts(fitted["history"], variant_dir / "training_charts.png",
                    f"JSON encoder -> title alignment ({name})", "selection rows")
    return {"full": short_summary(evaluation["full"]), "inbatch64": short_summary(evaluation["inbatch64"]),
            "similarity": {k: round(v, 4) for k, v in evaluation["similarity"].items()},
            "best_epoch": fitted["best_metrics"]["epoch"], "fields": fields,
            "checkpoint": fitted["best_model"]}


def run(catalog: str, text_col: str, fields: list[str] | None, id_col: str | None, out: str,
        cfg: AlignmentEvalConfig) -> dict:
    out_dir = Path(out).resolve()
    required = [text_col] + (fields or []) + ([id_col] if id_col else [])
    frame = read_table_file(catalog, required, f"a catalog with text column {text_col!r}",
                            keep_default_na=False, dtype=str)
    id_col = id_col or ("id" if "id" in frame.columns else None)
    fields = fields or default_fields(frame, id_col, text_col)
    if not fields:
        raise SystemExit(f"error: {catalog}: no categorical attribute columns found; pass --fields")
    brand = find_brand_column(frame.columns)
    titles = frame[text_col].astype(str).tolist()  # "NA" is a real title (EVAL.md)
    train_idx, val_idx = e1_split(len(frame), cfg.split_seed, cfg.val_fraction)
    fit_idx, select_idx = selection_split(train_idx, cfg.selection_fraction, cfg.split_seed)
    print(f"E1 on {catalog}: {len(frame)} rows, {len(fit_idx)} train + {len(select_idx)} selection (best epoch) / "
          f"{len(val_idx)} validation (reported); fields {fields}; brand column: {brand}")

    records = records_from_frame(frame, fields + ([brand] if brand and brand not in fields else []))
    parts = {"train": fit_idx, "select": select_idx, "val": val_idx}
    part_records = {part: [records[i] for i in rows] for part, rows in parts.items()}
    init_ray()
    placements = {}
    title_vectors, zero_shot_report = run_task("e1.text", partial(
        text_side, titles, part_records["val"], val_idx, fields, cfg, out_dir / "cache"), cfg.text_task, "text_task",
        placements=placements)
    lift = orthonormal_lift(title_vectors.shape[1], cfg.encoder.output_dim)  # cosine-preserving 384 -> 512
    lifted = title_vectors @ lift.T
    part_targets = {part: lifted[rows] for part, rows in parts.items()}
    labels = target_labels(titles)

    report = {"n_val": int(len(val_idx)), "n_train": int(len(fit_idx)), "n_select": int(len(select_idx)), "catalog": str(Path(catalog).resolve()),
              "text_col": text_col, "fields": fields, "brand_col": brand,
              "text_encoder": cfg.text_encoder.model, "config": asdict(cfg), "ray_tasks": placements}
    report["zero_shot"] = zero_shot_report
    print(f"zero-shot: {report['zero_shot']}")
    variants = [("model", fields)] + ([("model_with_brand", fields + [brand])] if brand and brand not in fields else [])
    for name, variant_fields in variants:
        report[name] = train_variant(name, variant_fields, part_records, part_targets, labels[fit_idx], cfg, out_dir)
        print(f"{name}: {report[name]['full']} (full gallery), {report[name]['inbatch64']} (in-batch-64)")

    write_json(out_dir / "metrics.json", report)
    compared = [n for n in ("zero_shot", "model", "model_with_brand") if n in report]
    for protocol in ("full", "inbatch64"):
        grouped_bars({n: report[n][protocol] for n in compared}, out_dir / f"comparison_{protocol}.png",
                     f"E1 attribute JSON -> title ({protocol}, {len(val_idx)} validation items)")
    print(f"report: {out_dir / 'metrics.json'}")
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = stage_parser(__doc__.splitlines()[0], "configs/alignment_e1.yaml")
    parser.add_argument("--catalog", required=True, help="catalog table (.csv or .parquet)")
    parser.add_argument("--text-col", default="productDisplayName")
    parser.add_argument("--fields", default=None, help="comma-separated attribute columns (default: categorical ones)")
    parser.add_argument("--id-col", default=None, help="id column, left out of the fields (default: 'id' if present)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cfg = stage_config(args, AlignmentEvalConfig)
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    return run(args.catalog, args.text_col, fields, args.id_col, args.out, cfg)


if __name__ == "__main__":
    run_main(main)
