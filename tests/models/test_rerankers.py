import numpy as np
import pytest
import torch

from recsys.models.item_towers import ItemTowerConfig, build_item_tower
from recsys.losses.ranking import (expected_pairwise_similarity, list_similarity, listwise_loss,
                                   listwise_softmax_loss)
from recsys.models.rerankers import (DeepFM, DeepFMConfig, ItemUserEmbedder, ListwiseConfig, ListwiseReranker,
                                     build_reranker, fm_second_order, init_from_item_tower, mmr, mmr_lists)

# 5 items (+ padding row 0), 3 tokens each, in a vocabulary of 20 tokens; 2 categories.
TOKENS = torch.tensor([[0, 0, 0], [1, 2, 0], [1, 3, 4], [5, 6, 0], [5, 6, 7], [8, 0, 0]])
CATEGORY = torch.tensor([0, 1, 1, 2, 2, 1])


def _embedder(dim=8):
    torch.manual_seed(0)
    return ItemUserEmbedder(TOKENS, CATEGORY, vocab_size=20, n_categories=2, dim=dim)


def _batch(b=2, l=4, n_dense=3):
    torch.manual_seed(1)
    items = torch.tensor([[1, 2, 3, 4], [5, 3, 0, 0]])[:b, :l]
    history = torch.tensor([[2, 3, 0], [1, 0, 0]])[:b]
    return items, history, torch.randn(b, l, n_dense), items > 0


def test_fm_second_order_is_the_sum_of_pairwise_dot_products():
    fields = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.5, 4.0]]])  # 1 row, 3 fields, d = 2
    # <f0,f1> = 3 - 2 = 1; <f0,f2> = 0.5 + 8 = 8.5; <f1,f2> = 1.5 - 4 = -2.5
    assert fm_second_order(fields).item() == pytest.approx(1 + 8.5 - 2.5)
    random = torch.randn(4, 6, 5)
    by_loop = sum((random[:, i] * random[:, j]).sum(-1) for i in range(6) for j in range(i + 1, 6))
    assert torch.allclose(fm_second_order(random), by_loop, atol=1e-5)


