"""JSON-encoder contrastive training (InfoNCE), one loop for CPU, GPU and clusters, two objectives:

- ``align`` (stage 2): encoder(JSON) against frozen target embeddings (image or title vectors).
- ``json_views`` (stage 1, standalone pretraining): two field-dropout views of the same JSON are
  positives, other items in the batch negatives, so the attribute tables learn which values go
  together before any image is seen. Validation: a fixed dropped view must find its full JSON.

Datasets given to the trainer: ``train`` (split across workers) and ``val`` (whole, on every worker),
with columns ``ids/<field>``, ``mask/<field>``, ``target`` (float32, 512; unused by ``json_views``)
and ``label`` (int64: rows with the same target share a label, so duplicates are positives, not
false negatives).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from recsys.losses.contrastive import InfoNCEConfig
from recsys.train_loops.checkpointing import EpochProgress, log_epoch, report_epoch, restore, unwrap
from recsys.metrics.retrieval import evaluate_pairs
# Inference helpers live beside the model; re-exported for the loop's older callers.
from recsys.models.json_encoder import JsonEncoder, JsonEncoderConfig, load_encoder, split_features
from recsys.vocab import UNKNOWN_ID
from recsys.train_loops.steps import batch_counts, step_counts


@dataclass
class AlignmentTrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.07
    grad_clip: float = 1.0
    field_dropout: float = 0.2   # share of (row, field) values replaced by UNKNOWN while training
    seed: int = 0
    val_batch: int = 64          # block size of the in-batch protocol reported next to the full gallery
    objective: str = "align"     # "align" (stage 2, to frozen targets) | "json_views" (stage 1)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"train.objective must be one of {OBJECTIVES}, got {self.objective!r}")

    @property
    def loss(self) -> InfoNCEConfig:
        return InfoNCEConfig(self.temperature)


OBJECTIVES = ("align", "json_views")


def field_dropout(ids: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], rate: float,
                  generator: torch.Generator | None = None) -> tuple[dict, dict]:
    """Replace a field's values by a single UNKNOWN with probability ``rate`` per row and field,
    so the encoder learns to cope with missing attributes."""
    if rate <= 0:
        return ids, masks
    out_ids, out_masks = {}, {}
    for name, value in ids.items():
        drop = torch.rand(value.shape[0], generator=generator, device=value.device) < rate
        dropped = torch.zeros_like(value)
        dropped[:, 0] = UNKNOWN_ID
        drop_mask = torch.zeros_like(masks[name])
        drop_mask[:, 0] = True
        out_ids[name] = torch.where(drop[:, None], dropped, value)
        out_masks[name] = torch.where(drop[:, None], drop_mask, masks[name])
    return out_ids, out_masks


def embed_dataset(model: torch.nn.Module, dataset, fields: list[str], device, cfg: "AlignmentTrainConfig",
                  batch_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(queries, targets) for every row of a Ray dataset shard, in order. ``align``: encoder output vs
    the frozen target column; ``json_views``: a dropped view (fixed seed) vs the full JSON."""
    model.eval()
    queries, targets = [], []
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1_000_003)
    with torch.no_grad():
        for batch in dataset.iter_torch_batches(batch_size=batch_size, device=device):
            ids, masks = split_features(batch, fields)
            if cfg.objective == "json_views":
                queries.append(model(*field_dropout(ids, masks, cfg.field_dropout, generator)).float().cpu().numpy())
                targets.append(model(ids, masks).float().cpu().numpy())
            else:
                queries.append(model(ids, masks).float().cpu().numpy())
                targets.append(batch["target"].float().cpu().numpy())
    return np.concatenate(queries), np.concatenate(targets)


