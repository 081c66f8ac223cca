import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.retrieval.candidates import CandidateSet
from recsys.retrieval.export import write_candidates, write_sequences


def test_candidates_file_has_the_contract_columns_and_types(tmp_path):
    candidates = CandidateSet(row=np.array([0, 0, 1]), item=np.array([2, 0, 1]),
                              score={"itemknn": np.array([1.5, 0, 2], np.float32),
                                     "mostpop": np.array([0, 0.9, 0], np.float32)},
                              rank={}, proposed={})
    labels = np.array([1, 0, 0], np.int8)
    path = tmp_path / "candidates.parquet"
    written = write_candidates(path, [("val", candidates, labels, np.array([0.7, 0.2, 0.1])),
                                      ("test", candidates, labels[::-1], np.array([0.1, 0.2, 0.3]))],
                               ["u1", "u2"], ["a", "b", "c"], slice_rows=2)
    table = pq.read_table(path)
    assert written == table.num_rows == 6
    assert table.schema.names == ["user_id", "item_id", "split", "label", "score_itemknn", "score_mostpop",
                                  "ranker_score"]
    assert table.schema.field("user_id").type == pa.string() and table.schema.field("label").type == pa.int8()
    assert table.schema.field("score_itemknn").type == pa.float32()
    assert table.column("user_id").to_pylist() == ["u1", "u1", "u2"] * 2
    assert table.column("item_id").to_pylist() == ["c", "a", "b"] * 2
    assert table.column("split").to_pylist() == ["val"] * 3 + ["test"] * 3
    assert table.column("label").to_pylist() == [1, 0, 0, 0, 0, 1]


def test_sequences_file(tmp_path):
    path = tmp_path / "sequences.parquet"
    write_sequences(path, ["u1", "u2"], [np.array([0]), np.array([1, 2])], [np.array([0, 1]), np.array([1, 2, 0])],
                    np.array([1, 0]), np.array([2, 1]), ["a", "b", "c"])
    rows = pq.read_table(path).to_pylist()
    assert rows == [{"user_id": "u1", "history_val": ["a"], "history_test": ["a", "b"], "target_val": "b",
                     "target_test": "c"},
                    {"user_id": "u2", "history_val": ["b", "c"], "history_test": ["b", "c", "a"], "target_val": "a",
                     "target_test": "b"}]
