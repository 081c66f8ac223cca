import numpy as np
import pytest

from recsys.retrieval.candidates import CandidateSet, exclude_history, merge, top_n


def test_exclude_history_copies():
    scores = np.array([[1.0, 2.0, 3.0]])
    out = exclude_history(scores, [np.array([2])])
    assert out[0].tolist() == [1.0, 2.0, -np.inf] and scores[0, 2] == 3.0


def test_top_n_best_first_without_history_and_invalid_items():
    scores = np.array([[0.1, 0.9, 0.5, 0.5, 0.0],
                       [0.3, 0.2, 0.1, 0.0, 0.4]], dtype=np.float32)
    items, values = top_n(scores, 3, [np.array([1]), np.array([], dtype=np.int64)])
    # row 0: item 1 is history; 2 and 3 tie at 0.5 -> lower index first
    assert items.tolist() == [[2, 3, 0], [4, 0, 1]]
    assert values[0].tolist() == pytest.approx([0.5, 0.5, 0.1])
    # valid mask: only items with a positive score may be proposed; short lists pad with -1 / 0
    items, values = top_n(scores, 3, None, scores > 0.25)
    assert items.tolist() == [[1, 2, 3], [4, 0, -1]]
    assert values[1].tolist() == pytest.approx([0.4, 0.3, 0.0])


def test_merge_unions_sources_with_per_source_scores_and_ranks():
    rows = np.array([7, 8])                       # the users' rows in the stage
    knn = (np.array([[3, 1], [2, -1]]), np.array([[2.0, 1.0], [0.5, 0.0]], dtype=np.float32))
    pop = (np.array([[1, 0], [1, 0]]), np.array([[0.9, 0.8], [0.9, 0.8]], dtype=np.float32))
    merged = merge(rows, {"itemknn": knn, "mostpop": pop}, n=2, n_items=5)
    # user 7: {0, 1, 3}; user 8: {0, 1, 2}; sorted by user then item
    assert merged.row.tolist() == [7, 7, 7, 8, 8, 8]
    assert merged.item.tolist() == [0, 1, 3, 0, 1, 2]
    assert merged.score["itemknn"].tolist() == [0.0, 1.0, 2.0, 0.0, 0.0, 0.5]
    assert merged.rank["itemknn"].tolist() == [2, 1, 0, 2, 2, 0]        # n = 2 when absent
    assert merged.score["mostpop"].tolist() == pytest.approx([0.8, 0.9, 0.0, 0.8, 0.9, 0.0])
    assert merged.proposed["mostpop"].tolist() == [True, True, False, True, True, False]
    both = CandidateSet.concat([merged, merged])
    assert len(both) == 12 and both.score["itemknn"][6:].tolist() == merged.score["itemknn"].tolist()


def test_break_ties_orders_equal_scores_by_popularity_and_never_swaps_others():
    from recsys.retrieval.candidates import break_ties

    scores = np.array([[0.3, 0.3, 0.30001, 0.0, 0.0]], dtype=np.float32)
    order = np.array([0.2, 1.0, 0.1, 0.4, 0.6])
    assert np.argsort(-break_ties(scores, order)[0]).tolist() == [2, 1, 0, 4, 3]
