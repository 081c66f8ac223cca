"""recsys.index: exact search against numpy, ANN recall, the artifact round trip and its checks."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from recsys.config import ConfigError
from recsys.index import (IndexArtifactError, IndexConfig, SearchFilter, VectorIndex, VectorStore,
                          check_unit_vectors, recall_at_k, row_problems)
from tests.s3 import s3_env, s3_server  # noqa: F401  (fixtures: a moto S3 server on loopback)

# Small and quick: 6-bit PQ codes (64 centroids per subquantizer, 2 dims each) train in about a second.
SMALL = {"exact": IndexConfig(kind="exact"),
         "hnsw": IndexConfig(kind="hnsw", hnsw_m=16, ef_construction=80, ef_search=64),
         "ivfpq": IndexConfig(kind="ivfpq", nlist=16, pq_m=16, pq_bits=6, nprobe=8)}


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int = 32, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((clusters, dim)))
    return unit(centres[rng.integers(clusters, size=n)] + 0.15 * rng.standard_normal((n, dim)))


def ids_for(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


@pytest.fixture(scope="module")
def data():
    vectors = clustered(2000)
    return vectors, ids_for(len(vectors)), clustered(50, seed=1)


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    """Each kind built once over ``data``: (the built index, never modified, and the folder it was saved
    to, from which tests that modify an index load their own copy). Training IVF-PQ is the slow part."""
    vectors, ids, _ = data
    out = {}
    for kind, config in SMALL.items():
        index, folder = VectorIndex.build(vectors, ids, config, source="vectors.parquet"), tmp_path_factory.mktemp(kind)
        index.save(folder)
        out[kind] = (index, folder)
    return out


def test_exact_search_equals_numpy_brute_force():
    rng = np.random.default_rng(0)
    vectors, queries = unit(rng.standard_normal((300, 16))), unit(rng.standard_normal((12, 16)))
    hits = VectorIndex.build(vectors, ids_for(300), IndexConfig(kind="exact")).search(queries, 10)
    scores = queries @ vectors.T
    expected = np.argsort(-scores, axis=1)[:, :10]
    assert (hits.rows == expected).all()
    assert np.allclose(hits.scores, np.take_along_axis(scores, expected, axis=1), atol=1e-5)
    assert hits.item_ids[0, 0] == f"i{expected[0, 0]}" and hits.item_ids.shape == (12, 10)


def test_recall_at_k_by_hand():
    # query 1: 0 and 2 of {0, 2, 5} found -> 2/3; query 2: truth {3, 9} (-1 = none), 3 found -> 1/2.
    found = np.array([[0, 1, 2], [3, 4, -1]])
    truth = np.array([[0, 2, 5], [3, 9, -1]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 3 + 1 / 2) / 2)


@pytest.mark.parametrize("kind, threshold", [("hnsw", 0.95), ("ivfpq", 0.65)])
def test_approximate_recall_at_10_against_exact(data, saved, kind, threshold):
    _, _, queries = data
    truth = saved["exact"][0].search(queries, 10).rows
    found = saved[kind][0].search(queries, 10).rows
    assert recall_at_k(found, truth) >= threshold


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_save_load_round_trip_gives_identical_results(data, saved, kind, tmp_path):
    _, _, queries = data
    index = saved[kind][0]
    meta = index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    before, after = index.search(queries, 10), loaded.search(queries, 10)
    assert (before.rows == after.rows).all() and (before.item_ids == after.item_ids).all()
    assert np.array_equal(before.scores, after.scores)
    on_disk = json.loads((tmp_path / "index_meta.json").read_text())
    assert on_disk == meta
    assert meta["metric"] == "inner_product" and meta["kind"] == kind and meta["dim"] == 32
    assert meta["n_items"] == 2000 and meta["source_vectors"] == "vectors.parquet" and len(meta["version"]) == 16
    assert loaded.config == index.config and len(loaded) == 2000


def test_only_inner_product_is_allowed():
    with pytest.raises(ConfigError, match="inner product") as error:
        IndexConfig(metric="l2")
    assert "2 - 2*cos" in str(error.value)  # the message says why L2 and IP are never mixed
    with pytest.raises(ConfigError, match="kind"):
        IndexConfig(kind="lsh")


def test_bad_vectors_are_rejected_naming_the_row():
    vectors = clustered(40, dim=8)
    vectors[7] *= 2
    with pytest.raises(ValueError, match=r"row 7 \(item 'i7'\) has norm 2.0000, not 1 within 0.001.*\(1 bad row\(s\) in all\)"):
        VectorIndex.build(vectors, ids_for(40), IndexConfig(kind="exact"))
    vectors[7] /= 2
    vectors[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"row 3 \(item 'i3'\) contains NaN or inf"):
        VectorIndex.build(vectors, ids_for(40), IndexConfig(kind="hnsw"))
    with pytest.raises(ValueError, match="duplicate item id"):
        VectorIndex.build(clustered(3, dim=8), ["a", "b", "a"], IndexConfig(kind="exact"))


def test_row_problems_by_hand():
    vectors = np.array([[1, 0], [0.6, 0.8], [1, 1], [np.nan, 0], [np.inf, 0]], dtype=np.float32)
    assert row_problems(vectors).tolist() == ["", "", "not_unit_norm", "not_finite", "not_finite"]
    with pytest.raises(ValueError, match=r"expected shape \(N, 3\)"):
        check_unit_vectors(vectors[:2], dim=3)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_add_makes_a_new_item_searchable_and_remove_hides_it(data, saved, kind, tmp_path):
    vectors, _, _ = data
    index = VectorIndex.load(saved[kind][1])
    new = unit(np.random.default_rng(5).standard_normal((1, 32)))
    index.add(new, ["new-product"])
    assert index.search(new, 5).item_ids[0, 0] == "new-product" and len(index) == 2001
    with pytest.raises(ValueError, match="already in the index"):
        index.add(new, ["new-product"])
    index.remove(["new-product", "i0"])
    hits = index.search(np.vstack([new, vectors[:1]]), 20)
    assert "new-product" not in hits.item_ids and "i0" not in hits.item_ids and len(index) == 1999
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path)
    assert "i0" not in loaded.search(vectors[:1], 20).item_ids and "i0" not in loaded and loaded.ntotal == 2001
    with pytest.raises(KeyError, match="not in the index"):
        index.remove(["never-indexed"])


def test_fewer_items_than_k_pad_with_empty_ids():
    hits = VectorIndex.build(clustered(3, dim=8), ["a", "b", "c"], IndexConfig(kind="exact")).search(clustered(1, dim=8), 5)
    assert hits.item_ids[0, 3:].tolist() == ["", ""] and (hits.rows[0, 3:] == -1).all()
    assert np.isneginf(hits.scores[0, 3:]).all()


def test_ivfpq_resolution_and_limits():
    resolved = IndexConfig(kind="ivfpq").resolved(n=200_000, dim=128)
    assert resolved.nlist == round(4 * 200_000 ** 0.5) == 1789 and resolved.pq_m == 32  # 4 dims a subquantizer
    assert IndexConfig(kind="ivfpq").resolved(n=10_000, dim=100).nlist == 10_000 // 39  # >= 39 points a cell
    assert IndexConfig(kind="ivfpq").resolved(n=10_000, dim=100).pq_m == 25
    with pytest.raises(ConfigError, match="must divide"):
        IndexConfig(kind="ivfpq", pq_m=5).resolved(n=10_000, dim=128)
    with pytest.raises(ConfigError, match="use kind 'exact'"):
        IndexConfig(kind="ivfpq").resolved(n=100, dim=128)


def test_load_refuses_files_that_disagree_with_the_meta(data, tmp_path):
    vectors, ids, _ = data
    VectorIndex.build(vectors[:200], ids[:200], IndexConfig(kind="exact")).save(tmp_path)
    meta_path = tmp_path / "index_meta.json"
    good = json.loads(meta_path.read_text())
    for key, value, message in (("dim", 64, "says dim 64 but index.faiss has 32"),
                                ("n_items", 199, "says n_items 199 but index.faiss has 200"),
                                ("version", "0" * 16, "version"),
                                ("metric", "l2", "only metric 'ip'")):
        meta_path.write_text(json.dumps(good | {key: value}))
        with pytest.raises(IndexArtifactError, match=message):
            VectorIndex.load(tmp_path)
    meta_path.write_text(json.dumps(good))
    table = pq.read_table(tmp_path / "item_ids.parquet")
    pq.write_table(table.slice(0, 199), tmp_path / "item_ids.parquet")  # ids of another build
    with pytest.raises(IndexArtifactError, match="item_ids.parquet has 199"):
        VectorIndex.load(tmp_path)
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(IndexArtifactError, match="missing index.faiss"):
        VectorIndex.load(tmp_path)


# -- memory-mapped loading and object-store artifacts ---------------------------------------------

@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_mmap_load_maps_every_kind_and_searches_like_a_normal_load(data, saved, kind):
    _, _, queries = data
    folder = saved[kind][1]
    normal, mapped = VectorIndex.load(folder), VectorIndex.load(folder, mmap=True)
    assert normal.loaded_as == "memory" and not normal.mapped
    assert mapped.loaded_as == "mmap" and mapped.mapped  # faiss 1.15: IO_FLAG_MMAP_IFC maps all three kinds
    assert mapped.version == normal.version == json.loads((folder / "index_meta.json").read_text())["version"]
    before, after = normal.search(queries, 10), mapped.search(queries, 10)
    assert (before.rows == after.rows).all() and (before.item_ids == after.item_ids).all()
    assert np.array_equal(before.scores, after.scores)


def test_mmap_load_streams_the_hash_and_refuses_a_tampered_index(data, saved, tmp_path, monkeypatch):
    import shutil

    import recsys.index as index_module

    folder = tmp_path / "exact"
    shutil.copytree(saved["exact"][1], folder)
    monkeypatch.setattr(index_module, "HASH_CHUNK", 4096)  # many chunks: the streamed hash is today's hash
    assert VectorIndex.load(folder, mmap=True).loaded_as == "mmap"
    raw = bytearray((folder / "index.faiss").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte of one vector: the file still parses
    (folder / "index.faiss").write_bytes(bytes(raw))
    for mmap in (True, False):
        with pytest.raises(IndexArtifactError, match="version"):
            VectorIndex.load(folder, mmap=mmap)


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_add_remove_search_after_an_mmap_load(data, saved, kind, tmp_path):
    vectors, _, _ = data
    folder = saved[kind][1]
    index = VectorIndex.load(folder, mmap=True)
    index.remove(["i1"])  # soft delete: the mapping stays
    assert index.mapped and "i1" not in index.search(vectors[1:2], 20).item_ids
    new = unit(np.random.default_rng(7).standard_normal((2, 32)))
    index.add(new, ["new-a", "new-b"])  # faiss cannot append to a mapped index: the adds go to an exact delta
    assert index.mapped and index.loaded_as == "mmap" and len(index) == 2001
    assert index.search(new, 1).item_ids[:, 0].tolist() == ["new-a", "new-b"]
    index.remove(["new-a"])
    hits = index.search(np.vstack([new, vectors[1:2]]), 20)
    assert "new-a" not in hits.item_ids and "i1" not in hits.item_ids and "new-b" in hits.item_ids
    # the artifact it was mapped from is untouched, and the grown index saves and loads (mapped) again
    assert VectorIndex.load(folder, mmap=True).ntotal == 2000
    index.save(tmp_path)
    again = VectorIndex.load(tmp_path, mmap=True)
    assert again.ntotal == 2002 and "new-a" not in again and again.search(new[1:], 1).item_ids[0, 0] == "new-b"


def test_load_index_from_s3_checks_the_hash_and_downloads_once(s3_env, saved, tmp_path):
    import uuid

    from recsys import storage
    from recsys.index import load_index
    from tests.s3 import BUCKET

    folder = saved["exact"][1]
    meta = json.loads((folder / "index_meta.json").read_text())
    prefix = f"index-{uuid.uuid4().hex[:8]}/run-1"
    uri = storage.upload_dir(folder, f"s3://{BUCKET}/{prefix}")
    cache = tmp_path / "node-cache"

    s3_env.mark()
    first = load_index(uri, cache_dir=cache, mmap=True)
    assert first.version == meta["version"] and first.loaded_as == "mmap" and first.ntotal == 2000
    assert first.directory.is_relative_to(cache)
    fetched = [r.path.rsplit("/", 1)[1] for r in s3_env.object_gets(prefix)]
    assert "index.faiss" in fetched  # the server really served it

    s3_env.mark()
    second = load_index(uri, cache_dir=cache, mmap=True)
    assert second.directory == first.directory and second.version == meta["version"]
    fetched = [r.path.rsplit("/", 1)[1] for r in s3_env.object_gets(prefix)]
    assert "index.faiss" not in fetched and "item_ids.parquet" not in fetched  # listing + _content.json only
    assert load_index(folder, cache_dir=cache).directory == folder  # a local folder loads where it is


# -- adds to a memory-mapped index: a read-only mapped base plus an in-memory exact delta -----------

def _mapped_and_plain(folder, new, new_ids, removed):
    """The index in ``folder`` loaded mapped and loaded normally, each given the same add (one call)
    and the same removes."""
    mapped, plain = VectorIndex.load(folder, mmap=True), VectorIndex.load(folder)
    for index in (mapped, plain):
        index.add(new, new_ids)
        index.remove(removed)
    return mapped, plain


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_mmap_index_keeps_its_mapping_when_items_are_added(data, saved, kind):
    from recsys.index import _mapped

    vectors, _, queries = data
    folder = saved[kind][1]
    new = unit(np.random.default_rng(11).standard_normal((6, 32)))
    new_ids = [f"new-{i}" for i in range(6)]
    probe = VectorIndex.load(folder, mmap=True)
    base = probe.index
    probe.add(new[:1], new_ids[:1])
    assert probe.index is base and _mapped(probe.index) and probe.mapped and probe.loaded_as == "mmap"
    assert probe.delta is not None and probe.delta.ntotal == 1 and probe.ntotal == 2001

    mapped, plain = _mapped_and_plain(folder, new, new_ids, ["i5", "new-1"])
    assert mapped.mapped and _mapped(mapped.index) and mapped.index.ntotal == 2000 and mapped.delta.ntotal == 6
    assert len(mapped) == len(plain) == 2004 and mapped.ntotal == plain.ntotal == 2006
    assert "new-1" not in mapped and "i5" not in mapped and "new-2" in mapped and "i6" in mapped
    q = np.vstack([queries, new, vectors[5:7]])
    got = mapped.search(q, 10)
    assert got.scores.dtype == np.float32 and got.rows.dtype == np.int64 and got.item_ids.shape == (len(q), 10)
    assert (got.item_ids == np.where(got.rows >= 0, mapped.item_ids[got.rows], "")).all()  # rows keep plain's numbering
    assert "new-1" not in got.item_ids and "i5" not in got.item_ids
    live_new = [i for i in range(6) if i != 1]
    assert got.item_ids[len(queries) + np.array(live_new), 0].tolist() == [new_ids[i] for i in live_new]
    if kind == "exact":
        want = plain.search(q, 10)
        assert (got.item_ids == want.item_ids).all() and (got.rows == want.rows).all()
        assert np.array_equal(got.scores, want.scores)
        return
    # HNSW / IVF-PQ: the base answers as the same index without the adds would, the delta exactly
    # (brute force over the live added vectors), and the k best of the two by score are returned.
    base_only = VectorIndex.load(folder)
    base_only.remove(["i5"])
    base_hits = base_only.search(q, 10)
    in_base = got.rows < 2000
    for query in range(len(q)):
        n = int(in_base[query].sum())
        assert (got.rows[query][in_base[query]] == base_hits.rows[query, :n]).all()
        assert np.array_equal(got.scores[query][in_base[query]], base_hits.scores[query, :n])
    exact_delta = q @ new.T
    for query, row in zip(*np.nonzero(~in_base)):
        added = int(got.rows[query, row]) - 2000
        assert added != 1 and got.scores[query, row] == pytest.approx(exact_delta[query, added], abs=1e-5)
    for query in range(len(q)):  # no live added row better than the k-th hit was left out
        worst = got.scores[query, -1]
        better = {new_ids[i] for i in live_new if exact_delta[query, i] > worst + 1e-5}
        assert better <= set(got.item_ids[query].tolist())


def test_mmap_index_reads_removed_base_ids_back_into_the_delta(data, saved):
    vectors, _, _ = data
    index = VectorIndex.load(saved["exact"][1], mmap=True)
    index.remove(["i3"])
    moved = unit(np.random.default_rng(3).standard_normal((1, 32)))
    index.add(moved, ["i3"])  # a removed id may return: as a new row in the delta
    hits = index.search(moved, 3)
    assert hits.item_ids[0, 0] == "i3" and hits.rows[0, 0] == 2000 and hits.scores[0, 0] == pytest.approx(1, abs=1e-5)
    assert 3 not in index.search(vectors[3:4], 20).rows  # the old base row stays hidden
    index.remove(["i3"])
    assert "i3" not in index and "i3" not in index.search(moved, 20).item_ids and len(index) == 1999
    hits = index.search(moved, 3000)  # k > rows: padded as always
    assert (hits.rows[0, 1999:] == -1).all() and (hits.item_ids[0, 1999:] == "").all()
    assert np.isneginf(hits.scores[0, 1999:]).all() and np.isfinite(hits.scores[0, :1999]).all()


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivfpq"])
def test_save_after_adds_to_an_mmap_index_writes_one_plain_index(data, saved, kind, tmp_path):
    _, _, queries = data
    new = unit(np.random.default_rng(12).standard_normal((5, 32)))
    new_ids = [f"new-{i}" for i in range(5)]
    mapped, plain = _mapped_and_plain(saved[kind][1], new, new_ids, ["i7", "new-2"])
    q = np.vstack([queries, new])
    before = mapped.search(q, 10)
    meta = mapped.save(tmp_path / "mapped")
    plain_meta = plain.save(tmp_path / "plain")
    # One plain faiss index of the base's kind, base + delta rows: the same bytes (and content hash) as
    # the unmapped index with the same adds writes (fewer than 100 adds: faiss inserts HNSW nodes one by one).
    assert meta["version"] == plain_meta["version"] and meta["n_items"] == 2005 and meta["n_removed"] == 2
    assert (tmp_path / "mapped" / "index.faiss").read_bytes() == (tmp_path / "plain" / "index.faiss").read_bytes()
    for mmap in (False, True):
        again = VectorIndex.load(tmp_path / "mapped", mmap=mmap)  # load checks the content hash
        assert again.version == meta["version"] and again.delta is None and again.ntotal == 2005
        assert "i7" not in again and "new-2" not in again and "new-3" in again
        assert again.mapped == mmap
        want, got = plain.search(q, 10), again.search(q, 10)
        assert (got.item_ids == want.item_ids).all() and np.array_equal(got.scores, want.scores)
    # saving changed nothing in memory: still mapped, still the same answers
    after = mapped.search(q, 10)
    assert mapped.mapped and mapped.delta.ntotal == 5
    assert (after.item_ids == before.item_ids).all() and np.array_equal(after.scores, before.scores)
    if kind == "exact":  # exact: what was searched before saving is what the saved index answers
        assert np.array_equal(VectorIndex.load(tmp_path / "mapped", mmap=True).search(q, 10).scores, before.scores)


def test_first_add_to_an_mmap_index_does_not_copy_it_onto_the_heap(tmp_path):
    import gc
    import os

    from recsys.index import _mapped

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("reads the resident set size from /proc")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    vectors = unit(np.random.default_rng(0).standard_normal((8000, 256)))  # an 8 MiB exact index
    VectorIndex.build(vectors, ids_for(8000), IndexConfig(kind="exact")).save(tmp_path)
    del vectors
    size = (tmp_path / "index.faiss").stat().st_size
    index = VectorIndex.load(tmp_path, mmap=True)
    base = index.index
    new = unit(np.random.default_rng(1).standard_normal((3, 256)))
    gc.collect()
    start = rss()
    index.add(new, ["a", "b", "c"])
    grown = rss() - start
    assert index.index is base and _mapped(index.index) and index.mapped
    assert grown < size / 2, f"RSS grew {grown} bytes on the first add to a mapped {size}-byte index"
    assert index.search(new, 1).item_ids[:, 0].tolist() == ["a", "b", "c"]


@pytest.fixture(scope="module")
def with_categories(data, tmp_path_factory):
    """Each kind built with a category per item: "rare" on 1% of them (20 of 2,000), c0-c4 on the rest."""
    vectors, ids, _ = data
    categories = ["rare" if i % 100 == 7 else f"c{i % 5}" for i in range(len(ids))]
    return {kind: VectorIndex.build(vectors, ids, config, categories=categories) for kind, config in SMALL.items()}, \
        np.asarray(categories)


def passing_truth(vectors: np.ndarray, queries: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    scores[:, ~allowed] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("kind", list(SMALL))
def test_filter_passing_one_percent_still_returns_k_rows(data, with_categories, kind):
    """HNSW and IVF-PQ filter while they walk (ef_search 64 candidates would hold ~0.6 "rare" rows):
    short queries are redone over every passing row, so each query gets k rows that pass."""
    vectors, ids, queries = data
    indexes, categories = with_categories
    index, rare, k = indexes[kind], categories == "rare", 10
    truth = passing_truth(vectors, queries, rare, k)
    for found in (index.search(queries, k, filter=SearchFilter(categories=("rare",))),
                  index.search(queries, k, filter=SearchFilter(item_ids=np.asarray(ids)[rare].tolist()))):
        assert (found.rows >= 0).all() and rare[found.rows].all()
        if kind == "ivfpq":  # PQ-approximate scores: the right rows, roughly in order
            assert recall_at_k(found.rows, truth) >= 0.8
        else:  # exact over the passing rows
            np.testing.assert_array_equal(found.rows, truth)
    both = index.search(queries, k, filter=SearchFilter(item_ids=np.asarray(ids)[rare][:4].tolist(),
                                                        categories=("rare", "c1")))
    assert ((both.rows >= 0).sum(axis=1) == 4).all() and (both.item_ids[:, 4:] == "").all()
    assert np.isneginf(both.scores[:, 4:]).all()
    nothing = index.search(queries, k, filter=SearchFilter(categories=("no such category",)))
    assert (nothing.rows == -1).all()
    # A filter 20% pass: HNSW over-fetches (ef_search 64 x 1.5 x 5 = 480) instead of sorting exactly.
    common = categories == "c1"
    found = index.search(queries, k, filter=SearchFilter(categories=("c1",)))
    assert (found.rows >= 0).all() and common[found.rows].all()
    assert recall_at_k(found.rows, passing_truth(vectors, queries, common, k)) >= (0.8 if kind == "ivfpq" else 0.95)


def test_filters_skip_removed_rows_and_reach_rows_added_after_an_mmap_load(data, tmp_path):
    vectors, ids, queries = data
    categories = ["rare" if i % 100 == 7 else "common" for i in range(len(ids))]
    index = VectorIndex.build(vectors, ids, SMALL["hnsw"], categories=categories)
    with pytest.raises(ValueError, match="built without categories"):
        VectorIndex.build(vectors, ids, SMALL["exact"]).search(queries, 5, filter=SearchFilter(categories=("x",)))
    index.save(tmp_path)
    mapped = VectorIndex.load(tmp_path, mmap=True)
    assert mapped.version == index.save(tmp_path / "again")["version"]
    np.testing.assert_array_equal(mapped.categories, np.asarray(categories, dtype=object))
    rare_ids = [i for i, c in zip(ids, categories) if c == "rare"]
    mapped.remove(rare_ids[:5])
    mapped.add(unit(queries[:3]), ["new-0", "new-1", "new-2"], categories=["rare", "rare", "common"])
    found = mapped.search(queries[:3], 30, filter=SearchFilter(categories=("rare",)))
    live_rare = set(rare_ids[5:]) | {"new-0", "new-1"}
    assert [set(row) for row in found.item_ids[:, :17].tolist()] == [live_rare] * 3  # all 15 + 2 new; no more
    assert (found.item_ids[:, 17:] == "").all()
    assert found.item_ids[0, 0] == "new-0" and found.item_ids[1, 0] == "new-1"  # a query finds itself first


def test_categories_enter_the_content_hash(data, tmp_path):
    vectors, ids, _ = data
    plain = VectorIndex.build(vectors[:50], ids[:50], SMALL["exact"]).save(tmp_path / "plain")
    a = VectorIndex.build(vectors[:50], ids[:50], SMALL["exact"], categories=["a"] * 50).save(tmp_path / "a")
    b = VectorIndex.build(vectors[:50], ids[:50], SMALL["exact"], categories=["b"] * 50).save(tmp_path / "b")
    assert len({plain["version"], a["version"], b["version"]}) == 3
    with pytest.raises(ValueError, match="49 categories but 50 item ids"):
        VectorIndex.build(vectors[:50], ids[:50], SMALL["exact"], categories=["a"] * 49)


def test_both_backends_satisfy_the_vector_store_interface(data):
    from recsys.stores.pgvector_index import PgVectorIndex

    vectors, ids, _ = data
    assert isinstance(VectorIndex.build(vectors[:10], ids[:10]), VectorStore)
    members = [m for m in dir(VectorStore) if not m.startswith("_") or m in ("__len__", "__contains__")]
    for backend in (VectorIndex, PgVectorIndex):
        missing = [m for m in members if not hasattr(backend, m) and m not in ("config",)]
        assert not missing, (backend.__name__, missing)
