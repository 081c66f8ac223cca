"""Run directories and manifests: every stage writes ``<root>/<timestamp>-<config hash>/``.

The run directory holds the resolved config, the stage's outputs and a ``manifest.json`` naming
the upstream artifacts it used, so any result can be traced back. ``<root>/LATEST`` names the
newest run so the next stage can find it without a path.

Roots may be object-store URIs (``s3://bucket/artifacts/embed``; ``recsys.storage``). Then:

* ``new_run_dir`` returns a node-local *staging* folder for what the driver writes (configs, reports,
  plots, checkpoints); :func:`location_of` gives the run's URI for what workers write there directly
  (Ray Data parquet, crops, Ray Train checkpoints), since other nodes cannot see the staging folder;
* ``write_manifest`` uploads the staging folder into the run's URI with a ``_content.json`` (sha256
  of every uploaded file, size of every file workers wrote), then writes ``manifest.json`` and moves
  ``LATEST``: a run is visible once it is complete, and the staging folder is removed;
* ``latest_run`` / :func:`local_copy` of a URI give a node-local copy downloaded once per content
  hash (``storage.local_cache``), so readers keep working on paths; :func:`location_of` maps the
  copy back to its URI for manifests.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from recsys import storage
from recsys.config import config_hash, to_dict
from recsys.timing import process_usage

# Node-local folders for runs and inputs on object storage; never under the project's artifacts/.
STAGING_ENV, CACHE_ENV = "FASHIONREC_STAGING", "FASHIONREC_CACHE"
_URI_FILE = ".fashionrec-run-uri"  # in a staging folder: the run's URI
# Not copied to a node with a run read from object storage: crops are read one by one where needed,
# Ray Train/Tune's own checkpoint folders are not read after the run (best_model.pt is).
NOT_COPIED = ("crops", "ray_results", "tune_results", "trials")


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


def staging_root() -> Path:
    return Path(os.environ.get(STAGING_ENV) or Path(tempfile.gettempdir()) / "fashionrec-staging")


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fashionrec" / "artifacts")


def new_run_dir(root: str | Path, config: Any, run_name: str | None = None) -> Path:
    """The run's folder on this node: the run itself for a local root, a staging folder for a URI root
    (which is checked writable first, so a wrong bucket or key fails before any work)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = run_name or f"{stamp}-{config_hash(config)}"
    if storage.is_local(root):
        run_dir = storage.local_path(root).resolve() / name
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        uri = storage.join(storage.check_reachable(storage.normalise(root), mode="write"), name)
        run_dir = staging_root() / f"{name}-{uuid.uuid4().hex[:8]}"
        run_dir.mkdir(parents=True)
        (run_dir / _URI_FILE).write_text(uri + "\n")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), allow_unicode=True, sort_keys=False))
    return run_dir


_published: dict[str, str] = {}  # staging folder -> URI of the runs this process uploaded (and removed)


def _staged_uri(run_dir: Path) -> str | None:
    marker = Path(run_dir) / _URI_FILE
    return marker.read_text().strip() if marker.is_file() else _published.get(str(run_dir))


def location_of(path: str | Path) -> str:
    """Where ``path`` lives for every node: inside a staging folder or a cached copy, the URI of the same
    file; a URI as it is; a local path made absolute."""
    if not storage.is_local(path):
        return storage.normalise(path)
    local = storage.local_path(path).resolve()  # the same file compares equal however it was named
    for folder in (local, *local.parents):
        if (uri := _staged_uri(folder)) or (uri := storage.cached_uri(folder)):
            relative = local.relative_to(folder).as_posix()
            return storage.join(uri, relative) if relative != "." else uri
    return str(local)


def local_copy(location: str | Path, exclude: tuple[str, ...] = ()) -> Path:
    """A local path to read ``location``: itself when local, else a node-local copy (once per content
    hash; top-level folders in ``exclude``, e.g. crops read one by one elsewhere, are not copied)."""
    if storage.is_local(location):
        return storage.local_path(location)
    return storage.local_cache(location, cache_root(), exclude=exclude)


def write_json(path: str | Path, payload: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    return path


def _to_locations(value: Any) -> Any:
    """Local staging/cache paths named in a manifest -> the URIs every node can read."""
    if isinstance(value, dict):
        return {k: _to_locations(v) for k, v in value.items()}
    if isinstance(value, str) and os.path.isabs(value):
        return location_of(value)
    return value


def write_manifest(run_dir: Path, stage: str, inputs: dict[str, str], outputs: dict[str, str],
                   extra: dict | None = None) -> str | Path:
    """Write ``manifest.json`` and move ``LATEST``; for a staged run, upload it first (see module doc).
    Returns the manifest's path (local) or URI."""
    manifest = {"stage": stage, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "inputs": inputs, "outputs": outputs, "python": platform.python_version(),
                "host": platform.node(), "unix_time": time.time(),
                # what the process that ran the stage (on a cluster: the driver, on the head) used
                "driver": process_usage(), **(extra or {})}
    manifest = _to_locations(manifest)  # upstream runs read from object storage are named by their URIs
    uri = _staged_uri(run_dir)
    if uri is None:
        path = write_json(run_dir / "manifest.json", manifest)
        (run_dir.parent / "LATEST").write_text(run_dir.name + "\n")
        return path
    manifest |= {"run_dir": uri}
    (Path(run_dir) / _URI_FILE).unlink()
    storage.upload_dir(run_dir, uri, unlisted=NOT_COPIED)  # next to what workers already wrote there
    written = storage.write_manifest(uri, manifest)
    shutil.rmtree(run_dir, ignore_errors=True)
    _published[str(Path(run_dir).resolve())] = uri  # location_of(run_dir) still answers after the removal
    return written


def latest_location(root: str | Path) -> str:
    """The newest complete run under ``root`` as a location (URI or absolute path), nothing downloaded:
    for readers that run on every node (Ray Data) rather than on this one."""
    if not storage.is_local(root):
        return storage.latest_run(storage.normalise(root))
    return location_of(latest_run(root))


def latest_run(root: str | Path) -> Path:
    """The newest complete run under ``root``; of an object-store root, its node-local copy."""
    if not storage.is_local(root):
        return local_copy(storage.latest_run(storage.normalise(root)), exclude=NOT_COPIED)
    pointer = Path(root) / "LATEST"
    if not pointer.is_file():
        raise FileNotFoundError(f"{root}: no LATEST run pointer; run the stage that writes {root} first")
    return Path(root) / pointer.read_text().strip()
