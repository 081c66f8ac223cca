"""The enrichment recipe over a whole catalog: config, the per-batch steps of the Ray Data job and
the merge, report and reconciliation. ``ray_jobs.enrich`` wires these into a Dataset.

Steps (each a plain function of a pyarrow batch, so they run inside ``map_batches`` and in tests):

1. ``prompt_batch``: canonical items -> ``{row, item_id, text}``; ``text`` = the item's raw text
   fields (title, description, an ``attributes`` dump of its STD and RE values). The category path
   is left out by default: the enriched fields must not copy the label the towers are scored on.
2. answers -> ``{row, item_id, answer, error, backend}``: ``RulesAnswers`` in-process for the
   offline stand-in, or ``recsys.llm.ray_batch.build_http_processor`` for a real server.
3. ``validate_batch``: each answer against the schema built from the catalog's STD vocabulary
   (``recsys.llm.enrichment``): STD spellings mapped onto the vocabulary, unknown values rejected
   (or nulled), never added -> ``{row, item_id, record, reason, backend}``.
4. ``merge_answers`` (driver): fills missing STD fields (a present value is kept unless
   ``overwrite_std``), appends RE phrases the item does not already state and whose words its own
   prompt text holds (``re_grounding``: a paraphrased or invented phrase is dropped and counted
   per field in the report; the rules stand-in quotes the text, so it always passes), and records exactly what
   was added in ``enriched_fields`` / ``enriched_values`` so an evaluation can withhold it
   (``withhold_enrichment``). Failed rows go to the quarantine table with their reason.
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.config import ConfigError
from recsys.data.schema import (ATTRIBUTE_LIST, ITEM_SCHEMA, QUARANTINE_SCHEMA, attributes, attributes_to_dict,
                                quarantine_row, table_from_rows)
from recsys.llm.config import LLMConfig
from recsys.llm.enrichment import build_schema, instructions, item_text, messages_for_text, validate_answer
from recsys.llm.errors import LLMError, reason
from recsys.llm.rules import RulesClient

ATTRIBUTES_TEXT = "attributes"   # pseudo text field: "field: value" lines of the item's STD and RE values
ENRICHED_ITEM_SCHEMA = pa.schema(list(ITEM_SCHEMA) + [
    pa.field("enriched_fields", pa.list_(pa.string()), metadata={
        "doc": "Attribute fields the LLM filled or extended (empty: none); withhold them for leak-free evaluation."}),
    pa.field("enriched_values", ATTRIBUTE_LIST, metadata={
        "doc": "Exactly the values the LLM added, {field, values} (see recsys.llm.enrich_job.withhold_enrichment)."}),
    pa.field("enriched_by", pa.string(), metadata={"doc": "Backend that answered, e.g. 'rules (stand-in, no LLM)'."}),
])
ANSWER_SCHEMA = pa.schema([("row", pa.int64()), ("item_id", pa.string()), ("answer", pa.string()),
                           ("error", pa.string()), ("backend", pa.string())])
VALIDATED_SCHEMA = pa.schema([("row", pa.int64()), ("item_id", pa.string()), ("record", pa.string()),
                              ("reason", pa.string()), ("backend", pa.string())])


@dataclass
class EnrichConfig:
    """One catalog in, enriched items + quarantine out (``configs/enrich.yaml``)."""
    catalog: str | None = None            # FPI styles / H&M articles / any CSV-parquet (generic: name hierarchy)
    items: str | None = None              # or a canonical items parquet (e.g. a K-Fashion preprocess run's items/)
    hierarchy: list[str] | None = None    # generic catalogs: category columns, coarse -> fine
    catalog_std_fields: list[str] = field(default_factory=list)   # generic catalogs: STD / RE columns
    catalog_re_fields: list[str] = field(default_factory=list)
    id_col: str | None = None
    title_col: str | None = None
    description_col: str | None = None
    limit: int | None = None              # enrich only the first N items (vocabulary still from all)
    std_fields: list[str] | None = None   # STD fields to fill; null: every STD field of the catalog
    re_fields: list[str] = field(default_factory=lambda: ["detail"])   # free-text fields to extend
    text_fields: list[str] = field(default_factory=lambda: ["title", "description", ATTRIBUTES_TEXT])
    overwrite_std: bool = False           # replace present STD values with the answer's (loses the raw value)
    unknown_std: str = "reject"           # reject: quarantine the answer | null: drop just that value
    re_max_length: int = 300
    re_grounding: float = 1.0             # share of an RE phrase's words that must occur in the item's text (0: off)
    min_value_count: int = 1              # a catalog value enters the STD vocabulary from this many items
    batch_size: int = 256                 # rows per map_batches call (rules) / per HTTP actor batch
    concurrency: int = 1                  # HTTP processor actors (each keeps llm.max_concurrency in flight)
    output_root: str = "artifacts/enrich"
    run_name: str | None = None
    rows_per_shard: int = 50_000
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self):
        if (self.catalog is None) == (self.items is None):
            raise ConfigError("enrich: name exactly one of catalog (a catalog file) or items (canonical parquet)")
        if self.unknown_std not in ("reject", "null"):
            raise ConfigError(f"enrich.unknown_std must be 'reject' or 'null', got {self.unknown_std!r}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"enrich.limit must be > 0 or null, got {self.limit}")


@dataclass
class CatalogInput:
    items: pa.Table                # canonical items to enrich (after ``limit``)
    source: str
    reconciliation: dict           # the adapter's rows read = items + rejected, over the whole file
    quarantine: pa.Table           # the adapter's rejected rows
    vocabulary: dict[str, list[str]]


def load_catalog(cfg: EnrichConfig) -> CatalogInput:
    """The catalog through its adapter (``recsys.data.catalogs``), and its STD vocabulary."""
    if cfg.items:
        table = pq.read_table(cfg.items).select(ITEM_SCHEMA.names).cast(ITEM_SCHEMA)
        sources = set(table.column("source").to_pylist())
        source = sources.pop() if len(sources) == 1 else "generic"
        recon = {"source": source, "read": table.num_rows, "written": table.num_rows, "quarantined": 0,
                 "reconciles": True, "quarantine_reasons": {}}
        rejected = table_from_rows([], QUARANTINE_SCHEMA)
    else:
        from recsys.data.catalogs import load_item_catalog
        result = load_item_catalog(cfg.catalog, cfg.hierarchy, cfg.catalog_std_fields, cfg.catalog_re_fields,
                                   cfg.id_col, cfg.title_col, cfg.description_col)
        table, source, recon, rejected = result.table, result.source, result.reconciliation(), result.quarantine
    vocabulary = std_vocabulary(table, cfg.std_fields, cfg.min_value_count)
    items = table.slice(0, cfg.limit) if cfg.limit else table
    return CatalogInput(items, source, recon, rejected, vocabulary)


def std_vocabulary(items: pa.Table, fields: Sequence[str] | None = None, min_count: int = 1) -> dict[str, list[str]]:
    """``{field: sorted values}`` present in the catalog's ``std_attributes`` (the answer's only
    allowed STD values). ``fields=None``: every STD field the catalog has, in first-seen order."""
    counts: dict[str, Counter] = {}
    for attribute_list in items.column("std_attributes").to_pylist():
        for attribute in attribute_list or []:
            counts.setdefault(attribute["field"], Counter()).update(v for v in attribute["values"] if v)
    names = list(fields) if fields is not None else list(counts)
    missing = [f for f in names if not any(n >= min_count for n in counts.get(f, Counter()).values())]
    if missing:
        raise ConfigError(f"enrich.std_fields {missing}: no values in the catalog's std_attributes (with "
                          f"min_value_count={min_count}); it has {sorted(counts)}")
    return {f: sorted(v for v, n in counts[f].items() if n >= min_count) for f in names}


def enrichment_schema(cfg: EnrichConfig, vocabulary: Mapping[str, Sequence[str]]) -> dict:
    try:
        return build_schema(vocabulary, cfg.re_fields, cfg.re_max_length)
    except ValueError as exc:
        raise ConfigError(f"enrich: {exc}") from exc


# --- per-batch steps -------------------------------------------------------------------------------

def attributes_dump(row: Mapping) -> str:
    """The item's STD and RE values as ``field: value`` clauses, as a raw attribute dump reads."""
    pairs = [(a["field"], v) for column in ("std_attributes", "re_attributes")
             for a in row.get(column) or [] for v in a["values"]]
    return "; ".join(f"{f.replace('_', ' ')}: {v}" for f, v in pairs)


