"""Seeded, fashion-like interaction logs for scale checks and tests of sequential recommenders.

The catalog: ``n_items`` items in ``n_groups`` x ``categories_per_group`` categories (tops,
bottoms, shoes, ...), each item with a Zipfian popularity within its category (exponent
``zipf_exponent``, items shuffled so ids say nothing). Each category has ``complement_categories``
partner categories in other groups (the jeans that go with a shirt), and each item has
``complements_per_item`` fixed complement items drawn from its own and its partner categories by
popularity: the item-to-item structure that transition models can learn.

A user: ``preferred_categories`` favourite categories (Dirichlet weights), a sequence length from
a log-normal with median ``median_length`` (the median user of a fashion log buys ~6 items), and a
sequence built step by step. With probability ``p_sequential`` the next item follows the
previous one: one of its complement items (``p_complement_item``), else a popular item of its own
or a partner category; otherwise the user starts afresh from a preferred category (or, with
``p_explore``, any category by its size). Timestamps increase per user with exponential gaps;
``p_same_time`` of the steps repeat the previous timestamp (a basket), so the order column has
ties that only the file order resolves, as in real purchase logs.

Output: ``interactions.parquet`` (user_id, item_id, timestamp; rows in time order, file order
breaking ties; ``order_column: position`` writes each user's step instead of times: a
sequences-only log without baskets), ``items.parquet`` (item_id, group, category, colour, title) and ``manifest.json``.
All steps are vectorised over users (one numpy pass per sequence position).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GROUPS = ["tops", "bottoms", "dresses", "outerwear", "shoes", "accessories", "knitwear", "sportswear"]
COLOURS = ["black", "white", "blue", "red", "beige", "grey", "green", "pink"]


@dataclass
class SyntheticInteractionsConfig:
    out_dir: str = "data/generated/interactions_300k"
    seed: int = 0
    n_users: int = 40_000
    n_items: int = 30_000            # catalog; ~25k of them get interactions at the defaults
    n_groups: int = 6
    categories_per_group: int = 8
    zipf_exponent: float = 1.0
    complement_categories: int = 2
    complements_per_item: int = 5
    preferred_categories: int = 3
    median_length: float = 6.0
    length_sigma: float = 0.67        # log-normal sigma: mean ~7.5 for median 6 (~300k rows for 40k users)
    max_length: int = 200
    p_sequential: float = 0.6
    p_complement_item: float = 0.7
    p_explore: float = 0.1
    p_same_time: float = 0.2
    mean_gap_days: float = 7.0
    start: str = "2020-01-01"
    format: str = "parquet"           # parquet | csv
    order_column: str = "timestamp"   # timestamp | position (a sequences-only log: each user's 0-based step, no times)

    def __post_init__(self):
        if not 1 <= self.n_groups <= len(GROUPS):
            raise ValueError(f"n_groups must be between 1 and {len(GROUPS)}")
        if self.order_column not in ("timestamp", "position"):
            raise ValueError(f"order_column must be timestamp or position, got {self.order_column!r}")
        if self.format not in ("parquet", "csv"):
            raise ValueError(f"format must be parquet or csv, got {self.format!r}")
        if self.n_items < self.n_groups * self.categories_per_group:
            raise ValueError("n_items must be at least one item per category")


def _catalog(cfg: SyntheticInteractionsConfig, rng: np.random.Generator) -> dict:
    n_categories = cfg.n_groups * cfg.categories_per_group
    # Every category gets at least one item, the rest by a mildly skewed share.
    share = rng.dirichlet(np.full(n_categories, 5.0))
    sizes = 1 + rng.multinomial(cfg.n_items - n_categories, share)
    category = np.repeat(np.arange(n_categories), sizes)                 # sorted by category
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    within = np.arange(cfg.n_items) - starts[category]
    weight = 1.0 / (within + 1.0) ** cfg.zipf_exponent                   # Zipf within the category
    # Within-category CDFs laid end to end with offsets (category c occupies [c, c + 1]) so one
    # searchsorted samples items of many different categories at once.
    cdf = np.empty(cfg.n_items)
    for c in range(n_categories):
        block = slice(starts[c], starts[c] + sizes[c])
        cdf[block] = c + np.cumsum(weight[block]) / weight[block].sum()
    group = category // cfg.categories_per_group
    partners = np.zeros((n_categories, cfg.complement_categories), dtype=np.int64)
    for c in range(n_categories):
        others = np.flatnonzero(np.arange(n_categories) // cfg.categories_per_group != c // cfg.categories_per_group)
        pool = others if len(others) >= cfg.complement_categories else np.arange(n_categories)
        partners[c] = rng.choice(pool, cfg.complement_categories, replace=len(pool) < cfg.complement_categories)
    return {"n_categories": n_categories, "sizes": sizes, "category": category, "cdf": cdf, "group": group,
            "partners": partners, "popularity": weight / np.bincount(category, weights=weight)[category]}


def _sample_in(categories: np.ndarray, cdf: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per entry of ``categories``, by popularity within that category."""
    u = categories + rng.random(len(categories)) * (1 - 1e-12)
    return np.minimum(np.searchsorted(cdf, u, side="left"), len(cdf) - 1)