def test_deepfm_scores_every_candidate_and_trains_every_table():
    model = DeepFM(_embedder(), n_dense=3, config=DeepFMConfig(embedding_dim=8, hidden=[16]))
    items, history, dense, mask = _batch()
    logits = model(items, history, dense, mask)
    assert logits.shape == (2, 4)
    logits[mask].sum().backward()
    for name in ("embedder.tokens.weight", "embedder.items.weight", "embedder.categories.weight",
                 "dense_vectors", "item_bias.weight", "linear.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # 6 item/user fields + 3 dense fields, each 8-d, feed the DNN
    assert model.dnn[0].in_features == 9 * 8


def test_pooled_tokens_ignore_padding():
    embedder = _embedder()
    fields = embedder.item_fields(torch.tensor([[1]]))  # item 1 has tokens 1 and 2
    expected = (embedder.tokens.weight[1] + embedder.tokens.weight[2]) / 2
    assert torch.allclose(fields[0, 0, 1], expected)


def test_init_from_item_tower_copies_the_token_table_and_can_freeze_it():
    tower = build_item_tower("concat", ItemTowerConfig(embedding_dim=8, heads=2, output_dim=16), 20, 4)
    model = build_reranker("deepfm", {"embedding_dim": 8, "hidden": [16]}, TOKENS, CATEGORY, 20, 2, 3)
    init_from_item_tower(model, tower, freeze=True)
    assert torch.equal(model.embedder.tokens.weight, tower.tokens.weight)
    assert not model.embedder.tokens.weight.requires_grad
    init_from_item_tower(model, tower, freeze=False)
    assert model.embedder.tokens.weight.requires_grad
    with pytest.raises(ValueError, match="does not match"):
        init_from_item_tower(model, build_item_tower("concat", ItemTowerConfig(embedding_dim=8, heads=2), 30, 4))


def test_listwise_reranker_is_permutation_equivariant():
    model = ListwiseReranker(_embedder(), 3, ListwiseConfig(embedding_dim=8, model_dim=8, heads=2, ffn_dim=16)).eval()
    items, history, dense, mask = _batch()
    scores = model(items, history, dense, mask)
    perm = torch.tensor([2, 0, 3, 1])
    permuted = model(items[:, perm], history, dense[:, perm], mask[:, perm])
    assert torch.allclose(permuted[0], scores[0, perm], atol=1e-5)
    # list 1 is [5, 3, pad, pad] -> permuted [pad, 5, pad, 3]: padding moves, real scores stay
    assert torch.allclose(permuted[1, [1, 3]], scores[1, [0, 1]], atol=1e-5)


def test_listwise_softmax_loss_by_hand():
    scores = torch.tensor([[2.0, 1.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, True, False]])
    label = torch.tensor([[0, 1, 0, 0]])
    expected = -(1.0 - np.log(np.exp(2) + np.exp(1) + np.exp(0)))
    assert listwise_softmax_loss(scores, label, mask).item() == pytest.approx(expected, rel=1e-5)
    assert listwise_softmax_loss(scores, torch.zeros_like(label), mask).item() == 0.0  # no positive: no term


def test_expected_pairwise_similarity_by_hand():
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))  # softmax -> p = (0.5, 0.3, 0.2)
    similarity = torch.tensor([[[1.0, 0.9, 0.1], [0.9, 1.0, 0.0], [0.1, 0.0, 1.0]]])
    value = expected_pairwise_similarity(scores, similarity, torch.ones(1, 3, dtype=torch.bool))
    # pairs i != j: 2 (.5*.3*.9 + .5*.2*.1 + .3*.2*0) over 2 (.5*.3 + .5*.2 + .3*.2) = 1 - sum p^2
    assert value.item() == pytest.approx((0.135 + 0.01) / (0.15 + 0.10 + 0.06))
    # a padded candidate takes no probability and no pair
    padded = expected_pairwise_similarity(torch.cat([scores, torch.zeros(1, 1)], 1),
                                          torch.nn.functional.pad(similarity, (0, 1, 0, 1), value=1.0),
                                          torch.tensor([[True, True, True, False]]))
    assert padded.item() == pytest.approx(value.item())


