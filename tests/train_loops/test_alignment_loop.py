import torch

from recsys.metrics.retrieval import evaluate_pairs
from recsys.train_loops.alignment import field_dropout
from recsys.vocab import UNKNOWN_ID


def test_field_dropout_replaces_whole_fields_with_unknown():
    ids = {"color": torch.tensor([[5], [6], [7], [8]]), "material": torch.tensor([[3, 4], [3, 0], [9, 9], [2, 0]])}
    masks = {"color": torch.ones(4, 1, dtype=torch.bool),
             "material": torch.tensor([[True, True], [True, False], [True, True], [True, False]])}
    same_ids, same_masks = field_dropout(ids, masks, 0.0)
    assert same_ids is ids and same_masks is masks
    dropped_ids, dropped_masks = field_dropout(ids, masks, 1.0)
    assert dropped_ids["material"].tolist() == [[UNKNOWN_ID, 0]] * 4
    assert dropped_masks["material"].tolist() == [[True, False]] * 4
    generator = torch.Generator().manual_seed(0)
    half_ids, _ = field_dropout(ids, masks, 0.5, generator)
    kept = (half_ids["color"] != UNKNOWN_ID).squeeze(1)
    assert 0 < int(kept.sum()) < 4 and torch.equal(half_ids["color"][kept], ids["color"][kept])


def test_evaluate_pairs_reports_both_protocols():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(128, 16), dim=-1).numpy()
    report = evaluate_pairs(x, x, block=64)
    assert report["full"]["top1"] == 1.0 and report["inbatch64"]["top1"] == 1.0
    assert report["inbatch64"]["n_queries"] == 128 and report["similarity"]["mean_positive_similarity"] > 0.99
