"""Local paths and object-store URIs (``s3://bucket/key``, any pyarrow filesystem) behind one small API.

Every stage reads inputs and writes run directories through these functions, so the same config works
with ``artifacts/`` on a laptop and ``s3://bucket/artifacts`` on a cluster. Paths stay strings: a URI
is never turned into a local folder, and a local path is only made absolute (against the working
directory, symlinks untouched). ``filesystem(uri)`` gives the pyarrow filesystem + path for the libraries
that take one (``pq.write_table(table, path, filesystem=fs)``, Ray Data, Ray Train's ``storage_filesystem``).

S3 settings come from the standard variables (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_DEFAULT_REGION) or an explicit ``StorageConfig``. See docs/storage.md.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

PathLike = str | os.PathLike
LATEST = "LATEST"
MANIFEST = "manifest.json"
# Underscore-prefixed, so pyarrow/Ray Data dataset discovery skips it inside parquet folders.
CONTENT_MANIFEST = "_content.json"
CACHE_URI_FILE = ".fashionrec-cache-uri"  # beside the cached versions of one URI: the URI
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")


class StorageError(OSError):
    """A storage location that cannot be used; the message starts with the URI."""


@dataclass(frozen=True)
class StorageConfig:
    """Object-store settings; ``None`` fields fall back to the AWS SDK's own defaults (credential chain)."""

    endpoint_url: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO/moto; None = AWS itself
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None
    region: str | None = None
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    max_attempts: int = 5

    @classmethod
    def from_env(cls, **overrides: Any) -> "StorageConfig":
        env = os.environ
        found = cls(endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
                    access_key=env.get("AWS_ACCESS_KEY_ID") or None,
                    secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
                    session_token=env.get("AWS_SESSION_TOKEN") or None,
                    region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None)
        return replace(found, **{k: v for k, v in overrides.items() if v is not None})


# --------------------------------------------------------------------------- paths and URIs

def scheme(path: PathLike) -> str:
    """``"s3"`` for ``s3://b/k``, ``""`` for a plain local path."""
    # Only strings carry a scheme: Path("s3://b/k") has already collapsed to the local "s3:/b/k".
    match = _SCHEME.match(path) if isinstance(path, str) else None
    return match["scheme"].lower() if match else ""


def is_uri(path: PathLike) -> bool:
    return bool(scheme(path))


def is_local(path: PathLike) -> bool:
    return scheme(path) in ("", "file")


def local_path(path: PathLike) -> Path | None:
    """The local ``Path`` of a plain path or ``file://`` URI; ``None`` for remote URIs."""
    text = os.fspath(path)
    if scheme(text) == "file":
        return Path(urlparse(text).path)
    return None if is_uri(text) else Path(os.path.abspath(os.path.expanduser(text)))


def normalise(path: PathLike) -> str:
    """Local paths made absolute (symlinks kept); URIs kept as written, minus a trailing slash."""
    text = os.fspath(path)
    if is_uri(text):
        return text.rstrip("/") if not text.endswith("://") else text
    return str(local_path(text))


def join(base: PathLike, *parts: str) -> str:
    """String-level join that keeps the scheme: ``join("s3://b/x", "run", "a.json")`` -> ``s3://b/x/run/a.json``."""
    text = os.fspath(base)
    pieces = [str(p).strip("/") for p in parts if str(p).strip("/")]
    if is_uri(text):
        return "/".join([text.rstrip("/")] + pieces) if pieces else text
    return os.path.join(text, *pieces)


def parent(path: PathLike) -> str:
    text = os.fspath(path).rstrip("/")
    if is_uri(text):
        head, _, _ = text.rpartition("/")
        if head.endswith(":/"):  # s3://bucket has no parent inside the store
            raise ValueError(f"{path}: a bucket has no parent")
        return head
    return os.path.dirname(os.path.abspath(text))


def name(path: PathLike) -> str:
    return os.fspath(path).rstrip("/").rpartition("/")[2]


# --------------------------------------------------------------------------- filesystems

