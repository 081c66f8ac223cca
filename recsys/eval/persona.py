"""The persona protocol on a purchase log: split, personas, popularity baselines, per-persona report, plots.

Split (per customer, on purchases deduplicated on (customer, article, day), restricted to articles
the product tower can encode, i.e. articles with metadata):
- test = the articles bought on the customer's last purchase day;
- validation = the articles bought on the second-to-last purchase day (customers with >= 3 days);
- train = every purchase strictly before the validation day (or the test day when there is none).
Two evaluated populations: ``warm`` = customers with training purchases and a test day (EVAL.md
E2's population), ``cold`` = customers with a single purchase day, never seen in training (the
visitor the profile-only model is for).

Candidates: every article bought in train, in article-id order (ties break the same way for every
ranker). Metrics (``recsys.metrics.hits``): hit@k (a held-out article in the top k; held-out
articles that are not candidates can never be hit but still count) and category_hit@k (a top-k
article of a category the customer bought on the held-out day), overall and per persona.

Baselines on the same split and candidates: MostPop (training purchase counts) and PersonaPop
(training counts among the customers of the same persona, MostPop breaking its ties). The model is
reported twice: pure (equal scores in article-id order) and with training popularity breaking its
exact ties (articles with identical attributes get identical vectors, so the tower alone cannot
order them; this is the order ``PersonaRecommender.recommend`` serves).

Personas: k-means on the customer-tower vectors (see :func:`cluster_personas`), named by the
dominant profile values of their members (:func:`describe_personas`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys.config import ConfigError
from recsys.data.result import AdapterResult
from recsys.metrics.hits import category_hit_flags, chance_hit_at_k, hit_flags, top_k, top_k_distinct
from recsys.models.persona import PRICE_BUCKET, ProductFeaturizer, ProfileFeaturizer, band_label
from recsys.plots import plt, save_figure, use_korean_font

UNKNOWN_LABEL = "unknown"


# ---------------------------------------------------------------- canonical tables -> model inputs

def profiles_from_users(users: pa.Table) -> dict[str, dict]:
    """USER_SCHEMA rows -> {user_id: {field: value}} (numeric values float, categorical text)."""
    out = {}
    for row in users.to_pylist():
        profile = {f["field"]: f["value"] for f in row["numeric"] or []}
        profile.update({f["field"]: f["value"] for f in row["categorical"] or []})
        out[row["user_id"]] = profile
    return out


def item_records(items: pa.Table, fields: Sequence[str]) -> dict[str, dict]:
    """ITEM_SCHEMA rows -> {item_id: {field: value}}. A field is ``category`` (finest level),
    ``parent_category`` (the level above), the name of a STD/RE attribute (its first value) or
    ``style`` (the first of ``styles``, K-Fashion's 스타일, unless an attribute is named so);
    ``price_bucket`` is computed later from prices and skipped here."""
    wanted = [f for f in fields if f != "price_bucket"]
    out, seen = {}, {f: 0 for f in wanted}
    columns = ["item_id", "category_path", "category", "std_attributes", "re_attributes"]
    for row in items.select(columns + [c for c in ["styles"] if c in items.column_names]).to_pylist():
        attributes = {a["field"]: a["values"][0] for a in (row["re_attributes"] or []) + (row["std_attributes"] or [])
                      if a["values"]}
        if row.get("styles") and "style" not in attributes:
            attributes["style"] = row["styles"][0]
        path = row["category_path"] or []
        record = {}
        for name in wanted:
            if name == "category":
                value = row["category"]
            elif name == "parent_category":
                value = path[-2] if len(path) >= 2 else None
            else:
                value = attributes.get(name)
            record[name] = value
            seen[name] += value is not None
        out[row["item_id"]] = record
    absent = [f for f, n in seen.items() if n == 0 and out]
    if absent:
        raise ValueError(f"item field(s) {absent} have no value in any item; use 'category', 'parent_category', "
                         f"'style' or an attribute of the catalog")
    return out


def purchases_frame(interactions: pa.Table, known_items: set[str]) -> pd.DataFrame:
    """Interactions -> one row per (user, item, day) with the price paid, items outside ``known_items`` dropped."""
    frame = interactions.select(["user_id", "item_id", "timestamp", "price"]).to_pandas()
    frame["day"] = pd.to_datetime(frame["timestamp"]).dt.normalize()
    frame = frame[frame["item_id"].isin(known_items)]
    return frame.drop_duplicates(["user_id", "item_id", "day"])[["user_id", "item_id", "day", "price"]].reset_index(drop=True)


# ---------------------------------------------------------------- split

@dataclass
class PurchaseSplit:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    warm_users: list[str]   # train purchases and a test day
    cold_users: list[str]   # one purchase day only: never in train

    def summary(self) -> dict:
        return {"train_rows": len(self.train), "val_rows": len(self.val), "test_rows": len(self.test),
                "val_users": int(self.val["user_id"].nunique()), "warm_users": len(self.warm_users),
                "cold_users": len(self.cold_users)}


def split_last_day(purchases: pd.DataFrame) -> PurchaseSplit:
    days = purchases[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"], ascending=[True, False])
    days["rank"] = days.groupby("user_id").cumcount()          # 0 = last purchase day
    n_days = days.groupby("user_id")["day"].size()
    last = days[days["rank"] == 0].set_index("user_id")["day"]
    second = days[days["rank"] == 1].set_index("user_id")["day"]
    has_val = n_days[n_days >= 3].index
    frame = purchases.assign(last=purchases["user_id"].map(last), second=purchases["user_id"].map(second))
    val_day = frame["user_id"].isin(has_val)
    test = frame["day"] == frame["last"]
    val = val_day & (frame["day"] == frame["second"])
    cutoff = frame["last"].where(~val_day, frame["second"])
    train = frame["day"] < cutoff
    columns = list(purchases.columns)
    return PurchaseSplit(frame.loc[train, columns].reset_index(drop=True), frame.loc[val, columns].reset_index(drop=True),
                         frame.loc[test, columns].reset_index(drop=True),
                         sorted(n_days[n_days >= 2].index), sorted(n_days[n_days == 1].index))


def mean_prices(purchases: pd.DataFrame) -> dict[str, float]:
    return purchases.groupby("item_id")["price"].mean().dropna().to_dict()


# ---------------------------------------------------------------- personas

def cluster_personas(vectors: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means on customer-tower vectors -> (labels, centroids), persona 0 the largest.

    The customer vectors rather than the raw profile features: the tower has learned which
    attributes move purchases (age far more than newsletter settings), so a persona is a group the
    model recommends alike, while k-means on raw features would split wherever the arbitrary
    scaling of years against one-hot flags puts the largest variance.
    """
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(np.unique(np.round(vectors, 5), axis=0))))  # never more clusters than distinct points
    fitted = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(vectors)
    order = np.argsort(-np.bincount(fitted.labels_, minlength=k), kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    return relabel[fitted.labels_], fitted.cluster_centers_[order].astype(np.float32)


def _token(value, field: str, bands: Mapping[str, Sequence[float]]) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return UNKNOWN_LABEL
    if field in bands:
        return band_label(float(value), bands[field])
    return str(value).strip()


def describe_personas(profiles: Sequence[Mapping], labels: np.ndarray, fields: Sequence[str],
                      bands: Mapping[str, Sequence[float]] | None = None,
                      suffixes: Mapping[str, str] | None = None) -> list[dict]:
    """One entry per persona: name, size and each field's dominant value with its share.

    A banded numeric field reads "age 25-34", a categorical one "<value> <suffix>" ("ACTIVE club");
    equal counts go to the alphabetically first value; identical names get " (2)", " (3)"."""
    bands, suffixes = dict(bands or {}), dict(suffixes or {})
    out, used = [], {}
    for persona in range(int(labels.max()) + 1 if len(labels) else 0):
        members = [profiles[i] for i in np.flatnonzero(labels == persona)]
        dominant, parts = {}, []
        for name in fields:
            counts = pd.Series([_token(p.get(name), name, bands) for p in members]).value_counts()
            value = sorted(counts.index, key=lambda v: (-counts[v], v))[0] if len(counts) else UNKNOWN_LABEL
            dominant[name] = {"value": value, "share": round(float(counts.get(value, 0)) / max(1, len(members)), 3)}
            parts.append(f"{name} {value}" if name in bands else f"{value} {suffixes.get(name, name)}")
        label = " · ".join(parts)
        used[label] = used.get(label, 0) + 1
        out.append({"name": label if used[label] == 1 else f"{label} ({used[label]})", "size": len(members),
                    "dominant": dominant})
    return out


# ---------------------------------------------------------------- rankings and baselines

def popularity_scores(train_items: np.ndarray, n_candidates: int) -> np.ndarray:
    """Training purchase count per candidate."""
    return np.bincount(train_items, minlength=n_candidates).astype(np.float64)


def persona_popularity_scores(train_items: np.ndarray, train_personas: np.ndarray, n_personas: int,
                              n_candidates: int) -> np.ndarray:
    """(personas, candidates): count among the persona's purchases, plus overall count / (max + 1) < 1,
    so overall popularity only breaks ties (and fills a persona with few purchases)."""
    counts = np.zeros((n_personas, n_candidates))
    np.add.at(counts, (train_personas, train_items), 1)
    overall = counts.sum(axis=0)
    return counts + overall / (overall.max() + 1)


def choose_served_ranker(split, candidates: list[str], item_category: Mapping[str, str], persona_of: Mapping[str, int],
                         n_personas: int, customer_vectors: np.ndarray, user_index: Mapping[str, int],
                         product_vectors: np.ndarray, k: int) -> tuple[dict, np.ndarray]:
    """Which ranker answers profile-only requests, decided on the validation day (never the test day):
    the two-tower (cosine) or PersonaPop (the profile's persona's training purchases), by hit@k of
    the customers with a validation day. Returns (the decision, PersonaPop's (personas, candidates)
    scores in ``candidates`` order, what a server needs to rank that way)."""
    candidate_index = {a: i for i, a in enumerate(candidates)}
    train_items = split.train["item_id"].map(candidate_index).to_numpy()
    by_persona = persona_popularity_scores(train_items, split.train["user_id"].map(persona_of).to_numpy(),
                                           n_personas, len(candidates))
    held = HeldOut.build(split.val, sorted(set(split.val["user_id"])), candidate_index, item_category, persona_of)
    rows = np.array([user_index[u] for u in held.users], dtype=np.int64)
    scores = {"model": customer_vectors[rows] @ product_vectors.T, "persona_popular": by_persona[held.personas]}
    hits = {name: round(float(hit_flags(top_k(values, k), held.items).mean()), 4) if len(rows) else 0.0
            for name, values in scores.items()}
    ranker = "persona_popular" if hits["persona_popular"] > hits["model"] else "model"
    return {"ranker": ranker, "decided_on": "validation day (second-to-last purchase day)", "k": k,
            "n_customers": len(held.users), f"validation_hit@{k}": hits}, by_persona


@dataclass
class HeldOut:
    """Held-out purchases of the evaluated customers, aligned row by row."""
    users: list[str]
    items: list[set]          # candidate indices bought on the held-out day
    categories: list[set]     # categories of every article bought that day (candidate or not)
    personas: np.ndarray

    @classmethod
    def build(cls, held_out: pd.DataFrame, users: Sequence[str], candidate_index: Mapping[str, int],
              item_category: Mapping[str, str], persona_of: Mapping[str, int]) -> "HeldOut":
        grouped = held_out.groupby("user_id")["item_id"].apply(list).to_dict()
        users = [u for u in users if u in grouped]
        return cls(users, [{candidate_index[i] for i in grouped[u] if i in candidate_index} for u in users],
                   [{item_category[i] for i in grouped[u]} for u in users],
                   np.array([persona_of[u] for u in users], dtype=np.int64))


def ranking_report(scores: np.ndarray, held_out: HeldOut, category: np.ndarray, names: Sequence[str], k: int,
                   tie_order: np.ndarray | None = None, one_per_category: bool = False) -> dict:
    """Overall and per-persona hit@k / category_hit@k of one ranker (``scores``: users x candidates).
    Equal scores rank in candidate order, or in ``tie_order`` (a permutation of the candidates) when given.
    ``one_per_category``: the list takes each of the ranker's k best categories' best candidate."""
    order = np.arange(scores.shape[1]) if tie_order is None else tie_order
    pick = (lambda s: top_k_distinct(s, category[order], k)) if one_per_category else (lambda s: top_k(s, k))
    top = order[pick(np.asarray(scores)[:, order])]
    hits = hit_flags(top, held_out.items)
    category_hits = category_hit_flags(top, held_out.categories, category)

    def block(mask):
        n = int(mask.sum())
        return {"n": n, f"hit@{k}": float(hits[mask].mean()) if n else None,
                f"category_hit@{k}": float(category_hits[mask].mean()) if n else None}

    return {"overall": block(np.ones(len(hits), dtype=bool)),
            "per_persona": {name: block(held_out.personas == p) for p, name in enumerate(names)}}


def best_cover(bought: np.ndarray, k: int) -> int:
    """The most rows of ``bought`` (rows x columns, bool) that one set of k columns can cover (a row is
    covered when it has True in any chosen column): exact, the last column of each (k-1)-subset
    chosen for all columns at once."""
    from itertools import combinations

    bought = bought[:, bought.any(axis=0)]
    n_columns = bought.shape[1]
    if n_columns <= k:
        return int(bought.any(axis=1).sum())
    best = 0
    for chosen in combinations(range(n_columns), k - 1):
        covered = bought[:, list(chosen)].any(axis=1) if chosen else np.zeros(len(bought), dtype=bool)
        best = max(best, int((covered[:, None] | bought).sum(axis=0).max()))
    return best


MAX_CEILING_K = 3    # exact search tries C(categories, k - 1) sets: instant at 3, hours at 8


def category_ceiling(held_out: HeldOut, groups: np.ndarray, candidate_categories: Sequence[str],
                     k: int) -> float | None:
    """The highest category_hit@k of any ranker that gives every customer of a group the same k
    candidates (a ranker that sees only the group), found with the held-out day's purchases
    themselves: an oracle per group, so no such ranker can do better. ``groups``: one label per
    held-out customer. None for k > MAX_CEILING_K (not computed: exact search grows as C(n, k - 1))."""
    if k > MAX_CEILING_K:
        return None
    categories = sorted(set(candidate_categories))
    column = {c: i for i, c in enumerate(categories)}
    bought = np.zeros((len(held_out.users), len(categories)), dtype=bool)
    for row, bought_categories in enumerate(held_out.categories):
        bought[row, [column[c] for c in bought_categories if c in column]] = True
    groups = np.asarray(groups)
    covered = sum(best_cover(bought[groups == g], k) for g in np.unique(groups))
    return covered / max(1, len(held_out.users))


def profile_cells(profiles: Mapping[str, Mapping], users: Sequence[str], fields: Sequence[str],
                  bands: Mapping[str, Sequence[float]] | None = None) -> np.ndarray:
    """Each user's profile as one label ("25-34|ACTIVE|NONE"): numeric fields by their bands."""
    bands = dict(bands or {})
    return np.array(["|".join(_token(profiles.get(u, {}).get(f), f, bands) for f in fields) for u in users])


def chance_report(held_out: HeldOut, n_candidates: int, names: Sequence[str], k: int) -> dict:
    sizes = np.array([len(s) for s in held_out.items])
    return {"overall": {f"hit@{k}": chance_hit_at_k(sizes, n_candidates, k)},
            "per_persona": {name: {f"hit@{k}": chance_hit_at_k(sizes[held_out.personas == p], n_candidates, k)}
                            for p, name in enumerate(names)}}


# ---------------------------------------------------------------- plots

def tsne_plot(customer_vectors: np.ndarray, customer_personas: np.ndarray, names: Sequence[str],
              product_vectors: np.ndarray, product_groups: Sequence[str], path: str | Path, title: str,
              sample: int = 1500, seed: int = 0) -> Path:
    """One t-SNE of customers (dots, coloured by persona) and products (crosses, coloured by group)."""
    from sklearn.manifold import TSNE

    use_korean_font()
    rng = np.random.default_rng(seed)
    c_rows = np.sort(rng.choice(len(customer_vectors), size=min(sample, len(customer_vectors)), replace=False))
    p_rows = np.sort(rng.choice(len(product_vectors), size=min(sample, len(product_vectors)), replace=False))
    joint = np.concatenate([customer_vectors[c_rows], product_vectors[p_rows]])
    points = TSNE(n_components=2, init="pca", random_state=seed,
                  perplexity=float(min(30, max(2, (len(joint) - 1) // 4)))).fit_transform(joint)
    customers, products = points[:len(c_rows)], points[len(c_rows):]
    fig, ax = plt.subplots(figsize=(11, 8.5))
    groups = np.asarray(product_groups)[p_rows]
    group_names, counts = np.unique(groups, return_counts=True)
    product_colours = plt.get_cmap("Set2")
    for i, group in enumerate(group_names[np.argsort(-counts)][:8]):
        mask = groups == group
        ax.scatter(products[mask, 0], products[mask, 1], s=10, marker="x", alpha=0.5, color=product_colours(i % 8),
                   label=f"product: {group}")
    persona_colours = plt.get_cmap("tab10")
    personas = customer_personas[c_rows]
    for p, name in enumerate(names):
        mask = personas == p
        ax.scatter(customers[mask, 0], customers[mask, 1], s=14, color=persona_colours(p % 10), edgecolors="black",
                   linewidths=0.2, label=f"customer: {name}")
    ax.legend(fontsize=7, loc="best", markerscale=1.5)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def persona_chart(block: Mapping, names: Sequence[str], sizes: Sequence[int], path: str | Path, title: str,
                  k: int) -> Path:
    """Grouped bars per persona (and overall): model vs MostPop vs PersonaPop, hit@k and category_hit@k.
    ``block``: {ranker: ranking_report(...)}."""
    use_korean_font()
    rankers = list(block)
    groups = ["overall"] + list(names)
    labels = [f"overall (n={block[rankers[0]]['overall']['n']})"] + [
        f"{name}\n(persona {sizes[i]}, eval n={block[rankers[0]]['per_persona'][name]['n']})"
        for i, name in enumerate(names)]
    fig, axes = plt.subplots(1, 2, figsize=(15, 0.75 * len(groups) + 2.5), squeeze=False)
    y = np.arange(len(groups))
    height = 0.8 / len(rankers)
    for ax, metric in zip(axes[0], (f"hit@{k}", f"category_hit@{k}")):
        for r, ranker in enumerate(rankers):
            report = block[ranker]
            values = [report["overall"][metric]] + [report["per_persona"][g][metric] for g in groups[1:]]
            values = [np.nan if v is None else v for v in values]
            bars = ax.barh(y + (r - (len(rankers) - 1) / 2) * height, values, height, label=ranker)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_yticks(y, labels if metric.startswith("hit") else [""] * len(groups), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(metric)
        ax.grid(axis="x", alpha=0.3)
    handles, legend_labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, legend_labels, loc="lower center", ncol=len(rankers), fontsize=8)  # clear of every bar
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return save_figure(fig, path)


# ---------------------------------------------------------------- the protocol's data, from config

HM = "../shared/data/hm_pse_subset"
RANKERS = ("model", "model_pop_ties", "most_popular", "persona_popular")
# the same rankers with one article per category in the top k (categories, not articles, are what
# category_hit@k rewards, and articles with identical attributes share the model's vector)
ONE_PER_CATEGORY = ("model_one_per_category", "most_popular_one_per_category", "persona_popular_one_per_category")


@dataclass
class PersonaDataConfig:
    """Where profiles, items and purchases come from: the H&M files (the default), or, with
    ``users_run``, a ``ray_jobs.train_users`` run (the demo's synthetic stand-in users:
    users.parquet and interactions.parquet; customers/articles/transactions are then not read; a
    runs root with a LATEST pointer, e.g. artifacts/train_users, means its newest run) and ``items``
    (the demo items parquet; null: the items the run's embed run used)."""
    customers: str = f"{HM}/customers.parquet"
    articles: str = f"{HM}/articles.parquet"
    transactions: str = f"{HM}/transactions.parquet"
    users_run: str | None = None
    items: str | None = None

    def __post_init__(self):
        if self.items and not self.users_run:
            raise ConfigError("data.items is read only with data.users_run (the H&M source reads data.articles)")

    @property
    def source(self) -> str:
        """What an error in the data names: the users run, or the H&M transactions."""
        return self.users_run or self.transactions


@dataclass
class PersonaInputs:
    """The configured source read into canonical tables, what ``prepare_persona_data`` takes."""
    tables: dict[str, AdapterResult]   # customers (USER_SCHEMA), articles (items), transactions (interactions)
    paths: dict[str, str]              # what was read (the run manifest's inputs)
    note: str | None = None            # a users run's synthetic stand-in note (recsys.data.demo_users.STAND_IN)


def load_persona_inputs(data: PersonaDataConfig, customer: "CustomerFieldsConfig") -> PersonaInputs:
    """Read the H&M files, or a train_users run (its users.parquet must have the configured customer
    fields) with its items; raises ``AdapterError`` naming the file and field when one is missing."""
    if data.users_run:
        from recsys.artifacts import latest_run
        from recsys.data.users_run import STAND_IN, load_users_run, users_run_items

        run = Path(data.users_run)
        run = (latest_run(run) if (run / "LATEST").is_file() else run).resolve()
        items = users_run_items(run, data.items)
        tables = load_users_run(run, items, customer.numeric, customer.categorical)
        return PersonaInputs(tables, {"users_run": str(run), "items": str(items)}, STAND_IN)
    from recsys.data.catalogs import load_hm_articles
    from recsys.data.interactions import load_hm_customers, load_hm_transactions

    return PersonaInputs({"customers": load_hm_customers(data.customers), "articles": load_hm_articles(data.articles),
                          "transactions": load_hm_transactions(data.transactions)},
                         {"customers": data.customers, "articles": data.articles, "transactions": data.transactions})


@dataclass
class CustomerFieldsConfig:
    categorical: list[str] = field(default_factory=lambda: ["club_member_status", "fashion_news_frequency"])
    numeric: list[str] = field(default_factory=lambda: ["age"])
    numeric_encoding: str = "zscore"             # zscore | bucket (band tokens from `bands`)
    bands: dict[str, list[float]] = field(default_factory=lambda: {"age": [25, 35, 45, 55, 65]})
    suffixes: dict[str, str] = field(default_factory=lambda: {"club_member_status": "club",
                                                              "fashion_news_frequency": "news"})


@dataclass
class ProductFieldsConfig:
    fields: list[str] = field(default_factory=lambda: ["category", "index_group_name", "garment_group_name",
                                                       "colour_group_name", "price_bucket"])
    price_buckets: int = 5
    category_field: str = "category"             # what category_hit@k compares
    colour_by: str = "index_group_name"          # product colouring in tsne.png


@dataclass
class PersonaEvalConfig:
    k: int = 3
    personas: int = 6
    tsne_sample: int = 1000                      # customers and products each
    seed: int = 42


@dataclass
class PersonaData:
    """A purchase log prepared for the two-tower and the protocol: split, candidates, featurizers and
    the numpy columns of the loop's datasets (``recsys.train_loops.persona``)."""
    split: "PurchaseSplit"
    users: list[str]
    user_index: dict[str, int]
    profiles: dict[str, dict]
    candidates: list[str]             # every article bought in training, in id order
    product_records: list[dict]
    item_category: dict[str, str]
    profile_featurizer: ProfileFeaturizer
    product_featurizer: ProductFeaturizer
    c_ids: np.ndarray
    c_num: np.ndarray | None          # None when there are no numeric customer fields
    datasets: dict[str, dict[str, np.ndarray]]
    accounting: dict = field(default_factory=dict)   # where every transaction, customer and item went

    @property
    def sizes(self) -> dict:
        """The towers' input sizes (the loop's ``customer_sizes``, ``n_numeric``, ``product_sizes``)."""
        return {"customer_sizes": self.profile_featurizer.sizes(), "n_numeric": self.profile_featurizer.n_numeric,
                "product_sizes": self.product_featurizer.sizes()}


def prepare_persona_data(customers: pa.Table, articles: pa.Table, transactions: pa.Table,
                         customer: CustomerFieldsConfig, product: ProductFieldsConfig) -> PersonaData:
    """Profiles, items and purchases -> the last-day split, candidates, fitted featurizers and datasets.
    Raises ValueError when a configured customer field has no value in any profile, when
    ``price_bucket`` is asked for without prices, or when the split has no training purchases or no
    validation customers."""
    # Only the configured fields: the featurizer rejects any other key (a typo in a served profile must fail).
    inputs = customer.categorical + customer.numeric
    all_profiles = profiles_from_users(customers)
    absent = [f for f in inputs if all_profiles and not any(f in p for p in all_profiles.values())]
    if absent:
        found = sorted({f for p in all_profiles.values() for f in p})
        raise ValueError(f"customer field(s) {absent} have no value in any profile; the profiles have {found}")
    profiles = {u: {f: p[f] for f in inputs if f in p} for u, p in all_profiles.items()}
    records = item_records(articles, list(dict.fromkeys(product.fields + [product.category_field, product.colour_by])))
    purchases = purchases_frame(transactions, set(records))
    if PRICE_BUCKET in product.fields and purchases["price"].isna().all():
        raise ValueError(f"product field {PRICE_BUCKET!r} needs purchase prices and the transactions have none; "
                         f"drop it from product.fields")
    split = split_last_day(purchases)
    if split.train.empty or split.val.empty:
        raise ValueError(f"the split needs training purchases and customers with >= 3 purchase days for "
                         f"validation; got {split.summary()}")
    # Candidates: every article bought in training, in id order (equal scores break ties by id).
    candidates = sorted(split.train["item_id"].unique())
    candidate_index = {a: i for i, a in enumerate(candidates)}
    prices = mean_prices(split.train)
    purchases_in_train = split.train["item_id"].value_counts().to_dict()
    product_records = [{"article_id": a, **records[a], "price": prices.get(a), "purchases": purchases_in_train[a]}
                       for a in candidates]
    item_category = {a: str(r.get(product.category_field)) for a, r in records.items()}
    category_ids = {c: i for i, c in enumerate(sorted(set(item_category.values())))}

    users = sorted(set(profiles) | set(purchases["user_id"]))
    user_index = {u: i for i, u in enumerate(users)}
    train_users = sorted(set(split.train["user_id"]))
    profile_featurizer = ProfileFeaturizer.fit([profiles.get(u, {}) for u in train_users], customer.categorical,
                                               customer.numeric, customer.bands, customer.numeric_encoding)
    product_featurizer = ProductFeaturizer.fit(product_records, product.fields, product.price_buckets)
    c_ids, c_num = profile_featurizer.transform([profiles.get(u, {}) for u in users])
    c_num = c_num if profile_featurizer.n_numeric else None

    def pairs(frame, candidates_only: bool) -> dict[str, np.ndarray]:
        user = frame["user_id"].map(user_index).to_numpy(np.int64)
        columns = {"user": user, "c_ids": c_ids[user],
                   "item": frame["item_id"].map(lambda a: candidate_index.get(a, -1)).to_numpy(np.int64),
                   "category": frame["item_id"].map(lambda a: category_ids[item_category[a]]).to_numpy(np.int64)}
        if c_num is not None:
            columns["c_num"] = c_num[user]
        return {key: value[columns["item"] >= 0] for key, value in columns.items()} if candidates_only else columns

    items = {"i_ids": product_featurizer.transform(product_records),
             "category": np.array([category_ids[item_category[a]] for a in candidates], np.int64)}
    return PersonaData(split, users, user_index, profiles, candidates, product_records, item_category,
                       profile_featurizer, product_featurizer, c_ids, c_num,
                       {"train": pairs(split.train, True), "items": items, "val": pairs(split.val, False)},
                       accounting(transactions, records, purchases, split, profiles, candidates))


def accounting(transactions: pa.Table, records: Mapping[str, dict], purchases: pd.DataFrame, split: PurchaseSplit,
               profiles: Mapping[str, dict], candidates: Sequence[str]) -> dict:
    """Where every transaction row, customer and item went on the way to the split (each block adds up)."""
    known = int(pd.Series(transactions.column("item_id").to_pylist(), dtype="object").isin(records).sum())
    rows = {"read": transactions.num_rows, "dropped_item_without_metadata": transactions.num_rows - known,
            "merged_same_customer_article_day": known - len(purchases), "purchases": len(purchases),
            "train": len(split.train), "val": len(split.val), "test": len(split.test)}
    rows["reconciles"] = (rows["read"] == rows["dropped_item_without_metadata"] + rows["merged_same_customer_article_day"]
                          + rows["purchases"] and rows["purchases"] == rows["train"] + rows["val"] + rows["test"])
    buyers = set(purchases["user_id"])
    customers = {"profiles": len(profiles), "buyers": len(buyers), "profiles_without_purchases": len(set(profiles) - buyers),
                 "buyers_without_profile": len(buyers - set(profiles)), "warm": len(split.warm_users),
                 "cold": len(split.cold_users)}
    customers["reconciles"] = customers["buyers"] == customers["warm"] + customers["cold"]
    items = {"with_metadata": len(records), "candidates": len(candidates),
             "never_bought_in_training": len(records) - len(candidates)}
    return {"transactions": rows, "customers": customers, "items": items}


def evaluate_rankers(split, candidates: list[str], candidate_category: list[str], item_category: dict[str, str],
              persona_of: dict[str, int], names: list[str], customer_vectors: np.ndarray, user_index: dict[str, int],
              product_vectors: np.ndarray, k: int, cells: Mapping[str, str] | None = None) -> dict:
    """Warm and cold customers' last purchase day: the model (pure, and with popularity breaking its
    exact ties), MostPop and PersonaPop on the same candidates, plus chance, and the ceilings of
    category_hit@k (:func:`category_ceiling`) for one list for everyone, one per persona and, with
    ``cells`` (user -> profile label, :func:`profile_cells`), one per profile."""
    candidate_index = {a: i for i, a in enumerate(candidates)}
    train_items = split.train["item_id"].map(candidate_index).to_numpy()
    train_personas = split.train["user_id"].map(persona_of).to_numpy()
    most_popular = popularity_scores(train_items, len(candidates))
    popularity_order = np.lexsort((np.arange(len(candidates)), -most_popular))  # most bought first, then id
    by_persona = persona_popularity_scores(train_items, train_personas, len(names), len(candidates))
    category = np.array(candidate_category)
    evaluation = {}
    for population, population_users in (("warm", split.warm_users), ("cold", split.cold_users)):
        held_out = HeldOut.build(split.test, population_users, candidate_index, item_category, persona_of)
        rows = np.array([user_index[u] for u in held_out.users], dtype=np.int64)
        model_scores = customer_vectors[rows] @ product_vectors.T
        rankers = {"model": (model_scores, None), "model_pop_ties": (model_scores, popularity_order),
                   "most_popular": (np.broadcast_to(most_popular, (len(rows), len(candidates))), None),
                   "persona_popular": (by_persona[held_out.personas], None)}
        ceiling = {"one_list_for_everyone": np.zeros(len(held_out.users), dtype=np.int64),
                   "one_list_per_persona": held_out.personas}
        if cells is not None:
            ceiling["one_list_per_profile"] = np.array([cells[u] for u in held_out.users])
        rankers |= {f"{name}_one_per_category": (rankers[source][0], popularity_order if name == "model" else None)
                    for name, source in (("model", "model"), ("most_popular", "most_popular"),
                                         ("persona_popular", "persona_popular"))}
        evaluation[population] = {"n_customers": len(held_out.users),
                                  "chance": chance_report(held_out, len(candidates), names, k),
                                  f"category_hit@{k}_ceiling": {
                                      name: None if (bound := category_ceiling(held_out, groups, candidate_category,
                                                                                k)) is None else round(bound, 4)
                                      for name, groups in ceiling.items()},
                                  **{name: ranking_report(scores, held_out, category, names, k, order,
                                                          name.endswith("_one_per_category"))
                                     for name, (scores, order) in rankers.items()}}
    return evaluation


def evaluate_segment_picks(split, candidates: list[str], item_category: dict[str, str], persona_of: dict[str, int],
                           names: list[str], segment_scores: np.ndarray, k: int) -> dict:
    """Products picked per persona (the same top k for every member, as a campaign sends them;
    ``segment_scores``: personas x candidates) against what each customer with a test day bought on
    it, beside MostPop's top k (training purchases) and chance: overall and per persona."""
    candidate_index = {a: i for i, a in enumerate(candidates)}
    most_popular = popularity_scores(split.train["item_id"].map(candidate_index).to_numpy(), len(candidates))
    users = sorted(set(split.test["user_id"]) & set(persona_of))
    held_out = HeldOut.build(split.test, users, candidate_index, item_category, persona_of)
    category = np.array([item_category[a] for a in candidates])
    n = len(held_out.users)
    return {"k": k, "n_customers": n, "chance": chance_report(held_out, len(candidates), names, k),
            "segment_picks": ranking_report(np.asarray(segment_scores)[held_out.personas], held_out, category, names, k),
            "most_popular": ranking_report(np.broadcast_to(most_popular, (n, len(candidates))), held_out, category,
                                           names, k)}
