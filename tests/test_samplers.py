from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from recsys.losses.metric import triplet_components
from recsys.samplers import HierarchicalBatchSampler

# [fine, coarse]: parent 0 (Topwear) has children 10, 11, 12; parent 1 (Bottomwear) 20, 21;
# parents 2 and 3 have one child each (30, 40). Child 12 has only 2 items (< samples_per_child).
LABELS = np.array([[10, 0]] * 8 + [[11, 0]] * 6 + [[12, 0]] * 2 + [[20, 1]] * 5 + [[21, 1]] * 7
                  + [[30, 2]] * 4 + [[40, 3]] * 4)


def _children(batch):
    return Counter((LABELS[i, 1], LABELS[i, 0]) for i in batch)


def test_batches_hold_sibling_children_with_m_items_each():
    sampler = HierarchicalBatchSampler(LABELS, parents_per_batch=2, children_per_parent=2, samples_per_child=3)
    assert sampler.batch_size == 12 and sampler.excluded == []
    for batch in list(sampler) + list(sampler):
        children = _children(batch)
        assert len(batch) == 12 and set(children.values()) == {3}  # m items for every child
        by_parent = Counter(parent for parent, _ in children)
        # real parents come with >= 2 children; the single-child parents 2 and 3 are pooled together
        assert all(n >= 2 for p, n in by_parent.items() if p in (0, 1))
        assert by_parent[2] == by_parent[3]


def test_a_fine_label_under_two_parents_is_two_children():
    labels = np.array([[1, 0]] * 4 + [[2, 0]] * 4 + [[1, 5]] * 4 + [[3, 5]] * 4)  # "Tshirts" under 0 and 5
    sampler = HierarchicalBatchSampler(labels, parents_per_batch=1, children_per_parent=2, samples_per_child=2)
    for batch in sampler:
        assert len({labels[i, 1] for i in batch}) == 1  # one parent per batch: never mixes the two "1"s


def test_drop_mode_excludes_single_child_parents():
    sampler = HierarchicalBatchSampler(LABELS, parents_per_batch=1, children_per_parent=2, samples_per_child=2,
                                       single_child_parents="drop")
    assert sampler.excluded == list(range(28, 36))
    assert all(LABELS[i, 1] in (0, 1) for batch in sampler for i in batch)


def test_small_parent_gives_its_spare_slots_to_the_other_parent():
    sampler = HierarchicalBatchSampler(LABELS, parents_per_batch=2, children_per_parent=3, samples_per_child=2,
                                       single_child_parents="drop")
    for batch in sampler:  # parent 1 has 2 children, so parent 0 would need 4: it has 3 -> 5 children
        assert len(batch) == 10 and len(_children(batch)) == 5


def test_epochs_cover_the_data_and_weight_parents_by_size():
    rng = np.random.default_rng(0)
    fine = np.concatenate([np.repeat(np.arange(8), 20), np.repeat(np.arange(8, 10), 20)])  # 160 + 40 items
    labels = np.stack([fine, (fine >= 8).astype(int)], axis=1)
    labels = labels[rng.permutation(len(labels))]
    sampler = HierarchicalBatchSampler(labels, parents_per_batch=1, children_per_parent=2, samples_per_child=4)
    assert len(sampler) == 200 // 8
    seen = [i for _ in range(4) for batch in sampler for i in batch]
    assert len(set(seen)) / len(labels) > 0.75 and set(labels[seen, 0]) == set(range(10))
    parents = Counter(labels[batch[0], 1] for batch in HierarchicalBatchSampler(labels, 1, 2, 4, num_batches=500))
    assert 3.0 < parents[0] / parents[1] < 5.5  # 160 vs 40 items


def test_seeded_epochs_and_dataloader_use():
    sampler = HierarchicalBatchSampler(LABELS, 2, 2, 3, seed=7)
    first, second = list(sampler), list(sampler)
    assert first != second  # each iteration is a new epoch
    sampler.set_epoch(0)
    assert list(sampler) == first and list(HierarchicalBatchSampler(LABELS, 2, 2, 3, seed=7)) == first
    loader = DataLoader(TensorDataset(torch.as_tensor(LABELS)), batch_sampler=sampler)
    assert next(iter(loader))[0].shape == (12, 2)


def test_sampler_errors():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        HierarchicalBatchSampler(LABELS[:, 0])
    with pytest.raises(ValueError, match="two or more children"):
        HierarchicalBatchSampler(np.array([[1, 0], [1, 0], [2, 1]]), single_child_parents="drop")


def test_triplet_loss_by_hand():
    loss_fn, miner = triplet_components(margin=0.5, type_of_triplets="all")
    embeddings = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # anchor 0: d_ap = sqrt(0.4^2 + 0.8^2) = sqrt(0.8), d_an = sqrt(2) -> hinge 0 (not even mined);
    # anchor 1: d_ap = sqrt(0.8), d_an = sqrt(0.6^2 + 0.2^2) = sqrt(0.4) -> sqrt(0.8) - sqrt(0.4) + 0.5
    anchors, _, _ = miner(embeddings, labels)
    assert anchors.tolist() == [1]
    expected = 0.8 ** 0.5 - 0.4 ** 0.5 + 0.5  # PML averages over the non-zero triplets
    assert loss_fn(embeddings, labels, miner(embeddings, labels)).item() == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="type_of_triplets"):
        triplet_components(type_of_triplets="hardest")


def _mean_triplet_hinge(embeddings, labels, margin):
    """Mean of relu(d(a,p) - d(a,n) + margin) over every valid triplet, on normalised embeddings."""
    d = torch.cdist(torch.nn.functional.normalize(embeddings), torch.nn.functional.normalize(embeddings))
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool)
    valid = positive[:, :, None] & ~same[:, None, :]  # [a, p, n]
    return torch.relu(d[:, :, None] - d[:, None, :] + margin)[valid].mean().item()


@pytest.mark.parametrize("kind", ["semihard", "hard"])
def test_triplet_components_learn_a_toy_problem(kind):
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(8)
    x = torch.randn(4, 6)[labels] + 0.8 * torch.randn(32, 6)
    model = torch.nn.Linear(6, 4)
    loss_fn, miner = triplet_components(margin=0.2, type_of_triplets=kind)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = _mean_triplet_hinge(model(x).detach(), labels, 0.2)
    for _ in range(20):
        embeddings = model(x)
        loss = loss_fn(embeddings, labels, miner(embeddings, labels))
        assert torch.isfinite(loss) and loss > 0
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # The mined loss itself moves as the mined set changes; the full objective must go down.
    assert _mean_triplet_hinge(model(x).detach(), labels, 0.2) < 0.5 * before