def prompt_text(row: Mapping, text_fields: Sequence[str]) -> str:
    """The raw text an item's prompt shows (and the RE grounding check reads)."""
    return item_text({**row, ATTRIBUTES_TEXT: attributes_dump(row)}, text_fields)


def prompt_batch(batch: pa.Table, text_fields: Sequence[str]) -> pa.Table:
    """Items -> ``{row, item_id, text}``; ``row`` is the item's position in the input table (the
    key the answers are merged back on: ids of a canonical parquet need not be unique)."""
    rows = batch.to_pylist()
    texts = [prompt_text(r, text_fields) for r in rows]
    return pa.table({"row": batch.column("row"), "item_id": batch.column("item_id"), "text": pa.array(texts, pa.string())})


@dataclass
class RulesAnswers:
    """The offline stand-in as a ``map_batches`` step: ``{row, item_id, text}`` -> answer rows."""
    schema: dict

    def __call__(self, batch: pa.Table) -> pa.Table:
        client, header = RulesClient(), instructions(self.schema)
        answers, errors = [], []
        for text in batch.column("text").to_pylist():
            try:
                answers.append(json.dumps(client.complete(messages_for_text(text, self.schema, header), self.schema)))
                errors.append(None)
            except LLMError as exc:
                answers.append(None)
                errors.append(reason(exc))
        return pa.table({"row": batch.column("row"), "item_id": batch.column("item_id"),
                         "answer": pa.array(answers, pa.string()), "error": pa.array(errors, pa.string()),
                         "backend": pa.array([client.backend_label] * batch.num_rows, pa.string())},
                        schema=ANSWER_SCHEMA)


