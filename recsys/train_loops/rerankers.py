"""Ray Train worker loops for the rerankers (``recsys.models.rerankers``).

Datasets (``recsys.data.candidate_lists.CandidateLists.rows``): ``train`` and ``val`` hold one row per
user list (items, mask, label, standardized dense features, history); ``items`` holds the item
lookups, row ``index`` = item index (tokens, category, popularity = log1p count, and optionally
``vector``, the item-tower vectors the listwise diversity term measures similarity with).

- :func:`deepfm_loop`: pointwise BCE (``recsys.losses.ranking.pointwise_loss``). Each epoch every
  training list with its target listed gives
  the target, ``list_negatives`` other candidates of the same list (the hard negatives retrieval
  let through) and ``catalog_negatives`` random catalog items (dense features of a non-retrieved
  item: ``retrieved`` = 0), scored as one small list per user so the history is pooled once.
- :func:`listwise_loop`: one list per user, ``recsys.losses.ranking.ListwiseLoss``
  (softmax CE + diversity term).

Inference (``load_reranker``, ``score_lists``) lives beside the models in ``recsys.models.rerankers``.
Both select checkpoints by validation NDCG@10 over whole validation lists (a target missing from
a list counts as a miss, as in the final report).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from recsys.eval.rerankers import list_target_ranks
from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k
from recsys.losses.ranking import ListwiseLoss, ListwiseLossConfig, pointwise_loss
from recsys.models.rerankers import build_reranker, init_from_item_tower, list_tensors, score_lists
from recsys.train_loops.checkpointing import EpochProgress, log_epoch, report_epoch, restore, unwrap
from recsys.train_loops.optim import optimizer_step
from recsys.models.item_towers import load_tower
from recsys.train_loops.item_tower import shard_to_numpy
from recsys.train_loops.steps import equal_steps, step_counts


@dataclass
class DeepFMTrainConfig:
    epochs: int = 6
    batch_lists: int = 32         # users per step (each: target + negatives)
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    list_negatives: int = 8       # other candidates of the same list
    catalog_negatives: int = 2    # random catalog items
    freeze_tokens: bool = False   # with an item tower: keep its token table fixed
    seed: int = 0


@dataclass
class ListwiseTrainConfig:
    epochs: int = 6
    batch_lists: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    grad_clip: float = 1.0
    diversity_weight: float = 1.0      # 0: relevance only
    diversity_temperature: float = 1.0  # < 1 focuses the penalty on the top of the list
    freeze_tokens: bool = False
    seed: int = 0


def validation_metrics(model, rows, device) -> dict:
    ranks = list_target_ranks(score_lists(model, rows, device), rows["label"], rows["mask"])
    return {"val_ndcg@10": ndcg_at_k(ranks, 10), "val_hr@10": hit_rate_at_k(ranks, 10)}


def items_to_numpy(shard) -> dict[str, np.ndarray]:
    """The ``items`` dataset as arrays ordered by item index (Ray Data may reorder rows)."""
    columns = shard_to_numpy(shard)
    order = np.argsort(columns["index"])
    return {k: v[order] for k, v in columns.items()}


def _setup(loop_config: dict, cfg):
    """Model (from the item lookups, token table from the item tower when named), optimizer,
    scheduler, restored state and the data arrays, on this worker."""
    import ray.train
    import ray.train.torch

    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    items = items_to_numpy(ray.train.get_dataset_shard("items"))
    model = build_reranker(loop_config["model"], loop_config["model_config"], items["tokens"], items["category"],
                           loop_config["vocab_size"], loop_config["n_categories"], loop_config["n_dense"])
    if loop_config.get("init_tower"):
        init_from_item_tower(model, load_tower(loop_config["init_tower"]), freeze=cfg.freeze_tokens)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    train = shard_to_numpy(ray.train.get_dataset_shard("train"))
    val = shard_to_numpy(ray.train.get_dataset_shard("val"))
    return device, items, model, optimizer, scheduler, start_epoch, best, history, train, val


def _finish_epoch(loop_config, cfg, epoch, losses, lr, started, model, val, device, history, best, optimizer,
                  scheduler, progress, stage, counts) -> float:
    scheduler.step()
    metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
               "elapsed_s": round(time.time() - started, 1), **step_counts(counts),
               **validation_metrics(unwrap(model), val, device)}
    best = max(best, metrics["val_ndcg@10"])
    history.append(metrics)
    report_epoch(metrics, history, model, optimizer, scheduler, best,
                 {"reranker": loop_config["model"], "model_config": loop_config["model_config"],
                  "vocab_size": loop_config["vocab_size"], "n_categories": loop_config["n_categories"],
                  "n_dense": loop_config["n_dense"]})
    if progress:
        progress.epoch_done(epoch, cfg.epochs, metrics["elapsed_s"],
                            {"loss": metrics["train_loss"], "ndcg@10": metrics["val_ndcg@10"]})
        log_epoch(f"{stage} epoch {epoch + 1}/{cfg.epochs}  loss {metrics['train_loss']:.4f}  val ndcg@10 "
              f"{metrics['val_ndcg@10']:.4f}  hr@10 {metrics['val_hr@10']:.4f}  {metrics['elapsed_s']}s")
    return best


def pointwise_samples(rows: dict[str, np.ndarray], items: dict[str, np.ndarray], absent_z: np.ndarray,
                      popularity_col: int, cfg: DeepFMTrainConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One small list per training list with its target listed: [target, list negatives, catalog
    negatives] (mask False where a list had too few other candidates)."""
    positive = (rows["label"] > 0) & rows["mask"]
    keep = np.flatnonzero(positive.any(axis=1))
    positive, valid = positive[keep], rows["mask"][keep]
    n = len(keep)
    pos = np.argmax(positive, axis=1)
    keys = np.where(valid & ~positive, rng.random(valid.shape), np.inf)
    negatives = np.argsort(keys, axis=1)[:, :cfg.list_negatives]
    picked = np.concatenate([pos[:, None], negatives], axis=1)
    list_items = np.take_along_axis(rows["items"][keep], picked, axis=1)
    list_mask = np.concatenate([np.ones((n, 1), bool), np.isfinite(np.take_along_axis(keys, negatives, axis=1))], 1)
    list_dense = np.take_along_axis(rows["dense"][keep], picked[:, :, None], axis=1)
    n_catalog = len(items["index"]) - 1
    catalog = rng.integers(1, n_catalog + 1, (n, cfg.catalog_negatives)) if n_catalog else np.zeros((n, 0), int)
    catalog_dense = np.broadcast_to(absent_z, (*catalog.shape, len(absent_z))).copy()
    catalog_dense[:, :, popularity_col] = items["popularity_z"][catalog]
    label = np.zeros(list_mask.shape[1] + catalog.shape[1], dtype=np.float32)
    label[0] = 1.0
    return {"items": np.concatenate([list_items, catalog], axis=1),
            "mask": np.concatenate([list_mask, np.ones(catalog.shape, bool)], axis=1),
            "dense": np.concatenate([list_dense, catalog_dense], axis=1).astype(np.float32),
            "label": np.broadcast_to(label, (n, len(label))).copy(), "history": rows["history"][keep]}


