from recsys.augment import JsonAugmentConfig, augment_records, vocabulary_records

RECORDS = [{"category": "청바지", "color": "네이비", "material": ["데님"]},
           {"category": "청바지", "color": "블랙", "material": ["면"]},
           {"category": "드레스", "color": "화이트", "material": ["실크"]}]
CATEGORIES = ["청바지", "청바지", "드레스"]


def test_copies_keep_their_source_and_are_seeded():
    config = JsonAugmentConfig(copies=2, mix_rate=0.5, synonym_rate=0.5, seed=1)
    out, sources = augment_records(RECORDS, CATEGORIES, ["color", "material"], config)
    assert sources == [0, 1, 2, 0, 1, 2] and len(out) == 6
    assert augment_records(RECORDS, CATEGORIES, ["color", "material"], config) == (out, sources)


def test_mixing_stays_within_the_category():
    config = JsonAugmentConfig(copies=20, mix_rate=1.0, synonym_rate=0.0)
    out, sources = augment_records(RECORDS, CATEGORIES, ["color"], config)
    for record, source in zip(out, sources):
        allowed = {r["color"] for r, c in zip(RECORDS, CATEGORIES) if c == CATEGORIES[source]}
        assert record["color"] in allowed
    # The only dress has no peer to mix with.
    assert all(r["color"] == "화이트" for r, s in zip(out, sources) if s == 2)


def test_synonyms_replace_values_in_single_and_multi_fields():
    config = JsonAugmentConfig(copies=1, mix_rate=0.0, synonym_rate=1.0)
    out, _ = augment_records(RECORDS, CATEGORIES, ["color", "material", "category"], config)
    assert out[0] == {"category": "데님팬츠", "color": "남색", "material": ["청"]}
    assert out[2]["material"] == ["실크"]  # no synonym in the table: unchanged


def test_vocabulary_records_give_every_synonym_an_id():
    from recsys.vocab import UNKNOWN_ID, StdVocabulary

    config = JsonAugmentConfig(copies=1, mix_rate=0.0, synonym_rate=1.0)
    out, _ = augment_records(RECORDS, CATEGORIES, ["color", "material"], config)
    built_before = StdVocabulary.build(RECORDS, ["color", "material"])          # the old order: UNKNOWN
    assert built_before.encode("color", out[0]["color"]) == [UNKNOWN_ID]
    vocab = StdVocabulary.build(vocabulary_records(RECORDS, ["color", "material"], config), ["color", "material"])
    for record in out:
        for name in ("color", "material"):
            assert UNKNOWN_ID not in vocab.encode(name, record[name]), (name, record[name])
    assert vocab.size("color") == 2 + 6   # pad, unknown, 3 colours, 3 synonyms


def test_vocabulary_records_unchanged_without_synonym_augmentation():
    assert vocabulary_records(RECORDS, ["color"], JsonAugmentConfig(copies=0)) == RECORDS
    assert vocabulary_records(RECORDS, ["color"], JsonAugmentConfig(copies=2, synonym_rate=0.0)) == RECORDS
