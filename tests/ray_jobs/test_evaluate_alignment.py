"""Protocol E1's command end to end on Ray (MiniLM for real, two short Ray Train fits) on a small
generated catalog whose titles name the brand, the colour and the kind of each product."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from ray_jobs import evaluate_alignment

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    rng = np.random.default_rng(0)
    colours, kinds = ["red", "blue", "black", "white", "green"], ["shirt", "jeans", "dress", "jacket", "skirt", "boots"]
    brands = ["Acme", "Borealis", "Cobalt", "Dune", "Ember", "Fjord", "Grove", "Halo"]
    rows = [{"id": i, "colour": rng.choice(colours), "kind": rng.choice(kinds), "brandName": rng.choice(brands)}
            for i in range(400)]
    for row in rows:
        row["title"] = f"{row['brandName']} {rng.choice(['Men', 'Women'])} {row['colour'].title()} {row['kind'].title()}"
    path = tmp_path_factory.mktemp("e1") / "catalog.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_e1_reports_both_variants_beside_zero_shot_with_minilm_in_a_task(idle_ray, catalog, tmp_path):
    out = tmp_path / "e1"
    report = evaluate_alignment.main(["--catalog", str(catalog), "--text-col", "title", "--out", str(out),
                                      "--set", "train.epochs=3", "--set", "train.batch_size=64"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["fields"] == ["colour", "kind"] and saved["brand_col"] == "brandName"   # id and brand left out
    assert saved["n_val"] == 80 and saved["n_train"] + saved["n_select"] == 320
    for name in ("zero_shot", "model", "model_with_brand"):
        for protocol in ("full", "inbatch64"):
            values = saved[name][protocol]
            assert 0 <= values["top1"] <= values["top5"] <= values["top10"] <= 1
    # the titles name the brand: the variant that sees it must rank its own title higher
    assert saved["model_with_brand"]["full"]["mrr"] > saved["model"]["full"]["mrr"]
    # MiniLM's work ran as a Ray task with the declared resources (configs/alignment_e1.yaml: 2 CPUs)
    task = saved["ray_tasks"]["e1.text"]
    assert task["pid"] != os.getpid() and task["resources"] == {"CPU": 2.0}
    assert report["zero_shot"] == saved["zero_shot"]
    assert (out / "comparison_full.png").is_file() and (out / "model" / "checkpoints" / "best_model.pt").is_file()
