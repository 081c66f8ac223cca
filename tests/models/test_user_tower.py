"""User tower: shapes, unit norm, causality, absent inputs, stored profile statistics, learning."""
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.losses.sampled_softmax import sampled_softmax_loss
from recsys.models.user_tower import (UserTower, UserTowerConfig, encode_users, item_matrix, load_user_tower,
                                      pad_right, training_windows, zscore_stats)

N_ITEMS = 12


def full_config(**overrides) -> UserTowerConfig:
    values = dict(dim=16, max_len=6, layers=2, heads=2, ffn_dim=32, dropout=0.0, item_vector_dim=4, context_dim=5,
                  profile_numeric=["age", "height"], profile_categorical=["club"], profile_cardinalities=[3])
    return UserTowerConfig(**{**values, **overrides})


def full_batch():
    torch.manual_seed(0)
    return {"items": torch.tensor([[1, 2, 3, 4, 0, 0], [5, 6, 0, 0, 0, 0]]),
            "context": torch.randn(2, 5),
            "profile_numeric": torch.tensor([[30.0, 170.0], [float("nan"), 160.0]]),
            "profile_categorical": torch.tensor([[1], [2]])}


def tower(**overrides) -> UserTower:
    torch.manual_seed(0)
    model = UserTower(full_config(**overrides), N_ITEMS)
    if model.items.frozen is not None:
        model.set_item_vectors(np.random.default_rng(0).normal(size=(N_ITEMS, 4)))
    return model.eval()


@pytest.mark.parametrize("fusion", ["gated", "concat"])
def test_shapes_and_unit_norm(fusion):
    model = tower(fusion=fusion)
    states = model(full_batch())
    assert states.shape == (2, 6, 16)
    assert torch.allclose(states.norm(dim=-1), torch.ones(2, 6), atol=1e-5)
    users = model.user_vectors(full_batch())
    assert users.shape == (2, 16)
    assert torch.allclose(users[0], states[0, 3]) and torch.allclose(users[1], states[1, 1])   # last real item
    assert item_matrix(model).shape == (N_ITEMS, 16)
    assert np.allclose(np.linalg.norm(item_matrix(model), axis=1), 1, atol=1e-5)


def test_causal_mask_a_later_item_never_changes_earlier_positions():
    model = tower()
    batch = full_batch()
    before = model(batch)
    batch["items"] = batch["items"].clone()
    batch["items"][0, 2] = 9                         # change the third item of user 0
    after = model(batch)
    assert torch.allclose(before[0, :2], after[0, :2], atol=1e-6)
    assert not torch.allclose(before[0, 2:4], after[0, 2:4])
    assert torch.allclose(before[1], after[1], atol=1e-6)        # other users untouched


def test_right_padding_does_not_change_the_real_positions():
    model = tower()
    batch = full_batch()
    short = {**batch, "items": batch["items"][:, :4]}
    assert torch.allclose(model(batch)[:, :4], model(short), atol=1e-6)


def test_every_input_may_be_absent():
    model = tower()
    batch = full_batch()
    for keep in (["items"], ["context"], ["profile_numeric", "profile_categorical"], ["items", "context"]):
        out = model.user_vectors({k: batch[k] for k in keep})
        assert out.shape == (2, 16) and torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    # a NaN context row is absent for that user only: user 0's vector is as without context
    partial = {**batch, "context": batch["context"].clone()}
    partial["context"][0] = float("nan")
    without = {k: v for k, v in batch.items() if k != "context"}
    assert torch.allclose(model.user_vectors(partial)[0], model.user_vectors(without)[0], atol=1e-6)
    assert not torch.allclose(model.user_vectors(partial)[1], model.user_vectors(without)[1])
    # an empty history (all padding) is the behaviour-absent case
    empty = {**batch, "items": torch.zeros(2, 6, dtype=torch.long)}
    no_items = {k: v for k, v in batch.items() if k != "items"}
    assert torch.allclose(model.user_vectors(empty), model.user_vectors(no_items), atol=1e-6)


def test_a_tower_without_frozen_vectors_or_side_inputs():
    model = UserTower(UserTowerConfig(dim=8, max_len=4, heads=2, ffn_dim=16), N_ITEMS).eval()
    out = model.user_vectors({"items": torch.tensor([[1, 2, 0, 0]]), "context": torch.randn(1, 384)})
    assert out.shape == (1, 8)        # inputs the model was not built for are ignored
    with pytest.raises(ValueError):
        UserTowerConfig(item_ids=False)
    with pytest.raises(ValueError):
        model.set_item_vectors(np.zeros((N_ITEMS, 4)))