def test_diversity_term_lowers_a_near_duplicate():
    """Items 0 and 1 are near-duplicates, item 0 is the target; one gradient step on the scores
    themselves: with the diversity term the duplicate's score drops further than without it."""
    vectors = torch.tensor([[[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-0.7, 0.7]]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    similarity = list_similarity(vectors, mask)
    label = torch.tensor([[1, 0, 0, 0]])

    def stepped(weight):
        scores = torch.tensor([[2.0, 1.9, 1.0, 0.5]], requires_grad=True)
        listwise_loss(scores, label, mask, similarity, weight, temperature=0.5).backward()
        return (scores - 0.5 * scores.grad).detach()[0]

    plain, diverse = stepped(0.0), stepped(1.0)
    assert diverse[1] < plain[1]                       # the duplicate is pushed down
    assert diverse[2] > plain[2]                       # the dissimilar item gains
    assert (diverse[1] - diverse[2]) < (plain[1] - plain[2])


def test_mmr_by_hand_on_four_items():
    relevance = np.array([0.9, 0.85, 0.5, 0.3])
    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # items 0 and 1 identical
    assert mmr(relevance, vectors, lam=1.0).tolist() == [0, 1, 2, 3]
    # lambda 0.5. Step 1: 0 (most relevant). Step 2 (max sim to {0}): 1: .425-.5 = -.075,
    # 2: .25-0 = .25, 3: .15-.3 = -.15 -> 2. Step 3: 1: .425-.5 = -.075, 3: .15-.5*max(.6,.8) = -.25 -> 1.
    assert mmr(relevance, vectors, lam=0.5).tolist() == [0, 2, 1, 3]
    assert mmr(relevance, vectors, lam=0.5, k=2).tolist() == [0, 2]


def test_mmr_lists_matches_mmr_per_list_and_skips_padding():
    rng = np.random.default_rng(0)
    relevance, vectors = rng.random((3, 6)), rng.normal(size=(3, 6, 4))
    mask = np.ones((3, 6), bool)
    mask[2, 4:] = False
    batched = mmr_lists(relevance, vectors, mask, lam=0.6, k=4, normalize=False)
    for u in range(3):
        valid = np.flatnonzero(mask[u])
        expected = valid[mmr(relevance[u, valid], vectors[u, valid], 0.6, k=4)]
        assert batched[u].tolist() == expected.tolist()


def test_the_served_reranker_round_trips(tmp_path):
    """write_reranker_files / load_reranker_artifact: the feature contract and the model's scores."""
    from dataclasses import asdict

    from recsys.data.candidate_lists import DenseScaler, read_reranker_files, write_reranker_files
    from recsys.models.rerankers import load_reranker_artifact, score_lists

    torch.manual_seed(0)
    model_config = asdict(DeepFMConfig(embedding_dim=8, hidden=[16]))
    model = build_reranker("deepfm", model_config, TOKENS, CATEGORY, 20, 2, 3).eval()
    checkpoint = tmp_path / "deepfm" / "checkpoints" / "best_model.pt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"reranker": "deepfm", "model_config": model_config, "vocab_size": 20, "n_categories": 2,
                "n_dense": 3, "model": model.state_dict()}, checkpoint)
    scaler = DenseScaler(np.array([0.5, 1.0, 2.0]), np.array([1.0, 2.0, 3.0]))
    vectors = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    write_reranker_files(tmp_path, "deepfm", checkpoint, ["a", "b", "c", "d", "e"], ["f1", "f2", "popularity"],
                         ["score_x"], scaler, 7, vectors, "random")
    files, loaded = load_reranker_artifact(tmp_path)
    assert files.kind == "deepfm" and files.checkpoint == "deepfm/checkpoints/best_model.pt"
    assert files.item_ids == ["a", "b", "c", "d", "e"] and files.feature_names == ["f1", "f2", "popularity"]
    assert files.score_columns == ["score_x"] and files.max_history == 7 and files.item_vectors_source == "random"
    assert np.allclose(files.scaler.mean, scaler.mean) and np.allclose(files.scaler.std, scaler.std)
    assert np.allclose(files.item_vectors(), vectors)
    rows = {"items": np.array([[1, 2, 3, 0]]), "history": np.array([[4, 5]]), "mask": np.array([[1, 1, 1, 0]], bool),
            "dense": np.random.default_rng(1).normal(size=(1, 4, 3)).astype(np.float32)}
    assert np.allclose(score_lists(loaded, rows), score_lists(model, rows))
    assert read_reranker_files(tmp_path / "missing", required=False) is None


def test_listwise_loss_module_is_the_function_with_its_config():
    from recsys.losses.ranking import ListwiseLoss, ListwiseLossConfig, pointwise_loss

    torch.manual_seed(0)
    scores, vectors = torch.randn(2, 4), torch.randn(2, 4, 3)
    label = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    loss = ListwiseLoss(ListwiseLossConfig(diversity_weight=2.0, temperature=0.5))
    expected = listwise_loss(scores, label, mask, list_similarity(vectors, mask), 2.0, 0.5)
    assert loss(scores, label, mask, vectors).item() == pytest.approx(expected.item())
    assert ListwiseLoss()(scores, label, mask).item() == pytest.approx(listwise_loss(scores, label, mask).item())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(scores[mask], label[mask].float())
    assert pointwise_loss(scores, label.float(), mask).item() == pytest.approx(bce.item())
