"""Label-corpus preprocessing, independent of how it is scheduled.

:func:`process_label_batch` turns a batch of label files (path + bytes) into one *outcome* table:
one row per written garment (``outcome='item'``), per quarantined record (``'quarantine'``) and per
file that parsed (``'file_ok'``, carrying its number of labelled garments). :func:`preprocess_serial`
loops over it in one process (the benchmark's baseline); Ray Data maps that same loop over blocks of
the corpus (:func:`preprocess_block`, ``ray_jobs.preprocess``), each task writing its block's items. :func:`tally` counts a block of outcomes and
:func:`reconcile` proves read = written + quarantined from the merged counts.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys import storage
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
    """All ``*.json`` label files under ``root`` ({root}/{style}/{id}.json), sorted, absolute; ``root``
    may be an object-store URI (then the files are URIs too).

    Plain strings from ``os.walk``, not a ``Path`` per file: the listing is the one thing the driver
    holds per label, and pathlib objects made it grow by ~1 KB a file (20 MB at 20,000 labels)."""
    if storage.is_uri(root):
        files = _label_uris(str(root))
    elif not Path(root).exists():
        raise AdapterError(f"labels path {root} does not exist (expected a folder of K-Fashion label JSON files)")
    elif Path(root).is_file():
        files = [str(Path(root).resolve())]
    else:
        files = []
        for folder, _, names in os.walk(Path(root).resolve()):
            files.extend(os.path.join(folder, name) for name in names
                         if name.endswith(".json") and name != "manifest.json")
        files.sort()
    if not files:
        raise AdapterError(f"labels path {root} holds no label files: expected K-Fashion JSON files laid out "
                           f"as {root}/<style>/<id>.json")
    return files


def _label_uris(root: str) -> list[str]:
    storage.check_reachable(root)  # a wrong bucket or missing credentials: a clear error naming the URI
    if storage.is_file(root):
        return [root]
    return sorted(storage.join(root, relative) for relative in storage.list_files(root)
                  if relative.endswith(".json") and storage.name(relative) != "manifest.json")


def _read_label(path: str) -> bytes:
    return storage.read_bytes(path) if storage.is_uri(path) else Path(path).read_bytes()


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
        tables.append(process_label_batch(chunk, [_read_label(p) for p in chunk], options))
    return pa.concat_tables(tables)


def preprocess_block(paths: Sequence[str], options: KFashionOptions, items_dir: str,
                     batch_size: int = 64) -> tuple[dict, pa.Table]:
    """One unit of parallel work: :func:`preprocess_serial` over a block of label files, its items written
    as one parquet shard under ``items_dir`` (folder or URI). The shard is named after the block's first
    file, so a task run again (its node was lost) overwrites its shard instead of adding a second one.
    Returns the block's :func:`tally` and its quarantined rows: all the driver needs."""
    outcomes = preprocess_serial(paths, options, batch_size=batch_size, progress=False)
    items = items_of(outcomes)
    if items.num_rows:
        shard = hashlib.sha1(paths[0].encode()).hexdigest()[:16]
        with storage.open_output(storage.join(items_dir, f"part-{shard}.parquet")) as out:
            pq.write_table(items, out)
    return tally(outcomes), quarantine_of(outcomes)


def tally(outcomes: pa.Table) -> dict:
    """Mergeable counts of one block of outcome rows: all that :func:`reconcile` and
    :func:`distribution` need. The driver sums one small dict per block (:func:`merge_tallies`) instead
    of holding a row per garment, so its memory does not grow with the corpus."""
    outcome = outcomes["outcome"].to_pylist()
    level = outcomes["level"].to_pylist()
    items = outcomes.filter(pc.equal(outcomes["outcome"], "item"))
    paths = items["category_path"].to_pylist()
    return {
        "files_ok": outcome.count("file_ok"),
        "files_quarantined": sum(1 for o, lv in zip(outcome, level) if o == "quarantine" and lv == "file"),
        "garments_labelled": sum(n for o, n in zip(outcome, outcomes["n_garments"].to_pylist()) if o == "file_ok"),
        "garments_written": outcome.count("item"),
        "garments_quarantined": sum(1 for o, lv in zip(outcome, level) if o == "quarantine" and lv == "garment"),
        "quarantine_reasons": Counter(r for o, r in zip(outcome, outcomes["reason"].to_pylist()) if o == "quarantine"),
        "style": Counter((s[0] if s else "(none)") for s in items["styles"].to_pylist()),
        "slot": Counter(p[0] if p else "(none)" for p in paths),
        "category": Counter(" > ".join(p) if p else "(none)" for p in paths),
    }


def merge_tallies(tallies: Iterable[dict]) -> dict:
    """Sum of block tallies (plain dicts, e.g. after JSON): numbers add, counters add per key."""
    total: dict = {}
    for part in tallies:
        for key, value in part.items():
            if isinstance(value, dict):
                total.setdefault(key, Counter()).update(value)
            else:
                total[key] = total.get(key, 0) + value
    return total


def reconcile(files_read: int, counts: dict) -> dict:
    """Files: read = processed + quarantined (file level). Garments in processed files:
    labelled = written + quarantined (garment level, e.g. no_box). ``counts``: a (merged) :func:`tally`."""
    counts = {key: counts.get(key, 0) for key in
              ("files_ok", "files_quarantined", "garments_labelled", "garments_written", "garments_quarantined")
              } | {"quarantine_reasons": counts.get("quarantine_reasons", {})}
    return {
        "files": {"read": files_read, "processed": counts["files_ok"], "quarantined": counts["files_quarantined"],
                  "reconciles": files_read == counts["files_ok"] + counts["files_quarantined"]},
        "garments": {"labelled_in_processed_files": counts["garments_labelled"],
                     "written": counts["garments_written"], "quarantined": counts["garments_quarantined"],
                     "reconciles": counts["garments_labelled"]
                     == counts["garments_written"] + counts["garments_quarantined"]},
        "quarantine_reasons": dict(Counter(counts["quarantine_reasons"]).most_common()),
    }


def distribution(counts: dict) -> dict[str, dict[str, int]]:
    """Item counts per style, per slot (first category level) and per category, from a :func:`tally`."""
    return {key: dict(Counter(counts.get(key, {})).most_common()) for key in ("style", "slot", "category")}

