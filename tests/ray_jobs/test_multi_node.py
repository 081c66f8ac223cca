"""The pipeline on a real multi-node Ray cluster: a head with 0 CPUs (like cluster.yaml's) and two worker
nodes, all on this machine (tests/cluster.py), reached only through `ray job submit` and the state API.

One submission of `ray_jobs.pipeline` covers every stage family (preprocess, embed, index build, item
tower, JSON encoder, users) and `serve deploy configs/serve.yaml` serves its result, both the way
cluster.yaml runs them (installed code, every node working in one shared folder); the assertions read
where Ray ran the work and what the driver cost. A second test loses a worker node mid-preprocessing."""
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from bench.ports import free_port
from recsys.artifacts import latest_run
from recsys.data.synthetic import SyntheticCorpusConfig, generate_corpus
from tests.cluster import REPO_ROOT, LocalCluster

SERVE = str(Path(sys.executable).parent / "serve")

pytestmark = pytest.mark.ray

# The job's driver runs on the head and only coordinates: this bound holds with a wide margin on this
# machine (measured: the test's printout, quoted in README's "Several nodes on one machine (the tests)").
DRIVER_PEAK_RSS_MB = 2_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Every node starts in one folder, the stand-in of cluster.yaml's shared mount: relative paths in the
    configs (artifacts/..., data/generated/...) then mean the same files on every node."""
    shared = tmp_path_factory.mktemp("shared_mount")
    # one declared (not real) GPU per worker node: the embedding actors and the image replica ask for one
    with LocalCluster(tmp_path_factory.mktemp("cluster_logs"), head_cpus=0, worker_cpus=[2, 2], worker_gpus=[1, 1],
                      cwd=shared) as running:
        yield running


# The stages' output roots are configs/pipeline.yaml's own (relative, like configs/serve.yaml's artifact roots).
ROOTS = {"preprocess": "artifacts/preprocess", "embed": "artifacts/embed", "build_index": "artifacts/index",
         "item_tower": "artifacts/item_tower", "train_json_encoder": "artifacts/train_json_encoder",
         "train_users": "artifacts/train_users"}
CORPUS = "data/generated/kfashion_demo"


def _small_pipeline() -> dict:
    """configs/pipeline.yaml's stages at test size, paths relative to the cluster's working directory."""
    # SPREAD: one worker per node, so the gradients' all-reduce crosses nodes (gloo over TCP)
    two_workers = {"num_workers": 2, "use_gpu": False, "cpus_per_worker": 1, "placement_strategy": "SPREAD"}
    return {
        "corpus": {"out_dir": CORPUS, "n_images": 150, "workers": 1},
        "preprocess": {"labels": f"{CORPUS}/labels", "images": f"{CORPUS}/images", "output_root": ROOTS["preprocess"]},
        "embed": {"output_root": ROOTS["embed"], "image": {"model": "hand-crafted", "batch_size": 16},
                  "text_sources": ["title"], "batch_size": 16, "actors": 2, "cpus_per_actor": 1, "gpus_per_actor": 1},
        "build_index": {"output_root": ROOTS["build_index"], "view_column": "view", "index": {"kind": "exact"},
                        "recall_queries": 50},
        "item_tower": {"output_root": ROOTS["item_tower"], "tower": "unified", "scaling": two_workers,
                       "simcse": {"epochs": 1, "batch_size": 64}, "adapter": {"epochs": 1}},
        "pretrain_json_encoder": None,
        "train_json_encoder": {"output_root": ROOTS["train_json_encoder"], "scaling": two_workers,
                               "train": {"epochs": 2, "batch_size": 16},
                               "evaluation": {"search_k": 5, "search_samples": 2}},
        "train_users": {"output_root": ROOTS["train_users"], "scaling": two_workers,
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
    return json.loads((latest_run(root) / "manifest.json").read_text())


def _deploy_serve(cluster: LocalCluster, shared: Path) -> str:
    """`serve deploy configs/serve.yaml` as README's cluster section runs it (only the HTTP port moved, as the
    suite's own Serve may hold 8000, and the image replicas ask for a GPU as on a GPU worker group);
    returns the URL once the application is RUNNING."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "serve.yaml").read_text())
    config["http_options"]["port"] = port = free_port()
    # as on a GPU worker group (the comment in configs/serve.yaml): the image replicas ask for a GPU
    image = next(d for d in config["applications"][0]["deployments"] if d["name"] == "ImageEmbedder")
    image["ray_actor_options"]["num_gpus"] = 1
    (shared / "serve.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    deployed = subprocess.run([SERVE, "deploy", str(shared / "serve.yaml"), "--address", cluster.address],
                              env=cluster.env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    deadline, status = time.time() + 300, ""
    while time.time() < deadline:
        status = subprocess.run([SERVE, "status", "--address", cluster.address], env=cluster.env,
                                capture_output=True, text=True, timeout=60).stdout
        if "DEPLOY_FAILED" in status or re.search(r"fashionrec:\s+status: RUNNING", status):
            break
        time.sleep(3)
    assert re.search(r"fashionrec:\s+status: RUNNING", status), status[-3000:]
    return f"http://127.0.0.1:{port}"


def test_pipeline_job_and_serve_run_on_both_worker_nodes_and_the_driver_only_coordinates(cluster):
    shared = cluster.cwd
    config = shared / "pipeline.yaml"
    config.write_text(yaml.safe_dump(_small_pipeline(), allow_unicode=True))

    started = time.time()
    # cluster.yaml's way: no --working-dir, the code installed on every node, relative paths in the shared folder
    job_id = cluster.submit([sys.executable, "-m", "ray_jobs.pipeline", "--config", config.name], working_dir=False)
    status, logs = cluster.wait(job_id, timeout_s=900)
    assert status == "succeeded", logs[-5000:]
    job_seconds = time.time() - started

    workers = {node_id: n for n, node_id in enumerate(cluster.worker_node_ids)}
    (job,) = cluster.state("jobs", f"submission_id={job_id}")
    tasks = cluster.state("tasks", f"job_id={job['job_id']}")
    actors = cluster.state("actors", f"job_id={job['job_id']}")
    by_node = Counter(workers.get(t["node_id"], "head") for t in tasks if t["state"] == "FINISHED")
    on_head = Counter(a["class_name"] for a in actors if a["node_id"] not in workers)
    print(f"multi-node pipeline: {job_seconds:.0f} s; finished tasks per node {dict(by_node)}; actors per node "
          f"{dict(Counter(workers.get(a['node_id'], 'head') for a in actors))}; on the head (0 CPUs): {dict(on_head)}")

    assert {workers.get(t["node_id"]) for t in tasks if "_process" in t["name"]} == {0, 1}, \
        "preprocessing tasks on both worker nodes"
    # Each fit's two workers (one placement group per worker group) on different nodes: SPREAD reached Ray Train.
    # Fits: SimCSE + adapter, JSON encoder, user tower + DeepFM.
    groups: dict[str, set] = {}
    for actor in actors:
        if "RayTrainWorker" in actor["class_name"]:
            groups.setdefault(actor["placement_group_id"], set()).add(workers.get(actor["node_id"]))
    assert len(groups) >= 5 and all(nodes == {0, 1} for nodes in groups.values()), groups
    # the embedding actor pool (2 actors of 1 CPU) on both nodes
    pools: dict[str, set] = {}
    for actor in actors:
        if actor["class_name"].startswith("MapWorker"):
            pools.setdefault(actor["class_name"], set()).add(workers.get(actor["node_id"]))
    assert pools and {0, 1} in pools.values(), pools
    # the image actors asked for the GPU each node declares (gpus_per_actor: 1), so one ran on each node
    image_actors = [a for a in actors if "ImageEmbedder" in a["class_name"]]
    assert image_actors and all(a["required_resources"].get("GPU") == 1 for a in image_actors), image_actors[:1]
    assert {workers.get(a["node_id"]) for a in image_actors} == {0, 1}

    stages = {name: _manifest(shared / root) for name, root in ROOTS.items()}
    for name, manifest in stages.items():
        driver = manifest["driver"]
        print(f"  {name}: driver {driver['cpu_seconds']} CPU-s over {driver['wall_seconds']} s, "
              f"peak RSS {driver['peak_rss_mb']} MB")
        assert 0 < driver["peak_rss_mb"] < DRIVER_PEAK_RSS_MB
    # One driver process ran every stage, and it used well under half a CPU over the job (the work ran elsewhere).
    last = stages["train_users"]["driver"]
    assert last["cpu_seconds"] < 0.5 * last["wall_seconds"]

    # Serve on the same cluster from configs/serve.yaml (port and GPU aside): it finds these runs by its relative roots
    url = _deploy_serve(cluster, shared)
    try:
        import pyarrow.parquet as pq

        items = latest_run(shared / ROOTS["preprocess"]) / "items"
        item_id = pq.read_table(items, columns=["item_id"])["item_id"][0].as_py()
        search = requests.post(f"{url}/api/search", json={"text": "black skirt", "k": 3}, timeout=60)
        similar = requests.get(f"{url}/api/similar/{item_id}", params={"k": 3}, timeout=60)
        assert search.status_code == 200 and len(search.json()["results"]) == 3, search.text[:2000]
        assert similar.status_code == 200 and similar.json()["results"], similar.text[:2000]
        replicas = [a for a in cluster.state("actors", "state=ALIVE")
                    if (a.get("class_name") or "").startswith("ServeReplica:fashionrec")]
        assert replicas and {workers.get(a["node_id"], "head") for a in replicas} <= {0, 1}, \
            "every replica on a worker node (the head has no CPUs)"
        image_replicas = [a for a in replicas if "ImageEmbedder" in a["class_name"]]
        assert image_replicas and all(a["required_resources"].get("GPU") == 1 for a in image_replicas)
        print(f"serve on the cluster: {len(replicas)} replicas on nodes "
              f"{sorted({workers[a['node_id']] for a in replicas})}; search and similar answered 200")
    finally:  # the next test needs the worker nodes' CPUs
        subprocess.run([SERVE, "shutdown", "-y", "--address", cluster.address], env=cluster.env,
                       capture_output=True, timeout=120)


def _count_files(root: Path) -> int:
    return sum(1 for _ in root.rglob("*.jpg")) if root.is_dir() else 0


def _submit_preprocess(cluster: LocalCluster, corpus: Path, out: Path, run_name: str) -> tuple[str, float]:
    job_id = cluster.submit([sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/preprocess.yaml",
                             "--set", f"labels={corpus / 'labels'}", "--set", f"images={corpus / 'images'}",
                             "--set", f"output_root={out}", "--set", "files_per_block=64",
                             "--set", f"run_name={run_name}"], working_dir=False)
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
    corpus = generate_corpus(SyntheticCorpusConfig(out_dir=str(tmp_path / "corpus"), n_images=4000, workers=2),
                             progress=False)
    out = tmp_path / "pre"
    job_id, started = _submit_preprocess(cluster, tmp_path / "corpus", out, "both_nodes")
    status, logs = cluster.wait(job_id, timeout_s=600)
    assert status == "succeeded", logs[-5000:]
    clean_seconds = time.time() - started
    # installed code in the shared folder, as README's cluster commands: --config configs/... is the shipped file
    assert "using the one shipped with the code" in logs
    clean, clean_ids, clean_crops = _items_and_crops(out / "both_nodes")

    job_id, started = _submit_preprocess(cluster, tmp_path / "corpus", out, "lost_node")
    crops, deadline = out / "lost_node" / "crops", time.time() + 300
    # Kill once a fifth of the crops exist: the parse/crop tasks are then running on both nodes.
    while _count_files(crops) < corpus["n_expected_items"] // 5:
        if cluster.status(job_id) not in ("pending", "running") or time.time() > deadline:
            status, logs = cluster.wait(job_id, timeout_s=10)
            pytest.fail(f"preprocessing ended or stalled before a fifth of the crops ({status}): {logs[-4000:]}")
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

    (job,) = cluster.state("jobs", f"submission_id={job_id}")
    tasks = [t for t in cluster.state("tasks", f"job_id={job['job_id']}") if "_process" in t["name"]]
    attempts: dict[str, list[dict]] = {}
    for task in tasks:
        attempts.setdefault(task["task_id"], []).append(task)
    # Every parse/crop task the lost node had not finished, and every finished one whose tally the driver had
    # not yet received (it was in that node's object store), was run again and finished on the surviving
    # node. A task whose tally had arrived is not run again, and need not be: its items shard and crops
    # are on the shared folder (the counts above prove nothing of it was lost or written twice).
    survivor = cluster.worker_node_ids[0]
    lost_work = {task_id for task_id, runs in attempts.items() if any(r["node_id"] == lost for r in runs)}
    redone = {task_id for task_id in lost_work
              if any(r["node_id"] == survivor and r["state"] == "FINISHED"
                     and r["attempt_number"] > max(x["attempt_number"] for x in attempts[task_id] if x["node_id"] == lost)
                     for r in attempts[task_id])}
    cut_short = sum(any(r["node_id"] == lost and r["state"] != "FINISHED" for r in attempts[t]) for t in lost_work)
    print(f"lost node: job {lost_seconds:.1f} s vs {clean_seconds:.1f} s on both nodes; killed "
          f"{killed_at - started:.1f} s after submission with {crops_at_kill} of {garments['written']} crops "
          f"written, finished {lost_seconds - (killed_at - started):.1f} s later; {len(lost_work)} tasks had run on "
          f"the lost node ({cut_short} cut short), {len(redone)} of them run again and finished on the other node")
    cut_short_ids = {t for t in lost_work if any(r["node_id"] == lost and r["state"] != "FINISHED" for r in attempts[t])}
    assert cut_short_ids, "the node was killed while none of its tasks was running"
    assert cut_short_ids <= redone, cut_short_ids - redone
