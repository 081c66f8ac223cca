"""Content source: TF-IDF attribute vectors and profile cosine by hand."""
import numpy as np
import pytest

from recsys.retrieval.content import ContentConfig, ContentSource, attribute_vectors, item_tokens

ROWS = [  # item x has no catalog row
    {"item_id": "a", "category_path": ["Top", "Shirt"], "std_attributes": [{"field": "colour", "values": ["red"]}],
     "title": "Oxford"},
    {"item_id": "b", "category_path": ["Top", "Shirt"], "std_attributes": [{"field": "colour", "values": ["blue"]}],
     "title": "Oxford"},
    {"item_id": "c", "category_path": ["Top", "Tee"], "std_attributes": [{"field": "colour", "values": ["red"]}],
     "title": "Basic"},
    {"item_id": "d", "category_path": ["Bottom", "Jeans"], "std_attributes": [], "re_attributes": None,
     "title": None},
]
IDS = ["a", "b", "c", "d", "x"]


def test_tokens_of_a_canonical_row():
    assert item_tokens(ROWS[0]) == ["level0=Top", "level1=Shirt", "colour=red", "title=oxford"]
    assert item_tokens(ROWS[0], title=False) == ["level0=Top", "level1=Shirt", "colour=red"]


def test_tfidf_vectors_by_hand():
    vectors = attribute_vectors(ROWS, IDS).toarray()
    # 4 catalog rows; idf: level0=Top 3 rows -> log(4/3), level1=Shirt 2 -> log 2, colour=red 2 -> log 2,
    # title=oxford 2 -> log 2, colour=blue 1 -> log 4; a = (log 4/3, log 2, log 2, log 2) / norm
    a = np.array([np.log(4 / 3), np.log(2), np.log(2), np.log(2)])
    b = np.array([np.log(4 / 3), np.log(2), np.log(4), np.log(2)])
    cos_ab = (a[0] * b[0] + a[1] * b[1] + a[3] * b[3]) / np.linalg.norm(a) / np.linalg.norm(b)
    assert np.allclose(np.linalg.norm(vectors[:4], axis=1), 1)
    assert vectors[4].tolist() == [0.0] * vectors.shape[1]              # no catalog row: zero vector
    assert vectors[0] @ vectors[1] == pytest.approx(cos_ab, rel=1e-5)
    assert vectors[0] @ vectors[3] == 0                                  # nothing in common


def test_profile_scores_weight_the_last_items():
    vectors = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)   # item 3: no content
    source = ContentSource(vectors, weights=[1.0, 0.5])
    # history 0, 1 (1 last): profile 1 * (0, 1) + 0.5 * (1, 0) -> (0.5, 1) / |.|
    profile = np.array([0.5, 1.0]) / np.sqrt(1.25)
    expected = [profile[0], profile[1], (profile[0] + profile[1]) / np.sqrt(2), 0.0]
    scores = source.scores([np.array([0, 1])])
    assert np.allclose(scores[0], expected, atol=1e-6)
    assert source.valid(scores)[0].tolist() == [True, True, True, False]
    assert source.scores([np.array([], dtype=np.int64)])[0].tolist() == [0.0] * 4


def test_sparse_and_dense_vectors_agree_and_ties_break_by_popularity():
    sparse = attribute_vectors(ROWS, IDS)
    history = [np.array([0])]
    assert np.allclose(ContentSource(sparse).scores(history), ContentSource(sparse.toarray()).scores(history))
    scores = np.array([[0.5, 0.5, 0.2, 0.0]], dtype=np.float32)
    ranked = ContentSource(sparse).tie_break(scores, np.array([0.25, 1.0, 0.5, 0.75]))
    assert np.argsort(-ranked[0]).tolist() == [1, 0, 2, 3]


def test_unknown_vector_kind_is_an_error():
    with pytest.raises(ValueError, match="content.vectors"):
        ContentConfig(vectors="images")
