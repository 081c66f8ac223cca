"""Run directories and manifests: every stage writes ``<root>/<timestamp>-<config hash>/``.

The run directory holds the resolved config, the stage's outputs and a ``manifest.json`` naming
the upstream artifacts it used, so any result can be traced back. ``<root>/LATEST`` names the
newest run so the next stage can find it without a path.
"""
from __future__ import annotations

import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from recsys.config import config_hash, to_dict
from recsys.timing import process_usage


class ModelFiles:
    """Mixin of a served model's file dataclasses (user tower, reranker): they hold ``directory``,
    ``checkpoint`` (relative to it) and ``item_vectors_file`` (a .npy matrix beside it)."""

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.directory) / self.checkpoint

    def item_vectors(self):
        """The saved item-vector matrix as float32 (row order: the model's item index)."""
        import numpy as np

        return np.load(Path(self.directory) / self.item_vectors_file).astype(np.float32)


def new_run_dir(root: str | Path, config: Any, run_name: str | None = None) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = Path(root).resolve() / (run_name or f"{stamp}-{config_hash(config)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False))
    return run_dir


def write_json(path: str | Path, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    return path


def write_manifest(run_dir: Path, stage: str, inputs: dict[str, str], outputs: dict[str, str],
                   extra: dict | None = None) -> Path:
    manifest = {"stage": stage, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "inputs": inputs, "outputs": outputs, "python": platform.python_version(),
                "host": platform.node(), "unix_time": time.time(),
                # what the process that ran the stage (on a cluster: the driver, on the head) used
                "driver": process_usage(), **(extra or {})}
    path = write_json(run_dir / "manifest.json", manifest)
    (run_dir.parent / "LATEST").write_text(run_dir.name + "\n")
    return path


def latest_run(root: str | Path) -> Path:
    pointer = Path(root) / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"{root}: no LATEST run pointer; run the stage that writes {root} first")
    return Path(root) / pointer.read_text().strip()
