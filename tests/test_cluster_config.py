"""cluster.yaml is a real Ray cluster-launcher config (validated against Ray's own schema)."""
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT


def test_cluster_yaml_validates_and_installs_this_project():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    types = config["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"} and config["head_node_type"] == "head"
    for worker in ("cpu_worker", "gpu_worker"):
        assert 0 <= types[worker]["min_workers"] < types[worker]["max_workers"]
    assert any("pip install" in c and "fashionrec" in c for c in config["setup_commands"])
    assert Path(list(config["file_mounts"].values())[0]) == Path(".")


def test_every_node_mounts_the_shared_folder_and_starts_ray_inside_it():
    """Relative config paths (artifacts/..., data/generated/...) must be one set of files on every node:
    tests/ray_jobs/test_multi_node.py runs the pipeline job and `serve deploy` this way."""
    config = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    (mount,) = [c for c in config["setup_commands"] if "/etc/fstab" in c]
    assert "/mnt/fashionrec nfs4" in mount and "_netdev,nofail" in mount   # back after a reboot
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in config[key] if "ray start" in c]
        # Ray never starts in the bare local folder: the mount is checked first, then entered
        guard = "mountpoint -q /mnt/fashionrec && cd /mnt/fashionrec && "
        assert guard in start and start.index(guard) < start.index("ray start"), (key, start)
