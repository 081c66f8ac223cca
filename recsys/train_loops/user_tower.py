"""Ray Train worker loop for the user tower: next-item prediction at every sequence position.

Datasets (numpy columns, :func:`sequence_datasets`; E3's split: :func:`tower_datasets`):

- ``train`` (split across workers): ``items``/``targets`` (W, max_len) tokens, causal windows of
  the training sequences (``recsys.models.user_tower.training_windows``), plus the owner's
  ``context``/``profile_*`` columns when the tower has those inputs.
- ``val`` (whole on every worker): ``items`` (V, max_len) the history before the validation target,
  ``target`` (V,) the validation item, and the same optional user columns.
- ``val_seen``: (``row``, ``item``) pairs, every item of each validation user's full history, which
  the ranking excludes (the history can be longer than ``max_len``).
- ``items``: ``count`` (I,) the items' training frequency (log-Q correction) and, with frozen
  item-tower vectors, ``vector`` (I, k).

Validation ranks the target among all items with the history excluded and reports HR@10 (the
checkpoint score), NDCG@10 and MRR with ``recsys.metrics.ranking``. ``patience`` stops after that
many epochs without a better HR@10, also when a finished run is resumed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from recsys.eval.sequential import SequenceSplit
from recsys.metrics.ranking import rank_summary, target_ranks
from recsys.retrieval.candidates import break_ties
from recsys.retrieval.popularity import Popularity
from recsys.models.user_tower import (USER_KEYS, UserTower, UserTowerConfig, encode_users, item_matrix, pad_right,
                                      state_extra, to_tensors, training_windows)
from recsys.train_loops.checkpointing import EpochProgress, log_epoch, report_epoch, restore, unwrap
from recsys.train_loops.item_tower import shard_to_numpy
from recsys.train_loops.steps import equal_steps, rank_zero_decides, step_counts

SCORE = "val_hr@10"


@dataclass
class UserTowerTrainConfig:
    epochs: int = 20
    batch_size: int = 256           # windows (sequences) per step; every position is a training example
    lr: float = 5e-3
    weight_decay: float = 0.0
    negatives: int = 256            # uniformly sampled extra candidates per step (besides the batch's targets)
    logq_correction: bool = False
    grad_clip: float = 1.0
    patience: int = 5               # epochs without a better validation HR@10 before stopping; 0: never
    threads: int | None = None      # torch CPU threads in the worker; None: Ray's default (cpus_per_worker)
    seed: int = 0


def sequence_datasets(train_sequences: Sequence[np.ndarray], val_histories: Sequence[np.ndarray],
                      val_targets: np.ndarray, n_items: int, max_len: int,
                      train_columns: dict[str, np.ndarray] | None = None,
                      val_columns: dict[str, np.ndarray] | None = None,
                      item_vectors: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The loop's datasets from plain per-user sequences, whatever the protocol.
    ``train_columns``/``val_columns``: optional per-user arrays (``context``, ``profile_*``), rows =
    ``train_sequences`` / ``val_histories``."""
    inputs, targets, owner = training_windows(train_sequences, max_len)
    train = {"items": inputs, "targets": targets, **{k: v[owner] for k, v in (train_columns or {}).items()}}
    val = {"items": pad_right(val_histories, max_len), "target": np.asarray(val_targets, dtype=np.int64),
           **(val_columns or {})}
    seen = {"row": np.repeat(np.arange(len(val_histories)), [len(h) for h in val_histories]),
            "item": (np.concatenate(list(val_histories)) if len(val_histories) else np.zeros(0)).astype(np.int64)}
    flat = np.concatenate(list(train_sequences)) if len(train_sequences) else np.zeros(0, np.int64)
    items = {"count": np.bincount(flat.astype(np.int64), minlength=n_items).astype(np.int64)}
    if item_vectors is not None:
        items["vector"] = np.asarray(item_vectors, dtype=np.float32)
    return {"train": train, "val": val, "val_seen": seen, "items": items}


def tower_datasets(split: SequenceSplit, max_len: int, val_max_users: int | None = None, seed: int = 0,
                   user_columns: dict[str, np.ndarray] | None = None, item_vectors: np.ndarray | None = None
                   ) -> dict[str, dict[str, np.ndarray]]:
    """:func:`sequence_datasets` for protocol E3: trained on what the validation stage may see
    (``split.training_sequences("val")``), validated on the validation targets of up to
    ``val_max_users`` evaluated users (a seeded sample; None: all). ``user_columns``: optional
    per-user arrays (``context``, ``profile_numeric``, ``profile_categorical``), row = split user."""
    user_columns = user_columns or {}
    rows = split.eval_rows
    pick = np.arange(len(rows))
    if val_max_users and len(rows) > val_max_users:
        pick = np.sort(np.random.default_rng(seed).permutation(len(rows))[:val_max_users])
    history = split.history("val")
    return sequence_datasets(split.training_sequences("val"), [history[i] for i in pick],
                             split.targets("val")[pick], split.n_items, max_len, user_columns,
                             {k: v[rows[pick]] for k, v in user_columns.items()}, item_vectors)


