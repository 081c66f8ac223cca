"""Trainable models (torch.nn.Modules), free of any Ray dependency."""
