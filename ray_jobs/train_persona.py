"""Train the persona two-tower on a purchase log, find personas, evaluate against popularity.

    python -m ray_jobs.train_persona --config configs/persona.yaml [--set train.epochs=5 --set evaluation.personas=8]

Input: H&M customers, articles and transactions (paths in the config; read by the existing
adapters). Protocol: ``recsys.eval.persona`` (last purchase day held out per customer, warm and
cold-start customers, candidates = articles bought in training, MostPop and PersonaPop baselines
computed in this run). Output run directory: checkpoints/best_model.pt + featurizer.json
(vocabularies, z-score statistics, price-bucket edges), products.parquet (the candidates'
attributes), personas.json (centroids and names), metrics.json, tsne.png, personas.png,
training_charts.png and manifest.json; ``PersonaRecommender.load(run_dir)`` serves it.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.artifacts import new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.data.catalogs import load_hm_articles
from recsys.data.interactions import load_hm_customers, load_hm_transactions
from recsys.eval.persona import (HeldOut, chance_report, cluster_personas, describe_personas, item_records,
                                 mean_prices, persona_chart, persona_popularity_scores, popularity_scores,
                                 profiles_from_users, purchases_frame, ranking_report, split_last_day, tsne_plot)
from recsys.models.persona import (PersonaModelConfig, PersonaRecommender, Personas, ProductFeaturizer,
                                   ProfileFeaturizer, encode, load_model)
from recsys.plots import line_panels
from recsys.train_loops.persona import PersonaTrainConfig, persona_loop
from ray_jobs.cli import init_ray, load_stage_config, run_main
from ray_jobs.trainer import ScalingSettings, fit_torch

HM = "../shared/data/hm_pse_subset"
RANKERS = ("model", "model_pop_ties", "most_popular", "persona_popular")


@dataclass
class PersonaDataConfig:
    customers: str = f"{HM}/customers.parquet"
    articles: str = f"{HM}/articles.parquet"
    transactions: str = f"{HM}/transactions.parquet"


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
class TrainPersonaConfig:
    data: PersonaDataConfig = field(default_factory=PersonaDataConfig)
    customer: CustomerFieldsConfig = field(default_factory=CustomerFieldsConfig)
    product: ProductFieldsConfig = field(default_factory=ProductFieldsConfig)
    model: PersonaModelConfig = field(default_factory=PersonaModelConfig)
    train: PersonaTrainConfig = field(default_factory=PersonaTrainConfig)
    evaluation: PersonaEvalConfig = field(default_factory=PersonaEvalConfig)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    example_profile: dict[str, Any] = field(default_factory=dict)   # printed with its top 5 at the end
    output_root: str = "artifacts/persona"
    run_name: str | None = None                  # fixed run directory name: re-running it resumes


def _load(cfg: PersonaDataConfig):
    loaded = {"customers": load_hm_customers(cfg.customers), "articles": load_hm_articles(cfg.articles),
              "transactions": load_hm_transactions(cfg.transactions)}
    for name, result in loaded.items():
        print(f"{name}: read {result.records_read} = {result.table.num_rows} + quarantined {result.quarantine.num_rows}")
    return loaded


def run(cfg: TrainPersonaConfig) -> dict:
    if cfg.train.k != cfg.evaluation.k:
        raise ConfigError(f"train.k ({cfg.train.k}) and evaluation.k ({cfg.evaluation.k}) must match")
    loaded = _load(cfg.data)
    # Only the configured fields: the featurizer rejects any other key (a typo in a served profile must fail).
    inputs = cfg.customer.categorical + cfg.customer.numeric
    profiles = {u: {f: p[f] for f in inputs if f in p} for u, p in profiles_from_users(loaded["customers"].table).items()}
    extra_fields = [cfg.product.category_field, cfg.product.colour_by]
    records = item_records(loaded["articles"].table, list(dict.fromkeys(cfg.product.fields + extra_fields)))
    purchases = purchases_frame(loaded["transactions"].table, set(records))
    split = split_last_day(purchases)
    if split.train.empty or split.val.empty:
        raise ConfigError(f"{cfg.data.transactions}: the split needs training purchases and customers with >= 3 "
                          f"purchase days for validation; got {split.summary()}")
    k = cfg.evaluation.k

    # Candidates: every article bought in training, in id order (equal scores break ties by id).
    candidates = sorted(split.train["item_id"].unique())
    candidate_index = {a: i for i, a in enumerate(candidates)}
    prices = mean_prices(split.train)
    purchases_in_train = split.train["item_id"].value_counts().to_dict()
    product_records = [{"article_id": a, **records[a], "price": prices.get(a), "purchases": purchases_in_train[a]}
                       for a in candidates]
    item_category = {a: str(r.get(cfg.product.category_field)) for a, r in records.items()}
    category_ids = {c: i for i, c in enumerate(sorted(set(item_category.values())))}

    users = sorted(set(profiles) | set(purchases["user_id"]))
    user_index = {u: i for i, u in enumerate(users)}
    train_users = sorted(set(split.train["user_id"]))
    profile_featurizer = ProfileFeaturizer.fit([profiles.get(u, {}) for u in train_users], cfg.customer.categorical,
                                               cfg.customer.numeric, cfg.customer.bands, cfg.customer.numeric_encoding)
    product_featurizer = ProductFeaturizer.fit(product_records, cfg.product.fields, cfg.product.price_buckets)
    c_ids, c_num = profile_featurizer.transform([profiles.get(u, {}) for u in users])
    i_ids = product_featurizer.transform(product_records)

    def pairs(frame, candidates_only: bool) -> dict[str, np.ndarray]:
        user = frame["user_id"].map(user_index).to_numpy(np.int64)
        columns = {"user": user, "c_ids": c_ids[user],
                   "item": frame["item_id"].map(lambda a: candidate_index.get(a, -1)).to_numpy(np.int64),
                   "category": frame["item_id"].map(lambda a: category_ids[item_category[a]]).to_numpy(np.int64)}
        if profile_featurizer.n_numeric:
            columns["c_num"] = c_num[user]
        return {key: value[columns["item"] >= 0] for key, value in columns.items()} if candidates_only else columns

    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    print(f"train_persona: {len(users)} customers, {len(candidates)} candidate articles; split {split.summary()}; "
          f"run {run_dir}")
    init_ray()
    started = time.perf_counter()
    loop_config = {"train": asdict(cfg.train), "model": asdict(cfg.model), "customer_sizes": profile_featurizer.sizes(),
                   "n_numeric": profile_featurizer.n_numeric, "product_sizes": product_featurizer.sizes()}
    items = {"i_ids": i_ids, "category": np.array([category_ids[item_category[a]] for a in candidates], np.int64)}
    fitted = fit_torch(persona_loop, loop_config, {"train": pairs(split.train, True), "items": items,
                                                   "val": pairs(split.val, False)},
                       cfg.scaling, run_dir, "persona", cfg.train.select_on)
    train_seconds = round(time.perf_counter() - started, 1)
    write_json(run_dir / PersonaRecommender.FEATURIZER_FILE, {"profile": profile_featurizer.to_dict(),
                                                               "product": product_featurizer.to_dict()})
    pq.write_table(pa.Table.from_pylist(product_records), run_dir / PersonaRecommender.PRODUCTS_FILE)

    model = load_model(fitted["best_model"])
    customer_vectors = encode(model.customer, c_ids, c_num if profile_featurizer.n_numeric else None)
    product_vectors = encode(model.product, i_ids)
    labels, centroids = cluster_personas(customer_vectors, cfg.evaluation.personas, cfg.evaluation.seed)
    described = describe_personas([profiles.get(u, {}) for u in users], labels,
                                  cfg.customer.numeric + cfg.customer.categorical,  # "age 25-34 · ACTIVE club · ..."
                                  cfg.customer.bands, cfg.customer.suffixes)
    names = [p["name"] for p in described]
    write_json(run_dir / PersonaRecommender.PERSONAS_FILE, Personas(centroids, names).to_dict())

    persona_of = dict(zip(users, labels.tolist()))
    evaluation = _evaluate(split, candidates, [item_category[a] for a in candidates], item_category, persona_of,
                           names, customer_vectors, user_index, product_vectors, k)

    metrics = {"k": k, "n_customers": len(users), "n_candidates": len(candidates), "split": split.summary(),
               "train_seconds": train_seconds, "best_epoch": int(fitted["best_metrics"]["epoch"]),
               "selected_on": cfg.train.select_on,
               "personas": described, **evaluation,
               "data": {name: result.reconciliation() for name, result in loaded.items()},
               "featurizer": {"numeric_mean_std": profile_featurizer.stats, "price_edges": product_featurizer.price_edges},
               "history": fitted["history"]}
    write_json(run_dir / "metrics.json", metrics)
    sizes = [p["size"] for p in described]
    persona_chart({r: evaluation["warm"][r] for r in RANKERS}, names, sizes,
                  run_dir / "personas.png", f"persona two-tower vs popularity, warm customers' last purchase day "
                  f"({len(candidates)} candidates)", k)
    tsne_plot(customer_vectors, labels, names, product_vectors,
              [str(r.get(cfg.product.colour_by)) for r in product_records], run_dir / "tsne.png",
              "persona two-tower: customers (by persona) and products in one space (t-SNE sample)",
              cfg.evaluation.tsne_sample, cfg.evaluation.seed)
    line_panels(fitted["history"], {"loss": ["train_loss"], f"validation hit@{k}": [f"val_hit@{k}", f"val_category_hit@{k}"],
                                    "validation AUC": ["val_auc"]}, run_dir / "training_charts.png", "persona two-tower")
    write_manifest(run_dir, "train_persona", asdict(cfg.data),
                   {"model": fitted["best_model"], "featurizer": str(run_dir / PersonaRecommender.FEATURIZER_FILE),
                    "products": str(run_dir / PersonaRecommender.PRODUCTS_FILE),
                    "personas": str(run_dir / PersonaRecommender.PERSONAS_FILE), "metrics": str(run_dir / "metrics.json")})
    _print_summary(metrics, names, sizes, k)
    if cfg.example_profile:
        recommender = PersonaRecommender.load(run_dir)
        print(f"example {cfg.example_profile} -> persona {recommender.persona(cfg.example_profile)!r}: "
              f"{recommender.recommend(cfg.example_profile, top_n=5)}")
    print(f"run directory: {run_dir}")
    return metrics | {"run_dir": str(run_dir)}


def _evaluate(split, candidates: list[str], candidate_category: list[str], item_category: dict[str, str],
              persona_of: dict[str, int], names: list[str], customer_vectors: np.ndarray, user_index: dict[str, int],
              product_vectors: np.ndarray, k: int) -> dict:
    """Warm and cold customers' last purchase day: the model (pure, and with popularity breaking its
    exact ties), MostPop and PersonaPop on the same candidates, plus chance."""
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
        evaluation[population] = {"n_customers": len(held_out.users),
                                  "chance": chance_report(held_out, len(candidates), names, k),
                                  **{name: ranking_report(scores, held_out, category, names, k, order)
                                     for name, (scores, order) in rankers.items()}}
    return evaluation


def _print_summary(metrics: dict, names: list[str], sizes: list[int], k: int) -> None:
    hit, cat = f"hit@{k}", f"category_hit@{k}"
    for population in ("warm", "cold"):
        block = metrics[population]
        print(f"{population} customers ({block['n_customers']}), chance {hit} {block['chance']['overall'][hit]:.4f}:")
        for ranker in RANKERS:
            overall = block[ranker]["overall"]
            print(f"  {ranker:16s} {hit} {overall[hit]:.4f}  {cat} {overall[cat]:.4f}")
    print(f"per persona (warm; {' / '.join(RANKERS)}):")
    for name, size in zip(names, sizes):
        cells = [metrics["warm"][r]["per_persona"][name] for r in RANKERS]
        if cells[0]["n"]:
            print(f"  {name} (persona {size}, eval {cells[0]['n']}): {hit} " + " / ".join(f"{c[hit]:.3f}" for c in cells)
                  + f"  {cat} " + " / ".join(f"{c[cat]:.3f}" for c in cells))
    print(f"train {metrics['train_seconds']} s, best epoch {metrics['best_epoch'] + 1}")


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], TrainPersonaConfig, "configs/persona.yaml", argv))


if __name__ == "__main__":
    run_main(main)
