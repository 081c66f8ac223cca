import numpy as np

from recsys.train_loops.rerankers import DeepFMTrainConfig, pointwise_samples


def test_pointwise_samples_by_hand():
    rows = {"items": np.array([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
            "mask": np.array([[True, True, True, False], [True, True, False, False], [True] * 4]),
            "label": np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]),   # list 2: target not retrieved
            "dense": np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2),
            "history": np.array([[1, 0], [2, 3], [4, 0]])}
    items = {"index": np.arange(10), "popularity_z": np.arange(10, dtype=np.float32) / 10}
    absent = np.array([-1.0, 0.0], dtype=np.float32)                    # column 1 = popularity
    cfg = DeepFMTrainConfig(list_negatives=2, catalog_negatives=1)
    out = pointwise_samples(rows, items, absent, 1, cfg, np.random.default_rng(0))
    assert out["items"].shape == (2, 4)                                 # target + 2 list + 1 catalog, lists 0 and 1
    assert out["items"][:, 0].tolist() == [6, 8]                        # targets first
    assert sorted(out["items"][0, 1:3].tolist()) == [5, 7]              # the other two candidates of list 0
    assert out["mask"][1].tolist() == [True, True, False, True]         # list 1 has only one other candidate
    assert out["items"][1, 1] == 9
    assert out["label"].tolist() == [[1, 0, 0, 0], [1, 0, 0, 0]]
    assert out["dense"][0, 0].tolist() == rows["dense"][0, 1].tolist()  # the target's own features
    catalog = out["items"][:, 3]
    assert ((catalog >= 1) & (catalog <= 9)).all()
    assert out["dense"][:, 3, 0].tolist() == [-1.0, -1.0]               # the non-retrieved row ...
    assert np.allclose(out["dense"][:, 3, 1], catalog / 10)             # ... with the item's popularity
    assert out["history"].tolist() == [[1, 0], [2, 3]]
