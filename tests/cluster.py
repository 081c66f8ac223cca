"""A real multi-node Ray cluster on this machine for the tests: `ray start` processes, driven from outside.

``LocalCluster.start()`` runs ``ray start --head --block`` (token auth, dashboard and job API on free ports,
``head_cpus`` CPUs: 0 like cluster.yaml's head) and then one ``ray start --address ... --block`` per worker
node, each a Ray node with its own raylet, object store and ports. They cannot share a process with the
suite's own local Ray, so jobs reach them through ``ray job submit`` and tests read them through Ray's state
API (``ray list``), as a user of a real cluster would. ``kill_node(n)`` SIGKILLs a worker node's whole
process group (raylet, its workers, its object store): a node lost, not drained. Everything is stopped by
signalling the process groups, never ``ray stop``, which would also stop the test session's own Ray.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.ports import free_port

RAY = str(Path(sys.executable).parent / "ray")
REPO_ROOT = Path(__file__).resolve().parents[1]
# What `--working-dir` uploads: the code, not the environment or local outputs.
WORKING_DIR_EXCLUDES = [".venv", ".git", "artifacts", "data/generated", "*.egg-info", "**/__pycache__"]
OBJECT_STORE_BYTES = 300 * 1024 * 1024  # per node; the default (30% of RAM per node) is far more than needed


class ClusterError(RuntimeError):
    pass


@dataclass
class LocalCluster:
    log_dir: Path
    head_cpus: float = 0
    worker_cpus: list[float] = field(default_factory=lambda: [2, 2])
    # GPUs each worker node declares. This machine has none: Ray schedules by the declared count (and sets
    # CUDA_VISIBLE_DEVICES), so the GPU wiring (actors, replicas asking for num_gpus) is tested on CPU.
    worker_gpus: list[float] | None = None
    start_timeout_s: float = 180   # per node
    # Where every node's `ray start` runs, hence the working directory of its Ray workers and of jobs
    # submitted without --working-dir: cluster.yaml starts Ray inside the shared mount. None: here.
    cwd: Path | None = None
    env: dict = field(init=False)
    address: str = field(init=False, default="")        # http://127.0.0.1:<dashboard>: job + state API
    gcs_address: str = field(init=False, default="")    # 127.0.0.1:<port>: what worker nodes join
    worker_node_ids: list[str] = field(init=False, default_factory=list)  # Ray's node id of each worker node
    _head: subprocess.Popen | None = field(init=False, default=None)
    _workers: list[subprocess.Popen | None] = field(init=False, default_factory=list)

    def __post_init__(self):
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                    # a killed or stopped node goes down at once instead of draining
                    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
                    # how long `ray start` waits for its raylet to register (a loaded 2-CPU machine is slow)
                    "RAY_raylet_start_wait_time_s": "120",
                    "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "LocalCluster":
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "LocalCluster":
        dashboard, head_port = free_port(), free_port()
        self.address, self.gcs_address = f"http://127.0.0.1:{dashboard}", f"127.0.0.1:{head_port}"
        self._head = self._ray_start("head", ["--head", f"--num-cpus={self.head_cpus}", f"--port={head_port}",
                                              "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
                                              "--include-dashboard=true", "--disable-usage-stats"])
        deadline = time.time() + self.start_timeout_s
        while self.cli(["job", "list", "--address", self.address]).returncode != 0:
            self._check_alive(self._head, "head", deadline)
            time.sleep(2)
        # One node at a time: nodes started together in one session pick the same socket and log names.
        for n, cpus in enumerate(self.worker_cpus):
            self._workers.append(None)
            self.worker_node_ids.append(self._start_worker(n, cpus))
        return self

    def _start_worker(self, n: int, cpus: float, attempts: int = 3) -> str:
        """Start worker node ``n`` and return its node id. On a loaded machine (a whole test suite on 2 CPUs)
        a raylet can miss Ray's registration window and ``ray start`` exits ("timed out during startup"):
        that node is started again, up to ``attempts`` times, each with its own deadline."""
        for attempt in range(1, attempts + 1):
            name = f"worker{n}" if attempt == 1 else f"worker{n}-attempt{attempt}"
            gpus = [f"--num-gpus={self.worker_gpus[n]}"] if self.worker_gpus else []
            worker = self._workers[n] = self._ray_start(name, [f"--address={self.gcs_address}", f"--num-cpus={cpus}",
                                                               *gpus])
            deadline = time.time() + self.start_timeout_s
            while worker.poll() is None and time.time() < deadline:
                if joined := self._joined_worker_nodes():
                    return joined[0]
                time.sleep(1)
            if worker.poll() is None:  # alive but not joined in time: stop it before trying again
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
        raise ClusterError(f"ray worker{n} did not join in {attempts} attempts: "
                           f"{(self.log_dir / f'{name}.log').read_text()[-2000:]}")

    def _ray_start(self, name: str, args: list[str]) -> subprocess.Popen:
        # Every node gets its own agent/metrics ports: the suite's Ray and the other nodes hold the defaults
        # (52365, ...), and a node whose job agent cannot bind refuses every submission. The others are
        # chosen here too, so the nodes never depend on how Ray picks them when several share one machine.
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
                 f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
        with open(self.log_dir / f"{name}.log", "w") as log:  # the child keeps its own copy of the handle
            return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1",
                                     f"--object-store-memory={OBJECT_STORE_BYTES}", *args, *ports],
                                    env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    cwd=self.cwd)

    def _check_alive(self, process: subprocess.Popen, name: str, deadline: float) -> None:
        if time.time() > deadline or process.poll() is not None:
            raise ClusterError(f"ray {name} did not come up: {(self.log_dir / f'{name}.log').read_text()[-2000:]}")

    def kill_node(self, n: int) -> None:
        """SIGKILL worker node ``n``'s process group: the node is lost, as when a machine dies."""
        worker = self._workers[n]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        self._workers[n] = None

    def stop(self) -> None:
        for process in [*self._workers, self._head]:
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in [*self._workers, self._head]:
            if process is None:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        # `ray start --head` records itself as the machine's "current cluster"; a plain ray.init() elsewhere
        # would then wait for this stopped head forever.
        current = Path("/tmp/ray/ray_current_cluster")
        if self.gcs_address and current.is_file() and current.read_text().strip() == self.gcs_address:
            current.unlink()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ CLI: jobs and state
    def cli(self, args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout)

    def submit(self, entrypoint: list[str], job_id: str | None = None, working_dir: bool = True) -> str:
        """``ray job submit``. ``working_dir``: the repository travels with the job (--working-dir), as from a
        laptop; False: the job runs the code installed on the nodes, in their working directory (``cwd``),
        as cluster.yaml sets them up."""
        job_id = job_id or f"job_{secrets.token_hex(4)}"
        upload = ["--working-dir", str(REPO_ROOT), "--runtime-env-json", json.dumps({"excludes": WORKING_DIR_EXCLUDES})]
        command = ["job", "submit", "--address", self.address, "--submission-id", job_id, "--no-wait",
                   *(upload if working_dir else []), "--", *entrypoint]
        for _ in range(10):  # the job agent can lag the dashboard by a few seconds after start-up
            submitted = self.cli(command)
            if submitted.returncode == 0 or "No available agent" not in submitted.stderr:
                break
            time.sleep(3)
        if submitted.returncode != 0:
            raise ClusterError(f"ray job submit failed: {submitted.stderr[-3000:]}")
        return job_id

    def status(self, job_id: str) -> str:
        """The job's status from the state API, lower case: pending, running, succeeded, failed or stopped."""
        jobs = self.state("jobs", f"submission_id={job_id}")
        return jobs[0]["status"].lower() if jobs else "pending"

    def wait(self, job_id: str, timeout_s: float) -> tuple[str, str]:
        """(final status, the job's logs); a job still running at the deadline is stopped and reported."""
        deadline, status = time.time() + timeout_s, "pending"
        while time.time() < deadline and (status := self.status(job_id)) in ("pending", "running"):
            time.sleep(3)
        if status in ("pending", "running"):
            self.cli(["job", "stop", "--address", self.address, job_id])
        return status, self.cli(["job", "logs", "--address", self.address, job_id]).stdout

    def state(self, kind: str, *filters: str) -> list[dict]:
        """``ray list <kind> --detail`` as dicts (tasks, actors, nodes, jobs, ...)."""
        limit = 10_000  # the API server's maximum; a longer listing would be cut silently
        args = ["list", kind, "--address", self.address, "--detail", "--format", "json", "--limit", str(limit),
                "--timeout", "120"]
        for condition in filters:
            args += ["--filter", condition]
        listed = self.cli(args, timeout=180)
        if listed.returncode != 0:
            raise ClusterError(f"ray list {kind} failed: {listed.stderr[-2000:]}")
        try:
            records = json.loads(listed.stdout)
        except json.JSONDecodeError as exc:  # e.g. a warning printed before the listing while the API starts
            raise ClusterError(f"ray list {kind}: not JSON: {listed.stdout[:500]!r} {listed.stderr[-500:]!r}") from exc
        if len(records) >= limit:
            raise ClusterError(f"ray list {kind}: {len(records)} records, the listing may be cut; filter it")
        return records

    def alive_worker_nodes(self) -> list[dict]:
        return [node for node in self.state("nodes", "state=ALIVE") if not node["is_head_node"]]

    def _joined_worker_nodes(self) -> list[str]:
        """Worker nodes alive but not yet in ``worker_node_ids``; a state API still starting counts as none."""
        try:
            alive = self.alive_worker_nodes()
        except (ClusterError, subprocess.TimeoutExpired):
            return []
        return [node["node_id"] for node in alive if node["node_id"] not in self.worker_node_ids]
