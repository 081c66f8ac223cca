"""The optimisation step every fp32 training loop takes (the AMP loop in alignment.py scales its own)."""
from __future__ import annotations

import torch


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                   grad_clip: float) -> float:
    """Backward, clip the trainable parameters' gradient norm, step; returns the loss as a float."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], grad_clip)
    optimizer.step()
    return float(loss.detach())
