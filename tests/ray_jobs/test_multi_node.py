"""The pipeline on a real multi-node Ray cluster: a head with 0 CPUs (like cluster.yaml's) and two worker
nodes, all on this machine (tests/cluster.py), reached only through `ray job submit` and the state API.

One submission of `ray_jobs.pipeline` covers every stage family (preprocess, embed, index build, item
tower, JSON encoder, users); the assertions read where Ray ran the work and what the driver cost."""
import json
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from tests.cluster import LocalCluster

pytestmark = pytest.mark.ray

# The job's driver runs on the head and only coordinates: these bounds hold with a wide margin on
# this machine (measured: see the test's printout and the README's "Multi-node" section).
DRIVER_PEAK_RSS_MB = 2_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with LocalCluster(tmp_path_factory.mktemp("cluster_logs"), head_cpus=0, worker_cpus=[2, 2]) as running:
        yield running


def _pipeline_config(root: Path, labels: Path, images: Path) -> dict:
    # SPREAD: one worker per node, so the gradients' all-reduce crosses nodes (gloo over TCP)
    two_workers = {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1, "placement_strategy": "SPREAD"}
    return {
        "corpus": None,
        "preprocess": {"labels": str(labels), "images": str(images), "output_root": str(root / "pre")},
        "embed": {"output_root": str(root / "emb"), "image": {"model": "hand-crafted", "batch_size": 16},
                  "text_sources": ["title"], "batch_size": 16, "actors": 2, "cpus_per_actor": 1},
        "build_index": {"output_root": str(root / "index"), "view_column": "view", "index": {"kind": "exact"},
                        "recall_queries": 50},
        "item_tower": {"output_root": str(root / "tower"), "tower": "unified", "scaling": two_workers,
                       "simcse": {"epochs": 1, "batch_size": 64}, "adapter": {"epochs": 1}},
        "pretrain_json_encoder": None,
        "train_json_encoder": {"output_root": str(root / "stage2"), "scaling": two_workers,
                               "train": {"epochs": 2, "batch_size": 16},
                               "evaluation": {"search_k": 5, "search_samples": 2}},
        "train_users": {"output_root": str(root / "users"), "scaling": two_workers,
                        "log": {"n_users": 200, "median_length": 6.0},
                        "user_tower": {"dim": 16, "max_len": 10, "layers": 1, "ffn_dim": 32},
                        "train": {"epochs": 1, "batch_size": 64, "patience": 0, "threads": 1},
                        "val_max_users": 100,
                        "rerankers": {"deepfm": {"embedding_dim": 16, "hidden": [32]},
                                      "deepfm_train": {"epochs": 1, "batch_lists": 64}}},
        "train_persona": None,
        "image_baseline": None,
    }


def _manifest(root: Path) -> dict:
    return json.loads((root / (root / "LATEST").read_text().strip() / "manifest.json").read_text())


def test_pipeline_job_runs_on_both_worker_nodes_and_the_driver_only_coordinates(cluster, tmp_path):
    corpus = tmp_path / "corpus"
    generate_corpus(SyntheticCorpusConfig(out_dir=str(corpus), n_images=150, workers=1))
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(_pipeline_config(tmp_path, corpus / "labels", corpus / "images")))

    started = time.time()
    job_id = cluster.submit([sys.executable, "-m", "ray_jobs.pipeline", "--config", str(config)])
    status, logs = cluster.wait(job_id, timeout_s=900)
    assert status == "succeeded", logs[-5000:]
    job_seconds = time.time() - started

    workers = {node_id: n for n, node_id in enumerate(cluster.worker_node_ids)}
    (head,) = [node["node_id"] for node in cluster.state("nodes") if node["is_head_node"]]
    (job,) = [j for j in cluster.state("jobs") if j.get("submission_id") == job_id]
    assert job["driver_node_id"] == head  # the entrypoint ran on the head...
    tasks = cluster.state("tasks", f"job_id={job['job_id']}")
    actors = cluster.state("actors", f"job_id={job['job_id']}")
    # ...and every task and actor that needs a CPU ran on a worker node
    assert not [t["name"] for t in tasks if t["node_id"] == head and t["required_resources"].get("CPU")]
    by_node = Counter(workers.get(t["node_id"], "head") for t in tasks if t["state"] == "FINISHED")
    on_head = Counter(t["name"] for t in tasks if t["node_id"] == head).most_common(4)
    print(f"multi-node pipeline: {job_seconds:.0f} s; finished tasks per node {dict(by_node)} (0-CPU tasks on "
          f"the head: {on_head}); actors per node {dict(Counter(workers.get(a['node_id'], 'head') for a in actors))}")

    def nodes_of(records, name_part):
        return {workers.get(r["node_id"], "head") for r in records if name_part in (r.get("name") or r.get("class_name") or "")}

    assert nodes_of(tasks, "_process") == {0, 1}, "preprocessing tasks on both worker nodes"
    train_workers = [a for a in actors if "RayTrainWorker" in (a.get("class_name") or "")]
    assert {workers.get(a["node_id"]) for a in train_workers} == {0, 1}, "Ray Train workers on both nodes"
    assert {workers.get(a["node_id"]) for a in actors if "MapWorker" in (a.get("class_name") or "")} == {0, 1}, \
        "embedding actors on both nodes"

    stages = {name: _manifest(tmp_path / root) for name, root in
              [("preprocess", "pre"), ("embed", "emb"), ("build_index", "index"), ("item_tower", "tower"),
               ("train_json_encoder", "stage2"), ("train_users", "users")]}
    for name, manifest in stages.items():
        driver = manifest["driver"]
        print(f"  {name}: driver {driver['cpu_seconds']} CPU-s over {driver['wall_seconds']} s, "
              f"peak RSS {driver['peak_rss_mb']} MB")
        assert 0 < driver["peak_rss_mb"] < DRIVER_PEAK_RSS_MB
    # One driver process ran every stage: its usage only grows, and it stays well below the job's wall time
    # times the cluster's 4 CPUs (the work ran elsewhere).
    last = stages["train_users"]["driver"]
    assert last["cpu_seconds"] >= stages["preprocess"]["driver"]["cpu_seconds"]
    assert last["cpu_seconds"] < 0.5 * last["wall_seconds"]


