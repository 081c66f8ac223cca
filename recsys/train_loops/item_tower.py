"""Ray Train worker loops for the item towers.

- Stage 1 (:func:`simcse_loop`): a tower (concat / coarse_to_fine / unified) pretrained with SimCSE
  on STD/RE tokens: two complementary masked views of each item are positives, NT-Xent.
- Stage 2 (:func:`adapter_loop`): a :class:`MetricAdapter` (512 -> 128) on the frozen tower's
  vectors, triplet margin loss with a hard-negative miner (``recsys.losses.metric``), batches from
  the hierarchical sampler (sibling categories together) or uniform random batches (the control).

Each worker reads its shard of ``train`` (Ray Data) into memory once and builds its own batches:
the hierarchical sampler needs to see labels across the shard, which a streaming iterator cannot
offer. ``val`` is given whole to every worker. Validation: ``category_hit@10`` within the
validation items (the selection metric) and the same-vs-sibling cosine gap.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from recsys.metrics.neighbours import category_hit, same_vs_sibling_gap, top_k_neighbours
from recsys.data.item_catalog import CatalogConfig, LeakFreeConfig, SplitConfig
from recsys.losses.contrastive import NTXentConfig
from recsys.losses.metric import TripletConfig
from recsys.models.item_towers import (FEATURE_PREFIXES, ItemTowerConfig, MetricAdapter, adapt, batch_to_tensors,
                                       build_item_tower, encode_items, simcse_views)
from recsys.models.registry import architecture, named_config
from recsys.samplers import HierarchicalBatchSampler
from recsys.train_loops.scaling import ScalingSettings, TaskResources
from recsys.train_loops.checkpointing import EpochProgress, log_epoch, report_epoch, restore, unwrap
from recsys.train_loops.optim import optimizer_step
from recsys.train_loops.steps import equal_steps, step_counts


@dataclass
class SimCSEConfig:
    epochs: int = 4
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.05
    grad_clip: float = 1.0
    re_drop: float = 0.5          # view A (STD-heavy) drops this share of RE tokens
    std_drop: float = 0.5         # view B (RE-heavy) drops this share of STD tokens
    feature_dropout: float = 0.1
    title_drop: float = 0.3
    seed: int = 0

    @property
    def loss(self) -> NTXentConfig:
        """The loss the loop builds: NT-Xent over the two views at ``temperature``."""
        return NTXentConfig(self.temperature)


@dataclass
class AdapterConfig:
    epochs: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 0.2
    triplets: str = "semihard"    # the miner's triplet type: all | hard | semihard | easy
    sampler: str = "hierarchical"  # hierarchical (siblings together) | random
    parents_per_batch: int = 4
    children_per_parent: int = 4
    samples_per_child: int = 8    # batch = parents x children x samples = 128
    hidden_dim: int | None = 512  # None: one linear layer
    seed: int = 0

    def __post_init__(self):
        if self.sampler not in ("hierarchical", "random"):
            raise ValueError(f"adapter.sampler must be 'hierarchical' or 'random', got {self.sampler!r}")

    @property
    def batch_size(self) -> int:
        return self.parents_per_batch * self.children_per_parent * self.samples_per_child

    @property
    def loss(self) -> TripletConfig:
        """The loss + miner the loop builds (pytorch-metric-learning)."""
        return TripletConfig(self.margin, self.triplets)


@dataclass
class TrainItemTowerConfig:
    """``ray_jobs.train_item_tower``: one tower, stage 1 + stage 2, exported item vectors."""
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    tower_name: str = "unified"
    tower: ItemTowerConfig | str = field(default_factory=ItemTowerConfig)  # or a configs/models.yaml name
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    adapter_dim: int = 128
    split: SplitConfig = field(default_factory=SplitConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    output_root: str = "artifacts/item_tower"
    run_name: str | None = None   # fixed run directory name: re-running it resumes from its checkpoints
    k: int = 10

    def __post_init__(self):
        if isinstance(self.tower, str):  # a named block: its architecture and which tower it is
            self.tower_name = architecture(self.tower, "item_tower")["tower"]
            self.tower = named_config(self.tower, ItemTowerConfig, "item_tower", drop=("tower",))


@dataclass
class ItemTowerEvalConfig:
    """``ray_jobs.evaluate_item_towers``: towers x (no adapter | adapter per sampler) on one catalog."""
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    towers: list[str] = field(default_factory=lambda: ["concat", "coarse_to_fine", "unified"])
    tower: ItemTowerConfig | str = field(default_factory=ItemTowerConfig)  # or a configs/models.yaml name
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    samplers: list[str] = field(default_factory=lambda: ["random", "hierarchical"])
    split: SplitConfig = field(default_factory=lambda: SplitConfig(unseen_category_fraction=0.05))
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    k: int = 10
    # Leak-free by default: the metrics' label level (and finer ones, and fields copying it) is no input.
    leak_free: LeakFreeConfig = field(default_factory=lambda: LeakFreeConfig(enabled=True))
    baselines: list[str] = field(default_factory=lambda: ["tfidf", "minilm"])   # same inputs, same run
    baseline_task: TaskResources = field(default_factory=TaskResources)   # each baseline's Ray task (MiniLM: num_gpus)
    enriched: str | None = None   # an enrich run's items/: raw (its additions withheld) vs enriched, one split

    def __post_init__(self):  # a named block gives the shared size settings
        self.tower = named_config(self.tower, ItemTowerConfig, "item_tower", drop=("tower",))
        from recsys.eval.item_space import BASELINES
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"baselines: unknown {unknown}; known {list(BASELINES)}")


def shard_to_numpy(shard) -> dict[str, np.ndarray]:
    """A worker's whole dataset shard as numpy columns."""
    parts: dict[str, list] = {}
    for batch in shard.iter_batches(batch_size=8192, batch_format="numpy"):
        for key, value in batch.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(values) for key, values in parts.items()}


