import torch

from recsys.train_loops.optim import optimizer_step


def test_step_clips_only_trainable_parameters_and_returns_the_loss():
    frozen, trained = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    frozen.requires_grad_(False)
    model = torch.nn.Sequential(frozen, trained)
    before = trained.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loss = (model(torch.ones(1, 2)) * 1000).sum()  # a huge gradient
    value = optimizer_step(model, optimizer, loss, grad_clip=0.5)
    assert value == float(loss.detach())
    grads = torch.cat([trained.weight.grad.flatten(), trained.bias.grad.flatten()])
    assert abs(float(torch.linalg.norm(grads)) - 0.5) < 1e-5
    assert torch.allclose(trained.weight - before, -trained.weight.grad)  # lr 1: the update is the clipped gradient
    assert frozen.weight.grad is None
