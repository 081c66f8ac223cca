"""Every trained stage with two Ray Train workers (gloo on CPU), set by ``ScalingSettings`` alone:
each fit finishes under a timeout and every epoch both workers ran the same number of steps
(``recsys.train_loops.steps``). DeepFM gets deliberately skewed data: half the training lists have
no listed target, and the loop drops those per worker, so the workers hold different numbers of
batches of their own; before the equal steps this was a DDP hang. Half a CPU per worker: both
fit in the shared 2-CPU Ray beside Ray Data."""
from dataclasses import asdict

import numpy as np
import pytest

from ray_jobs.common.trainer import fit_torch
from recsys.train_loops.rerankers import LOOPS, DeepFMTrainConfig, ListwiseTrainConfig
from recsys.train_loops.scaling import ScalingSettings
from tests.ray_jobs.test_item_towers import catalog  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
TWO = ScalingSettings(num_workers=2, cpus_per_worker=0.5)


def _equal_steps_every_epoch(history: list[dict]) -> None:
    """Equal shards, no per-worker filtering: both workers had as many batches of their own."""
    assert history and all(h["steps"] == h["fewest_own_batches"] >= 1 for h in history), history


def reranker_data(n_lists: int = 64, length: int = 10, n_items: int = 40, with_target_in: float = 1.0, seed: int = 0):
    """Lists in the reranker contract's row format; the first ``with_target_in`` share of them (in
    row order) has its target listed, the rest none."""
    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, (n_lists, length))
    label = np.zeros((n_lists, length), np.int64)
    has_target = np.arange(n_lists) < int(n_lists * with_target_in)
    label[has_target, rng.integers(0, length, has_target.sum())] = 1
    dense = rng.normal(size=(n_lists, length, 3)).astype(np.float32)
    dense[..., 0] += 2.0 * label                                    # the target stands out on feature 0
    return {"items": items, "mask": np.ones((n_lists, length), bool), "label": label, "dense": dense,
            "history": rng.integers(1, n_items + 1, (n_lists, 4))}


def reranker_fit(kind: str, train_cfg, train: dict, tmp_path) -> dict:
    n_items = 40
    items = {"index": np.arange(n_items + 1), "tokens": np.random.default_rng(1).integers(1, 30, (n_items + 1, 3)),
             "category": np.arange(n_items + 1) % 5, "popularity": np.linspace(0, 3, n_items + 1).astype(np.float32)}
    model_config = ({"embedding_dim": 8, "hidden": [16], "dropout": 0.0} if kind == "deepfm" else
                    {"embedding_dim": 8, "model_dim": 8, "heads": 2, "layers": 1, "ffn_dim": 16, "dropout": 0.0})
    loop_config = {"model": kind, "model_config": model_config, "train": asdict(train_cfg), "vocab_size": 30,
                   "n_categories": 5, "n_dense": 3, "init_tower": None, "popularity_col": 2,
                   "popularity_mean": 1.5, "popularity_std": 1.0, "absent_dense_z": [0.0, 0.0, -1.0]}
    datasets = {"train": train, "val": reranker_data(16, seed=5), "items": items}
    return fit_torch(LOOPS[kind], loop_config, datasets, TWO, tmp_path / kind, f"{kind}-two", "val_ndcg@10")


def test_deepfm_on_skewed_lists_and_listwise_run_the_same_steps_on_both_workers(idle_ray, tmp_path):
    # 64 lists, Ray Train's equal split gives each worker 32 in order: the first worker's all have
    # a listed target, of the second worker's only 4 (28 without: DeepFM drops them on that worker)
    skewed = reranker_data(64, with_target_in=36 / 64)
    deepfm = reranker_fit("deepfm", DeepFMTrainConfig(epochs=2, batch_lists=4, list_negatives=3, catalog_negatives=1),
                          skewed, tmp_path)
    # 32 usable lists / 4 = 8 batches on one worker, 4 / 4 = 1 on the other: it repeated its one batch
    assert [(h["steps"], h["fewest_own_batches"]) for h in deepfm["history"]] == [(8, 1), (8, 1)]
    listwise = reranker_fit("listwise", ListwiseTrainConfig(epochs=2, batch_lists=4), reranker_data(64), tmp_path)
    assert [(h["steps"], h["fewest_own_batches"]) for h in listwise["history"]] == [(8, 8), (8, 8)]


