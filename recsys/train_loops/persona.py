"""Ray Train worker loop for the persona two-tower (:mod:`recsys.models.persona`).

Datasets (numpy columns, see ``ray_jobs/train_persona.py``):
- ``train``, split across workers: one row per (customer, purchased candidate) pair: customer token
  ids ``c_ids``, z-scored numerics ``c_num`` (absent when there are none), ``user`` index and the
  positive product's candidate index ``item``.
- ``items``, whole on every worker: product token ids ``i_ids`` per candidate and ``category``.
- ``val``, whole on every worker: one row per held-out (customer, article) pair; ``item`` is the
  candidate index or -1 (an article never bought in training cannot be ranked but still counts),
  ``category`` the article's category.

Each epoch: triplet margin loss over every purchase, each with ``negatives`` products drawn
uniformly from the candidates the customer did not buy; Adam at a constant lr (the study's recipe).
Validation: hit@k, category_hit@k and AUC (share of candidates a held-out product outscores,
averaged over pairs). AUC is the default selection score: hit@3 on a few hundred customers moves in
steps of 1/n and is mostly zero early on, AUC moves with every pair.
"""
from __future__ import annotations

import time
from typing import Any
from dataclasses import dataclass, field

import numpy as np
import torch

from recsys.metrics.hits import category_hit_at_k, hit_at_k, top_k
from recsys.eval.persona import CustomerFieldsConfig, PersonaDataConfig, PersonaEvalConfig, ProductFieldsConfig
from recsys.losses.persona import PersonaLossConfig
from recsys.models.persona import PersonaModelConfig, PersonaTwoTower, encode, model_state_extra, sample_negatives
from recsys.models.registry import named_config
from recsys.train_loops.checkpointing import log_epoch, report_epoch, restore, unwrap
from recsys.train_loops.scaling import ScalingSettings
from recsys.train_loops.steps import equal_steps, step_counts


@dataclass
class PersonaTrainConfig:
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    margin: float = 1.0
    negatives: int = 4            # sampled non-purchased products per purchase
    k: int = 3
    select_on: str = "val_auc"    # val_auc | val_hit@<k> | val_category_hit@<k>
    seed: int = 0

    def __post_init__(self):
        allowed = ("val_auc", f"val_hit@{self.k}", f"val_category_hit@{self.k}")
        if self.select_on not in allowed:
            raise ValueError(f"train.select_on: expected one of {allowed}, got {self.select_on!r}")

    @property
    def loss(self) -> PersonaLossConfig:
        return PersonaLossConfig(self.margin)


