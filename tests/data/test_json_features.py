"""JSON-encoder training data (recsys.data.json_features.prepare) on a small generated corpus."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.augment import JsonAugmentConfig
from recsys.data.json_features import TrainJsonEncoderConfig, prepare
from recsys.vocab import UNKNOWN_ID
from tests.serve_app.artifacts import preprocess_run

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("json_features")
    items_dir = preprocess_run(root, n_images=40) / "items"
    ids = pq.read_table(items_dir, columns=["item_id"])["item_id"].to_pylist()
    vectors = np.random.default_rng(0).normal(size=(len(ids), 8)).astype(np.float32)
    (root / "emb").mkdir()
    pq.write_table(pa.table({"item_id": ids, "view": pa.array([0] * len(ids), pa.int16()),
                             "vector": pa.array(list(vectors), pa.list_(pa.float32()))}), root / "emb" / "part-0.parquet")
    return items_dir, root / "emb"


def test_synonym_augmentation_never_turns_a_known_std_value_into_unknown(inputs):
    items_dir, emb_dir = inputs
    cfg = TrainJsonEncoderConfig(items=str(items_dir), embeddings=str(emb_dir),
                                 augment=JsonAugmentConfig(copies=1, mix_rate=0.0, synonym_rate=1.0))
    data = prepare(cfg)
    n = len(data.train["target"]) // 2                      # originals first, then one copy of each
    swapped = 0
    for name in cfg.std_fields:
        original, augmented = data.train[f"ids/{name}"][:n], data.train[f"ids/{name}"][n:]
        # Same UNKNOWN count as the originals: every synonym written has an id of its own (the bug
        # was a vocabulary built before augmentation, which turned each swapped value into UNKNOWN).
        assert (augmented == UNKNOWN_ID).sum() == (original == UNKNOWN_ID).sum(), name
        swapped += int((augmented != original).any(axis=-1).sum())
    assert swapped > 0, "the corpus should hold values with synonyms, else this test checks nothing"


def test_the_best_epoch_is_chosen_on_training_items_never_on_the_held_out_ones(inputs):
    """Three disjoint item sets; the held-out (reported) items do not move when the selection share
    changes, and a config that leaves nothing to train on is refused."""
    from recsys.config import ConfigError

    items_dir, emb_dir = inputs
    n_items = len(pq.read_table(items_dir, columns=["item_id"]))
    cfg = TrainJsonEncoderConfig(items=str(items_dir), embeddings=str(emb_dir), augment=JsonAugmentConfig(copies=0))
    data = prepare(cfg)
    select_ids = set(np.unique(data.select["label"]))
    val_ids = set(data.val_item_ids)
    n_val, n_select = int(n_items * 0.2), int(n_items * 0.1)
    assert len(val_ids) == n_val and len(data.select["target"]) == n_select
    assert data.n_train_items == n_items - n_val - n_select == len(data.train["target"])
    # labels index the sorted item ids: no selection item's label is a training item's
    train_labels, val_labels = set(data.train["label"]), set(data.val["label"])
    assert select_ids.isdisjoint(train_labels) and val_labels.isdisjoint(train_labels | select_ids)
    other = prepare(TrainJsonEncoderConfig(items=str(items_dir), embeddings=str(emb_dir), selection_fraction=0.3,
                                           augment=JsonAugmentConfig(copies=0)))
    assert set(other.val_item_ids) == val_ids and len(other.select["target"]) == int(n_items * 0.3)
    with pytest.raises(ConfigError, match="selection_fraction"):
        TrainJsonEncoderConfig(val_fraction=0.5, selection_fraction=0.5)
