import json

import pyarrow as pa

from recsys.data.preprocessing import OUTCOME_SCHEMA, distribution, merge_tallies, reconcile, tally

NULLABLE = pa.schema([field.with_nullable(True) for field in OUTCOME_SCHEMA])


def _outcomes(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=NULLABLE)


FILE_A = [{"outcome": "file_ok", "n_garments": 3},
          {"outcome": "item", "styles": ["street"], "category_path": ["top", "shirt"]},
          {"outcome": "item", "styles": [], "category_path": ["bottom", "skirt"]},
          {"outcome": "quarantine", "level": "garment", "reason": "no_box"}]
FILE_B = [{"outcome": "file_ok", "n_garments": 1},
          {"outcome": "item", "styles": ["street", "romantic"], "category_path": ["top", "shirt"]},
          {"outcome": "quarantine", "level": "file", "reason": "corrupt_json"},
          {"outcome": "quarantine", "level": "file", "reason": "missing_image"}]


def test_block_tallies_merged_through_json_equal_the_tally_of_all_rows():
    whole = tally(_outcomes(FILE_A + FILE_B))
    # Blocks cross file boundaries on purpose: counts must not depend on where Ray Data cuts.
    parts = [json.loads(json.dumps(tally(_outcomes(rows)))) for rows in (FILE_A[:2], FILE_A[2:] + FILE_B[:1], FILE_B[1:])]
    merged = merge_tallies(parts)
    assert reconcile(5, merged) == reconcile(5, whole) == {
        "files": {"read": 5, "processed": 2, "quarantined": 2, "reconciles": False},
        "garments": {"labelled_in_processed_files": 4, "written": 3, "quarantined": 1, "reconciles": True},
        "quarantine_reasons": {"no_box": 1, "corrupt_json": 1, "missing_image": 1}}
    assert reconcile(4, merged)["files"]["reconciles"]
    assert distribution(merged) == distribution(whole) == {
        "style": {"street": 2, "(none)": 1}, "slot": {"top": 2, "bottom": 1},
        "category": {"top > shirt": 2, "bottom > skirt": 1}}


def test_an_empty_corpus_reconciles_to_zeros():
    assert reconcile(0, merge_tallies([])) == {
        "files": {"read": 0, "processed": 0, "quarantined": 0, "reconciles": True},
        "garments": {"labelled_in_processed_files": 0, "written": 0, "quarantined": 0, "reconciles": True},
        "quarantine_reasons": {}}
    assert distribution(merge_tallies([])) == {"style": {}, "slot": {}, "category": {}}
