import numpy as np
import pytest

from recsys.metrics.neighbours import (category_hit, coverage, intra_list_diversity, neighbour_report,
                                       same_vs_sibling_gap, sibling_confusion, top_k_neighbours)


def _space():
    # 6 items on a line of angles: 0,1 = Tshirts; 2 = Shirts (sibling, same parent Topwear); 3,4 = Jeans
    # (parent Bottomwear); 5 = Shirts.
    angles = np.array([0.0, 0.1, 0.25, 1.4, 1.5, 0.3])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    fine = np.array([0, 0, 1, 2, 2, 1])
    parent = np.array([0, 0, 0, 1, 1, 0])
    return vectors, fine, parent


def test_neighbours_exclude_the_query_itself_and_are_ordered():
    vectors, _, _ = _space()
    neighbours = top_k_neighbours(vectors, vectors, 2, np.arange(6))
    assert neighbours[0].tolist() == [1, 2]      # cos distance 0.1, then 0.25
    assert neighbours[3].tolist() == [4, 5]
    assert all(i not in row for i, row in enumerate(neighbours))


def test_category_hit_and_sibling_confusion_by_hand():
    vectors, fine, parent = _space()
    neighbours = top_k_neighbours(vectors, vectors, 2, np.arange(6))
    # lists: 0->[1,2] 1->[0,2] 2->[5,1] 3->[4,5] 4->[3,5] 5->[2,1]
    assert neighbours.tolist() == [[1, 2], [0, 2], [5, 1], [4, 5], [3, 5], [2, 1]]
    same = [1, 1, 1, 1, 1, 1]                    # one same-category neighbour in each list
    assert category_hit(neighbours, fine, fine) == pytest.approx(sum(same) / 12)
    # sibling (same parent, other category): 0:{2} 1:{2} 2:{1} 3:{} 4:{} 5:{1} -> 4 of 12
    assert sibling_confusion(neighbours, fine, parent, fine, parent) == pytest.approx(4 / 12)
    assert coverage(neighbours, 6) == 1.0
    assert coverage(neighbours[:1], 6) == pytest.approx(2 / 6)


def test_gap_is_same_minus_sibling_mean_cosine():
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    gap = same_vs_sibling_gap(vectors, np.array([0, 0, 1]), np.array([0, 0, 0]), pairs=1000)
    assert gap["same_mean"] == pytest.approx(1.0) and gap["sibling_mean"] == pytest.approx(0.0)
    assert gap["gap"] == pytest.approx(1.0)


def test_intra_list_diversity_uses_attribute_jaccard():
    sets = [frozenset({1, 2}), frozenset({1, 2}), frozenset({3})]
    # list [0, 1]: identical sets -> 0; list [0, 2]: disjoint -> 1
    assert intra_list_diversity(np.array([[0, 1], [0, 2]]), sets) == pytest.approx(0.5)


def test_report_has_the_documented_keys():
    vectors, fine, parent = _space()
    sets = [frozenset({int(f), 10 + int(p)}) for f, p in zip(fine, parent)]
    report = neighbour_report(vectors[:3], vectors, np.arange(3), fine, parent, sets, k=2)
    assert set(report) >= {"category_hit@2", "sibling_confusion@2", "same_vs_sibling_gap", "ild@2", "coverage@2"}
    assert report["n_queries"] == 3


def test_sparse_vectors_give_the_dense_report():
    import scipy.sparse as sp

    vectors, fine, parent = _space()
    tokens = [frozenset({i % 3}) for i in range(6)]
    dense = neighbour_report(vectors, vectors, np.arange(6), fine, parent, tokens, k=2)
    sparse = neighbour_report(sp.csr_matrix(vectors), sp.csr_matrix(vectors), np.arange(6), fine, parent, tokens, k=2)
    assert sparse == pytest.approx(dense)


def test_chance_category_hit_is_the_share_of_other_items_with_the_label():
    from recsys.metrics.neighbours import chance_category_hit

    # a: 2 items (each sees 1 of 3 others), b and c alone: (2*1 + 0 + 0) / (4*3)
    assert chance_category_hit(np.array(["a", "a", "b", "c"])) == pytest.approx(2 / 12)
    assert chance_category_hit(np.array(["a", "a", "a"])) == 1.0 and chance_category_hit(np.array(["a"])) == 0.0


def test_pair_cosines_in_chunks_equal_one_pass():
    from recsys.metrics.neighbours import _pair_cosines

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8)).astype(np.float32)
    i, j = rng.integers(0, 20, size=(2, 11))
    whole = np.einsum("ij,ij->i", vectors[i], vectors[j])
    assert np.allclose(_pair_cosines(vectors, i, j, chunk=3), whole)   # 4 chunks, the last one short
    assert _pair_cosines(vectors, i[:0], j[:0], chunk=3).shape == (0,)
