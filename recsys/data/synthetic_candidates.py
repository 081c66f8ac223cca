"""A seeded stand-in for retrieval output in the candidate-list contract of
``recsys.data.candidate_lists`` (candidates.parquet + sequences.parquet), plus the item table it refers
to, for tests and for trying the rerankers before a real retrieval run exists.

Relevance is learnable from features but not from the input order:

- each user has a favourite category and colour; most history items and the targets follow them;
- items come in families (same category, colour, material, pattern): near-duplicates for the
  diversity measures;
- a list holds the target with probability ``target_in_list`` (else the user is a miss for any
  reranker), a quarter of the other candidates share the favourite category, the rest are random;
- ``score_knn`` is informative (high for the target and for the favourite category, like
  item-to-item co-occurrence), ``score_pop`` is popularity noise, and ``ranker_score`` is a
  noisy mix of the two, so the input order is weak and a reranker that matches candidate
  attributes to the history does much better.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.data.schema import ITEM_SCHEMA, attributes, table_from_rows

CATEGORIES = {"Topwear": ["Tshirts", "Shirts", "Tops"], "Bottomwear": ["Jeans", "Trousers", "Skirts"],
              "Footwear": ["Sneakers", "Boots"]}
COLOURS = ["black", "white", "navy", "red", "beige"]
MATERIALS = {"Tshirts": "jersey", "Shirts": "linen", "Tops": "viscose", "Jeans": "denim", "Trousers": "wool",
             "Skirts": "chiffon", "Sneakers": "canvas", "Boots": "leather"}
PATTERNS = ["solid", "striped", "floral", "checked"]


def synthetic_items(n_items: int, rng: np.random.Generator) -> pd.DataFrame:
    """Items in families of 1-3 near-identical members (columns item_id, parent, category, colour,
    material, pattern, family)."""
    kinds = [(parent, kind) for parent, kinds in CATEGORIES.items() for kind in kinds]
    rows, family = [], 0
    while len(rows) < n_items:
        parent, kind = kinds[rng.integers(len(kinds))]
        colour, pattern = COLOURS[rng.integers(len(COLOURS))], PATTERNS[rng.integers(len(PATTERNS))]
        for _ in range(min(int(rng.integers(1, 4)), n_items - len(rows))):
            rows.append({"item_id": f"i{len(rows):04d}", "parent": parent, "category": kind, "colour": colour,
                         "material": MATERIALS[kind], "pattern": pattern, "family": family})
        family += 1
    return pd.DataFrame(rows)


def items_table(items: pd.DataFrame):
    """The canonical item table (``ITEM_SCHEMA``) of :func:`synthetic_items` rows."""
    rows = [{"item_id": r.item_id, "source": "synthetic_candidates", "category_path": [r.parent, r.category],
             "category": r.category, "std_attributes": attributes({"colour": r.colour}),
             "re_attributes": attributes({"material": r.material, "pattern": r.pattern}),
             "title": f"{r.colour} {r.pattern} {r.category}"} for r in items.itertuples()]
    return table_from_rows(rows, ITEM_SCHEMA)


def _pick(pool: np.ndarray, rng: np.random.Generator, fallback: np.ndarray) -> int:
    return int(rng.choice(pool if len(pool) else fallback))


def write_synthetic_candidates(out_dir: str | Path, n_users: int = 300, n_items: int = 400, list_size: int = 50,
                               target_in_list: float = 0.85, seed: int = 0) -> dict[str, Path]:
    """Write ``candidates.parquet``, ``sequences.parquet`` and ``items.parquet`` into ``out_dir``."""
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = synthetic_items(n_items, rng)
    all_rows = np.arange(len(items))
    category, colour = items["category"].to_numpy(), items["colour"].to_numpy()
    kinds = sorted(items["category"].unique())
    ids = items["item_id"].to_numpy()

    sequences, candidates = [], {}
    for u in range(n_users):
        favourite, hue = kinds[rng.integers(len(kinds))], COLOURS[rng.integers(len(COLOURS))]
        liked = all_rows[category == favourite]
        history = []
        for _ in range(int(rng.integers(4, 11))):
            in_category, in_colour = rng.random() < 0.7, rng.random() < 0.6
            keep = ((category == favourite) | (not in_category)) & ((colour == hue) | (not in_colour))
            pool = all_rows[keep]
            history.append(_pick(pool, rng, all_rows))
        targets = [_pick(all_rows[(category == favourite) & (colour == hue)] if rng.random() < 0.8 else liked,
                         rng, liked) for _ in range(2)]
        user = f"u{u:04d}"
        sequences.append({"user_id": user, "history_val": ids[history].tolist(),
                          "history_test": ids[history + [targets[0]]].tolist(),
                          "target_val": ids[targets[0]], "target_test": ids[targets[1]]})
        for split, target in zip(("val", "test"), targets):
            others = all_rows[all_rows != target]
            same = rng.permutation(others[category[others] == favourite])[:list_size // 4]
            rest = rng.permutation(others[~np.isin(others, same)])[:list_size - len(same)]
            listed = np.concatenate([same, rest])
            if rng.random() < target_in_list:
                listed[-1] = target
            is_target, is_liked = listed == target, category[listed] == favourite
            share = np.where(is_target, 0.7, np.where(is_liked, 0.3, 0.05))
            knn = np.where(rng.random(len(listed)) < share, rng.uniform(np.where(is_target, 0.6, 0.0), 1.0), 0.0)
            pop = np.abs(rng.normal(size=len(listed)))
            columns = {"user_id": [user] * len(listed), "item_id": ids[listed], "split": [split] * len(listed),
                       "label": is_target.astype(np.int8), "score_knn": knn, "score_pop": pop,
                       "ranker_score": 0.5 * knn + 0.2 * pop + rng.normal(0, 0.5, len(listed))}
            for name, values in columns.items():
                candidates.setdefault(name, []).append(values)
    paths = {"candidates": out_dir / "candidates.parquet", "sequences": out_dir / "sequences.parquet",
             "items": out_dir / "items.parquet"}
    pd.DataFrame({k: np.concatenate(v) for k, v in candidates.items()}).to_parquet(paths["candidates"], index=False)
    pd.DataFrame(sequences).to_parquet(paths["sequences"], index=False)
    pq.write_table(items_table(items), paths["items"])
    return paths
