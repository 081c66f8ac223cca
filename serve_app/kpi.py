"""The KPI dashboard payload from the served version's training and evaluation reports.

``{kpi, loss_curve, top_k_images, hyperparams, augmented_samples}`` come from files the training
and embed runs wrote (``training_summary.json``, ``results/training_results.json``,
``results/similarity_search/results.json``, ``config.yaml``); the ingress adds live ``serving``
numbers. A missing report leaves its block empty with a ``missing`` note instead of failing.
"""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import yaml

from serve_app.config import KpiSettings
from serve_app.versions import embed_report, embed_run_config, version_label

RETRIEVAL_KEYS = ("top1", "top5", "top10", "mrr", "n_queries")
CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_top1", "val_top5", "val_mrr", "lr", "elapsed_s")


def image_url(item_id: str) -> str:
    return f"/images/{quote(item_id, safe='')}"


def _json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _retrieval(block: dict | None) -> dict:
    if not block:
        return {}
    return {protocol: {k: values.get(k) for k in RETRIEVAL_KEYS if k in values}
            for protocol, values in block.items() if isinstance(values, dict) and protocol != "similarity"}


def kpi_block(summary: dict | None, report: dict) -> dict:
    if not summary:
        return {"missing": "training_summary.json"}
    out = {"stage": summary.get("stage"), "image_encoder_pretrained": summary.get("pretrained"),
           "n_validation": summary.get("n_val"), "best_epoch": summary.get("best_epoch"),
           "train_seconds": summary.get("train_seconds"),
           "json_to_image": _retrieval(summary.get("json_to_image")),
           "image_to_json": _retrieval(summary.get("image_to_json")),
           "protocols": summary.get("protocols"),
           "chance_top5_full": round(5 / summary["n_val"], 4) if summary.get("n_val") else None}
    centrality = summary.get("centrality_queries")
    if centrality:
        out["centrality_queries"] = centrality
    if "anchor_mean_above_overall" in summary:
        out["anchor_mean_above_overall"] = summary["anchor_mean_above_overall"]
    if report.get("image"):
        out["embedding_throughput_items_per_s"] = report["image"].get("items_per_s")
    return out


def loss_curve(results: dict | None) -> list[dict]:
    history = (results or {}).get("history") or []
    return [{k: entry.get(k) for k in CURVE_KEYS if k in entry} for entry in history]


def top_k_images(search_results: list | None, limit_hits: int = 10) -> list[dict]:
    out = []
    for entry in search_results or []:
        try:
            query = json.loads(entry.get("query", "{}"))
        except (TypeError, ValueError):
            query = entry.get("query")
        out.append({"query": query, "hits": [
            {"rank": hit.get("rank"), "item_id": hit.get("item_id"), "score": hit.get("score"),
             "image_url": image_url(hit["item_id"])} for hit in (entry.get("hits") or [])[:limit_hits]
            if hit.get("item_id")]})
    return out


def hyperparams(run_config: dict | None) -> dict:
    if not run_config:
        return {"missing": "config.yaml"}
    keys = ("train", "encoder", "augment", "std_fields", "re_fields", "num_buckets", "init_from", "scaling",
            "val_fraction")
    return {k: run_config[k] for k in keys if k in run_config}


def augmented_samples(version: dict, item_ids: list[str], settings: KpiSettings) -> dict:
    augment = (embed_run_config(version).get("augment") or {})
    trained_views = int(augment.get("views") or 0)
    views = trained_views or settings.augmented_views
    note = (f"the embed run embedded {trained_views} augmented views per crop as extra training positives"
            if trained_views else
            f"the embed run used no augmented views (augment.views: 0); {views} example views are drawn with "
            f"the same transform settings for illustration")
    return {"views_per_item": trained_views, "settings": {k: v for k, v in augment.items() if k != "views"},
            "note": note,
            "samples": [{"item_id": i, "original": image_url(i),
                         "views": [f"/api/kpi/augmented/{quote(i, safe='')}/{v}" for v in range(1, views + 1)]}
                        for i in item_ids[:settings.augmented_samples]]}


def dashboard(version: dict, settings: KpiSettings, fallback_item_ids: list[str]) -> dict:
    run = Path(version["json_encoder_run"])
    summary = _json(run / "training_summary.json")
    results = _json(run / "results" / "training_results.json")
    search = _json(run / "results" / "similarity_search" / "results.json")
    config_path = run / "config.yaml"
    run_config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    report = embed_report(version)
    top = top_k_images(search if isinstance(search, list) else None)
    label = version_label(version)  # run names, also when the runs are node-local copies of object storage
    sample_ids = [hit["item_id"] for entry in top for hit in entry["hits"][:1]] or fallback_item_ids
    return {"kpi": kpi_block(summary, report), "loss_curve": loss_curve(results), "top_k_images": top,
            "hyperparams": hyperparams(run_config), "augmented_samples": augmented_samples(version, sample_ids, settings),
            "model": {"json_encoder_run": label["json_encoder_run"], "embed_run": label["embed_run"],
                      "image_encoder": report.get("image_model"),
                      "image_encoder_pretrained": report.get("pretrained"), "text_encoder": report.get("text_model")}}
