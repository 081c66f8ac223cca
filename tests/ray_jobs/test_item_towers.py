"""Item towers on Ray Train for real: the ablation command and the training/export job on a small
generic catalog (CSV with a two-level hierarchy), including the cold-start split."""
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from ray_jobs import evaluate_item_towers, train_item_tower
from recsys.data.item_catalog import CatalogConfig, SplitConfig
from recsys.models.item_towers import ItemTowerConfig
from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig

pytestmark = pytest.mark.ray

TYPES = {"Topwear": ["Tshirts", "Shirts", "Tops"], "Bottomwear": ["Jeans", "Trousers", "Shorts"],
         "Shoes": ["Sneakers", "Boots"]}
MATERIAL = {"Tshirts": "cotton", "Shirts": "linen", "Tops": "viscose", "Jeans": "denim", "Trousers": "wool",
            "Shorts": "twill", "Sneakers": "canvas", "Boots": "leather"}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """Items whose attributes follow their type (material, fit) with noise, so types are learnable."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(480):
        group = list(TYPES)[i % 3]
        kind = TYPES[group][rng.integers(len(TYPES[group]))]
        material = MATERIAL[kind] if rng.random() < 0.8 else rng.choice(list(MATERIAL.values()))
        rows.append({"sku": f"s{i}", "dept": group, "type": kind, "colour": rng.choice(["red", "blue", "black"]),
                     "material": material, "fit": f"{kind.lower()}-fit" if rng.random() < 0.7 else "regular",
                     "name": f"{rng.choice(['Basic', 'Classic'])} {kind}",
                     "desc": f"{material} {kind.lower()} for everyday wear, "
                             f"{rng.choice(['ribbed hem', 'patch pockets', 'contrast stitching'])}"})
    path = tmp_path_factory.mktemp("catalog") / "items.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ABLATION_ARGS = ["--set", "simcse.epochs=2", "--set", "simcse.batch_size=64", "--set", "adapter.epochs=3",
                 "--set", "adapter.parents_per_batch=2", "--set", "adapter.samples_per_child=4"]
CSV_ARGS = ["--hierarchy", "dept,type", "--std-fields", "colour", "--re-fields", "material,fit", "--id-col", "sku",
            "--title-col", "name"]


def test_ablation_command_writes_the_documented_report(idle_ray, catalog, tmp_path):
    out = tmp_path / "ablation"
    metrics = evaluate_item_towers.main([
        "--catalog", str(catalog), *CSV_ARGS, "--towers", "unified", "--out", str(out),
        "--set", "samplers=[hierarchical]", "--set", "split.unseen_category_fraction=0.15", *ABLATION_ARGS])
    assert set(metrics["variants"]) == {"baseline:tfidf", "baseline:minilm", "unified", "unified+adapter(hierarchical)"}
    assert metrics["n_items"] == 480 and metrics["n_cold"] == 48
    # Leak-free: the label level (type) is no input; one whole type (~60 items, budget 72) is unseen.
    assert metrics["withheld"] == {"levels": ["type"], "fields": {}, "values": 8}   # the 8 type names
    assert metrics["config"]["input_features"]["hierarchy"] == ["dept"]
    assert 40 <= metrics["n_unseen_category"] <= 72
    for variant in metrics["variants"].values():
        for split in ("warm", "cold", "unseen_category"):
            report = variant[split]
            assert set(report) >= {"category_hit@10", "sibling_confusion@10", "same_vs_sibling_gap", "ild@10",
                                   "coverage@10"}
            assert 0 <= report["category_hit@10"] <= 1 and 0 < report["coverage@10"] <= 1
    # 8 types, ~1/8 chance; material, fit and the title follow the type, so the type can be inferred.
    adapted = metrics["variants"]["unified+adapter(hierarchical)"]["cold"]
    assert adapted["category_hit@10"] > 0.4
    assert adapted["same_vs_sibling_gap"] > 0
    assert metrics["variants"]["baseline:tfidf"]["cold"]["category_hit@10"] > 0.4
    assert metrics["variants"]["unified+adapter(hierarchical)"]["unseen_category"]["n_queries"] == \
        metrics["n_unseen_category"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["features"]["hierarchy"] == ["dept", "type"]
    # the baselines were Ray tasks with the declared resources, not work of this (driver) process
    assert set(saved["ray_tasks"]) == {"baseline:tfidf", "baseline:minilm"}
    assert all(t["pid"] != os.getpid() and t["resources"] == {"CPU": 2.0} for t in saved["ray_tasks"].values())
    assert (out / "ablation.png").is_file() and (out / "projection.png").is_file()


def test_enriched_catalog_is_compared_with_its_raw_self_on_one_split(idle_ray, catalog, tmp_path):
    from ray_jobs import enrich

    report = enrich.main(["--config", "configs/enrich.yaml", "--set", f"catalog={catalog}",
                          "--set", "hierarchy=[dept, type]", "--set", "catalog_std_fields=[colour]",
                          "--set", "catalog_re_fields=[material, fit]", "--set", "id_col=sku",
                          "--set", "title_col=name", "--set", "description_col=desc", "--set", "re_fields=[detail, fit]",
                          "--set", f"output_root={tmp_path / 'enrich'}"])
    items = report["outputs"]["items"]
    out = tmp_path / "compare"
    metrics = evaluate_item_towers.main([
        "--enriched", str(items), *CSV_ARGS, "--towers", "unified", "--out", str(out), "--set", "samplers=[]",
        "--set", "baselines=[tfidf]", *ABLATION_ARGS])
    assert set(metrics["variants"]) == {"raw: baseline:tfidf", "raw: unified", "enriched: baseline:tfidf",
                                        "enriched: unified"}
    variants = metrics["variants"]
    for name in ("baseline:tfidf", "unified"):
        for split in ("warm", "cold"):
            assert metrics["enrichment_gain"][name][split] == pytest.approx(
                variants[f"enriched: {name}"][split]["category_hit@10"]
                - variants[f"raw: {name}"][split]["category_hit@10"], abs=1e-4)
    # The raw side is the enriched items with exactly the additions withheld: fewer RE tokens.
    stats = metrics["token_stats"]
    assert report["fields"]["detail"]["after"] == 1.0
    assert stats["raw: "]["re_per_item"] < stats["enriched: "]["re_per_item"]
    assert metrics["n_items"] == report["items"]["enriched"] == 480
    assert (out / "raw" / "unified").is_dir() and (out / "enriched" / "unified").is_dir()


def test_train_job_exports_unit_vectors_for_every_item_and_resumes(idle_ray, catalog, tmp_path):
    cfg = train_item_tower.TrainItemTowerConfig(
        catalog=CatalogConfig(catalog=str(catalog), hierarchy=["dept", "type"], std_fields=["colour"],
                              re_fields=["material", "fit"], id_col="sku", title_col="name"),
        tower_name="coarse_to_fine", tower=ItemTowerConfig(title_mode="tokens"),
        simcse=SimCSEConfig(epochs=1, batch_size=64),
        adapter=AdapterConfig(epochs=2, parents_per_batch=2, samples_per_child=4),
        split=SplitConfig(cold_fraction=0.1), output_root=str(tmp_path / "runs"), run_name="fixed")
    result = train_item_tower.run(cfg)
    vectors = pq.read_table(f"{result['run_dir']}/item_vectors.parquet")
    assert vectors.num_rows == 480 and sum(vectors.column("cold").to_pylist()) == 48
    adapted = np.stack(vectors.column("vector").to_numpy(zero_copy_only=False))
    assert adapted.shape == (480, 128) and np.allclose(np.linalg.norm(adapted, axis=1), 1, atol=1e-4)
    assert len(vectors.column("vector_512")[0]) == 512
    for name in ("checkpoints/tower.pt", "checkpoints/adapter.pt", "checkpoints/featurizer.json", "metrics.json",
                 "training_charts_stage1.png", "training_charts_stage2.png", "projection.png"):
        assert (tmp_path / "runs" / "fixed" / name).is_file(), name

    # Same run name, one more adapter epoch: stage 1 is already complete and stage 2 continues.
    cfg.adapter.epochs = 3
    resumed = train_item_tower.run(cfg)
    assert resumed["run_dir"] == result["run_dir"]
    # Restored epochs carry their original records (timings included), so they were not re-run.
    assert resumed["history"]["stage1"] == result["history"]["stage1"]
    assert [h["epoch"] for h in resumed["history"]["stage2"]] == [0, 1, 2]
    assert resumed["history"]["stage2"][:2] == result["history"]["stage2"]