@dataclass
class ToMessages:
    """``to_messages`` of the HTTP processor (picklable; the shared instructions built once)."""
    schema: dict

    def __post_init__(self):
        self.header = instructions(self.schema)

    def __call__(self, row: dict) -> list[dict]:
        return messages_for_text(row["text"], self.schema, self.header)


def validate_batch(batch: pa.Table, schema: dict, unknown_std: str = "reject") -> pa.Table:
    """Answer rows -> ``{row, item_id, record (validated JSON), reason (quarantine reason)}``."""
    records, reasons = [], []
    for answer, error in zip(batch.column("answer").to_pylist(), batch.column("error").to_pylist()):
        record, why = (None, error) if error else validate_answer(answer or "", schema, unknown_std)
        records.append(None if record is None else json.dumps(record, sort_keys=True))
        reasons.append(why)
    return pa.table({"row": pa.array(batch.column("row").to_pylist(), pa.int64()),
                     "item_id": pa.array(batch.column("item_id").to_pylist(), pa.string()),
                     "record": pa.array(records, pa.string()), "reason": pa.array(reasons, pa.string()),
                     "backend": pa.array(batch.column("backend").to_pylist(), pa.string())}, schema=VALIDATED_SCHEMA)


# --- merge, quarantine, report ---------------------------------------------------------------------

def words(text: str) -> set[str]:
    """Lower-case word tokens of any script (Korean included; digits too: an invented "3/4" counts),
    HTML tags stripped and entities unescaped, for the RE grounding check."""
    return set(re.findall(r"\w+", html.unescape(re.sub(r"<[^>]+>", " ", str(text))).lower()))


def phrase_key(text: str) -> str:
    """A phrase's comparison form for "already stated" checks: its words in order, any script."""
    return " ".join(re.findall(r"\w+", html.unescape(str(text)).lower()))


def grounded(phrase: str, source_words: set[str], share: float) -> bool:
    """Whether at least ``share`` of the phrase's words occur in the item's own text: an RE phrase
    must be read from the item, not written by the model (a paraphrase fails; ``share=0`` accepts all)."""
    phrase_words = words(phrase)
    return not phrase_words or len(phrase_words & source_words) >= share * len(phrase_words)


