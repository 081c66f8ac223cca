"""How many Ray Train workers a stage uses: a plain dataclass, so stage configs in the library can
name it without importing the Ray glue (``ray_jobs.common.trainer.fit_torch`` reads it)."""
from __future__ import annotations

from dataclasses import dataclass

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