def length_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool: int = 50
                   ) -> list[np.ndarray]:
    """Shuffled batches of rows with similar lengths: rows are shuffled, sorted by length within
    pools of ``pool`` batches, cut into batches, and the batches shuffled. Why: a batch is as wide
    as its longest sequence, and on short-sequence logs (median 6) random batches spent most of
    the transformer's time on padding next to one 50-item user."""
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        block = order[start:start + batch_size * pool]
        block = block[np.argsort(lengths[block], kind="stable")]
        batches.extend(block[i:i + batch_size] for i in range(0, len(block), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def should_stop(history: list[dict], patience: int) -> bool:
    """True when the best validation score is more than ``patience`` epochs old. MRR breaks ties
    in HR@10: on a small log HR@10 moves in steps of one user and often stays flat."""
    if not patience or len(history) <= patience:
        return False
    scores = [(h[SCORE], h.get("val_mrr", 0.0)) for h in history]
    best_epoch = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return best_epoch < len(history) - patience


def validate(model: UserTower, val: dict[str, np.ndarray], seen: list[np.ndarray], counts: np.ndarray, k: int = 10,
             chunk_size: int = 1024) -> dict[str, float]:
    """Full-ranking metrics of the validation targets (history excluded), equal scores ordered by
    popularity (``counts``: the items' training counts), as E3 orders every source. Why:
    ``target_ranks`` counts ties in the target's favour, and items whose vectors coincide (no ID
    embedding and no content vector: all zero) would otherwise all rank first together."""
    users = encode_users(model, {key: val[key] for key in USER_KEYS if key in val})
    items = item_matrix(model)
    order = Popularity(counts).order
    ranks = np.concatenate([target_ranks(break_ties(users[s:s + chunk_size] @ items.T, order),
                                         val["target"][s:s + chunk_size], seen[s:s + chunk_size])
                            for s in range(0, len(users), chunk_size)])
    summary = rank_summary(ranks, k)
    return {f"val_hr@{k}": summary[f"hr@{k}"], f"val_ndcg@{k}": summary[f"ndcg@{k}"], "val_mrr": summary["mrr"]}


def _seen_lists(pairs: dict[str, np.ndarray], n_rows: int) -> list[np.ndarray]:
    order = np.argsort(pairs["row"], kind="stable")
    rows, items = pairs["row"][order], pairs["item"][order]
    return np.split(items, np.searchsorted(rows, np.arange(1, n_rows)))


def _epoch_line(epoch: int, epochs: int, metrics: dict) -> str:
    return (f"[user tower] epoch {epoch + 1}/{epochs}  loss {metrics['train_loss']:.4f}  val HR@10 "
            f"{metrics['val_hr@10']:.4f}  NDCG@10 {metrics['val_ndcg@10']:.4f}  MRR {metrics['val_mrr']:.4f}  "
            f"{metrics['elapsed_s']}s")


def user_tower_loop(loop_config: dict) -> None:
    """``loop_config``: model (UserTowerConfig dict), train (UserTowerTrainConfig dict), n_items,
    profile_stats ({"mean", "std"} or None)."""
    import ray.train
    import ray.train.torch

    cfg = UserTowerTrainConfig(**loop_config["train"])
    model_cfg = UserTowerConfig(**loop_config["model"])
    n_items = int(loop_config["n_items"])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    train = shard_to_numpy(ray.train.get_dataset_shard("train"))
    val = shard_to_numpy(ray.train.get_dataset_shard("val"))
    items = shard_to_numpy(ray.train.get_dataset_shard("items"))
    seen = _seen_lists(shard_to_numpy(ray.train.get_dataset_shard("val_seen")), len(val["target"]))

    model = UserTower(model_cfg, n_items)
    if "vector" in items:
        model.set_item_vectors(items["vector"])
    model.set_trained_items(items["count"])
    if loop_config.get("profile_stats"):
        model.set_profile_stats(loop_config["profile_stats"]["mean"], loop_config["profile_stats"]["std"])
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    popularity = None
    if cfg.logq_correction:
        counts = np.r_[0.0, items["count"].astype(np.float64)] + 1.0   # +1: unseen items are not impossible
        popularity = torch.as_tensor(counts / counts.sum(), dtype=torch.float32, device=device)

    lengths = (train["items"] != 0).sum(1)
    rank = ray.train.get_context().get_world_rank()
    progress = EpochProgress("[user tower]", cfg.epochs, start_epoch) if rank == 0 else None
    started = time.time()
    generator = torch.Generator().manual_seed(cfg.seed + rank)
    for epoch in range(start_epoch, cfg.epochs):
        if rank_zero_decides(should_stop(history, cfg.patience)):
            if rank == 0:
                log_epoch(f"[user tower] stopping: no better {SCORE} for {cfg.patience} epochs")
                progress.stopped_early(f"stopped at epoch {epoch}: no better {SCORE} for {cfg.patience} epochs")
            break
        model.train()
        rng = np.random.default_rng(cfg.seed + 7919 * epoch + rank)
        losses, lr = [], optimizer.param_groups[0]["lr"]
        batches, counts = equal_steps(length_batches(lengths, cfg.batch_size, rng), "[user tower]")
        for rows in batches:
            # Right-padded: columns after the batch's longest sequence are padding only.
            width = max(1, int(lengths[rows].max()))
            batch = to_tensors({k: v for k, v in train.items() if k in USER_KEYS}, rows, device)
            batch["items"] = batch["items"][:, :width]
            targets = torch.as_tensor(train["targets"][rows][:, :width], device=device)
            negatives = torch.randint(1, n_items + 1, (cfg.negatives,), generator=generator).to(device)
            loss = model(batch, targets, negatives, popularity)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
                   "elapsed_s": round(time.time() - started, 1), **step_counts(counts),
                   **validate(unwrap(model), val, seen, items["count"])}
        best = max(best, metrics[SCORE])
        history.append(metrics)
        report_epoch(metrics, history, model, optimizer, scheduler, best, state_extra(unwrap(model)))
        if progress:
            progress.epoch_done(epoch, cfg.epochs, metrics["elapsed_s"],
                                {"loss": metrics["train_loss"], "HR@10": metrics[SCORE]})
            log_epoch(_epoch_line(epoch, cfg.epochs, metrics))
