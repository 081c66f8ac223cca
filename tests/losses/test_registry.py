"""The losses registry: every named config builds the loss its loop uses."""
import pytest
import torch
from torch import nn

from recsys.losses import LOSSES, InfoNCE, ListwiseLoss, SampledSoftmax, loss_config


def test_every_named_loss_builds_with_its_defaults():
    for name, config_cls in LOSSES.items():
        built = config_cls().build()
        parts = built if isinstance(built, tuple) else (built,)
        assert all(isinstance(p, nn.Module) for p in parts), name


def test_loss_config_passes_settings_through():
    loss = loss_config("infonce", temperature=0.1, symmetric=False).build()
    assert isinstance(loss, InfoNCE) and loss.temperature == 0.1 and loss.symmetric is False
    torch.manual_seed(0)
    queries, targets = torch.randn(6, 4), torch.randn(6, 4)
    assert torch.allclose(loss(queries, targets), InfoNCE(0.1, symmetric=False)(queries, targets))
    assert isinstance(loss_config("listwise", diversity_weight=0.5).build(), ListwiseLoss)
    assert loss_config("sampled_softmax", temperature=0.2).build().config.temperature == 0.2
    assert isinstance(loss_config("sampled_softmax").build(), SampledSoftmax)


def test_unknown_loss_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown loss 'arcface'.*infonce"):
        loss_config("arcface")