def test_zscore_stats_by_hand_and_stored_with_the_weights():
    mean, std = zscore_stats(np.array([[20.0, 1.0], [40.0, 1.0], [np.nan, 1.0]]))
    assert mean == pytest.approx([30.0, 1.0]) and std == pytest.approx([10.0, 1.0])  # constant column: std 1
    model = tower()
    model.set_profile_stats([30.0, 165.0], [10.0, 5.0])
    numeric_only = {"profile_numeric": torch.tensor([[40.0, 170.0]])}
    # z = (1, 1): the same as a model fed z-scores with identity statistics
    reference = tower()
    reference.load_state_dict(model.state_dict())
    assert torch.allclose(reference.numeric_mean, torch.tensor([30.0, 165.0]))
    reference.set_profile_stats([0.0, 0.0], [1.0, 1.0])
    assert torch.allclose(model.user_vectors(numeric_only),
                          reference.user_vectors({"profile_numeric": torch.tensor([[1.0, 1.0]])}), atol=1e-6)
    # statistics are stored, never refitted on a batch: another batch leaves them unchanged
    model.user_vectors({"profile_numeric": torch.tensor([[100.0, 100.0], [0.0, 0.0]])})
    assert torch.allclose(model.numeric_std, torch.tensor([10.0, 5.0]))
    assert "numeric_mean" in model.state_dict() and "items.frozen" in model.state_dict()


def test_sampled_softmax_loss_by_hand():
    model = tower(context_dim=0, profile_numeric=[], profile_categorical=[], profile_cardinalities=[])
    batch = {"items": torch.tensor([[1, 2, 0]])}
    targets = torch.tensor([[2, 3, 0]])
    negatives = torch.tensor([3, 7])                  # 3 is already a batch target: not added twice
    states = model(batch)[0, :2]
    candidates = torch.tensor([2, 3, 7])
    logits = states @ model.item_vectors(candidates).T / model.config.temperature
    expected = F.cross_entropy(logits, torch.tensor([0, 1])).detach()
    loss = sampled_softmax_loss(model, batch, targets, negatives).detach()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    # log-Q: minus log(P * p) for batch candidates (P = 2 positions), log(S / n_items) for sampled ones
    popularity = torch.full((N_ITEMS + 1,), 0.1)
    correction = torch.log(torch.tensor([2 * 0.1, 2 * 0.1, 2 / N_ITEMS]))
    expected_q = F.cross_entropy(logits - correction, torch.tensor([0, 1])).detach()
    assert float(sampled_softmax_loss(model, batch, targets, negatives, popularity).detach()) == pytest.approx(
        float(expected_q), rel=1e-5)
    # the same loss through forward(), the one call DistributedDataParallel wraps
    assert float(model(batch, targets, negatives).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_loss_decreases_on_a_toy_next_item_problem():
    # next item = (item + 1) mod 10: learnable from the last item alone
    torch.manual_seed(0)
    model = UserTower(UserTowerConfig(dim=16, max_len=5, layers=1, heads=2, ffn_dim=32, dropout=0.0), 10)
    rng = np.random.default_rng(0)
    sequences = [(rng.integers(0, 10) + np.arange(6)) % 10 for _ in range(32)]
    inputs, targets, _ = training_windows(sequences, 5)
    batch, targets = {"items": torch.as_tensor(inputs)}, torch.as_tensor(targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(30):
        loss = model(batch, targets, torch.arange(1, 11))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0]
    users = encode_users(model, {"items": pad_right([np.array([3, 4])], 5)})
    assert int(np.argmax(users @ item_matrix(model).T)) == 5


def test_windows_and_padding_by_hand():
    inputs, targets, owner = training_windows([np.arange(7), np.array([4]), np.array([2, 3])], max_len=3)
    # tokens are item + 1. Length 7 -> windows of items 3..6 and 0..3 (stride 3: every transition
    # is a target exactly once); length 1 -> no window; length 2 -> one
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3], [3, 0, 0]]
    assert targets.tolist() == [[5, 6, 7], [2, 3, 4], [4, 0, 0]]
    assert owner.tolist() == [0, 0, 2]
    assert pad_right([np.arange(5), np.array([7])], 3).tolist() == [[3, 4, 5], [8, 0, 0]]


def test_untrained_items_lose_their_id_embedding_and_the_mask_is_saved(tmp_path):
    model = tower(item_vector_dim=0, context_dim=0, profile_numeric=[], profile_categorical=[],
                  profile_cardinalities=[])
    before = item_matrix(model)
    counts = np.ones(N_ITEMS)
    counts[[2, 5]] = 0                                     # items 2 and 5 never occur in training
    model.set_trained_items(counts)
    after = item_matrix(model)
    assert np.allclose(after[[2, 5]], 0)                   # no random direction: they score 0
    keep = np.flatnonzero(counts)
    assert np.allclose(after[keep], before[keep])
    path = tmp_path / "tower.pt"
    torch.save({"model": model.state_dict(), "model_config": asdict(model.config), "n_items": N_ITEMS}, path)
    assert np.allclose(item_matrix(load_user_tower(str(path))), after)
    # switched off: the mask stays all ones
    plain = tower(item_vector_dim=0, context_dim=0, profile_numeric=[], profile_categorical=[],
                  profile_cardinalities=[], mask_untrained_ids=False)
    plain.set_trained_items(counts)
    assert np.allclose(item_matrix(plain), before)