def validation_metrics(vectors: np.ndarray, fine: np.ndarray, parent: np.ndarray, k: int = 10) -> dict:
    """category_hit@k among the validation items themselves, and the same-vs-sibling gap."""
    k = min(k, len(vectors) - 1)
    neighbours = top_k_neighbours(vectors, vectors, k, np.arange(len(vectors)))
    gap = same_vs_sibling_gap(vectors, fine, parent, pairs=50_000)
    return {"val_category_hit@10": category_hit(neighbours, fine, fine), "val_gap": gap["gap"],
            "val_same_cosine": gap["same_mean"], "val_sibling_cosine": gap["sibling_mean"]}


def _epoch_line(stage: str, epoch: int, epochs: int, metrics: dict) -> str:
    return (f"{stage} epoch {epoch + 1}/{epochs}  loss {metrics['train_loss']:.4f}  val category_hit@10 "
            f"{metrics['val_category_hit@10']:.4f}  gap {metrics['val_gap']:.4f}  {metrics['elapsed_s']}s")


def _shown(metrics: dict) -> dict:
    return {"loss": metrics["train_loss"], "category_hit@10": metrics["val_category_hit@10"], "gap": metrics["val_gap"]}


def simcse_loop(loop_config: dict) -> None:
    """Stage 1. ``loop_config``: tower (name), tower_config (ItemTowerConfig dict), train
    (SimCSEConfig dict), vocab_size, n_fields. Datasets: item-feature columns plus ``fine`` and
    ``parent`` labels (validation only)."""
    import ray.train
    import ray.train.torch

    cfg = SimCSEConfig(**loop_config["train"])
    tower_cfg = ItemTowerConfig(**loop_config["tower_config"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(build_item_tower(loop_config["tower"], tower_cfg,
                                                           loop_config["vocab_size"], loop_config["n_fields"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    loss_fn = cfg.loss.build()
    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    train = shard_to_numpy(ray.train.get_dataset_shard("train"))
    val = shard_to_numpy(ray.train.get_dataset_shard("val"))
    keys = [k for k in train if k.startswith(FEATURE_PREFIXES)]
    started, rank = time.time(), ray.train.get_context().get_world_rank()
    stage = f"[{loop_config['tower']} simcse]"
    progress = EpochProgress(stage, cfg.epochs, start_epoch) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        rng = np.random.default_rng(cfg.seed + 7919 * epoch + rank)
        generator = torch.Generator(device=device).manual_seed(cfg.seed + epoch)
        order = rng.permutation(len(train[keys[0]]))
        batches, counts = equal_steps([order[s:s + cfg.batch_size]
                                       for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)], stage)
        losses, lr = [], optimizer.param_groups[0]["lr"]
        for rows in batches:
            batch = batch_to_tensors({k: train[k] for k in keys}, rows, device)
            view_a, view_b = simcse_views(batch, generator, cfg.re_drop, cfg.std_drop, cfg.feature_dropout,
                                          cfg.title_drop)
            loss = loss_fn(model(view_a), model(view_b))
            losses.append(optimizer_step(model, optimizer, loss, cfg.grad_clip))
        scheduler.step()
        vectors = encode_items(unwrap(model), val, device)
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
                   "elapsed_s": round(time.time() - started, 1), **step_counts(counts),
                   **validation_metrics(vectors, val["fine"], val["parent"])}
        best = max(best, metrics["val_category_hit@10"])
        history.append(metrics)
        report_epoch(metrics, history, model, optimizer, scheduler, best,
                     {"tower": loop_config["tower"], "tower_config": asdict(tower_cfg),
                      "vocab_size": loop_config["vocab_size"], "n_fields": loop_config["n_fields"]})
        if progress:
            progress.epoch_done(epoch, cfg.epochs, metrics["elapsed_s"], _shown(metrics))
            log_epoch(_epoch_line(stage, epoch, cfg.epochs, metrics))


def adapter_loop(loop_config: dict) -> None:
    """Stage 2. ``loop_config``: train (AdapterConfig dict), in_dim, out_dim. Datasets: ``vector``
    (frozen tower outputs), ``fine`` and ``parent`` category labels."""
    import ray.train
    import ray.train.torch

    cfg = AdapterConfig(**loop_config["train"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(MetricAdapter(loop_config["in_dim"], loop_config["out_dim"], cfg.hidden_dim))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    loss_fn, miner = cfg.loss.build()
    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    train = shard_to_numpy(ray.train.get_dataset_shard("train"))
    val = shard_to_numpy(ray.train.get_dataset_shard("val"))
    rank = ray.train.get_context().get_world_rank()
    labels = np.stack([train["fine"], train["parent"]], axis=1)
    vectors = torch.as_tensor(train["vector"], device=device)
    fine = torch.as_tensor(train["fine"], device=device)
    started = time.time()
    stage = f"[adapter {cfg.sampler}]"
    progress = EpochProgress(stage, cfg.epochs, start_epoch) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if cfg.sampler == "hierarchical":
            sampler = HierarchicalBatchSampler(labels, cfg.parents_per_batch, cfg.children_per_parent,
                                               cfg.samples_per_child, seed=cfg.seed + rank)
            sampler.set_epoch(epoch)
            batches = list(sampler)
        else:  # same number of same-size batches, uniform over items
            order = np.random.default_rng(cfg.seed + 7919 * epoch + rank).permutation(len(labels))
            batches = [order[s:s + cfg.batch_size] for s in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size)]
        batches, counts = equal_steps(batches, stage)
        losses, mined, lr = [], [], optimizer.param_groups[0]["lr"]
        for rows in batches:
            rows = torch.as_tensor(np.asarray(rows), device=device)
            embeddings, batch_labels = model(vectors[rows]), fine[rows]
            triplets = miner(embeddings, batch_labels)
            loss = loss_fn(embeddings, batch_labels, triplets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            mined.append(len(triplets[0]))
        scheduler.step()
        adapted = adapt(unwrap(model).cpu(), val["vector"])
        unwrap(model).to(device)
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr,
                   "mined_triplets_per_batch": float(np.mean(mined)) if mined else 0.0,
                   "elapsed_s": round(time.time() - started, 1), **step_counts(counts),
                   **validation_metrics(adapted, val["fine"], val["parent"])}
        best = max(best, metrics["val_category_hit@10"])
        history.append(metrics)
        report_epoch(metrics, history, model, optimizer, scheduler, best,
                     {"in_dim": loop_config["in_dim"], "out_dim": loop_config["out_dim"],
                      "hidden_dim": cfg.hidden_dim})
        if progress:
            progress.epoch_done(epoch, cfg.epochs, metrics["elapsed_s"], _shown(metrics))
            log_epoch(_epoch_line(stage, epoch, cfg.epochs, metrics))
