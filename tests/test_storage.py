"""recsys.storage on local folders and on a real S3-compatible server (moto, started on loopback)."""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from recsys import storage
from tests.s3 import BUCKET, S3Server, s3_env, s3_server  # noqa: F401  (fixtures)


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path) -> str:
    """A fresh, empty location: a local folder or a prefix in the test bucket."""
    if request.param == "local":
        return str(tmp_path / "store")
    request.getfixturevalue("s3_env")
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def _prefix(uri: str) -> str:
    return uri.split(f"s3://{BUCKET}/", 1)[1]


def _make_artifact(folder: Path, version: str) -> Path:
    (folder / "index").mkdir(parents=True, exist_ok=True)
    (folder / "vectors.bin").write_bytes(version.encode() * 100)
    (folder / "index" / "meta.json").write_text(f'{{"version": "{version}"}}')
    return folder


@pytest.mark.timeout(30)
def test_paths_and_uris_keep_their_form(tmp_path):
    assert storage.is_uri("s3://b/k") and storage.is_uri("gs://b/k") and not storage.is_uri("artifacts/x")
    assert storage.is_local("file:///tmp/x") and not storage.is_local("s3://b/k")
    assert storage.join("s3://b/root/", "/run/", "a.json") == "s3://b/root/run/a.json"
    assert storage.join("s3://b", "x") == "s3://b/x"
    assert storage.join("artifacts", "run", "/a.json") == os.path.join("artifacts", "run", "a.json")
    assert storage.parent("s3://b/root/run") == "s3://b/root"
    assert storage.name("s3://b/root/run/") == "run"
    assert storage.normalise("s3://b/root/") == "s3://b/root"
    with pytest.raises(ValueError):
        storage.parent("s3://b")
    # Local paths become absolute against the working directory, symlinks untouched (no resolve()).
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert storage.normalise(tmp_path / "link" / "x") == str(tmp_path / "link" / "x")
    assert storage.normalise("rel/x") == os.path.join(os.getcwd(), "rel", "x")
    fs, inner = storage.filesystem("s3://b/k/", storage.StorageConfig(endpoint_url="http://127.0.0.1:9"))
    assert isinstance(fs, pafs.S3FileSystem) and inner == "b/k"
    assert storage.ray_storage(tmp_path / "ckpt") == {"storage_path": str(tmp_path / "ckpt")}


@pytest.mark.timeout(60)
def test_s3_settings_come_from_the_standard_env_vars(s3_env):
    config = storage.StorageConfig.from_env()
    assert config.endpoint_url == s3_env.endpoint and config.access_key == s3_env.access_key
    assert config.region == "us-east-1"
    assert storage.StorageConfig.from_env(region="eu-west-1").region == "eu-west-1"
    kwargs = storage.ray_storage(f"s3://{BUCKET}/ckpt")
    assert kwargs["storage_path"] == f"{BUCKET}/ckpt"
    assert isinstance(kwargs["storage_filesystem"], pafs.S3FileSystem)


