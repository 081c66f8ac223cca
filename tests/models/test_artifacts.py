"""Reader/writer pairs of the artifacts other stages and Serve read (one pair each, in the library)."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recsys.data.vectors import read_vectors, vector_column
from recsys.models.item_towers import (ITEM_VECTORS_FILE, MetricAdapter, adapt, load_adapter, read_item_vectors,
                                       write_item_vectors)
from recsys.models.json_encoder import (JsonEncoder, JsonEncoderConfig, encode_features, featurize, has_json_encoder,
                                        json_encoder_files, load_json_encoder, save_vocabulary)
from recsys.vocab import AttributeVocabulary


def test_json_encoder_checkpoint_and_vocabulary_round_trip(tmp_path):
    records = [{"category": "coat", "material": ["wool"]}, {"category": "shirt", "material": ["cotton", "linen"]}]
    vocab = AttributeVocabulary.build(records, ["category"], ["material"], num_buckets=64)
    config = JsonEncoderConfig(fields=["category", "material"], multi_fields=["material"], hidden_dim=32,
                               output_dim=16, embedding_dim=8)
    sizes = {"category": vocab.std.size("category"), "material": vocab.hashed.size}
    model = JsonEncoder(config, sizes).eval()
    assert not has_json_encoder(tmp_path)
    checkpoint, _ = json_encoder_files(tmp_path)
    checkpoint.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "encoder": config.__dict__, "vocab_sizes": sizes}, checkpoint)
    save_vocabulary(tmp_path, vocab)
    assert has_json_encoder(tmp_path)
    loaded, loaded_vocab = load_json_encoder(tmp_path)
    assert loaded.config == config and loaded_vocab.to_dict() == vocab.to_dict()
    features = featurize(loaded_vocab, records, loaded.config)
    assert np.allclose(encode_features(loaded, features), encode_features(model, featurize(vocab, records, config)))


def test_item_vectors_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tower = rng.normal(size=(5, 8)).astype(np.float32)
    adapter = MetricAdapter(8, 4)
    torch.save({"model": adapter.state_dict(), "in_dim": 8, "out_dim": 4, "hidden_dim": None}, tmp_path / "a.pt")
    adapted = adapt(load_adapter(tmp_path / "a.pt"), tower)
    assert np.allclose(adapted, adapt(adapter, tower)) and np.allclose(np.linalg.norm(adapted, axis=1), 1, atol=1e-5)
    ids = np.array(["i0", "i1", "i2", "i3", "i4"])
    write_item_vectors(tmp_path / ITEM_VECTORS_FILE, ids, ["c"] * 5, [False, True, False, False, True], tower, adapted)
    read_ids, vectors = read_item_vectors(tmp_path)               # a run directory reads its file
    assert read_ids.tolist() == ids.tolist() and np.allclose(vectors, adapted)
    assert np.allclose(read_item_vectors(tmp_path / ITEM_VECTORS_FILE, "vector_512")[1], tower)
    table = pq.read_table(tmp_path / ITEM_VECTORS_FILE)
    assert table["cold"].to_pylist() == [False, True, False, False, True]
    assert pa.types.is_fixed_size_list(table.schema.field("vector").type)


def test_read_vectors_skips_null_vectors_and_filters_a_view(tmp_path):
    vectors = np.eye(3, dtype=np.float32)
    column = vector_column(vectors)
    nulled = pa.FixedSizeListArray.from_arrays(column.values, 3, mask=pa.array([False, True, False]))
    pq.write_table(pa.table({"item_id": ["a", "b", "a"], "view": [0, 0, 1], "vector": nulled}), tmp_path / "e.parquet")
    ids, matrix = read_vectors(tmp_path / "e.parquet", where={"view": 0})
    assert ids == ["a"] and np.allclose(matrix, vectors[:1])
    assert read_vectors(tmp_path / "e.parquet", where={"absent_column": 1})[0] == ["a", "a"]
