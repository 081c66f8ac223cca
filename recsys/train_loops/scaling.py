"""What a stage asks of Ray: how many Ray Train workers (``ScalingSettings``) and what each heavy
task of an evaluation command declares (``TaskResources``). Plain dataclasses, so stage configs in
the library can name them without importing the Ray glue (``ray_jobs.common.trainer.fit_torch`` and
``ray_jobs.common.tasks.run_tasks`` read them)."""
from __future__ import annotations

from dataclasses import dataclass, field

from recsys.config import ConfigError


@dataclass
class ScalingSettings:
    """Ray Train ScalingConfig from YAML: CPU workers here, GPUs and many nodes on a cluster."""
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    # Ray's placement of the workers' bundles: PACK fills a node first (cheap collectives); SPREAD puts
    # them on different nodes where it can (best effort), to use every node of a cluster.
    placement_strategy: str = "PACK"

    def __post_init__(self):
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise ConfigError(f"scaling.placement_strategy: {self.placement_strategy!r}, expected one of "
                              f"{list(PLACEMENT_STRATEGIES)}")


# Ray's STRICT_* variants are left out: a strict placement that no node set satisfies waits for ever.
PLACEMENT_STRATEGIES = ("PACK", "SPREAD")


@dataclass
class TaskResources:
    """Resources one Ray task declares: Ray places it on a node that has them (never the head of
    ``cluster.yaml``, which offers 0 CPUs) and limits its threads to ``num_cpus`` (Ray sets
    OMP_NUM_THREADS from it), so declare what the work really uses."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float = 0.0    # Ray's scheduling reservation; 0 = none declared

    def __post_init__(self):
        for name in ("num_cpus", "num_gpus", "memory_gb"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: {getattr(self, name)}, expected >= 0")

    def ray_options(self) -> dict:
        """``.options(...)`` of a Ray remote function."""
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_gb > 0:
            options["memory"] = int(self.memory_gb * 2**30)
        return options


@dataclass
class EvalTasks:
    """The Ray tasks of an evaluation command's heavy steps (E2, E3) and what each declares."""
    content: TaskResources = field(default_factory=TaskResources)      # the catalog's TF-IDF and its SVD
    candidates: TaskResources = field(default_factory=TaskResources)   # one task per stage, side by side
    # the ranker's fit (and in E3 the order's choice and the ranks); give it ranker.threads CPUs
    ranker: TaskResources = field(default_factory=TaskResources)