@functools.lru_cache(maxsize=16)
def _s3(config: StorageConfig) -> pafs.S3FileSystem:
    endpoint, http_scheme = None, None
    if config.endpoint_url:
        parsed = urlparse(config.endpoint_url if "://" in config.endpoint_url else f"https://{config.endpoint_url}")
        endpoint, http_scheme = parsed.netloc + parsed.path.rstrip("/"), parsed.scheme
    return pafs.S3FileSystem(
        access_key=config.access_key, secret_key=config.secret_key, session_token=config.session_token,
        region=config.region or "us-east-1", endpoint_override=endpoint, scheme=http_scheme,
        connect_timeout=config.connect_timeout_s, request_timeout=config.request_timeout_s,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=config.max_attempts))


def filesystem(path: PathLike, config: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it: ``s3://b/k`` -> (S3FileSystem, ``"b/k"``)."""
    text = os.fspath(path)
    kind = scheme(text)
    if kind in ("", "file"):
        return pafs.LocalFileSystem(), str(local_path(text))
    if kind in ("s3", "s3a"):
        return _s3(config or StorageConfig.from_env()), text.split("://", 1)[1].rstrip("/")
    fs, inner = pafs.FileSystem.from_uri(text)  # gs://, hdfs://, abfs://: pyarrow's own settings
    return fs, inner.rstrip("/")


def arrow_args(path: PathLike, key: str = "path", config: StorageConfig | None = None) -> dict[str, Any]:
    """Path and ``filesystem`` keywords for Ray Data's and pyarrow's readers and writers
    (``ds.write_parquet(**arrow_args(uri))``, ``pq.read_table(**arrow_args(uri, "source"))``): with our
    filesystem they use our endpoint and credentials instead of guessing them from the URI."""
    fs, inner = filesystem(path, config)
    return {key: inner, "filesystem": fs}


def ray_storage(path: PathLike, config: StorageConfig | None = None) -> dict[str, Any]:
    """Keyword arguments for ``ray.train.RunConfig``: Ray Train/Tune write checkpoints with our filesystem
    (and so our endpoint and credentials) instead of guessing one from the URI."""
    if is_local(path):
        return {"storage_path": str(local_path(path))}
    fs, inner = filesystem(path, config)
    return {"storage_path": inner, "storage_filesystem": fs}


def _info(path: PathLike, config: StorageConfig | None) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    fs, inner = filesystem(path, config)
    return fs, inner, fs.get_file_info(inner)


def exists(path: PathLike, *, config: StorageConfig | None = None) -> bool:
    return _info(path, config)[2].type != pafs.FileType.NotFound


def is_file(path: PathLike, *, config: StorageConfig | None = None) -> bool:
    return _info(path, config)[2].type == pafs.FileType.File


def is_dir(path: PathLike, *, config: StorageConfig | None = None) -> bool:
    return _info(path, config)[2].type == pafs.FileType.Directory


def makedirs(path: PathLike, *, config: StorageConfig | None = None) -> str:
    fs, inner = filesystem(path, config)
    fs.create_dir(inner, recursive=True)
    return normalise(path)


def _missing(path: PathLike, what: str = "file") -> FileNotFoundError:
    return FileNotFoundError(f"{path}: no such {what}")


def open_input(path: PathLike, *, config: StorageConfig | None = None) -> pa.NativeFile:
    """A random-access file (what parquet and numpy readers need); close it (``with``) after use."""
    fs, inner, info = _info(path, config)
    if info.type != pafs.FileType.File:
        raise _missing(path)
    return fs.open_input_file(inner)


@contextlib.contextmanager
def open_output(path: PathLike, *, config: StorageConfig | None = None) -> Iterator[pa.NativeFile]:
    """Write a file that appears whole or not at all: a local temp file renamed into place; on object
    stores one PUT of the finished bytes (a failed ``with`` block leaves the old object untouched)."""
    fs, inner = filesystem(path, config)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(inner), exist_ok=True)
        tmp = os.path.join(os.path.dirname(inner), f".{os.path.basename(inner)}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with fs.open_output_stream(tmp) as out:
                yield out
            os.replace(tmp, inner)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    # Closing an object-store stream publishes what was written so far, even after an error: buffer.
    buffer = pa.BufferOutputStream()
    yield buffer
    _put(fs, inner, buffer.getvalue())


def _put(fs: pafs.FileSystem, inner: str, data: bytes | pa.Buffer) -> None:
    if not isinstance(fs, pafs.S3FileSystem):  # HDFS and friends need the parent directory
        fs.create_dir(inner.rpartition("/")[0], recursive=True)
    with fs.open_output_stream(inner) as out:
        out.write(data)


def read_bytes(path: PathLike, *, config: StorageConfig | None = None) -> bytes:
    with open_input(path, config=config) as f:
        return f.read()


def read_text(path: PathLike, *, config: StorageConfig | None = None, encoding: str = "utf-8") -> str:
    return read_bytes(path, config=config).decode(encoding)


def write_bytes(path: PathLike, data: bytes, *, config: StorageConfig | None = None) -> str:
    fs, inner = filesystem(path, config)
    if isinstance(fs, pafs.LocalFileSystem):
        with open_output(path, config=config) as out:
            out.write(data)
    else:
        _put(fs, inner, data)  # one PUT: object stores replace an object atomically
    return normalise(path)


def write_text(path: PathLike, text: str, *, config: StorageConfig | None = None, encoding: str = "utf-8") -> str:
    return write_bytes(path, text.encode(encoding), config=config)


def read_json(path: PathLike, *, config: StorageConfig | None = None) -> Any:
    return json.loads(read_text(path, config=config))


def write_json(path: PathLike, payload: Any, *, config: StorageConfig | None = None) -> str:
    return write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str), config=config)


