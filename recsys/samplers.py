"""Hard-negative batching for metric learning on the category hierarchy.

:class:`HierarchicalBatchSampler` builds every batch from sibling categories: it draws a few parent
categories, several child categories inside each parent, then ``samples_per_child`` items per
child. A coat then meets jackets and shirts meet T-shirts in the same batch, so the triplet miner
finds its hard negatives among siblings instead of among shoes.

Labels use pytorch-metric-learning's two-column format ``[fine, coarse]`` (e.g.
``features["hierarchy_labels"][:, [2, 1]]`` for articleType under subCategory). A child is a
(coarse, fine) pair, so a fine label that occurs under two parents (Myntra's "Tshirts" under both
Topwear and Loungewear) is two children.

Why not ``pytorch_metric_learning.samplers.HierarchicalSampler`` (read in 2.9.0): it yields
``batches_per_super_tuple`` batches for every *combination* of parents, so an epoch's length and
mix ignore how many items each parent holds (Myntra's "Home Furnishing", 1 item, gets as many
batches as Topwear, 15k items); a parent with a single child gives a sub-batch without any sibling and shorter
than asked (20 of Myntra's 45 subCategories have one articleType, Watches among them with 2.5k
items); and it draws from the global ``numpy.random`` state, so batches depend on whatever else
used it. This sampler weights parents by size, pools single-child parents, and owns its seed.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


class HierarchicalBatchSampler(Sampler[list[int]]):
    """Batch sampler (``DataLoader(dataset, batch_sampler=...)``) of sibling categories.

    Each batch: ``parents_per_batch`` parents drawn without replacement with probability
    proportional to their item count; in each, ``children_per_parent`` children drawn uniformly
    without replacement (so rare article types meet their siblings too); ``samples_per_child`` items
    per child, without replacement when the child has that many, else with. A parent with fewer
    children than asked gives what it has and the freed slots go to the batch's other parents, so
    batches have ``batch_size`` items unless the whole hierarchy is too small.

    ``single_child_parents``: "pool" joins the children of all single-child parents into one
    pseudo-parent (their items stay trained, against each other); "drop" leaves them out
    (``excluded`` lists their item indices). Either way every batch has >= 2 children per parent.

    One epoch is ``ceil(len(eligible items) / batch_size)`` batches unless ``num_batches`` is given;
    each iteration is a new epoch (``set_epoch`` sets it explicitly), seeded by ``(seed, epoch)``.
    """

    def __init__(self, labels, parents_per_batch: int = 2, children_per_parent: int = 4,
                 samples_per_child: int = 4, seed: int = 0, num_batches: int | None = None,
                 single_child_parents: str = "pool"):
        if torch.is_tensor(labels):
            labels = labels.cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.shape[1] != 2:
            raise ValueError(f"labels must be an (N, 2) array [fine, coarse], got shape {labels.shape}")
        if min(parents_per_batch, samples_per_child) < 1 or children_per_parent < 2:
            raise ValueError("need parents_per_batch >= 1, children_per_parent >= 2, samples_per_child >= 1")
        if single_child_parents not in ("pool", "drop"):
            raise ValueError(f"single_child_parents must be 'pool' or 'drop', got {single_child_parents!r}")
        self.parents_per_batch, self.children_per_parent = parents_per_batch, children_per_parent
        self.samples_per_child, self.seed, self.epoch = samples_per_child, seed, 0

        by_parent: dict = defaultdict(lambda: defaultdict(list))
        for index, (fine, coarse) in enumerate(labels.tolist()):
            by_parent[coarse][fine].append(index)
        groups = [list(children.values()) for children in by_parent.values() if len(children) >= 2]
        singles = [items for children in by_parent.values() if len(children) == 1 for items in children.values()]
        if single_child_parents == "pool" and len(singles) >= 2:
            groups.append(singles)
            singles = []
        self.excluded = sorted(i for items in singles for i in items)
        # parents[p] = list of children, each a numpy array of item indices
        self.parents = [[np.asarray(items) for items in children] for children in groups]
        if not self.parents:
            raise ValueError("no parent category has two or more children: nothing to put siblings together")
        sizes = np.array([sum(len(c) for c in children) for children in self.parents], dtype=float)
        self.parent_weights = sizes / sizes.sum()
        self.num_items = int(sizes.sum())
        self.num_batches = num_batches or max(1, math.ceil(self.num_items / self.batch_size))

    @property
    def batch_size(self) -> int:
        return self.parents_per_batch * self.children_per_parent * self.samples_per_child

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def _batch(self, rng: np.random.Generator) -> list[int]:
        n_parents = min(self.parents_per_batch, len(self.parents))
        chosen = rng.choice(len(self.parents), size=n_parents, replace=False, p=self.parent_weights)
        slots = self.parents_per_batch * self.children_per_parent
        # children per chosen parent: the asked number or all it has, then spare slots round-robin
        take = [min(self.children_per_parent, len(self.parents[p])) for p in chosen]
        spare = slots - sum(take)
        while spare > 0 and any(t < len(self.parents[p]) for t, p in zip(take, chosen)):
            for k, p in enumerate(chosen):
                if spare > 0 and take[k] < len(self.parents[p]):
                    take[k] += 1
                    spare -= 1
        batch = []
        for p, count in zip(chosen, take):
            for c in rng.choice(len(self.parents[p]), size=count, replace=False):
                items = self.parents[p][c]
                replace = len(items) < self.samples_per_child
                batch.extend(rng.choice(items, size=self.samples_per_child, replace=replace).tolist())
        return batch

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        for _ in range(self.num_batches):
            yield self._batch(rng)

