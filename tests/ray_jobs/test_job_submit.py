"""`ray job submit` against a real local head: the way jobs run on a cluster."""
import json
import sys

import pytest

from tests.cluster import LocalCluster
from tests.ray_jobs.corpus import fault_corpus

pytestmark = [pytest.mark.ray, pytest.mark.real_data]


@pytest.fixture
def ray_head(tmp_path):
    """One node with 2 CPUs, token auth on (tests/cluster.py), stopped afterwards."""
    with LocalCluster(tmp_path / "ray_logs", head_cpus=2, worker_cpus=[]) as cluster:
        yield cluster


def test_preprocess_submitted_as_a_ray_job(ray_head, kfashion_samples, tmp_path):
    labels, images = fault_corpus(kfashion_samples, tmp_path / "corpus")
    out = tmp_path / "out"
    job_id = ray_head.submit([sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/preprocess.yaml",
                              "--set", f"labels={labels}", "--set", f"images={images}",
                              "--set", f"output_root={out}"])
    status, logs = ray_head.wait(job_id, timeout_s=300)
    assert status == "succeeded", logs[-4000:]
    assert "files:    read 6 = processed 3 + quarantined 3  [ok]" in logs

    run_dir = out / (out / "LATEST").read_text().strip()
    report = json.loads((run_dir / "reconciliation.json").read_text())
    assert report["garments"]["written"] == 6 and report["files"]["reconciles"]
    # the manifest records what the job's driver used
    driver = json.loads((run_dir / "manifest.json").read_text())["driver"]
    # a Python process that imported Ray, pyarrow and PIL: over 100 MB at its peak and 0.5 CPU-seconds (units)
    assert driver["peak_rss_mb"] > 100 and driver["cpu_seconds"] > 0.5 and driver["wall_seconds"] > 1
