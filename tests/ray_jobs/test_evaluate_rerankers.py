"""The reranker evaluation on Ray Train for real, on a synthetic retrieval output in the
evaluate_seq contract where candidate attributes (matched to the history) and ``score_knn``
reveal relevance that the input order mostly misses."""
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from ray_jobs import evaluate_rerankers
from recsys.data.candidate_lists import generic_feature_config, read_contract
from recsys.data.item_features import ItemFeaturizer
from recsys.data.synthetic_candidates import write_synthetic_candidates
from recsys.models.item_towers import ItemTowerConfig, build_item_tower
from recsys.models.rerankers import build_reranker, init_from_item_tower
from recsys.models.item_towers import load_tower

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def contract(tmp_path_factory):
    return write_synthetic_candidates(tmp_path_factory.mktemp("candidates"), n_users=200, n_items=300,
                                      list_size=40, seed=0)


def test_rerankers_beat_the_input_order_and_write_the_report(idle_ray, contract, tmp_path):
    out = tmp_path / "report"
    metrics = evaluate_rerankers.main([
        "--candidates", str(contract["candidates"].parent), "--items", str(contract["items"]), "--out", str(out),
        "--set", "deepfm_train.epochs=4", "--set", "deepfm_train.batch_lists=16", "--set", "deepfm.hidden=[64]",
        "--set", "listwise_train.epochs=2", "--set", "listwise_train.batch_lists=16", "--set", "listwise.layers=1",
        "--set", "listwise_diversity_sweep=[]", "--set", "mmr_lambdas=[1.0,0.5,0.1]"])
    methods = metrics["methods"]
    sources = ("input order", "DeepFM", "listwise")
    assert set(methods) == set(sources) | {f"MMR({s}) λ={lam}" for s in sources for lam in ("1", "0.5", "0.1")}
    base = methods["input order"]
    for report in methods.values():
        assert set(report) >= {"hr@10", "ndcg@10", "map@10", "mrr", "candidate_recall", "hr@10_listed", "ild@10",
                               "coverage@10", "n_users"}
        assert report["n_users"] == 200 and report["hr@10"] <= report["candidate_recall"]
        assert report["candidate_recall"] == base["candidate_recall"] < 1  # some targets were never retrieved
    assert metrics["candidate_recall"]["test"] == base["candidate_recall"]
    # Trained on the val lists, measured on the test lists: both rerankers clearly above the input order.
    assert methods["DeepFM"]["ndcg@10"] > base["ndcg@10"] + 0.1
    assert methods["listwise"]["ndcg@10"] > base["ndcg@10"] + 0.1
    # MMR with lambda 1 is its relevance order; lower lambdas buy diversity.
    assert methods["MMR(input order) λ=1"]["ndcg@10"] == pytest.approx(base["ndcg@10"])
    assert methods["MMR(DeepFM) λ=1"]["ndcg@10"] == pytest.approx(methods["DeepFM"]["ndcg@10"])
    assert methods["MMR(DeepFM) λ=0.1"]["ild@10"] > methods["DeepFM"]["ild@10"]
    assert [c["lambda"] for c in metrics["mmr"]["MMR over DeepFM"]] == [1.0, 0.5, 0.1]
    assert metrics["diversity_vectors"].startswith("attribute-token bags")
    assert metrics["n_users"] == {"train": 160, "checkpoint_selection": 40, "test": 200}
    for name in ("DeepFM", "listwise"):
        assert 0 < metrics["training"][name]["best_val_ndcg@10"] <= 1
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["methods"]["DeepFM"] == pytest.approx(methods["DeepFM"])
    for name in ("metrics.json", "tradeoff.png", "comparison.png", "training_charts.png",
                 "deepfm/checkpoints/best_model.pt", "listwise/checkpoints/best_model.pt"):
        assert (out / name).is_file(), name


def _fake_tower_run(items_path, run_dir):
    """A train_item_tower run directory with an untrained tower: the files evaluate_rerankers reads."""
    items = pq.read_table(items_path)
    featurizer = ItemFeaturizer.fit(items, generic_feature_config(items))
    (run_dir / "checkpoints").mkdir(parents=True)
    featurizer.save(run_dir / "checkpoints" / "featurizer.json")
    tower_cfg = ItemTowerConfig()
    tower = build_item_tower("concat", tower_cfg, featurizer.vocab_size, featurizer.n_fields)
    torch.save({"model": tower.state_dict(), "tower": "concat", "tower_config": asdict(tower_cfg),
                "vocab_size": featurizer.vocab_size, "n_fields": featurizer.n_fields},
               run_dir / "checkpoints" / "tower.pt")
    vectors = np.random.default_rng(0).normal(size=(items.num_rows, 128)).astype(np.float32)
    pq.write_table(pa.table({"item_id": items.column("item_id"), "category": items.column("category"),
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 128)}),
                   run_dir / "item_vectors.parquet")
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"catalog": {"items": str(items_path)}}))
    return featurizer, tower, vectors


def test_item_tower_run_supplies_tokens_vectors_and_the_token_table(contract, tmp_path):
    featurizer, tower, vectors = _fake_tower_run(contract["items"], tmp_path / "tower")
    candidates, sequences, _ = read_contract(contract["candidates"].parent)
    # no --items: the items come from the tower run's own config
    side = evaluate_rerankers.item_side(candidates, sequences, tmp_path / "tower", None)
    items = pd.read_parquet(contract["items"])
    rows = side.index.index(items["item_id"])
    assert side.vocab_size == featurizer.vocab_size == tower.tokens.num_embeddings
    assert np.allclose(side.vectors[rows], vectors) and side.vectors_source.startswith("item tower")
    features = featurizer.transform(pq.read_table(contract["items"]))
    expected = np.concatenate([features["std_ids"][0][features["std_mask"][0]],
                               features["re_ids"][0][features["re_mask"][0]]])
    assert sorted(side.tokens[rows[0]][side.tokens[rows[0]] > 0]) == sorted(expected)
    model = build_reranker("deepfm", {}, side.tokens, side.category, side.vocab_size, side.n_categories, 4)
    init_from_item_tower(model, load_tower(side.tower_state))
    assert np.array_equal(model.embedder.tokens.weight.detach().numpy(), tower.tokens.weight.detach().numpy())
