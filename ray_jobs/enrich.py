"""LLM feature enrichment on Ray Data: fill a catalog's STD fields and append RE detail from its raw text.

    python -m ray_jobs.enrich --config configs/enrich.yaml --set catalog=PATH [--set limit=500]
    python -m ray_jobs.enrich --config configs/enrich.yaml --set catalog=PATH --set llm.backend=openai \\
        --set llm.base_url=http://HOST:8000/v1 --set llm.model=Qwen/Qwen2.5-7B-Instruct

Reads any catalog through its adapter (Fashion Product Images, H&M articles, a canonical items
parquet such as K-Fashion's, a generic CSV/parquet with ``hierarchy``), builds one prompt per item
from its raw text, asks the backend in batches, validates every answer against a schema built from
the catalog's own STD vocabulary (``recsys.llm.enrich_job``) and writes ``items/`` (enriched
items: the canonical columns + ``enriched_fields``/``enriched_values``/``enriched_by``),
``quarantine.parquet`` (failed answers with their reason), ``reconciliation.json`` (read =
enriched + quarantined, else the run fails) and ``enrich_report.json`` (fill rates before/after,
items/s) into ``artifacts/enrich/<timestamp>-<hash>/``.

Backends: ``rules`` (default) is the offline stand-in, run in ``map_batches``; every output says
``rules (stand-in, no LLM)``. ``openai`` goes through Ray Data's HTTP request processor
(``recsys.llm.ray_batch``) rather than the threaded client in ``map_batches``: each actor keeps up
to ``llm.max_concurrency`` requests in flight on one event loop, ``concurrency`` scales actors, and
a failed row travels on as data instead of failing the Dataset.
"""
from __future__ import annotations

import time

import pyarrow as pa

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.llm.client import backend_label
from recsys.llm.enrich_job import (VALIDATED_SCHEMA, EnrichConfig, RulesAnswers, ToMessages, enrich_report,
                                   enrichment_schema, load_catalog, merge_answers, prompt_batch, summary_lines,
                                   validate_batch, write_outputs)
from ray_jobs.common.cli import init_ray, load_stage_config, run_main

__all__ = ["EnrichConfig", "main", "run"]


def _answers(prompts, cfg: EnrichConfig, schema: dict):
    if cfg.llm.backend == "openai":
        from recsys.llm.ray_batch import build_http_processor

        # validate=False: validate_batch maps STD spellings onto the vocabulary before checking.
        return build_http_processor(cfg.llm, ToMessages(schema), json_schema=schema, keep_columns=("row", "item_id"),
                                    batch_size=cfg.batch_size, concurrency=cfg.concurrency, validate=False)(prompts)
    return prompts.map_batches(RulesAnswers(schema), batch_size=cfg.batch_size, batch_format="pyarrow")


def run(cfg: EnrichConfig) -> dict:
    import ray

    catalog = load_catalog(cfg)
    schema, backend = enrichment_schema(cfg, catalog.vocabulary), backend_label(cfg.llm)
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    init_ray()
    n = catalog.items.num_rows
    print(f"enrich [backend: {backend}]: {n} {catalog.source} items, {len(catalog.vocabulary)} STD fields, "
          f"RE fields {cfg.re_fields} -> {run_dir}")

    started = time.perf_counter()
    items = catalog.items.append_column("row", pa.array(range(n), pa.int64()))
    step = max(cfg.batch_size, -(-n // 64))   # enough blocks to spread over a cluster, not one per row
    prompts = ray.data.from_arrow([items.slice(i, step) for i in range(0, n, step)] or [items]).map_batches(
        prompt_batch, fn_kwargs={"text_fields": cfg.text_fields}, batch_size=cfg.batch_size, batch_format="pyarrow")
    validated = _answers(prompts, cfg, schema).map_batches(
        validate_batch, fn_kwargs={"schema": schema, "unknown_std": cfg.unknown_std}, batch_size=cfg.batch_size,
        batch_format="pyarrow")
    validated.set_name("enrich")   # the progress bar: "Dataset enrich_0 ..."
    answers = pa.concat_tables(ray.get(validated.to_arrow_refs()) or [VALIDATED_SCHEMA.empty_table()])
    seconds = time.perf_counter() - started

    enriched, quarantine, after, ungrounded = merge_answers(catalog.items, answers, schema, cfg.overwrite_std,
                                                            cfg.text_fields, cfg.re_grounding)
    outputs = write_outputs(run_dir, enriched, quarantine, catalog, cfg.rows_per_shard)
    report = enrich_report(catalog, enriched, quarantine, after, schema, backend, seconds, ungrounded) | {"outputs": outputs}
    write_json(run_dir / "enrich_report.json", report)
    write_json(run_dir / "reconciliation.json", {"backend": backend, **report["items"], "catalog": catalog.reconciliation})
    write_manifest(run_dir, "enrich", {"catalog": str(cfg.catalog or cfg.items)},
                   outputs | {name: str(run_dir / name) for name in ("enrich_report.json", "reconciliation.json")},
                   {"backend": backend})
    print("\n".join(summary_lines(report)) + f"\nresults in {location_of(run_dir)}")
    if not (report["items"]["reconciles"] and catalog.reconciliation["reconciles"]):
        raise RuntimeError(f"enrich [backend: {backend}]: counts do not reconcile, see "
                           f"{location_of(run_dir)}/reconciliation.json")
    return report | {"run_dir": location_of(run_dir)}


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], EnrichConfig, "configs/enrich.yaml", argv))


if __name__ == "__main__":
    run_main(main)
