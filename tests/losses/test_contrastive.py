import math

import torch
import torch.nn.functional as F

from recsys.losses import InfoNCE


def _hand_infonce(q, t, temperature):
    """-mean_i log softmax_j(q_i . t_j / T)[i], written out as plain loops."""
    total = 0.0
    for i in range(len(q)):
        logits = [float(q[i] @ t[j]) / temperature for j in range(len(t))]
        total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / len(q)


def test_infonce_matches_hand_computed_value():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=-1)
    t = F.normalize(torch.randn(4, 8), dim=-1)
    one_way = InfoNCE(temperature=0.1, symmetric=False)(q, t)
    assert torch.isclose(one_way, torch.tensor(_hand_infonce(q, t, 0.1)), atol=1e-5)
    both = InfoNCE(temperature=0.1)(q, t)
    expected = 0.5 * (_hand_infonce(q, t, 0.1) + _hand_infonce(t, q, 0.1))
    assert torch.isclose(both, torch.tensor(expected), atol=1e-5)


def test_equals_pytorch_metric_learning_ntxent_across_two_sets():
    from pytorch_metric_learning.losses import NTXentLoss

    torch.manual_seed(1)
    q = F.normalize(torch.randn(6, 8), dim=-1)
    t = F.normalize(torch.randn(6, 8), dim=-1)
    labels = torch.arange(6)
    # labels.clone(): PML drops self-pairs when ref_labels *is* labels.
    reference = NTXentLoss(temperature=0.2)(q, labels, ref_emb=t, ref_labels=labels.clone())
    assert torch.isclose(InfoNCE(temperature=0.2, symmetric=False)(q, t), reference, atol=1e-5)


def test_shared_labels_turn_duplicates_into_positives():
    t = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), dim=-1)
    q = t.clone()
    loss = InfoNCE(temperature=0.5, symmetric=False)
    # Rows 0 and 1 have the same target; as false negatives they cost more than when left out.
    assert loss(q, t, torch.tensor([0, 0, 1])) < loss(q, t)
