"""The item-tower catalog split (unseen categories, cold items) and the leak-free featurization."""
import numpy as np
import pytest

from recsys.config import ConfigError
from recsys.data.item_catalog import LeakFreeConfig, SplitConfig, prepare_items, split_items
from recsys.data.item_features import ItemFeatureConfig, records_to_items


def test_unseen_categories_are_held_out_whole_within_the_budget():
    # 100 items: A 40, B 30, C 20, D 6, E 4 (below min_category_items).
    categories = np.array(["A"] * 40 + ["B"] * 30 + ["C"] * 20 + ["D"] * 6 + ["E"] * 4)
    split = SplitConfig(cold_fraction=0.1, val_fraction=0.05, unseen_category_fraction=0.25, seed=3)
    train, val, cold, unseen = split_items(categories, split)
    assert sorted(np.concatenate([train, val, cold, unseen]).tolist()) == list(range(100))
    held = set(categories[unseen])
    assert held and len(unseen) <= 25 and "E" not in held
    assert sum((categories == c).sum() for c in held) == len(unseen)  # whole categories
    assert not held & set(categories[np.concatenate([train, val, cold])])
    assert len(cold) == 10 and len(val) == 5
    # Without unseen categories a seed gives the split it gave before they existed.
    plain = split_items(categories, SplitConfig(seed=3))
    order = np.random.default_rng(3).permutation(100)
    assert plain[2].tolist() == sorted(order[:10].tolist()) and plain[1].tolist() == sorted(order[10:15].tolist())
    assert len(plain[3]) == 0


def test_leak_free_inputs_keep_the_labels_and_drop_the_label_tokens():
    rows = records_to_items([{"item_id": f"i{i}", "category_path": ["Top", "Shirts" if i % 2 else "Tees"],
                              "std_attributes": {"colour": ["red", "blue"][i % 2]}, "re_attributes": {},
                              "title": f"item {i}"} for i in range(20)])
    import pyarrow as pa
    table = pa.Table.from_pylist(rows)
    config = ItemFeatureConfig(hierarchy=["group", "type"], std_fields=["colour"], re_fields=[])
    plain = prepare_items(table, config, SplitConfig(cold_fraction=0.2), "generic")
    leak_free = prepare_items(table, config, SplitConfig(cold_fraction=0.2), "generic", leak_free=LeakFreeConfig(True))
    assert (plain.fine == leak_free.fine).all() and len(set(leak_free.fine)) == 2
    assert plain.features["std_mask"].sum(1).tolist() == [3] * 20  # group, type, colour
    assert leak_free.features["std_mask"].sum(1).tolist() == [2] * 20  # group, colour
    assert leak_free.withheld == {"levels": ["type"], "fields": {}, "values": 2} and plain.withheld == {}
    assert leak_free.texts[1] == "item 1. Top. blue"
    with pytest.raises(ConfigError, match="leak_free: withholding label level 'group'"):
        prepare_items(table, config, SplitConfig(), "generic", leak_free=LeakFreeConfig(True, label_level=0))
