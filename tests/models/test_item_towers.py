import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recsys.data.item_features import ItemFeatureConfig, featurize_items, records_to_items
from recsys.losses.contrastive import nt_xent
from recsys.models.item_towers import (TOWERS, ItemTowerConfig, MetricAdapter, ResidualPyramidHead,
                                       UnifiedTower, batch_to_tensors, build_item_tower,
                                       simcse_views)

ROWS = records_to_items([
    {"category_path": ["Apparel", "Shirts"], "std_attributes": {"colour": "White"},
     "re_attributes": {"material": ["cotton", "linen"], "neck": "round"}, "title": "White Linen Shirt"},
    {"category_path": ["Apparel", "Tshirts"], "std_attributes": {"colour": "Black"}, "re_attributes": {},
     "title": "Black Tee"},  # no RE tokens at all
    {"category_path": ["Footwear", "Boots"], "std_attributes": {}, "re_attributes": {"material": "leather"},
     "description": "Ankle boots with a block heel"},
])
FEATURES = ItemFeatureConfig(hierarchy=["master", "article"], std_fields=["colour"], re_fields=["material", "neck"],
                             description_keywords=3, max_title_tokens=3, max_std_tokens=4, max_re_tokens=5,
                             num_buckets=97)
TINY = {"embedding_dim": 16, "heads": 2, "ffn_dim": 32, "head_hidden": 32, "head_blocks": 2, "dropout": 0.0}
CASES = [(name, mode) for name in TOWERS for mode in ("none", "tokens", "vector")]


def _batch(title_vec=True):
    featurizer, features = featurize_items(ROWS, FEATURES)
    batch = batch_to_tensors(features)
    if title_vec:
        batch["title_vec"] = torch.randn(len(ROWS), 384, generator=torch.Generator().manual_seed(3))
        batch["title_vec"][2] = float("nan")  # item without a title vector
    return featurizer, batch


def _tower(name, mode="none", seed=0):
    featurizer, batch = _batch()
    torch.manual_seed(seed)
    return build_item_tower(name, ItemTowerConfig(title_mode=mode, **TINY), featurizer.vocab_size,
                            featurizer.n_fields), batch


def _pad(batch, extra=3):
    """The same items with ``extra`` more padding columns holding garbage ids under False masks."""
    padded = dict(batch)
    for group in ("std", "re", "title"):
        n = len(batch[f"{group}_ids"])
        garbage = torch.full((n, extra), 5, dtype=torch.long)
        padded[f"{group}_ids"] = torch.cat([batch[f"{group}_ids"], garbage], dim=1)
        padded[f"{group}_field_ids"] = torch.cat([batch[f"{group}_field_ids"], garbage.clamp(max=2)], dim=1)
        padded[f"{group}_mask"] = torch.cat([batch[f"{group}_mask"], torch.zeros(n, extra, dtype=torch.bool)], dim=1)
    padded["re_parent_pos"] = torch.cat([batch["re_parent_pos"], torch.full((len(batch["re_ids"]), extra), 3)], dim=1)
    return padded


@pytest.mark.parametrize("name,mode", CASES)
def test_output_is_512d_unit_norm_and_finite_without_re_tokens(name, mode):
    tower, batch = _tower(name, mode)
    assert not batch["re_mask"][1].any()
    out = tower.eval()(batch)
    assert out.shape == (3, 512) and torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)
    tower.train()(batch).sum().backward()  # and no NaN in training mode's gradients either
    assert all(torch.isfinite(p.grad).all() for p in tower.parameters() if p.grad is not None)


@pytest.mark.parametrize("name,mode", CASES)
def test_gradients_reach_the_shared_embedding_and_every_layer(name, mode):
    tower, batch = _tower(name, mode)
    weights = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
    (tower(batch) * weights).sum().backward()
    for param_name, param in tower.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name,mode", CASES)
def test_padding_does_not_change_the_output(name, mode):
    tower, batch = _tower(name, mode)
    tower.eval()
    with torch.no_grad():
        assert torch.allclose(tower(_pad(batch)), tower(batch), atol=1e-5)


@pytest.mark.parametrize("name", list(TOWERS))
def test_re_tokens_change_the_output(name):
    """The RE path is wired in: dropping an item's RE tokens moves its vector."""
    tower, batch = _tower(name)
    tower.eval()
    without = dict(batch, re_mask=torch.zeros_like(batch["re_mask"]))
    with torch.no_grad():
        assert not torch.allclose(tower(without)[0], tower(batch)[0], atol=1e-4)
        assert torch.allclose(tower(without)[1], tower(batch)[1], atol=1e-6)  # item 1 had no RE anyway


def test_unified_tower_stops_the_gradient_through_the_parent_std_term():
    """Hand-built: the RE token's parent points at a masked STD position, so the parent value p
    reaches the output only through the RE token's stop-gradient term."""
    torch.manual_seed(0)
    tower = UnifiedTower(ItemTowerConfig(**TINY), vocab_size=10, n_fields=4).eval()
    a, p, r = 2, 3, 7
    batch = {"std_ids": torch.tensor([[a, p]]), "std_field_ids": torch.tensor([[1, 2]]),
             "std_mask": torch.tensor([[True, False]]), "re_ids": torch.tensor([[r]]),
             "re_field_ids": torch.tensor([[3]]), "re_mask": torch.tensor([[True]]),
             "re_parent_pos": torch.tensor([[1]])}
    out = tower(batch)
    out.sum().backward()
    grad = tower.tokens.weight.grad
    assert grad[p].abs().sum() == 0  # blocked
    assert grad[r].abs().sum() > 0 and grad[a].abs().sum() > 0  # the delta and the STD token learn
    with torch.no_grad():  # ...yet the parent value is used in the forward pass
        tower.tokens.weight[p] += 1.0
        assert not torch.allclose(tower(batch), out, atol=1e-4)