@pytest.mark.timeout(60)
def test_file_round_trips(root):
    assert not storage.exists(root)
    storage.makedirs(storage.join(root, "sub"))
    assert storage.exists(storage.join(root, "sub"))

    written = storage.write_bytes(storage.join(root, "a.bin"), b"\x00\x01")
    assert written == storage.join(storage.normalise(root), "a.bin")
    assert storage.read_bytes(storage.join(root, "a.bin")) == b"\x00\x01"
    storage.write_text(storage.join(root, "sub", "b.txt"), "치마 skirt")
    assert storage.read_text(storage.join(root, "sub", "b.txt")) == "치마 skirt"
    storage.write_json(storage.join(root, "c.json"), {"k": [1, 2], "t": "블라우스"})
    assert storage.read_json(storage.join(root, "c.json")) == {"k": [1, 2], "t": "블라우스"}
    with storage.open_output(storage.join(root, "deep", "d.bin")) as out:
        out.write(b"abc")
        out.write(b"def")
    with storage.open_input(storage.join(root, "deep", "d.bin")) as f:
        assert f.size() == 6 and f.read_at(2, 2) == b"cd"  # random access, as parquet needs

    assert storage.is_file(storage.join(root, "a.bin")) and not storage.is_dir(storage.join(root, "a.bin"))
    assert storage.is_dir(storage.join(root, "deep"))
    assert storage.list_dir(root) == ["a.bin", "c.json", "deep", "sub"]
    assert storage.list_dir(storage.join(root, "sub")) == ["b.txt"]
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        storage.read_text(storage.join(root, "missing.txt"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        storage.list_dir(storage.join(root, "nowhere"))


@pytest.mark.timeout(60)
def test_a_failed_write_leaves_the_old_file(root):
    target = storage.join(root, "model.json")
    storage.write_text(target, "old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with storage.open_output(target) as out:
            out.write(b"half of the new")
            raise RuntimeError("mid-write")
    assert storage.read_text(target) == "old"
    assert storage.list_dir(root) == ["model.json"]  # no temp file left behind


@pytest.mark.timeout(60)
def test_copy_upload_download(root, tmp_path):
    source = _make_artifact(tmp_path / "built", "v1")
    remote = storage.join(root, "index")
    storage.upload_dir(source, remote)
    assert storage.list_dir(remote) == [storage.CONTENT_MANIFEST, "index", "vectors.bin"]
    manifest = storage.read_json(storage.join(remote, storage.CONTENT_MANIFEST))
    assert set(manifest["files"]) == {"vectors.bin", "index/meta.json"}
    assert storage.content_hash(remote) == manifest["content_hash"]

    copy = storage.copy_tree(remote, storage.join(root, "index-copy"))
    assert storage.read_text(storage.join(copy, "index", "meta.json")) == '{"version": "v1"}'
    back = storage.download_dir(copy, tmp_path / "back")
    assert (back / "vectors.bin").read_bytes() == b"v1" * 100
    # A recomputed manifest (hashing the remote files) agrees with the one made from the local copy.
    assert storage.write_content_manifest(copy) == manifest["content_hash"]
    with pytest.raises(FileNotFoundError):
        storage.copy_tree(storage.join(root, "absent"), tmp_path / "x")


@pytest.mark.timeout(60)
def test_run_dirs_and_latest_pointer(root):
    with pytest.raises(FileNotFoundError, match="no LATEST run pointer"):
        storage.latest_run(root)
    first = storage.new_run_dir(root, "abcd1234")
    assert storage.parent(first) == storage.normalise(root) and storage.name(first).endswith("-abcd1234")
    assert storage.is_dir(first)
    storage.write_text(storage.join(first, "config.yaml"), "seed: 1\n")
    storage.write_manifest(first, {"stage": "embed", "outputs": {}})
    assert storage.latest_run(root) == first
    assert storage.read_json(storage.join(first, storage.MANIFEST))["stage"] == "embed"

    second = storage.new_run_dir(root, "abcd1234", run_name="named-run")
    assert storage.latest_run(root) == first  # only a finished run (manifest written) becomes LATEST
    storage.write_manifest(second, {"stage": "embed"})
    assert storage.latest_run(root) == storage.join(storage.normalise(root), "named-run")
    assert storage.read_text(storage.join(root, storage.LATEST)) == "named-run\n"
    storage.set_latest(root, first)
    assert storage.latest_run(root) == first


@pytest.mark.timeout(90)
def test_local_cache_downloads_once_per_content(s3_env, tmp_path):
    remote = f"s3://{BUCKET}/cache-{uuid.uuid4().hex[:8]}/index"
    storage.upload_dir(_make_artifact(tmp_path / "v1", "v1"), remote)
    cache = tmp_path / "node-cache"

    s3_env.mark()
    first = storage.local_cache(remote, cache)
    assert (first / "index" / "meta.json").read_text() == '{"version": "v1"}'
    data_gets = [r for r in s3_env.object_gets(_prefix(remote)) if not r.path.endswith(storage.CONTENT_MANIFEST)]
    assert {r.path.rsplit("/", 1)[1] for r in data_gets} == {"vectors.bin", "meta.json"}  # the server saw the reads

    s3_env.mark()
    assert storage.local_cache(remote, cache) == first
    data_gets = [r for r in s3_env.object_gets(_prefix(remote)) if not r.path.endswith(storage.CONTENT_MANIFEST)]
    assert data_gets == []  # second call: listing + the small manifest only

    storage.upload_dir(_make_artifact(tmp_path / "v2", "v2"), remote)
    s3_env.mark()
    second = storage.local_cache(remote, cache)
    assert second != first and (second / "vectors.bin").read_bytes() == b"v2" * 100
    assert any(r.path.endswith("vectors.bin") for r in s3_env.object_gets(_prefix(remote)))
    assert first.is_dir()  # keep=2: the previous version stays for replicas still loading it

    storage.upload_dir(_make_artifact(tmp_path / "v3", "v3"), remote)
    third = storage.local_cache(remote, cache, keep=1)
    assert (third / "vectors.bin").read_bytes() == b"v3" * 100
    assert not first.exists() and not second.exists()
    assert [p.name for p in third.parent.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.timeout(90)
def test_a_run_folder_workers_wrote_into_is_uploaded_beside_it_and_copied_without_excluded_folders(s3_env, tmp_path):
    run = f"s3://{BUCKET}/run-{uuid.uuid4().hex[:8]}/20260101-000000-abc"
    storage.write_bytes(storage.join(run, "crops", "a.jpg"), b"j" * 7)         # written by a worker
    storage.write_bytes(storage.join(run, "items", "part-0.parquet"), b"p" * 5)  # written by a worker
    storage.write_bytes(storage.join(run, "manifest.json"), b"{}")               # an earlier run's, replaced below
    staged = tmp_path / "staged"
    (staged / "checkpoints").mkdir(parents=True)
    (staged / "checkpoints" / "best_model.pt").write_bytes(b"w" * 3)
    storage.upload_dir(staged, run)
    listed = storage.read_json(storage.join(run, storage.CONTENT_MANIFEST))["files"]
    assert listed == {"checkpoints/best_model.pt": {"size": 3, "sha256": hashlib.sha256(b"www").hexdigest()},
                      "crops/a.jpg": {"size": 7}, "items/part-0.parquet": {"size": 5}}
    storage.write_manifest(run, {"stage": "test"})  # the new manifest: not in _content.json, so no size clash
    cache = tmp_path / "node-cache"
    partial = storage.local_cache(run, cache, exclude=("crops",))
    assert sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file()) == [
        "_content.json", "checkpoints/best_model.pt", "items/part-0.parquet", "manifest.json"]
    full = storage.local_cache(run, cache)  # a full copy is another cache entry than the partial one
    assert full != partial and (full / "crops" / "a.jpg").read_bytes() == b"j" * 7


@pytest.mark.timeout(90)
def test_local_cache_without_manifest_keys_on_the_listing(s3_env, tmp_path):
    remote = f"s3://{BUCKET}/plain-{uuid.uuid4().hex[:8]}"
    storage.write_bytes(storage.join(remote, "part-0.parquet"), b"x" * 10)
    cache = tmp_path / "node-cache"
    first = storage.local_cache(remote, cache)
    s3_env.mark()
    assert storage.local_cache(remote, cache) == first
    assert s3_env.object_gets(_prefix(remote)) == []
    storage.write_bytes(storage.join(remote, "part-0.parquet"), b"y" * 12)
    second = storage.local_cache(remote, cache)
    assert second != first and (second / "part-0.parquet").read_bytes() == b"y" * 12


@pytest.mark.timeout(60)
def test_local_cache_rejects_content_that_does_not_match_its_manifest(s3_env, tmp_path):
    remote = f"s3://{BUCKET}/stale-{uuid.uuid4().hex[:8]}"
    storage.upload_dir(_make_artifact(tmp_path / "v1", "v1"), remote)
    storage.write_bytes(storage.join(remote, "vectors.bin"), b"v9" * 100)  # same size, not resealed
    with pytest.raises(storage.StorageError, match=f"{remote}.*vectors.bin"):
        storage.local_cache(remote, tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("vectors.bin"))  # nothing half-verified left in the cache


@pytest.mark.timeout(30)
def test_local_cache_of_a_local_folder_is_the_folder(tmp_path):
    folder = _make_artifact(tmp_path / "art", "v1")
    assert storage.local_cache(folder, tmp_path / "cache") == folder
    assert not (tmp_path / "cache").exists()


@pytest.mark.timeout(60)
def test_check_reachable_accepts_good_locations(s3_env, tmp_path):
    storage.write_text(f"s3://{BUCKET}/inputs/x.txt", "x")
    assert storage.check_reachable(f"s3://{BUCKET}/inputs/x.txt") == f"s3://{BUCKET}/inputs/x.txt"
    storage.check_reachable(f"s3://{BUCKET}/inputs")
    storage.check_reachable(f"s3://{BUCKET}/new-output-root", mode="write")
    assert not storage.list_dir(f"s3://{BUCKET}/inputs") == []
    assert not any(n.startswith(".write-probe") for n in storage.list_dir(f"s3://{BUCKET}"))
    storage.check_reachable(tmp_path / "not-yet" / "created", mode="write")
    storage.check_reachable(tmp_path)


def _fails_fast(uri: str, match: str, **kwargs) -> None:
    start = time.monotonic()
    with pytest.raises(storage.StorageError, match=match) as error:
        storage.check_reachable(uri, **kwargs)
    assert str(error.value).startswith(uri)
    assert time.monotonic() - start < 10


@pytest.mark.timeout(60)
def test_check_reachable_fails_at_once_naming_the_uri(s3_env, s3_server, monkeypatch, tmp_path):
    _fails_fast("s3://no-such-bucket/artifacts", "bucket 'no-such-bucket' does not exist")
    _fails_fast(f"s3://{BUCKET}/no/such/input", "does not exist")
    _fails_fast("s3:///artifacts", "no bucket")

    closed = S3Server(tmp_path).port  # a free port nobody listens on
    unreachable = storage.StorageConfig.from_env(endpoint_url=f"http://127.0.0.1:{closed}")
    _fails_fast(f"s3://{BUCKET}/artifacts", "not reachable", mode="write", config=unreachable)
    with pytest.raises(storage.StorageError, match=f"^s3://{BUCKET}/index: cannot list"):
        storage.local_cache(f"s3://{BUCKET}/index", tmp_path / "cache",
                            config=storage.StorageConfig(endpoint_url=unreachable.endpoint_url, max_attempts=1))

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    _fails_fast(f"s3://{BUCKET}/artifacts", "not reachable or not authorised")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000")
    _fails_fast(f"s3://{BUCKET}/artifacts", "not authorised", mode="write")

    (tmp_path / "a-file").write_text("x")
    _fails_fast(str(tmp_path / "a-file" / "out"), "is a file", mode="write")
    _fails_fast(str(tmp_path / "missing-input"), "does not exist")


@pytest.mark.timeout(60)
def test_parquet_through_the_storage_filesystem(s3_env):
    uri = f"s3://{BUCKET}/tables-{uuid.uuid4().hex[:8]}/items.parquet"
    table = pa.table({"item_id": ["a", "b", "c"], "score": [0.5, 0.25, 1.0]})
    fs, path = storage.filesystem(uri)
    pq.write_table(table, path, filesystem=fs)
    s3_env.mark()
    assert pq.read_table(path, filesystem=fs).equals(table)
    assert s3_env.object_gets(_prefix(uri))  # read from the server, not from a local folder
    with storage.open_input(uri) as f:  # the same object through the storage API
        assert pq.read_table(f).num_rows == 3


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_data_parquet_on_s3(s3_env, ray_session):
    import ray.data

    uri = f"s3://{BUCKET}/ray-{uuid.uuid4().hex[:8]}/items"
    fs, path = storage.filesystem(uri)
    # The workers get the credentials inside the pickled filesystem, not from their environment.
    ray.data.from_items([{"item_id": i, "score": i / 10} for i in range(20)]) \
        .repartition(2).write_parquet(path, filesystem=fs)
    assert len([n for n in storage.list_dir(uri) if n.endswith(".parquet")]) >= 1
    s3_env.mark()
    rows = ray.data.read_parquet(path, filesystem=fs).take_all()
    assert sorted(r["item_id"] for r in rows) == list(range(20))
    assert s3_env.object_gets(_prefix(uri))
