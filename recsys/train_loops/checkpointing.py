"""Checkpoint bookkeeping shared by every Ray Train worker loop: resume and per-epoch report.

A checkpoint is one ``state.pt`` (plain tensors and numbers, loadable with ``weights_only=True``):
model, optimizer and scheduler state, the epoch, the best validation score so far, the metric
history as JSON, plus whatever the loop adds (architecture config, vocabulary sizes) so the file
alone rebuilds the model.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile

import torch

STATE_FILE = "state.pt"
TRAIN_LOGGER = "fashionrec.train"
_train_log = logging.getLogger(TRAIN_LOGGER)
_train_log.setLevel(logging.INFO)
# The epoch this worker process's loop started at (restore): > 0 when a (re)started worker group
# resumed from a checkpoint. Every epoch's metrics carry it, so a run's history shows where it resumed.
_started_at_epoch = 0


def log_epoch(line: str) -> None:
    """One line per epoch for the run's log: the progress bar is the console's view of training.

    In a Ray Train worker the line reaches the driver with the worker's output (recsys.logs sends it
    to the command's log file); where nothing set up logging at all, it is printed, as it used to be.
    """
    if not _train_log.hasHandlers():
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _train_log.addHandler(handler)
    _train_log.info(line)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DistributedDataParallel (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def restore(model: torch.nn.Module, optimizer, scheduler, device) -> tuple[int, float, list[dict]]:
    """(first epoch to run, best score, history): from Ray Train's latest checkpoint, else a fresh start."""
    import ray.train

    global _started_at_epoch
    checkpoint = ray.train.get_checkpoint()
    _started_at_epoch = 0
    if not checkpoint:
        return 0, float("-inf"), []
    with checkpoint.as_directory() as directory:
        state = torch.load(os.path.join(directory, STATE_FILE), map_location=device, weights_only=True)
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _started_at_epoch = int(state["epoch"]) + 1
    return _started_at_epoch, float(state["best_score"]), json.loads(state["history_json"])


def report_epoch(metrics: dict, history: list[dict], model: torch.nn.Module, optimizer, scheduler,
                 best_score: float, extra: dict) -> None:
    """Report ``metrics`` to Ray Train; rank 0 attaches a checkpoint (others report metrics only).
    ``metrics`` (the loop's last ``history`` entry) gains ``started_at_epoch``."""
    import ray.train

    metrics["started_at_epoch"] = _started_at_epoch

    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        torch.save({"model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": metrics["epoch"], "best_score": best_score,
                    "history_json": json.dumps(history), **extra}, os.path.join(directory, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


class EpochProgress:
    """A progress bar over a run's epochs (Ray's tqdm, drawn by the driver even when the loop runs
    in a remote worker), described by the epoch, elapsed time and the main metrics."""

    def __init__(self, name: str, epochs: int, start_epoch: int = 0):
        from ray.experimental import tqdm_ray

        self.name = name
        self.bar = tqdm_ray.tqdm(total=epochs, desc=name)
        self.bar.n = start_epoch

    def epoch_done(self, epoch: int, epochs: int, elapsed_s: float, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        # Count first, then describe: Ray's tqdm sends one state update per call, at most one a
        # second, so update() right after set_description() would be dropped.
        self.bar.n = epoch + 1
        self.bar.set_description(f"{self.name} epoch {epoch + 1}/{epochs} {elapsed_s:.0f}s  {shown}")
        if epoch + 1 >= epochs:
            self.bar.close()

    def stopped_early(self, why: str) -> None:
        """Close the bar of a run that ends before its last epoch: an open bar is drawn again by the
        driver under every later line it prints."""
        self.bar.set_description(f"{self.name} {why}")
        self.bar.close()