def test_residual_blocks_are_skips_around_the_mlp():
    torch.manual_seed(0)
    head = ResidualPyramidHead(8, 16, blocks=2, out_dim=12, dropout=0.0)
    x = torch.randn(4, 8)
    for block in head.blocks:  # a block whose last Linear outputs 0 must leave x unchanged
        torch.nn.init.zeros_(block[-1].weight)
        torch.nn.init.zeros_(block[-1].bias)
    expected = torch.nn.functional.normalize(head.out(head.inp(x)), dim=-1)
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert [type(m).__name__ for m in head.blocks[0]] == ["LayerNorm", "Linear", "GELU", "Dropout", "Linear"]


@pytest.mark.parametrize("hidden", [None, 64])
def test_metric_adapter_is_128d_unit_norm(hidden):
    out = MetricAdapter(512, 128, hidden)(torch.randn(5, 512))
    assert out.shape == (5, 128) and torch.allclose(out.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_factory_and_config_errors():
    with pytest.raises(ValueError, match="unknown item tower"):
        build_item_tower("mlp", ItemTowerConfig(), 10, 3)
    with pytest.raises(ValueError, match="title_mode"):
        ItemTowerConfig(title_mode="text")
    with pytest.raises(ValueError, match="divisible"):
        ItemTowerConfig(embedding_dim=10, heads=4)


def _random_batch(n=200, length=20):
    mask = torch.ones(n, length, dtype=torch.bool)
    mask[:, 15:] = False
    return {"std_ids": torch.arange(n * length).view(n, length), "std_mask": mask.clone(),
            "re_ids": torch.arange(n * length).view(n, length), "re_mask": mask.clone(),
            "title_mask": mask.clone()}


def test_simcse_views_are_complementary():
    batch = _random_batch()
    a, b = simcse_views(batch, torch.Generator().manual_seed(0), re_drop=0.5, std_drop=0.3,
                        feature_dropout=0.0, title_drop=0.2)
    assert torch.equal(a["std_mask"], batch["std_mask"])  # view A keeps STD...
    assert not (a["re_mask"] & ~batch["re_mask"]).any()   # ...and drops RE (never un-masks padding)
    assert abs(a["re_mask"].sum() / batch["re_mask"].sum() - 0.5) < 0.05
    assert torch.equal(b["re_mask"], batch["re_mask"])    # view B keeps RE, drops STD
    assert not (b["std_mask"] & ~batch["std_mask"]).any()
    assert abs(b["std_mask"].sum() / batch["std_mask"].sum() - 0.7) < 0.05
    assert not torch.equal(a["title_mask"], b["title_mask"])
    assert abs(a["title_mask"].sum() / batch["title_mask"].sum() - 0.8) < 0.05
    assert a["std_ids"] is batch["std_ids"] and batch["re_mask"][:, :15].all()  # ids shared, input untouched


def test_simcse_views_keep_a_std_token_apply_feature_dropout_and_are_seeded():
    batch = _random_batch(n=50)
    _, b = simcse_views(batch, torch.Generator().manual_seed(0), std_drop=1.0, feature_dropout=0.0)
    assert b["std_mask"].sum(dim=1).tolist() == [1] * 50 and b["std_mask"][:, 0].all()
    a, b = simcse_views(batch, torch.Generator().manual_seed(0), feature_dropout=0.5)
    assert 0 < a["std_mask"].sum() < batch["std_mask"].sum() and 0 < b["re_mask"].sum() < batch["re_mask"].sum()
    again = simcse_views(batch, torch.Generator().manual_seed(0), feature_dropout=0.5)
    other = simcse_views(batch, torch.Generator().manual_seed(1), feature_dropout=0.5)
    assert torch.equal(again[0]["re_mask"], a["re_mask"]) and torch.equal(again[1]["std_mask"], b["std_mask"])
    assert not torch.equal(other[0]["re_mask"], a["re_mask"])


def test_simcse_loss_equals_hand_computed_nt_xent():
    z_a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    z_b = torch.tensor([[0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]), dim=-1).tolist()
    n = len(z_a)
    losses = []
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        sim = [sum(x * y for x, y in zip(z[i], z[k])) / t for k in range(2 * n)]
        denominator = sum(math.exp(sim[k]) for k in range(2 * n) if k != i)
        losses.append(-(sim[pos] - math.log(denominator)))
    assert nt_xent(z_a, z_b, temperature=t).item() == pytest.approx(sum(losses) / len(losses), abs=1e-5)


def test_simcse_step_on_views_lowers_the_loss():
    torch.manual_seed(0)
    featurizer, batch = _batch(title_vec=False)
    tower = build_item_tower("unified", ItemTowerConfig(**TINY), featurizer.vocab_size, featurizer.n_fields)
    optimizer = torch.optim.Adam(tower.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    views = simcse_views(batch, generator, feature_dropout=0.0)
    losses = []
    for _ in range(10):
        loss = nt_xent(tower(views[0]), tower(views[1]), temperature=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_simcse_loss_matches_pytorch_metric_learning_nt_xent():
    from pytorch_metric_learning.losses import NTXentLoss

    rng = torch.Generator().manual_seed(3)
    z_a = F.normalize(torch.randn(12, 16, generator=rng), dim=-1)
    z_b = F.normalize(torch.randn(12, 16, generator=rng), dim=-1)
    labels = torch.arange(12)
    reference = NTXentLoss(temperature=0.07)(torch.cat([z_a, z_b]), torch.cat([labels, labels]))
    assert nt_xent(z_a, z_b, temperature=0.07).item() == pytest.approx(reference.item(), rel=1e-5)