def list_dir(path: PathLike, *, config: StorageConfig | None = None) -> list[str]:
    """Names of the direct children (files and folders), sorted."""
    fs, inner, info = _info(path, config)
    if info.type != pafs.FileType.Directory:
        raise _missing(path, "directory")
    return sorted(name(child.path) for child in fs.get_file_info(pafs.FileSelector(inner, recursive=False)))


def list_files(path: PathLike, *, config: StorageConfig | None = None) -> list[str]:
    """Relative paths of every file under a folder or prefix (recursive), sorted."""
    fs, inner = filesystem(path, config)
    return sorted(_files(fs, inner.rstrip("/")))


def _files(fs: pafs.FileSystem, inner: str) -> dict[str, pafs.FileInfo]:
    """Every file under ``inner`` by its relative path (S3 folder markers left out)."""
    infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    return {info.path[len(inner) + 1:]: info for info in infos if info.type == pafs.FileType.File}


def copy_tree(source: PathLike, destination: PathLike, *, config: StorageConfig | None = None) -> str:
    """Copy a file or a folder between any two filesystems (local <-> s3, s3 -> s3, ...)."""
    src_fs, src, info = _info(source, config)
    if info.type == pafs.FileType.NotFound:
        raise _missing(source, "file or directory")
    dst_fs, dst = filesystem(destination, config)
    if isinstance(dst_fs, pafs.LocalFileSystem):
        os.makedirs(dst if info.type == pafs.FileType.Directory else os.path.dirname(dst), exist_ok=True)
    pafs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    return normalise(destination)