def test_with_frozen_vectors_an_untrained_item_keeps_its_content_part():
    model = tower()
    counts = np.ones(N_ITEMS)
    counts[3] = 0
    model.set_trained_items(counts)
    token = torch.tensor([[4]])                              # item 3
    expected = model.items.project(model.items.frozen[token])
    assert torch.allclose(model.items(token), expected)


def test_the_served_user_model_round_trips(tmp_path):
    """save_user_model / load_user_model (and the torch-free read_user_model serving's Retriever uses)."""
    from recsys.models.user_tower import load_user_model, save_user_model, state_extra
    from recsys.retrieval.user_model import read_user_model

    torch.manual_seed(0)
    config = UserTowerConfig(dim=8, max_len=4, layers=1, ffn_dim=16, context_dim=3, profile_numeric=["age"],
                             profile_categorical=["style"], profile_cardinalities=[3])
    model = UserTower(config, 5).eval()
    checkpoint = tmp_path / "checkpoints" / "best_model.pt"
    checkpoint.parent.mkdir()
    torch.save({"model": model.state_dict(), **state_extra(model)}, checkpoint)
    save_user_model(tmp_path, model, checkpoint, ["a", "b", "c", "d", "e"], {"style": ["x", "y"]}, "minilm",
                    note="stand-in")
    files = read_user_model(tmp_path)
    assert files.checkpoint == "checkpoints/best_model.pt" and files.item_ids == ["a", "b", "c", "d", "e"]
    assert files.profile_numeric == ["age"] and files.profile_categorical == {"style": ["x", "y"]}
    assert files.context == {"source": "title", "text_model": "minilm", "dim": 3}
    assert files.max_len == 4 and files.note == "stand-in"
    assert np.allclose(files.item_vectors(), item_matrix(model))
    loaded_files, tower = load_user_model(tmp_path)
    assert loaded_files == files and np.allclose(item_matrix(tower), item_matrix(model))
    assert read_user_model(tmp_path / "missing", required=False) is None


def test_an_item_without_vector_or_id_is_the_zero_vector_not_the_projections_bias():
    model = tower(item_ids=False)
    vectors = np.random.default_rng(1).normal(size=(N_ITEMS, 4))
    vectors[[0, 7]] = 0                                      # no catalog row for items 0 and 7
    model.set_item_vectors(vectors)
    items = item_matrix(model)
    assert np.allclose(items[[0, 7]], 0)                     # they score 0, they do not all share one direction
    assert np.allclose(np.linalg.norm(items[[1, 2, 3]], axis=1), 1)


def test_min_id_count_keeps_id_embeddings_only_for_items_bought_often_enough():
    counts = np.array([0, 1, 2, 3, 5, 9, 1, 0, 4, 3, 2, 8])
    model = tower(min_id_count=3)
    model.set_trained_items(counts)
    assert model.items.id_mask[1:, 0].numpy().tolist() == (counts >= 3).astype(float).tolist()
    token = torch.tensor([[2]])                              # item 1, bought once: its vector alone
    assert torch.allclose(model.items(token), model.items.project(model.items.frozen[token]))
    # without item vectors an ID embedding is all an item has: only never-bought items lose it
    ids_only = tower(min_id_count=3, item_vector_dim=0)
    ids_only.set_trained_items(counts)
    assert ids_only.items.id_mask[1:, 0].numpy().tolist() == (counts > 0).astype(float).tolist()
    with pytest.raises(ValueError, match="min_id_count"):
        full_config(min_id_count=0)


def test_history_skip_adds_the_recency_weighted_items_to_every_state():
    # A skip weight far above the transformer's output: the user vector is the direction of
    # v(last) + 0.5 v(previous) + 0.25 v(the one before), computed here by hand.
    model = tower(history_skip=1e4, context_dim=0, profile_numeric=[], profile_categorical=[],
                  profile_cardinalities=[])
    items = item_matrix(model)
    history = [3, 8, 5]                                       # item indices, oldest first
    expected = items[5] + 0.5 * items[8] + 0.25 * items[3]
    expected /= np.linalg.norm(expected)
    user = encode_users(model, {"items": pad_right([np.array(history)], 6)})[0]
    assert float(user @ expected) > 0.999
    # causal: the state after the first item is that item's own direction
    states = model.states({"items": torch.tensor(pad_right([np.array(history)], 6))})[0].detach().numpy()
    assert float(states[0] @ items[3]) > 0.999
    assert isinstance(model.skip, torch.nn.Parameter)         # the weight is learnt
    assert tower().skip is None                                # off by default: towers saved before it load