def _complements(cfg: SyntheticInteractionsConfig, catalog: dict, rng: np.random.Generator) -> np.ndarray:
    """(n_items, complements_per_item): for each item, popular items of its own or a partner category."""
    n, k = cfg.n_items, cfg.complements_per_item
    own = np.repeat(catalog["category"], k)
    choice = rng.integers(0, cfg.complement_categories + 1, n * k)      # 0: own category, else a partner
    partner = catalog["partners"][own, np.maximum(choice - 1, 0)]
    categories = np.where(choice == 0, own, partner)
    return _sample_in(categories, catalog["cdf"], rng).reshape(n, k)


def generate_interactions(cfg: SyntheticInteractionsConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(interactions, items, summary) in memory; :func:`write_interactions` saves them."""
    rng = np.random.default_rng(cfg.seed)
    catalog = _catalog(cfg, rng)
    complements = _complements(cfg, catalog, rng)
    n_categories = catalog["n_categories"]
    category_share = catalog["sizes"] / catalog["sizes"].sum()

    favourites = np.stack([rng.choice(n_categories, cfg.preferred_categories, replace=False)
                           for _ in range(cfg.n_users)])
    favourite_weights = rng.dirichlet(np.ones(cfg.preferred_categories), cfg.n_users).cumsum(1)
    lengths = np.clip(np.rint(rng.lognormal(np.log(cfg.median_length), cfg.length_sigma, cfg.n_users)),
                      1, cfg.max_length).astype(np.int64)

    sequences = np.full((cfg.n_users, lengths.max()), -1, dtype=np.int64)
    previous = np.full(cfg.n_users, -1, dtype=np.int64)
    for step in range(lengths.max()):
        users = np.flatnonzero(lengths > step)
        prev = previous[users]
        r = rng.random(len(users))
        follow = (prev >= 0) & (r < cfg.p_sequential)
        item = np.empty(len(users), dtype=np.int64)
        # afresh: a favourite category (or any category, exploring), an item by popularity
        fresh = np.flatnonzero(~follow)
        pick = (rng.random(len(fresh))[:, None] > favourite_weights[users[fresh]]).sum(1)
        cats = favourites[users[fresh], np.minimum(pick, cfg.preferred_categories - 1)]
        explore = rng.random(len(fresh)) < cfg.p_explore
        cats[explore] = rng.choice(n_categories, explore.sum(), p=category_share)
        item[fresh] = _sample_in(cats, catalog["cdf"], rng)
        # following the previous item: a fixed complement, else its or a partner category
        chain = np.flatnonzero(follow)
        fixed = rng.random(len(chain)) < cfg.p_complement_item
        a, b = chain[fixed], chain[~fixed]
        item[a] = complements[prev[a], rng.integers(0, cfg.complements_per_item, len(a))]
        base = catalog["category"][prev[b]]
        side = rng.integers(0, cfg.complement_categories + 1, len(b))
        cats = np.where(side == 0, base, catalog["partners"][base, np.maximum(side - 1, 0)])
        item[b] = _sample_in(cats, catalog["cdf"], rng)
        sequences[users, step] = item
        previous[users] = item

    # Timestamps: per-user start, exponential gaps in seconds, some repeated (baskets).
    user_rows = np.repeat(np.arange(cfg.n_users), lengths)
    items = sequences[sequences >= 0]                                  # row-major = user, then step
    step = np.arange(len(items)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    gaps = rng.exponential(cfg.mean_gap_days * 86_400, len(items))
    gaps[(step == 0)] = rng.uniform(0, 365 * 86_400, cfg.n_users)
    gaps[(step > 0) & (rng.random(len(items)) < cfg.p_same_time)] = 0.0
    first = np.cumsum(lengths) - lengths
    total = np.cumsum(gaps)
    seconds = np.floor(total - np.repeat(total[first] - gaps[first], lengths))   # per-user running sum
    timestamp = pd.Timestamp(cfg.start) + pd.to_timedelta(seconds, unit="s")

    item_names = rng.permutation(cfg.n_items)                          # ids say nothing about popularity
    user_names = rng.permutation(cfg.n_users)
    frame = pd.DataFrame({"user_id": [f"u{u:06d}" for u in user_names[user_rows]],
                          "item_id": [f"i{i:06d}" for i in item_names[items]],
                          "timestamp": timestamp})
    # Global time order; the stable sort keeps each user's tied rows in sequence order.
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    colour = rng.choice(COLOURS, cfg.n_items)
    category_names = np.array([f"{GROUPS[c // cfg.categories_per_group]}_{c % cfg.categories_per_group}"
                               for c in range(n_categories)])
    item_table = pd.DataFrame({"item_id": [f"i{i:06d}" for i in item_names],
                               "group": [GROUPS[g] for g in catalog["group"]],
                               "category": category_names[catalog["category"]], "colour": colour,
                               "title": [f"{c} {category_names[k].replace('_', ' ')} {i}"
                                         for i, (c, k) in enumerate(zip(colour, catalog["category"]))]})
    summary = {"interactions": int(len(frame)), "users": int(cfg.n_users), "items_in_catalog": int(cfg.n_items),
               "items_interacted": int(frame["item_id"].nunique()), "categories": int(n_categories),
               "length_median": float(np.median(lengths)), "length_mean": round(float(lengths.mean()), 2),
               "users_with_3_or_more": int((lengths >= 3).sum()),
               "tied_timestamps": int(frame.duplicated(["user_id", "timestamp"]).sum())}
    if cfg.order_column == "position":
        # the order survives, the times (and with them the baskets) do not
        frame = frame.assign(position=frame.groupby("user_id").cumcount()).drop(columns="timestamp")
        summary["tied_timestamps"] = 0
    return frame, item_table, summary


def write_interactions(cfg: SyntheticInteractionsConfig) -> dict:
    """Generate and write ``interactions.<format>``, ``items.<format>`` and ``manifest.json`` to ``out_dir``."""
    fmt = cfg.format
    interactions, items, summary = generate_interactions(cfg)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("interactions", interactions), ("items", items)):
        path = out / f"{name}.{fmt}"
        frame.to_parquet(path, index=False) if fmt == "parquet" else frame.to_csv(path, index=False)
    manifest = {"config": asdict(cfg), "summary": summary,
                "files": {"interactions": str(out / f"interactions.{fmt}"), "items": str(out / f"items.{fmt}")}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
