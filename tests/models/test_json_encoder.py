import numpy as np
import torch

from recsys.models.json_encoder import (JsonEncoder, JsonEncoderConfig, featurize, masked_mean,
                                        orthonormal_lift, split_features)
from recsys.vocab import UNKNOWN_ID, AttributeVocabulary

RECORDS = [{"category": "블라우스", "material": ["우븐", "레이스"]},
           {"category": "스커트", "material": ["데님"]},
           {"material": []}]
CONFIG = JsonEncoderConfig(fields=["category", "material"], multi_fields=["material"], max_values=3,
                           embedding_dim=4, hidden_dim=16, output_dim=512, dropout=0.0)


def _vocab():
    return AttributeVocabulary.build(RECORDS, std_fields=["category"], re_fields=["material"], num_buckets=97)


def test_masked_mean_by_hand():
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 5.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    assert masked_mean(values, mask).tolist() == [[2.0, 3.0], [0.0, 0.0]]


def test_featurize_single_and_multi_valued_fields():
    features = featurize(_vocab(), RECORDS, CONFIG)
    assert features["ids/category"].shape == (3, 1) and features["mask/category"].all()
    assert features["ids/category"][2, 0] == UNKNOWN_ID  # absent category is "unknown", not padding
    assert features["mask/material"].sum(axis=1).tolist() == [2, 1, 0]


def test_encoder_output_is_512d_unit_norm_and_ignores_padding():
    torch.manual_seed(0)
    vocab = _vocab()
    model = JsonEncoder(CONFIG, {"category": vocab.std.size("category"), "material": vocab.hashed.size}).eval()
    batch = {k: torch.as_tensor(v) for k, v in featurize(vocab, RECORDS, CONFIG).items()}
    out = model(*split_features(batch, CONFIG.fields))
    assert out.shape == (3, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    # Changing an id under a False mask changes nothing.
    batch["ids/material"][1, 2] = 5
    assert torch.allclose(model(*split_features(batch, CONFIG.fields))[1], out[1])


def test_gradients_reach_every_embedding_table():
    vocab = _vocab()
    model = JsonEncoder(CONFIG, {"category": vocab.std.size("category"), "material": vocab.hashed.size})
    batch = {k: torch.as_tensor(v) for k, v in featurize(vocab, RECORDS, CONFIG).items()}
    model(*split_features(batch, CONFIG.fields)).sum().backward()
    for name, table in model.embeddings.items():
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0, name


def test_orthonormal_lift_preserves_cosine():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 384)).astype(np.float32)
    lift = orthonormal_lift(384, 512)
    lifted = x @ lift.T
    assert lifted.shape == (5, 512)
    assert np.allclose(lifted @ lifted.T, x @ x.T, atol=1e-3)
