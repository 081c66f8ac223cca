"""Dense retrieval's tie break: items with a zero vector tie at 0 and are ordered by popularity."""
import numpy as np

from recsys.retrieval.dense import DenseSource
from recsys.retrieval.popularity import Popularity


def test_zero_scores_are_ordered_by_popularity_between_the_negative_and_positive_ones():
    items = np.array([[1.0, 0.0], [0.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [0.6, 0.8], [0.0, 0.0]], dtype=np.float32)
    source = DenseSource(np.array([[1.0, 0.0]], dtype=np.float32), items)
    raw = source.scores([np.array([0])])
    assert np.allclose(raw, [[1.0, 0.0, -1.0, 0.0, 0.6, 0.0]])
    order = Popularity(np.array([0, 2, 9, 5, 1, 7])).order           # item 2 most bought, then 5, 3, 1, ...
    ranked = source.tie_break(raw, order)[0]
    assert np.argsort(-ranked, kind="stable").tolist() == [0, 4, 5, 3, 1, 2]   # zero-vector items 5, 3, 1 by count
    assert ranked[4] == np.float32(0.6) and ranked[2] == -1.0          # unequal scores keep their values
    no_zero = np.array([[0.3, -0.2]], dtype=np.float32)
    assert source.tie_break(no_zero, order[:2]) is no_zero
