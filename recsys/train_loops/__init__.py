"""Per-worker training loops that Ray Train's TorchTrainer (and Ray Tune through it) run.

They import ``ray.train`` inside the function, so the library stays importable without Ray.
"""
