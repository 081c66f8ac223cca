"""CRM messages for a persona run's segments, written on Ray Data and evaluated on the run's own split.

    python -m ray_jobs.crm --config configs/crm.yaml [--set persona_run=artifacts/persona/<run>]
    python -m ray_jobs.crm --config configs/crm.yaml --set llm.backend=openai \\
        --set llm.base_url=http://HOST:8000/v1 --set llm.model=Qwen/Qwen2.5-7B-Instruct

Segments are the run's personas (aggregates only) and a few customers (their own profile); each
gets its products from the run's served ranker, facts retrieved from those products' snippets, and
one checked message per tone (``recsys.crm``). Writes ``messages.jsonl`` (per segment: messages
with product and source ids, sources, rejected drafts), ``prompts.jsonl`` (every prompt sent),
``report.json`` (claim checker P/R on injected false claims, segment fit vs MostPop and chance on
the test day, canaries planted vs found in prompts), ``report.html`` and ``manifest.json`` into
``artifacts/crm/<timestamp>-<hash>/``. The default writer is the offline template stand-in
(``crm templates (stand-in, no LLM)``); every output says so.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.crm.campaign import (Campaign, CrmRunConfig, SegmentWriter, canary_leaks, embedder_label, facts_of,
                                 plant_canaries, write_html)
from recsys.crm.claims import Vocabulary
from recsys.crm.evaluation import evaluate_checker
from recsys.crm.messages import writer_label
from recsys.eval.persona import evaluate_segment_picks, profiles_from_users
from ray_jobs.common.cli import init_ray, load_stage_config, run_main

__all__ = ["CrmRunConfig", "main", "run"]


def _write(segments: list[dict], campaign: Campaign, cfg: CrmRunConfig) -> tuple[list[dict], Vocabulary]:
    """Every segment's messages on Ray Data actors (``writers`` of them), in segment order; and the
    catalog vocabulary the checker used (every item's names and values, not only the picked ones)."""
    import ray

    picked = sorted({i for row in segments for i in row["product_ids"]})
    vocabulary = Vocabulary.from_rows(campaign.items.values())
    written = ray.data.from_items(segments).map(
        SegmentWriter, concurrency=cfg.writers,
        fn_constructor_kwargs={"rows": [campaign.items[i] for i in picked], "vocabulary": vocabulary,
                               "llm": asdict(cfg.llm), "crm": asdict(cfg.crm), "channel": cfg.channel,
                               "goal": cfg.goal, "embedder": cfg.embedder})
    written.set_name("crm")   # the progress bar: "Dataset crm_0 ..."
    order = {(row["kind"], row["key"]): n for n, row in enumerate(segments)}
    return sorted(written.take_all(), key=lambda row: order[(row["kind"], row["key"])]), vocabulary


def run(cfg: CrmRunConfig) -> dict:
    campaign = Campaign.load(cfg.persona_run)
    customers, canaries = plant_canaries(campaign.customers, cfg.evaluation.canary_share, cfg.evaluation.seed,
                                         exclude=campaign.messaged_users(cfg))
    segments = campaign.segments(cfg, profiles_from_users(customers))   # bad personas/users fail before any output
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    backend = writer_label(cfg.llm)
    print(f"crm [writer: {backend}; retrieval: {embedder_label(cfg.embedder)}]: {len(segments)} segments of persona "
          f"run {campaign.run_dir.name}; {len(canaries)} canaries planted -> {run_dir}")
    init_ray()
    started = time.perf_counter()
    written, vocabulary = _write(segments, campaign, cfg)
    seconds = time.perf_counter() - started
    # kind and key (persona name, customer id, profile number) are in the outputs, never in a prompt
    results = [{"kind": row["kind"], "key": row["key"], **json.loads(row["result"])} for row in written]
    prompts = [prompt for row in written for prompt in json.loads(row["prompts"])]
    k = cfg.crm.products_per_message
    checker = evaluate_checker([(m["text"], facts_of(r)) for r in results for m in r["messages"]], vocabulary,
                               cfg.evaluation.checker_seed, cfg.evaluation.corrupt_share)
    leaked = canary_leaks(prompts, canaries)
    report = {"persona_run": str(campaign.run_dir), "backend": backend, "embedder": embedder_label(cfg.embedder),
              "note": campaign.note, "k": k, "segments": len(results), "seconds": round(seconds, 1),
              "messages": sum(len(r["messages"]) for r in results), "rejected_drafts": sum(len(r["rejected"]) for r in results),
              "dropped": {f"{r['kind']} {r['key']}": r["dropped_tones"] for r in results if r["dropped_tones"]},
              "claim_checker": asdict(checker), "privacy": {"canaries": len(canaries), "prompts": len(prompts),
                                                            "leaked": len(leaked), "examples": leaked[:5]},
              "segment_fit": evaluate_segment_picks(campaign.data.split, campaign.data.candidates,
                                                    campaign.data.item_category, campaign.persona_of, campaign.names,
                                                    campaign.segment_scores(), k)}
    (run_dir / "messages.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    (run_dir / "prompts.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts))
    write_json(run_dir / "report.json", report)
    titles = {i: str(campaign.items[i].get("title")) for r in results for i in r["product_ids"]}
    write_html(run_dir / "report.html", report, results, titles)
    write_manifest(run_dir, "crm", {"persona_run": str(campaign.run_dir)},
                   {n: str(run_dir / n) for n in ("messages.jsonl", "prompts.jsonl", "report.json", "report.html")},
                   {"backend": backend})
    _summary(report, location_of(run_dir))
    return report | {"run_dir": location_of(run_dir)}


def _summary(report: dict, run_dir) -> None:
    fit, k, checker = report["segment_fit"], report["k"], report["claim_checker"]
    hit = lambda block: f"{block[f'hit@{k}']:.4f}" if block[f"hit@{k}"] is not None else "n/a"  # noqa: E731
    print(f"{report['messages']} messages for {report['segments']} segments in {report['seconds']} s "
          f"({report['rejected_drafts']} drafts rejected) [writer: {report['backend']}]")
    print(f"segment fit hit@{k} on the test day ({fit['n_customers']} customers): picks "
          f"{hit(fit['segment_picks']['overall'])}, MostPop {hit(fit['most_popular']['overall'])}, "
          f"chance {hit(fit['chance']['overall'])}")
    print(f"claim checker: precision {checker['precision']:.3f}, recall {checker['recall']:.3f} on {checker['n']} "
          f"messages; privacy: {report['privacy']['leaked']} of {report['privacy']['canaries']} canaries in "
          f"{report['privacy']['prompts']} prompts")
    if "stand-in" in report["backend"]:
        print("the messages come from the offline template stand-in: these numbers say nothing about a real LLM")
    if report["note"]:   # a synthetic persona run (the demo's users): its customers are stand-ins too
        print(f"data: {report['note']}")
    print(f"results in {run_dir}")


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], CrmRunConfig, "configs/crm.yaml", argv))


if __name__ == "__main__":
    run_main(main)
