"""Label-corpus preprocessing, independent of how it is scheduled.

:func:`process_label_batch` turns a batch of label files (path + bytes) into one *outcome* table:
one row per written garment (``outcome='item'``), per quarantined record (``'quarantine'``) and per
file that parsed (``'file_ok'``, carrying its number of labelled garments). Ray Data maps it over
the corpus (``ray_jobs.preprocess``); :func:`preprocess_serial` runs the very same function in one
process (the benchmark's baseline). :func:`reconcile` proves read = written + quarantined.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from recsys.data.kfashion import KFashionOptions, process_label_file
from recsys.data.result import AdapterError
from recsys.data.schema import ITEM_SCHEMA, QUARANTINE_SCHEMA

OUTCOME_FIELDS = [
    pa.field("outcome", pa.string(), nullable=False),  # item | quarantine | file_ok
    pa.field("n_garments", pa.int32()),                 # file_ok rows: labelled garments in the file
    pa.field("record", pa.string()),
    pa.field("level", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
]
# source_file is shared by the item and quarantine schemas.
OUTCOME_SCHEMA = pa.schema(list(ITEM_SCHEMA) + OUTCOME_FIELDS)


def list_label_files(root: str | Path) -> list[str]:
    """All ``*.json`` label files under ``root`` ({root}/{style}/{id}.json), sorted, absolute."""
    root = Path(root)
    if not root.exists():
        raise AdapterError(f"labels path {root} does not exist (expected a folder of K-Fashion label JSON files)")
    files = [root.resolve()] if root.is_file() else sorted(p.resolve() for p in root.rglob("*.json"))
    files = [str(p) for p in files if p.name != "manifest.json"]
    if not files:
        raise AdapterError(f"labels path {root} holds no label files: expected K-Fashion JSON files laid out "
                           f"as {root}/<style>/<id>.json")
    return files


def process_label_batch(paths: Sequence[str], raws: Sequence[bytes], options: KFashionOptions) -> pa.Table:
    rows = []
    for path, raw in zip(paths, raws):
        items, quarantined = process_label_file(path, raw, options)
        file_rejected = any(q["level"] == "file" for q in quarantined)
        if not file_rejected:
            n_garments = len(items) + len(quarantined)
            rows.append({"outcome": "file_ok", "source_file": str(path), "n_garments": n_garments})
        rows.extend({**item, "outcome": "item"} for item in items)
        rows.extend({**q, "outcome": "quarantine"} for q in quarantined)
    columns = {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in OUTCOME_SCHEMA}
    # Non-item rows leave required item fields empty; the outcome table is therefore all-nullable.
    return pa.table(columns, schema=pa.schema([f.with_nullable(True) for f in OUTCOME_SCHEMA]))


def items_of(outcomes: pa.Table) -> pa.Table:
    table = outcomes.filter(pc.equal(outcomes["outcome"], "item")).select(ITEM_SCHEMA.names)
    return table.cast(ITEM_SCHEMA)


def quarantine_of(outcomes: pa.Table) -> pa.Table:
    table = outcomes.filter(pc.equal(outcomes["outcome"], "quarantine")).select(QUARANTINE_SCHEMA.names)
    return table.cast(QUARANTINE_SCHEMA)


def preprocess_serial(paths: Sequence[str], options: KFashionOptions, batch_size: int = 64,
                      progress: bool = True) -> pa.Table:
    """The single-process loop over the same function Ray Data maps (benchmark baseline)."""
    from tqdm import tqdm

    tables = []
    for start in tqdm(range(0, len(paths), batch_size), disable=not progress, desc="preprocess (serial)",
                      unit="batch"):
        chunk = paths[start:start + batch_size]
        tables.append(process_label_batch(chunk, [Path(p).read_bytes() for p in chunk], options))
    return pa.concat_tables(tables)


def reconcile(files_read: int, summary: pa.Table) -> dict:
    """Counts from a (possibly partial-column) outcome table: outcome, level, reason, n_garments.

    Files: read = processed + quarantined (file level). Garments in processed files:
    labelled = written + quarantined (garment level, e.g. no_box).
    """
    outcome = summary["outcome"].to_pylist()
    level = summary["level"].to_pylist()
    n_garments = summary["n_garments"].to_pylist()
    reasons = Counter(r for o, r in zip(outcome, summary["reason"].to_pylist()) if o == "quarantine")
    files_ok = outcome.count("file_ok")
    files_quarantined = sum(1 for o, lv in zip(outcome, level) if o == "quarantine" and lv == "file")
    garments_labelled = sum(n for o, n in zip(outcome, n_garments) if o == "file_ok")
    garments_written = outcome.count("item")
    garments_quarantined = sum(1 for o, lv in zip(outcome, level) if o == "quarantine" and lv == "garment")
    return {
        "files": {"read": files_read, "processed": files_ok, "quarantined": files_quarantined,
                  "reconciles": files_read == files_ok + files_quarantined},
        "garments": {"labelled_in_processed_files": garments_labelled, "written": garments_written,
                     "quarantined": garments_quarantined,
                     "reconciles": garments_labelled == garments_written + garments_quarantined},
        "quarantine_reasons": dict(reasons.most_common()),
    }


def distribution(items: pa.Table) -> dict[str, dict[str, int]]:
    """Item counts per style, per slot (first category level) and per category."""
    styles = Counter((s[0] if s else "(none)") for s in items["styles"].to_pylist())
    paths = items["category_path"].to_pylist()
    slots = Counter(p[0] if p else "(none)" for p in paths)
    categories = Counter(" > ".join(p) if p else "(none)" for p in paths)
    return {"style": dict(styles.most_common()), "slot": dict(slots.most_common()),
            "category": dict(categories.most_common())}

