"""The candidate-source builder: from a config, the same sources (and candidates) as assembling them by hand."""
import numpy as np
import pytest

from recsys.eval.sequential import leave_last_out
from recsys.retrieval.baskets import BasketConfig, BasketKNN
from recsys.retrieval.content import ContentSource
from recsys.retrieval.dense import DenseSource
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import CandidateConfig, run_stage
from recsys.retrieval.sources import SourceInputs, SourcesConfig, build_sources
from recsys.retrieval.transitions import TransitionConfig, TransitionKNN
from recsys.retrieval.user_model import DEMO_SOURCES, served_sources

USERS = ["a"] * 5 + ["b"] * 4 + ["c"] * 4 + ["d"] * 3
ITEMS = ["i1", "i2", "i3", "i4", "i5", "i2", "i3", "i4", "i6", "i1", "i3", "i5", "i6", "i2", "i4", "i6"]
TIMES = [1, 2, 2, 3, 4, 1, 2, 3, 4, 1, 1, 2, 3, 1, 2, 3]     # equal times of one user = one basket


def _split():
    return leave_last_out(np.array(USERS), np.array(ITEMS), np.array(TIMES), baskets=np.array(TIMES))


def _hand_sources(split, stage, users, items, content, itemknn, baskets):
    sequences = split.training_sequences(stage)
    return {"user_tower": DenseSource(users, items),
            "itemknn": TransitionKNN.fit(sequences, split.n_items, itemknn),
            "basket": BasketKNN.fit_baskets(sequences, split.basket_ids(f"train_{stage}"), split.n_items,
                                            split.basket_ids(stage), baskets),
            "content": ContentSource(content, (1.0, 0.5, 0.25)),
            "mostpop": Popularity.fit(sequences, split.n_items)}


def test_the_builder_gives_the_hand_assembled_sources_and_candidates():
    split = _split()
    assert split.has_baskets
    rng = np.random.default_rng(0)
    users = rng.normal(size=(len(split.eval_rows), 4)).astype(np.float32)
    items = rng.normal(size=(split.n_items, 4)).astype(np.float32)
    content = np.abs(rng.normal(size=(split.n_items, 3))).astype(np.float32)
    cfg = SourcesConfig(itemknn=TransitionConfig(weights=[1.0, 0.5]), baskets=BasketConfig(recent_baskets=2))
    for stage in ("val", "test"):
        built = build_sources(cfg, SourceInputs(split.training_sequences(stage), split.n_items, users, items,
                                                split.basket_ids(f"train_{stage}"), split.basket_ids(stage), content))
        hand = _hand_sources(split, stage, users, items, content, cfg.itemknn, cfg.baskets)
        assert list(built) == list(hand) == ["user_tower", "itemknn", "basket", "content", "mostpop"]
        history, targets = split.history(stage), split.targets(stage)
        ours = run_stage(built, built["mostpop"], history, targets, CandidateConfig(n_per_source=3), evaluate=True)
        theirs = run_stage(hand, hand["mostpop"], history, targets, CandidateConfig(n_per_source=3), evaluate=True)
        assert np.array_equal(ours.candidates.row, theirs.candidates.row)
        assert np.array_equal(ours.candidates.item, theirs.candidates.item)
        assert ours.candidates.features.keys() == theirs.candidates.features.keys()
        for name, values in ours.candidates.features.items():
            assert np.allclose(values, theirs.candidates.features[name]), name
        assert ours.recall == theirs.recall and np.array_equal(ours.labels, theirs.labels)


def test_sources_without_their_inputs_are_left_out_and_fitted_ones_are_reused():
    split = _split()
    sequences = split.training_sequences("val")
    built = build_sources(SourcesConfig(), SourceInputs(sequences, split.n_items))
    assert list(built) == ["itemknn", "mostpop"]           # no vectors, baskets or content
    off = SourcesConfig(baskets=BasketConfig(enabled=False))
    with_baskets = SourceInputs(sequences, split.n_items, train_baskets=split.basket_ids("train_val"),
                                history_baskets=split.basket_ids("val"))
    assert "basket" not in build_sources(off, with_baskets)
    vectors = np.eye(split.n_items, dtype=np.float32)
    request = build_sources(SourcesConfig(sources=DEMO_SOURCES), SourceInputs([], split.n_items, vectors[:1], vectors),
                            fitted=built)
    assert list(request) == DEMO_SOURCES and request["itemknn"] is built["itemknn"]
    assert isinstance(request["user_tower"], DenseSource)
    with pytest.raises(ValueError, match="unknown candidate source"):
        SourcesConfig(sources=["user_tower", "nope"])


def test_serving_reads_the_sources_a_run_was_trained_with(tmp_path):
    assert served_sources(tmp_path).sources == DEMO_SOURCES        # no config.yaml: the demo's sources
    (tmp_path / "config.yaml").write_text("sources: [itemknn, mostpop]\nitemknn: {weights: [1.0]}\nlog: {seed: 1}\n")
    cfg = served_sources(tmp_path)
    assert cfg.sources == ["itemknn", "mostpop"] and cfg.itemknn.weights == [1.0]