def deepfm_loop(loop_config: dict) -> None:
    """``loop_config``: model ("deepfm"), model_config, train (DeepFMTrainConfig dict), vocab_size,
    n_categories, n_dense, init_tower (tower state path or None), absent_dense_z (the standardized
    dense row of a non-retrieved item), popularity_col and popularity mean/std (to standardize
    the catalog negatives' popularity)."""
    import ray.train

    cfg = DeepFMTrainConfig(**loop_config["train"])
    device, items, model, optimizer, scheduler, start_epoch, best, history, train, val = _setup(loop_config, cfg)
    mean, std = loop_config["popularity_mean"], loop_config["popularity_std"]
    items["popularity_z"] = ((items["popularity"] - mean) / std).astype(np.float32)
    absent_z = np.asarray(loop_config["absent_dense_z"], dtype=np.float32)
    rank, started, stage = ray.train.get_context().get_world_rank(), time.time(), "[deepfm]"
    progress = EpochProgress(stage, cfg.epochs, start_epoch) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        rng = np.random.default_rng(cfg.seed + 7919 * epoch + rank)
        samples = pointwise_samples(train, items, absent_z, loop_config["popularity_col"], cfg, rng)
        order = rng.permutation(len(samples["items"]))
        batches, counts = equal_steps([order[s:s + cfg.batch_lists] for s in range(0, len(order), cfg.batch_lists)],
                                      stage)
        losses, lr = [], optimizer.param_groups[0]["lr"]
        for rows in batches:
            b = list_tensors(samples, rows, device)
            logits = model(b["items"], b["history"], b["dense"], b["mask"])
            loss = pointwise_loss(logits, b["label"], b["mask"])
            losses.append(optimizer_step(model, optimizer, loss, cfg.grad_clip))
        best = _finish_epoch(loop_config, cfg, epoch, losses, lr, started, model, val, device, history, best,
                             optimizer, scheduler, progress, stage, counts)


def listwise_loop(loop_config: dict) -> None:
    """``loop_config``: model ("listwise"), model_config, train (ListwiseTrainConfig dict),
    vocab_size, n_categories, n_dense, init_tower. The diversity term uses the ``items`` dataset's
    ``vector`` column when present, else the model's own (detached) item vectors."""
    import ray.train

    cfg = ListwiseTrainConfig(**loop_config["train"])
    device, items, model, optimizer, scheduler, start_epoch, best, history, train, val = _setup(loop_config, cfg)
    vectors = torch.as_tensor(items["vector"], device=device) if "vector" in items else None
    objective = ListwiseLoss(ListwiseLossConfig(cfg.diversity_weight, cfg.diversity_temperature))
    rank, started, stage = ray.train.get_context().get_world_rank(), time.time(), "[listwise]"
    progress = EpochProgress(stage, cfg.epochs, start_epoch) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        rng = np.random.default_rng(cfg.seed + 7919 * epoch + rank)
        order = rng.permutation(len(train["items"]))
        batches, counts = equal_steps([order[s:s + cfg.batch_lists] for s in range(0, len(order), cfg.batch_lists)],
                                      stage)
        losses, lr = [], optimizer.param_groups[0]["lr"]
        for rows in batches:
            b = list_tensors(train, rows, device)
            mask = b["mask"].bool()
            scores = model(b["items"], b["history"], b["dense"], mask)
            item_vectors = None
            if objective.needs_vectors:
                item_vectors = (vectors[b["items"]] if vectors is not None else
                                unwrap(model).embedder.item_fields(b["items"]).sum(dim=-2).detach())
            loss = objective(scores, b["label"], mask, item_vectors)
            losses.append(optimizer_step(model, optimizer, loss, cfg.grad_clip))
        best = _finish_epoch(loop_config, cfg, epoch, losses, lr, started, model, val, device, history, best,
                             optimizer, scheduler, progress, stage, counts)


LOOPS = {"deepfm": deepfm_loop, "listwise": listwise_loop}