def merge_item(item: Mapping, record: Mapping, std_names: Sequence[str], re_names: Sequence[str],
               overwrite_std: bool = False, source_words: set[str] | None = None, re_grounding: float = 1.0
               ) -> tuple[dict, dict[str, list[str]], dict[str, list[str]]]:
    """The enriched item, ``{field: values added}`` and ``{field: phrases dropped as ungrounded}``.
    STD: fill a missing field (or replace it with ``overwrite_std``); RE: append the answer's
    phrases ("; "-separated) that the item does not already state (as a value, a field name or its
    title, compared normalised) and, given the item's ``source_words`` (its prompt text), that are
    grounded in it (``grounded``)."""
    std, re_ = attributes_to_dict(item.get("std_attributes")), attributes_to_dict(item.get("re_attributes"))
    known = {phrase_key(v) for values in (*std.values(), *re_.values()) for v in values}
    known |= {phrase_key(f.replace("_", " ")) for f in (*std, *re_)} | {phrase_key(item.get("title") or "")}
    added: dict[str, list[str]] = {}
    dropped: dict[str, list[str]] = {}
    for name in std_names:
        value = record.get(name)
        if value and (not std.get(name) or (overwrite_std and std[name] != [value])):
            std[name] = added[name] = [value]
    for name in re_names:
        new, seen = [], set(known)   # per field: "detail" and "neck" may quote the same clause
        for phrase in str(record.get(name) or "").split(";"):
            phrase = " ".join(phrase.split())
            if not phrase_key(phrase) or phrase_key(phrase) in seen:
                continue
            if source_words is not None and not grounded(phrase, source_words, re_grounding):
                dropped.setdefault(name, []).append(phrase)
                continue
            seen.add(phrase_key(phrase))
            new.append(phrase)
        if new:
            re_[name] = re_.get(name, []) + new
            added[name] = new
    return {**item, "std_attributes": attributes(std), "re_attributes": attributes(re_)}, added, dropped


def merge_answers(items: pa.Table, validated: pa.Table, schema: Mapping, overwrite_std: bool = False,
                  text_fields: Sequence[str] | None = None, re_grounding: float = 1.0
                  ) -> tuple[pa.Table, pa.Table, list[dict], Counter]:
    """``(enriched items, quarantine, after, ungrounded)``: items with a valid answer merged (input
    order), the rest quarantined with their reason; ``after`` = every input item as it stands now
    (quarantined ones unchanged), for the fill rates; ``ungrounded`` = RE phrases dropped per field
    because the item's prompt text (``text_fields``; None: no check) does not hold them."""
    std_names = [f for f, p in schema["properties"].items() if "enum" in p]
    re_names = [f for f, p in schema["properties"].items() if "enum" not in p]
    by_row = {r["row"]: r for r in validated.to_pylist()}
    enriched, rejected, after, ungrounded = [], [], [], Counter()
    for index, item in enumerate(items.to_pylist()):
        answer = by_row.get(index) or {"reason": "missing_answer: the backend returned no row for this item"}
        if answer.get("record") is None:
            why = answer.get("reason") or "missing_answer: no record and no reason"
            rejected.append(quarantine_row(item.get("source_file") or "", item["item_id"], "item",
                                           why.split(":", 1)[0], why))
            after.append(item)
            continue
        source = None if text_fields is None else words(prompt_text(item, text_fields))
        merged, added, dropped = merge_item(item, json.loads(answer["record"]), std_names, re_names, overwrite_std,
                                            source, re_grounding)
        ungrounded.update({name: len(phrases) for name, phrases in dropped.items()})
        enriched.append({**merged, "enriched_fields": list(added), "enriched_values": attributes(added),
                         "enriched_by": answer.get("backend")})
        after.append(merged)
    return (table_from_rows(enriched, ENRICHED_ITEM_SCHEMA), table_from_rows(rejected, QUARANTINE_SCHEMA), after,
            ungrounded)


def withhold_enrichment(items: pa.Table) -> pa.Table:
    """Enriched items with exactly the LLM's additions removed (the raw attributes back, unless
    ``overwrite_std`` replaced a value), in ``ITEM_SCHEMA``: the leak-free comparison's raw side."""
    rows = []
    for item in items.to_pylist():
        added = attributes_to_dict(item.get("enriched_values"))
        for column in ("std_attributes", "re_attributes"):
            values = attributes_to_dict(item.get(column))
            item[column] = attributes({f: [v for v in vs if v not in added.get(f, [])] for f, vs in values.items()})
        rows.append(item)
    return table_from_rows(rows, ITEM_SCHEMA)


def fill_rates(rows: Sequence[Mapping], schema: Mapping) -> dict[str, float]:
    """Share of items with a value per answer field (STD from std_attributes, RE from re_attributes)."""
    out = {}
    for name, prop in schema["properties"].items():
        column = "std_attributes" if "enum" in prop else "re_attributes"
        filled = sum(1 for r in rows if attributes_to_dict(r.get(column)).get(name))
        out[name] = round(filled / len(rows), 4) if rows else 0.0
    return out


