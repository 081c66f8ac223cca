"""How many Ray Train workers a stage uses: a plain dataclass, so stage configs in the library can
name it without importing the Ray glue (``ray_jobs.common.trainer.fit_torch`` reads it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ScalingSettings:
    """Ray Train ScalingConfig from YAML: CPU workers here, GPUs and many nodes on a cluster."""
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