def _count_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.jpg")) if root.is_dir() else 0


def _submit_preprocess(cluster: LocalCluster, corpus: Path, out: Path, run_name: str) -> tuple[str, float]:
    job_id = cluster.submit([sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/preprocess.yaml",
                             "--set", f"labels={corpus / 'labels'}", "--set", f"images={corpus / 'images'}",
                             "--set", f"output_root={out}", "--set", "files_per_block=64",
                             "--set", f"run_name={run_name}"])
    return job_id, time.time()


def _items_and_crops(run_dir: Path) -> tuple[dict, list[str], int]:
    import pyarrow.parquet as pq

    report = json.loads((run_dir / "reconciliation.json").read_text())
    return report, pq.read_table(run_dir / "items", columns=["item_id"])["item_id"].to_pylist(), \
        _count_files(run_dir / "crops")


def test_a_worker_node_lost_mid_preprocessing_loses_no_record(cluster, tmp_path):
    """Runs after the pipeline test on the same cluster (it takes one of its nodes away). The same corpus is
    preprocessed twice: on both nodes, then with node 1 killed mid-way; the second run must write exactly
    the first run's items."""
    corpus = generate_corpus(SyntheticCorpusConfig(out_dir=str(tmp_path / "corpus"), n_images=6000, workers=2),
                             progress=False)
    out = tmp_path / "pre"
    job_id, started = _submit_preprocess(cluster, tmp_path / "corpus", out, "both_nodes")
    status, logs = cluster.wait(job_id, timeout_s=600)
    assert status == "succeeded", logs[-5000:]
    clean_seconds = time.time() - started
    clean, clean_ids, clean_crops = _items_and_crops(out / "both_nodes")

    job_id, started = _submit_preprocess(cluster, tmp_path / "corpus", out, "lost_node")
    crops, deadline = out / "lost_node" / "crops", time.time() + 300
    # Kill once a fifth of the crops exist: the parse/crop tasks are then running on both nodes.
    while _count_files(crops) < corpus["n_expected_items"] // 5:
        assert cluster.status(job_id) == "running" and time.time() < deadline, "preprocessing never got going"
        time.sleep(0.2)
    killed_at, crops_at_kill = time.time(), _count_files(crops)
    lost = cluster.worker_node_ids[1]
    cluster.kill_node(1)
    status, logs = cluster.wait(job_id, timeout_s=600)
    lost_seconds = time.time() - started
    assert status == "succeeded", logs[-5000:]

    report, item_ids, n_crops = _items_and_crops(out / "lost_node")
    files, garments = report["files"], report["garments"]
    assert files["reconciles"] and garments["reconciles"]
    assert files["read"] == corpus["n_label_files"]
    # nothing lost, nothing written twice: one parquet row and one crop per written garment, ids unique,
    # and exactly the items of the run that kept both nodes
    assert len(item_ids) == len(set(item_ids)) == garments["written"] == n_crops == corpus["n_expected_items"]
    assert sorted(item_ids) == sorted(clean_ids) and n_crops == clean_crops
    assert report["quarantine_reasons"] == clean["quarantine_reasons"]

    (job,) = [j for j in cluster.state("jobs") if j.get("submission_id") == job_id]
    tasks = [t for t in cluster.state("tasks", f"job_id={job['job_id']}") if "_process" in t["name"]]
    on_lost = [t for t in tasks if t["node_id"] == lost]
    retried = [t for t in tasks if t["attempt_number"] > 0]
    print(f"lost node: job {lost_seconds:.1f} s vs {clean_seconds:.1f} s on both nodes; killed "
          f"{killed_at - started:.1f} s after submission with {crops_at_kill} of {garments['written']} crops "
          f"written, finished {lost_seconds - (killed_at - started):.1f} s later; {len(on_lost)} task attempts "
          f"on the lost node, {len(retried)} retried attempts")
    assert on_lost and retried, "the lost node ran preprocessing tasks and Ray retried the lost ones"