@dataclass
class TrainPersonaConfig:
    """``ray_jobs.train_persona``: data, fields, model, training and the protocol's settings."""
    data: PersonaDataConfig = field(default_factory=PersonaDataConfig)
    customer: CustomerFieldsConfig = field(default_factory=CustomerFieldsConfig)
    product: ProductFieldsConfig = field(default_factory=ProductFieldsConfig)
    model: PersonaModelConfig | str = field(default_factory=PersonaModelConfig)  # or a configs/models.yaml name
    train: PersonaTrainConfig = field(default_factory=PersonaTrainConfig)
    evaluation: PersonaEvalConfig = field(default_factory=PersonaEvalConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    example_profile: dict[str, Any] = field(default_factory=dict)   # printed with its top 5 at the end
    output_root: str = "artifacts/persona"
    run_name: str | None = None                  # fixed run directory name: re-running it resumes

    def __post_init__(self):
        self.model = named_config(self.model, PersonaModelConfig, "persona")  # a configs/models.yaml name, or the block


def train_epoch(model: torch.nn.Module, optimizer, loss_fn, train: dict[str, np.ndarray], item_ids: np.ndarray,
                cfg: PersonaTrainConfig, rng: np.random.Generator, device="cpu") -> tuple[float, list[int]]:
    """One pass over the purchases in ``train``; returns the mean batch loss and every worker's
    batch count (``equal_steps``). Plain torch (no Ray)."""
    n_items = len(item_ids)
    candidates = np.arange(n_items)
    bought = np.unique(train["user"] * n_items + train["item"])
    products = torch.as_tensor(item_ids, device=device)
    c_ids = torch.as_tensor(train["c_ids"], device=device)
    c_num = torch.as_tensor(train["c_num"], device=device) if "c_num" in train else None
    model.train()
    losses = []
    order = rng.permutation(len(train["item"]))
    batches, counts = equal_steps([order[s:s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)],
                                  "[persona]")
    for rows in batches:
        negatives = sample_negatives(train["user"][rows], candidates, bought, n_items, cfg.negatives, rng)
        product_rows = torch.as_tensor(np.concatenate([train["item"][rows], negatives.reshape(-1)]), device=device)
        anchor, product = model(c_ids[rows], None if c_num is None else c_num[rows], products[product_rows])
        positive, negative = product[:len(rows)], product[len(rows):]
        # negatives are row-major (customer 0's m negatives first), so repeat anchors and positives in place
        loss = loss_fn(anchor.repeat_interleave(cfg.negatives, 0), positive.repeat_interleave(cfg.negatives, 0),
                       negative)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return (float(np.mean(losses)) if losses else float("nan")), counts


def held_out_sets(rows: dict[str, np.ndarray]) -> tuple[np.ndarray, list[set], list[set], np.ndarray]:
    """Held-out pairs grouped per user: (users, candidate sets, category sets, first row of each user)."""
    users, first = np.unique(rows["user"], return_index=True)
    position = {u: i for i, u in enumerate(users.tolist())}
    items, categories = [set() for _ in users], [set() for _ in users]
    for user, item, category in zip(rows["user"].tolist(), rows["item"].tolist(), rows["category"].tolist()):
        if item >= 0:
            items[position[user]].add(item)
        categories[position[user]].add(category)
    return users, items, categories, first


def validation_metrics(model: PersonaTwoTower, val: dict[str, np.ndarray], items: dict[str, np.ndarray], k: int,
                       device="cpu") -> dict:
    _, relevant, relevant_categories, first = held_out_sets(val)
    customers = encode(model.customer, val["c_ids"][first], val["c_num"][first] if "c_num" in val else None, device)
    products = encode(model.product, items["i_ids"], None, device)
    scores = customers @ products.T
    top = top_k(scores, k)
    aucs = []
    for row, wanted in enumerate(relevant):
        for item in wanted:  # ties count half, the item itself not at all
            s = scores[row, item]
            aucs.append(((scores[row] < s).sum() + 0.5 * ((scores[row] == s).sum() - 1)) / max(1, len(products) - 1))
    return {f"val_hit@{k}": hit_at_k(top, relevant),
            f"val_category_hit@{k}": category_hit_at_k(top, relevant_categories, items["category"]),
            "val_auc": float(np.mean(aucs)) if aucs else float("nan")}


def _epoch_line(epoch: int, epochs: int, metrics: dict, k: int) -> str:
    return (f"[persona] epoch {epoch + 1}/{epochs}  loss {metrics['train_loss']:.4f}  val hit@{k} "
            f"{metrics[f'val_hit@{k}']:.4f}  category_hit@{k} {metrics[f'val_category_hit@{k}']:.4f}  "
            f"auc {metrics['val_auc']:.4f}  {metrics['elapsed_s']}s")


def persona_loop(loop_config: dict) -> None:
    """``loop_config``: train (PersonaTrainConfig dict), model (PersonaModelConfig dict), customer_sizes,
    n_numeric, product_sizes."""
    import ray.train
    import ray.train.torch

    from recsys.train_loops.item_tower import shard_to_numpy

    cfg = PersonaTrainConfig(**loop_config["train"])
    model_cfg = PersonaModelConfig(**loop_config["model"])
    extra = model_state_extra(model_cfg, loop_config["customer_sizes"], loop_config["n_numeric"],
                              loop_config["product_sizes"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(PersonaTwoTower(extra["customer_sizes"], extra["n_numeric"],
                                                          extra["product_sizes"], model_cfg))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)  # constant lr; kept for resume
    loss_fn = cfg.loss.build()
    start_epoch, best, history = restore(model, optimizer, scheduler, device)
    train = shard_to_numpy(ray.train.get_dataset_shard("train"))
    items = shard_to_numpy(ray.train.get_dataset_shard("items"))
    val = shard_to_numpy(ray.train.get_dataset_shard("val"))
    rank = ray.train.get_context().get_world_rank()
    started = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        rng = np.random.default_rng(cfg.seed + 7919 * epoch + rank)
        lr = optimizer.param_groups[0]["lr"]
        loss, counts = train_epoch(model, optimizer, loss_fn, train, items["i_ids"], cfg, rng, device)
        scheduler.step()
        metrics = {"epoch": epoch, "train_loss": loss, "lr": lr, **step_counts(counts),
                   **validation_metrics(unwrap(model), val, items, cfg.k, device),
                   "elapsed_s": round(time.time() - started, 1)}
        best = max(best, metrics[cfg.select_on])
        history.append(metrics)
        report_epoch(metrics, history, model, optimizer, scheduler, best, extra)
        if rank == 0:
            log_epoch(_epoch_line(epoch, cfg.epochs, metrics, cfg.k))
