import numpy as np
import pandas as pd
import pytest

from recsys.eval.alignment import (AlignmentEvalConfig, attribute_text, default_fields, e1_split, find_brand_column,
                                   records_from_frame, selection_split, target_labels)


def test_e1_split_is_the_documented_permutation():
    train, val = e1_split(44441)
    order = np.random.default_rng(42).permutation(44441)
    assert len(val) == 8888 and np.array_equal(val, order[:8888]) and np.array_equal(train, order[8888:])


def test_default_fields_skip_id_text_brand_numbers_and_free_text():
    frame = pd.DataFrame({"id": ["1", "2", "3"], "gender": ["Men", "Women", "Men"], "year": ["2011", "2012", ""],
                          "brandName": ["Nike", "Puma", "Nike"], "title": ["a", "b", "c"], "price": [1.0, 2.0, 3.0]})
    assert find_brand_column(frame.columns) == "brandName"
    assert default_fields(frame, "id", "title") == ["gender"]


def test_records_and_zero_shot_text():
    frame = pd.DataFrame({"gender": ["Men", ""], "usage": ["Casual", None]})
    records = records_from_frame(frame, ["gender", "usage"])
    assert records == [{"gender": "Men", "usage": "Casual"}, {"gender": None, "usage": None}]
    assert attribute_text(records[0], ["gender", "usage"]) == "Men Casual"
    assert attribute_text(records[1], ["gender", "usage"]) == ""


def test_equal_titles_share_a_label():
    labels = target_labels(["NA", "Shirt", "NA"])
    assert labels[0] == labels[2] != labels[1]


def test_the_best_epoch_is_chosen_on_training_rows_never_on_the_validation_rows():
    train, val = e1_split(1000)
    fit, select = selection_split(train, 0.1)
    assert len(select) == 80 and len(fit) == 720
    assert set(fit).isdisjoint(select) and set(fit) | set(select) == set(train)
    assert set(select).isdisjoint(val)                         # the reported rows pick nothing
    again_fit, again_select = selection_split(train, 0.1)
    assert (again_fit == fit).all() and (again_select == select).all()
    with pytest.raises(ValueError, match="selection_fraction"):
        AlignmentEvalConfig(selection_fraction=0.0)