def upload_dir(local_dir: PathLike, destination: PathLike, *, config: StorageConfig | None = None,
               unlisted: tuple[str, ...] = ()) -> str:
    """Copy a local folder to ``destination`` with a ``_content.json`` so ``local_cache`` can key on it.

    Files already at ``destination`` (written there directly, e.g. by Ray Data workers) stay and are
    listed too, by size: hashing them would mean reading them all back once more. Those inside folders
    named in ``unlisted`` (e.g. a million crops that no cache copies) are left out of the list."""
    if not Path(local_dir).is_dir():
        raise _missing(local_dir, "directory")
    copy_tree(local_dir, destination, config=config)
    files = {}
    for file in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
        rel = file.relative_to(local_dir).as_posix()
        if rel != CONTENT_MANIFEST:
            with open(file, "rb") as f:
                files[rel] = {"size": file.stat().st_size, "sha256": _sha256(f)}
    fs, inner = filesystem(destination, config)
    for rel, info in _files(fs, inner).items():  # an earlier run's manifest is replaced after this: not listed
        if rel not in files and rel not in (CONTENT_MANIFEST, MANIFEST, LATEST) and not _excluded(rel, unlisted):
            files[rel] = {"size": info.size}
    _write_content_manifest(destination, dict(sorted(files.items())), config)
    return normalise(destination)


def download_dir(source: PathLike, local_dir: PathLike, *, config: StorageConfig | None = None) -> Path:
    copy_tree(source, os.fspath(local_dir), config=config)
    return Path(local_dir)


# --------------------------------------------------------------------------- content hashes and the node cache

def _sha256(stream) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def write_content_manifest(path: PathLike, *, config: StorageConfig | None = None) -> str:
    """Record every file's size and sha256 in ``<path>/_content.json``; returns the folder's content hash.

    Writers call this once an artifact folder on an object store is complete (``upload_dir`` does it
    for you, hashing the local copy); hashing a remote folder reads it once.
    """
    fs, inner = filesystem(path, config)
    files = {}
    for rel, info in sorted(_files(fs, inner).items()):
        if rel != CONTENT_MANIFEST:
            with fs.open_input_stream(info.path) as f:
                files[rel] = {"size": info.size, "sha256": _sha256(f)}
    return _write_content_manifest(path, files, config)


def _write_content_manifest(path: PathLike, files: dict[str, dict], config: StorageConfig | None) -> str:
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:32]
    write_json(join(path, CONTENT_MANIFEST), {"content_hash": digest, "files": files}, config=config)
    return digest


def content_hash(path: PathLike, *, config: StorageConfig | None = None) -> str:
    """The folder's ``_content.json`` hash, or (no manifest) a hash of its listing: names, sizes, mtimes."""
    fs, inner = filesystem(path, config)
    listing = _files(fs, inner)
    if not listing:
        raise _missing(path, "artifact directory (or it is empty)")
    return _content_key(fs, inner, listing)[0]


def _content_key(fs, inner, listing) -> tuple[str, dict | None]:
    if CONTENT_MANIFEST in listing:
        with fs.open_input_stream(listing[CONTENT_MANIFEST].path) as f:
            manifest = json.loads(f.read())
        return manifest["content_hash"], manifest
    fingerprint = {rel: [info.size, info.mtime_ns] for rel, info in sorted(listing.items())}
    return "ls-" + hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()[:29], None


def _content_manifest(fs: pafs.FileSystem, inner: str) -> dict | None:
    try:
        with fs.open_input_stream(f"{inner}/{CONTENT_MANIFEST}") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def _copy_files(fs: pafs.FileSystem, inner: str, relatives: list[str], local: Path) -> None:
    for rel in relatives:
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(f"{inner}/{rel}", str(local / rel), source_filesystem=fs,
                        destination_filesystem=pafs.LocalFileSystem())


def _verify(local: Path, listing: dict[str, pafs.FileInfo], manifest: dict | None, uri: str) -> None:
    expected = manifest["files"] if manifest else {rel: {"size": info.size} for rel, info in listing.items()}
    for rel, want in expected.items():
        got = local / rel
        if not got.is_file() or got.stat().st_size != want["size"]:
            raise StorageError(f"{uri}: downloaded {rel} is missing or has the wrong size")
        if "sha256" in want:
            with open(got, "rb") as f:
                if _sha256(f) != want["sha256"]:
                    raise StorageError(f"{uri}: {rel} does not match its {CONTENT_MANIFEST} (changed after "
                                       "the manifest was written?)")


