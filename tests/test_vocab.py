import zlib

import numpy as np
import pytest

from recsys.vocab import (PAD_ID, UNKNOWN_ID, AttributeVocabulary, FieldIndex, HashedVocabulary,
                          StdVocabulary, pad_multi)

RECORDS = [
    {"category": "블라우스", "color": "화이트", "material": ["우븐", "레이스"]},
    {"category": "스커트", "color": "화이트", "material": ["데님"]},
    {"category": "블라우스", "color": "블랙"},
]


def test_std_vocabulary_orders_by_frequency_and_reserves_pad_and_unknown():
    vocab = StdVocabulary.build(RECORDS, ["category", "color"])
    assert vocab.tokens["category"] == {"블라우스": 2, "스커트": 3}
    assert vocab.tokens["color"] == {"화이트": 2, "블랙": 3}
    assert vocab.size("color") == 4
    assert vocab.encode("color", "네이비") == [UNKNOWN_ID]
    assert vocab.encode("color", None) == []
    with pytest.raises(KeyError, match="'fit' is not in the vocabulary"):
        vocab.encode("fit", "루즈")


def test_std_vocabulary_min_count_and_round_trip():
    vocab = StdVocabulary.build(RECORDS, ["category"], min_count=2)
    assert vocab.tokens["category"] == {"블라우스": 2}
    assert StdVocabulary.from_dict(vocab.to_dict()) == vocab


def test_hashing_is_crc32_of_field_and_value_and_stateless():
    hashed = HashedVocabulary(num_buckets=1000)
    expected = 1 + zlib.crc32("material=레이스".encode()) % 1000
    assert hashed.encode("material", ["레이스"]) == [expected]
    # A term never seen before needs no update, and the same term in another field differs.
    assert HashedVocabulary(1000).encode("material", "신소재")[0] in range(1, 1001)
    assert hashed.encode("detail", "레이스") != hashed.encode("material", "레이스")
    assert hashed.size == 1001 and HashedVocabulary.from_dict(hashed.to_dict()) == hashed
    with pytest.raises(ValueError):
        HashedVocabulary(0)


def test_field_index_and_padding_masks():
    index = FieldIndex(["category", "material"])
    assert (index["category"], index["material"], index.size) == (1, 2, 3)
    with pytest.raises(KeyError, match="unknown attribute field 'fit'"):
        index["fit"]
    ids, mask = pad_multi([[5, 6, 7], [8], []])
    assert ids.tolist() == [[5, 6, 7], [8, PAD_ID, PAD_ID], [PAD_ID] * 3]
    assert mask.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    ids, mask = pad_multi([[1, 2, 3]], max_len=2)
    assert ids.tolist() == [[1, 2]] and mask.all()


def test_attribute_vocabulary_encodes_std_and_re_and_saves(tmp_path):
    vocab = AttributeVocabulary.build(RECORDS, ["category", "color"], ["material"], num_buckets=50)
    ids, mask = vocab.encode_batch(RECORDS, "material")
    assert mask.sum(axis=1).tolist() == [2, 1, 0]
    color_ids, color_mask = vocab.encode_batch([{"color": "화이트"}, {}], "color")
    assert color_ids[:, 0].tolist() == [2, UNKNOWN_ID] and color_mask[:, 0].all()
    vocab.save(tmp_path / "vocab.json")
    loaded = AttributeVocabulary.load(tmp_path / "vocab.json")
    assert np.array_equal(loaded.encode_batch(RECORDS, "material")[0], ids)
    assert loaded.field_index["material"] == 3
    with pytest.raises(KeyError, match="neither a STD field"):
        vocab.encode_field("fit", "루즈")
