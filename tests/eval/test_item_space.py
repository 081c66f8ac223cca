"""The item-tower evaluation's TF-IDF baseline over the towers' own input tokens, by hand."""
import numpy as np
import pytest

from recsys.eval.item_space import token_tfidf


def test_token_tfidf_by_hand():
    # Tokens per item (0 = padding): item 0 {5, 7}, item 1 {5, 8}, item 2 {9} (not a training item).
    features = {"std_ids": np.array([[5, 0], [5, 0], [9, 0]]), "std_mask": np.array([[1, 0], [1, 0], [1, 0]], bool),
                "re_ids": np.array([[7], [8], [0]]), "re_mask": np.array([[1], [1], [0]], bool),
                "title_ids": np.array([[7], [0], [0]]), "title_mask": np.array([[1], [0], [0]], bool)}
    matrix = token_tfidf(features, fit_rows=np.array([0, 1])).toarray()
    idf = lambda df: np.log(3 / (1 + df)) + 1  # noqa: E731  (n = 2 training items)
    row0 = np.zeros(10)
    row0[5], row0[7] = idf(2), 2 * idf(1)  # token 7 twice (RE and title)
    assert matrix[0] == pytest.approx(row0 / np.linalg.norm(row0))
    row2 = np.zeros(10)
    row2[9] = 1.0  # an unseen token still counts: idf(0), normalised to 1
    assert matrix[2] == pytest.approx(row2)
    assert matrix.shape == (3, 10) and matrix[:, 0].sum() == 0