def local_cache(path: PathLike, cache_dir: PathLike, *, config: StorageConfig | None = None,
                keep: int = 2, exclude: tuple[str, ...] = ()) -> Path:
    """A node-local copy of an artifact folder, downloaded once per content hash.

    Local paths are returned as they are. For a URI, the folder's ``_content.json`` gives its content hash
    and the files to copy (nothing is listed: a run may hold a million crops), else the folder's listing
    does; ``<cache_dir>/<uri key>/<hash>/`` is reused when present, otherwise downloaded into a temporary
    folder, verified (sha256 from the manifest, else sizes and an unchanged listing) and renamed into
    place, so concurrent replicas never see a half-written copy. The newest ``keep`` versions per URI
    stay; older ones are removed. Folders named in ``exclude`` at any depth (e.g. ``crops``: read one by
    one where needed) are neither copied nor verified.
    """
    if is_local(path):
        return local_path(path)
    uri = normalise(path)
    fs, inner = filesystem(uri, config)
    try:
        manifest, listing = _content_manifest(fs, inner), None
        if manifest is None:
            listing = _files(fs, inner)
            if not listing:
                raise _missing(uri, "artifact directory (or it is empty)")
        key = manifest["content_hash"] if manifest else _content_key(fs, inner, listing)[0]
    except FileNotFoundError:
        raise
    except OSError as error:  # the endpoint or the credentials: say which artifact needed them
        raise StorageError(f"{uri}: cannot list the artifact directory: {error}") from error
    home = Path(cache_dir) / hashlib.sha256(uri.encode()).hexdigest()[:16]
    # a partial copy is another version than a full one
    target = home / (key + ("-without-" + "-".join(sorted(exclude)) if exclude else ""))
    if target.is_dir():
        os.utime(target)  # most recently used, for pruning
        return target
    home.mkdir(parents=True, exist_ok=True)
    (home / CACHE_URI_FILE).write_text(uri + "\n")
    tmp = home / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if manifest is not None:
            manifest = manifest | {"files": {rel: want for rel, want in manifest["files"].items()
                                             if not _excluded(rel, exclude)}}
            # the files it lists, itself, and the run's manifest.json (written after it) when there is one
            extra = [MANIFEST] if fs.get_file_info(f"{inner}/{MANIFEST}").type == pafs.FileType.File else []
            _copy_files(fs, inner, [*manifest["files"], CONTENT_MANIFEST, *extra], tmp)
        else:
            wanted = {rel: info for rel, info in listing.items() if not _excluded(rel, exclude)}
            if len(wanted) == len(listing):
                pafs.copy_files(inner, str(tmp), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            else:
                _copy_files(fs, inner, list(wanted), tmp)
            listing = wanted
        _verify(tmp, listing, manifest, uri)
        if manifest is None and _content_key(fs, inner, _files(fs, inner))[0] != key:
            raise StorageError(f"{uri}: changed while it was being downloaded; try again")
        try:
            tmp.rename(target)
        except OSError:  # another process on this node finished the same version first
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    versions = sorted((p for p in home.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime, reverse=True)
    for old in versions[keep:]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _excluded(relative: str, exclude: tuple[str, ...]) -> bool:
    """Whether any folder on the way to ``relative`` is named in ``exclude`` (e.g. ``user_tower/ray_results``)."""
    return any(part in exclude for part in relative.split("/")[:-1])


def cached_uri(folder: PathLike) -> str | None:
    """The URI whose node-local copy ``folder`` is (made by ``local_cache``), else None."""
    folder = Path(folder)
    marker = folder.parent / CACHE_URI_FILE
    if folder.name.startswith(".") or not marker.is_file():
        return None
    return marker.read_text().strip()


def runtime_env_vars() -> dict[str, str]:
    """This process's object-store settings (AWS_* variables), for the ``runtime_env`` of Ray tasks and
    actors that read or write URIs themselves: a local Ray's workers started before the variables were
    set, and a cluster's nodes may have none (then their own credentials, e.g. an instance role, apply)."""
    return {key: value for key, value in os.environ.items() if key.startswith("AWS_") and value}


# --------------------------------------------------------------------------- fail fast

def check_reachable(path: PathLike, *, mode: str = "read", config: StorageConfig | None = None,
                    timeout_s: float = 5.0) -> str:
    """Fail at once, naming ``path``, if it cannot be used: ``mode="read"`` needs it to exist,
    ``mode="write"`` needs a writable location (a probe object is written and removed on object stores).

    Stages call this for every input and output root before any work starts.
    """
    if mode not in ("read", "write"):
        raise ValueError(f"mode must be 'read' or 'write', not {mode!r}")
    text = os.fspath(path)
    if is_local(text):
        return _check_local(text, mode)
    kind = scheme(text)
    if kind in ("s3", "s3a"):
        # One attempt and short timeouts: a wrong endpoint must not sit in the SDK's retry loop.
        base = config or StorageConfig.from_env()
        fs = _s3(replace(base, connect_timeout_s=timeout_s, request_timeout_s=timeout_s, max_attempts=1))
        inner = text.split("://", 1)[1].rstrip("/")
        where = f" (endpoint {base.endpoint_url})" if base.endpoint_url else ""
    else:
        try:
            fs, inner = filesystem(text, config)
        except (OSError, ValueError) as error:
            raise StorageError(f"{text}: cannot open this storage location: {error}") from error
        where = ""
    bucket = inner.split("/", 1)[0] if kind in ("s3", "s3a", "gs", "gcs") else None
    if bucket == "":
        raise StorageError(f"{text}: no bucket in the URI")
    try:
        if bucket and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise StorageError(f"{text}: bucket {bucket!r} does not exist{where}")
        if mode == "read":
            if fs.get_file_info(inner).type == pafs.FileType.NotFound:
                raise StorageError(f"{text}: does not exist{where}")
        else:
            probe = f"{inner}/.write-probe-{uuid.uuid4().hex[:8]}"
            _put(fs, probe, b"")
            fs.delete_file(probe)
    except StorageError:
        raise
    except OSError as error:  # unreachable endpoint, access denied, bad signature, ...
        raise StorageError(f"{text}: not reachable or not authorised{where}: {error}") from error
    return text


def _check_local(text: str, mode: str) -> str:
    target = local_path(text)
    if mode == "read":
        if not target.exists():
            raise StorageError(f"{text}: does not exist")
        if not os.access(target, os.R_OK):
            raise StorageError(f"{text}: not readable")
        return text
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise StorageError(f"{text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"{text}: {existing} is not writable")
    return text


# --------------------------------------------------------------------------- run directories

def new_run_dir(root: PathLike, config_hash: str, run_name: str | None = None, *,
                config: StorageConfig | None = None) -> str:
    """``<root>/<UTC timestamp>-<config hash>`` (or ``<root>/<run_name>``), created; returns its path/URI."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = join(normalise(root), run_name or f"{stamp}-{config_hash}")
    makedirs(run_dir, config=config)
    return run_dir


def set_latest(root: PathLike, run_dir: PathLike, *, config: StorageConfig | None = None) -> str:
    """Point ``<root>/LATEST`` at ``run_dir`` (one small object: atomic on S3, temp+rename locally)."""
    return write_text(join(root, LATEST), name(run_dir) + "\n", config=config)


def latest_run(root: PathLike, *, config: StorageConfig | None = None) -> str:
    pointer = join(root, LATEST)
    if not is_file(pointer, config=config):
        raise FileNotFoundError(f"{root}: no LATEST run pointer; run the stage that writes {root} first")
    return join(normalise(root), read_text(pointer, config=config).strip())


def write_manifest(run_dir: PathLike, manifest: dict, *, config: StorageConfig | None = None) -> str:
    """``<run_dir>/manifest.json``, then ``LATEST`` of its root: a run is the latest once it is complete."""
    written = write_json(join(run_dir, MANIFEST), manifest, config=config)
    set_latest(parent(run_dir), run_dir, config=config)
    return written