def enrich_report(catalog: CatalogInput, enriched: pa.Table, quarantine: pa.Table, after: Sequence[Mapping],
                  schema: Mapping, backend: str, seconds: float, ungrounded: Mapping[str, int] | None = None) -> dict:
    """``enrich_report.json``: counts (items in = enriched + quarantined), fill rates before/after
    per field, what was filled, throughput; ``backend`` says who answered."""
    n_in = catalog.items.num_rows
    before = fill_rates(catalog.items.select(["std_attributes", "re_attributes"]).to_pylist(), schema)
    now = fill_rates(after, schema)
    filled = Counter(f for fields in enriched.column("enriched_fields").to_pylist() for f in fields)
    reasons = Counter(quarantine.column("reason").to_pylist())
    counts = {"read": n_in, "enriched": enriched.num_rows, "quarantined": quarantine.num_rows,
              "reconciles": n_in == enriched.num_rows + quarantine.num_rows,
              "quarantine_reasons": dict(reasons.most_common())}
    return {"backend": backend, "source": catalog.source, "items": counts,
            "items_with_a_filled_field": sum(1 for f in enriched.column("enriched_fields").to_pylist() if f),
            "catalog": catalog.reconciliation,
            "throughput": {"seconds": round(seconds, 2), "items_per_s": round(n_in / max(seconds, 1e-9), 1)},
            "fields": {name: {"kind": "std" if "enum" in prop else "re", "before": before[name], "after": now[name],
                              "items_filled": filled.get(name, 0),
                              **({} if "enum" in prop else {"phrases_dropped_ungrounded": (ungrounded or {}).get(name, 0)}),
                              **({"vocabulary": len(prop["enum"]) - 1} if "enum" in prop else {})}
                       for name, prop in schema["properties"].items()}}


def summary_lines(report: Mapping) -> list[str]:
    """The short printed summary; every block names the backend."""
    backend, counts, speed = report["backend"], report["items"], report["throughput"]
    lines = [f"enrich [backend: {backend}] {report['source']}: read {counts['read']} = enriched "
             f"{counts['enriched']} + quarantined {counts['quarantined']}  "
             f"[{'ok' if counts['reconciles'] else 'MISMATCH'}]"]
    lines += [f"  quarantine {why}: {n}" for why, n in counts["quarantine_reasons"].items()]
    lines.append(f"enrich [backend: {backend}] {speed['items_per_s']} items/s ({counts['read']} items in "
                 f"{speed['seconds']} s); {report['items_with_a_filled_field']} items gained a field")
    lines.append(f"fill rate before -> after [backend: {backend}]")
    lines += [f"  {info['kind']} {name:<28} {info['before']:6.1%} -> {info['after']:6.1%}"
              + (f"  ({info['phrases_dropped_ungrounded']} ungrounded phrases dropped)"
                 if info.get("phrases_dropped_ungrounded") else "") for name, info in report["fields"].items()]
    return lines


def write_outputs(run_dir: Path, enriched: pa.Table, quarantine: pa.Table, catalog: CatalogInput,
                  rows_per_shard: int) -> dict[str, str]:
    """``items/part-*.parquet`` (ENRICHED_ITEM_SCHEMA), ``quarantine.parquet`` (answers that failed)
    and, when the adapter rejected rows, ``catalog_quarantine.parquet``."""
    items_dir = run_dir / "items"
    items_dir.mkdir(parents=True, exist_ok=True)
    for part, start in enumerate(range(0, max(enriched.num_rows, 1), rows_per_shard)):
        pq.write_table(enriched.slice(start, rows_per_shard), items_dir / f"part-{part:05d}.parquet")
    pq.write_table(quarantine, run_dir / "quarantine.parquet")
    outputs = {"items": str(items_dir), "quarantine": str(run_dir / "quarantine.parquet")}
    if catalog.quarantine.num_rows:
        pq.write_table(catalog.quarantine, run_dir / "catalog_quarantine.parquet")
        outputs["catalog_quarantine"] = str(run_dir / "catalog_quarantine.parquet")
    return outputs


__all__ = ["EnrichConfig", "CatalogInput", "ENRICHED_ITEM_SCHEMA", "load_catalog", "std_vocabulary",
           "enrichment_schema", "prompt_batch", "RulesAnswers", "ToMessages", "validate_batch", "merge_item",
           "merge_answers", "prompt_text", "words", "grounded", "withhold_enrichment", "fill_rates", "enrich_report", "summary_lines", "write_outputs"]