def test_json_encoder_stages_one_and_two(idle_ray, tmp_path):
    from ray_jobs.common.alignment_trainer import fit_alignment
    from recsys.train_loops.alignment import AlignmentTrainConfig
    from tests.ray_jobs.test_alignment_trainer import toy_alignment

    features, targets, sizes, encoder = toy_alignment(256, seed=1)
    data = {**features, "target": targets, "label": np.arange(256)}
    stage1 = fit_alignment(data, data, sizes, encoder, AlignmentTrainConfig(epochs=2, batch_size=32, lr=0.01,
                                                                              objective="json_views"),
                           TWO, tmp_path / "s1", "stage1")
    stage2 = fit_alignment(data, data, sizes, encoder, AlignmentTrainConfig(epochs=2, batch_size=32, lr=0.01),
                           TWO, tmp_path / "s2", "stage2", init_model=stage1["best_model"])
    for fitted in (stage1, stage2):
        # 256 rows split 128 / 128, batches of 32 without the partial one: 4 steps on each worker
        assert [(h["steps"], h["fewest_own_batches"]) for h in fitted["history"]] == [(4, 4), (4, 4)]
    assert stage2["history"][-1]["val_top5"] > 5 / 256                 # it learned (chance 5 of 256)


def test_item_tower_simcse_and_adapter(idle_ray, catalog, tmp_path):  # noqa: F811
    from ray_jobs.common.item_tower_trainer import fit_tower_and_adapter
    from recsys.data.item_catalog import CatalogConfig, SplitConfig, load_tower_items
    from recsys.models.item_towers import ItemTowerConfig
    from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig

    data = load_tower_items(CatalogConfig(catalog=str(catalog), hierarchy=["dept", "type"], std_fields=["colour"],
                                          re_fields=["material", "fit"], id_col="sku", title_col="name"),
                            SplitConfig(), "none", tmp_path / "cache")
    tower, adapter = fit_tower_and_adapter(data, "unified", ItemTowerConfig(), SimCSEConfig(epochs=2, batch_size=64),
                                           AdapterConfig(epochs=2, sampler="random", parents_per_batch=2,
                                                         samples_per_child=4), 32, TWO, tmp_path / "tower")
    for fitted in (tower, adapter):
        _equal_steps_every_epoch(fitted["history"])
    assert adapter["vectors"].shape == (len(data.item_ids), 32)


def test_user_tower(idle_ray, tmp_path):
    from ray_jobs.common.user_tower_trainer import fit_user_tower
    from recsys.data.synthetic_interactions import SyntheticInteractionsConfig, generate_interactions
    from recsys.eval.sequential import leave_last_out
    from recsys.models.user_tower import UserTowerConfig
    from recsys.train_loops.user_tower import UserTowerTrainConfig, tower_datasets

    log, _, _ = generate_interactions(SyntheticInteractionsConfig(n_users=300, n_items=200, n_groups=2,
                                                                  categories_per_group=4, seed=4))
    split = leave_last_out(log["user_id"].to_numpy(), log["item_id"].to_numpy(), log["timestamp"].to_numpy())
    model = UserTowerConfig(dim=16, max_len=10, layers=1, heads=2, ffn_dim=32, item_vector_dim=0)
    _, fitted = fit_user_tower(tower_datasets(split, model.max_len), split.n_items, model,
                               UserTowerTrainConfig(epochs=2, batch_size=32, patience=0), TWO, tmp_path, "two")
    _equal_steps_every_epoch(fitted["history"])


def test_persona_job_from_config_alone(idle_ray, hm_like, tmp_path):
    from ray_jobs import train_persona

    metrics = train_persona.main([
        "--config", "configs/persona.yaml", "--set", f"data.customers={hm_like / 'customers.parquet'}",
        "--set", f"data.articles={hm_like / 'articles.parquet'}",
        "--set", f"data.transactions={hm_like / 'transactions.parquet'}",
        "--set", "train.epochs=2", "--set", "train.batch_size=64", "--set", "evaluation.personas=3",
        "--set", "evaluation.tsne_sample=60", "--set", f"output_root={tmp_path}", "--set", "run_name=two",
        "--set", "scaling.num_workers=2", "--set", "scaling.cpus_per_worker=0.5"])
    _equal_steps_every_epoch(metrics["history"])
    assert (tmp_path / "two" / "metrics.json").is_file()
