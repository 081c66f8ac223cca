"""`ray job submit` against a real local head: the way jobs run on a cluster."""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from bench.ports import free_port
from tests.ray_jobs.corpus import fault_corpus

pytestmark = [pytest.mark.ray, pytest.mark.real_data]
RAY = str(Path(sys.executable).parent / "ray")


def _ray_cli(args, env, timeout=120):
    return subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head --block` in its own process group, token auth on, stopped afterwards.

    Stopped by signalling its group rather than `ray stop`, which would also kill the test
    session's own Ray. Draining is turned off so the head goes down at once.
    """
    dashboard, head_port = free_port(), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = open(tmp_path / "head.log", "w")
    head = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             f"--port={head_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                             "--include-dashboard=true", "--disable-usage-stats",
                             # Own agent ports: the session's Ray already holds the defaults (52365...),
                             # and a head whose job agent cannot bind refuses every submission.
                             f"--dashboard-agent-listen-port={free_port()}",
                             f"--dashboard-agent-grpc-port={free_port()}",
                             f"--runtime-env-agent-port={free_port()}",
                             f"--metrics-export-port={free_port()}"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.time() + 90
    while _ray_cli(["job", "list", "--address", address], env).returncode != 0:
        if time.time() > deadline or head.poll() is not None:
            pytest.fail(f"ray head did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}")
        time.sleep(2)
    yield address, env
    os.killpg(head.pid, signal.SIGTERM)
    # `ray start` records itself as the machine's "current cluster"; a plain ray.init() elsewhere
    # would then wait for this stopped head forever.
    current = Path("/tmp/ray/ray_current_cluster")
    if current.is_file() and current.read_text().strip().endswith(f":{head_port}"):
        current.unlink()
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    log.close()


def test_preprocess_submitted_as_a_ray_job(ray_head, kfashion_samples, tmp_path):
    address, env = ray_head
    labels, images = fault_corpus(kfashion_samples, tmp_path / "corpus")
    out = tmp_path / "out"
    job_id = f"preprocess_{secrets.token_hex(4)}"
    excludes = json.dumps({"excludes": [".venv", ".git", "artifacts", "data/generated", "*.egg-info"]})
    command = ["job", "submit", "--address", address, "--submission-id", job_id, "--no-wait",
               "--working-dir", str(REPO_ROOT), "--runtime-env-json", excludes, "--",
               sys.executable, "-m", "ray_jobs.preprocess", "--config", "configs/preprocess.yaml",
               "--set", f"labels={labels}", "--set", f"images={images}", "--set", f"output_root={out}"]
    for _ in range(10):  # the job agent can lag the dashboard by a few seconds after start-up
        submit = _ray_cli(command, env)
        if submit.returncode == 0 or "No available agent" not in submit.stderr:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stderr[-3000:]

    deadline, status = time.time() + 300, ""
    while time.time() < deadline:
        status = _ray_cli(["job", "status", "--address", address, job_id], env).stdout.lower()
        if any(s in status for s in ("succeeded", "failed", "stopped")):
            break
        time.sleep(3)
    logs = _ray_cli(["job", "logs", "--address", address, job_id], env).stdout
    assert f"job '{job_id}' succeeded" in status, f"{status}\n{logs[-4000:]}"
    assert "files:    read 6 = processed 3 + quarantined 3  [ok]" in logs

    run_dir = out / (out / "LATEST").read_text().strip()
    report = json.loads((run_dir / "reconciliation.json").read_text())
    assert report["garments"]["written"] == 6 and report["files"]["reconciles"]