def train_alignment_loop(loop_config: dict) -> None:
    """Ray Train worker loop. ``loop_config``: encoder (JsonEncoderConfig dict), train
    (AlignmentTrainConfig dict), vocab_sizes, and optionally ``init_model`` (a stage-1 ``state.pt``
    whose weights start a fresh run; a Ray Train checkpoint, when resuming, takes precedence)."""
    import ray.data
    import ray.train
    import ray.train.torch

    # One line per epoch (below) is the progress; per-iteration dataset bars would bury it.
    ray.data.DataContext.get_current().enable_progress_bars = False
    enc_cfg = JsonEncoderConfig(**loop_config["encoder"])
    cfg = AlignmentTrainConfig(**loop_config["train"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(JsonEncoder(enc_cfg, loop_config["vocab_sizes"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    loss_fn = cfg.loss.build()
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    if not history and loop_config.get("init_model"):  # stage 2 starts from the stage-1 encoder
        unwrap(model).load_state_dict(load_encoder(loop_config["init_model"], device).state_dict())

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    rank = ray.train.get_context().get_world_rank()
    started = time.time()
    progress = EpochProgress(f"JSON encoder ({cfg.objective})", cfg.epochs, start_epoch) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        losses, lr = [], optimizer.param_groups[0]["lr"]
        for batch in train_shard.iter_torch_batches(batch_size=cfg.batch_size, device=device,
                                                    local_shuffle_buffer_size=cfg.batch_size * 8,
                                                    local_shuffle_seed=cfg.seed + epoch, drop_last=True):
            features = split_features(batch, enc_cfg.fields)
            ids, masks = field_dropout(*features, cfg.field_dropout)
            with torch.autocast(device_type=device.type, enabled=use_amp):
                queries = model(ids, masks)
                # Stage 1: a second, independently dropped view of the same JSON is the positive.
                targets = (model(*field_dropout(*features, cfg.field_dropout)) if cfg.objective == "json_views"
                           else batch["target"])
                loss = loss_fn(queries.float(), targets.float(), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
        scheduler.step()

        queries, targets = embed_dataset(unwrap(model), val_shard, enc_cfg.fields, device, cfg)
        evaluation = evaluate_pairs(queries, targets, cfg.val_batch)
        # same batch size as one worker's training batch: comparable with one worker's training loss (with W
        # workers the training loss is over the W x B gathered rows, with more negatives)
        with torch.no_grad():
            blocks = range(0, len(queries) - cfg.batch_size + 1, cfg.batch_size)
            val_loss = float(np.mean([float(loss_fn(torch.as_tensor(queries[s:s + cfg.batch_size]),
                                                    torch.as_tensor(targets[s:s + cfg.batch_size])))
                                      for s in blocks])) if len(blocks) else float("nan")
        # Ray Train splits "train" into equal row counts (DataConfig's equal split) and every worker
        # drops its last partial batch, so the counts agree; recorded to show it (``recsys.train_loops.steps``)
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "val_loss": val_loss, "lr": lr, "elapsed_s": round(time.time() - started, 1),
                   **step_counts(batch_counts(len(losses))),
                   **{f"val_{k}": v for k, v in evaluation["full"].items()},
                   **{f"val_inbatch_{k}": v for k, v in evaluation[f"inbatch{cfg.val_batch}"].items()},
                   **{f"val_{k}": v for k, v in evaluation["similarity"].items()}}
        best = max(best, metrics["val_top5"])
        history.append(metrics)
        report_epoch(metrics, history, model, optimizer, scheduler, best,
                     {"encoder": asdict(enc_cfg), "vocab_sizes": dict(loop_config["vocab_sizes"])})
        if progress:
            progress.epoch_done(epoch, cfg.epochs, metrics["elapsed_s"],
                                {"loss": metrics["train_loss"], "top5": metrics["val_top5"], "mrr": metrics["val_mrr"]})
            log_epoch(f"epoch {epoch + 1}/{cfg.epochs}  loss {metrics['train_loss']:.4f}  val top1 "
                  f"{metrics['val_top1']:.4f} top5 {metrics['val_top5']:.4f} mrr {metrics['val_mrr']:.4f}  "
                  f"{metrics['elapsed_s']}s")
