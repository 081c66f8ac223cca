"""Train the persona two-tower on a purchase log, find personas, evaluate against popularity.

    python -m ray_jobs.train_persona --config configs/persona.yaml [--set train.epochs=5 --set evaluation.personas=8]
    ray job submit -- python -m ray_jobs.train_persona --config configs/persona.yaml   # on a cluster (README, "On a cluster")

Input (``data``): H&M customers, articles and transactions (the default; read by the existing
adapters), or ``data.users_run``: a ``ray_jobs.train_users`` run, the demo's synthetic stand-in
users and log over its items (``recsys.data.users_run``; configs/persona_demo.yaml; the metrics and
charts then carry the stand-in note). Protocol: ``recsys.eval.persona`` (last purchase day held
out per customer, warm and cold-start customers, candidates = articles bought in training, MostPop
and PersonaPop baselines computed in this run). Output run directory: checkpoints/best_model.pt +
featurizer.json (vocabularies, z-score statistics, price-bucket edges), products.parquet (the
candidates' attributes), personas.json (centroids and names), metrics.json (with the data's
reconciliation and accounting), tsne.png, personas.png, training_charts.png and manifest.json;
``PersonaRecommender.load(run_dir)`` serves it.
"""
from __future__ import annotations

import time
from dataclasses import asdict

from recsys.artifacts import location_of, new_run_dir, write_json, write_manifest
from recsys.config import ConfigError
from recsys.eval.persona import (ONE_PER_CATEGORY, RANKERS, PersonaData, PersonaInputs, choose_served_ranker,
                                 cluster_personas, describe_personas, evaluate_rankers, load_persona_inputs,
                                 persona_chart, prepare_persona_data, profile_cells, tsne_plot)
from recsys.models.persona import PersonaRecommender, Personas, encode, load_model
from recsys.plots import line_panels
from recsys.train_loops.persona import TrainPersonaConfig, persona_loop
from ray_jobs.common.cli import init_ray, load_stage_config, run_main
from ray_jobs.common.trainer import fit_torch

__all__ = ["TrainPersonaConfig", "main", "run"]  # the config: recsys.train_loops.persona


def _load(cfg: TrainPersonaConfig) -> tuple[PersonaInputs, PersonaData]:
    """The configured source (H&M files or a train_users run) -> its tables -> the protocol's data."""
    inputs = load_persona_inputs(cfg.data, cfg.customer)
    for name, result in inputs.tables.items():
        print(f"{name}: read {result.records_read} = {result.table.num_rows} + quarantined {result.quarantine.num_rows}")
    try:
        return inputs, prepare_persona_data(inputs.tables["customers"].table, inputs.tables["articles"].table,
                                            inputs.tables["transactions"].table, cfg.customer, cfg.product)
    except ValueError as exc:
        raise ConfigError(f"{cfg.data.source}: {exc}") from exc


def run(cfg: TrainPersonaConfig) -> dict:
    if cfg.train.k != cfg.evaluation.k:
        raise ConfigError(f"train.k ({cfg.train.k}) and evaluation.k ({cfg.evaluation.k}) must match")
    inputs, data = _load(cfg)
    k, split, candidates = cfg.evaluation.k, data.split, data.candidates
    run_dir = new_run_dir(cfg.output_root, cfg, cfg.run_name)
    print(f"train_persona: {inputs.note + '; ' if inputs.note else ''}{len(data.users)} customers, {len(candidates)} "
          f"candidate articles; split {split.summary()}; run {run_dir}")
    init_ray()
    started = time.perf_counter()
    loop_config = {"train": asdict(cfg.train), "model": asdict(cfg.model), **data.sizes}
    fitted = fit_torch(persona_loop, loop_config, data.datasets, cfg.scaling, run_dir, "persona", cfg.train.select_on)
    train_seconds = round(time.perf_counter() - started, 1)

    model = load_model(fitted["best_model"])
    customer_vectors = encode(model.customer, data.c_ids, data.c_num)
    product_vectors = encode(model.product, data.datasets["items"]["i_ids"])
    labels, centroids = cluster_personas(customer_vectors, cfg.evaluation.personas, cfg.evaluation.seed)
    profile_fields = cfg.customer.numeric + cfg.customer.categorical
    described = describe_personas([data.profiles.get(u, {}) for u in data.users], labels, profile_fields,
                                  cfg.customer.bands, cfg.customer.suffixes)  # "age 25-34 · ACTIVE club · ..."
    names = [p["name"] for p in described]
    persona_of = dict(zip(data.users, labels.tolist()))
    serving, persona_scores = choose_served_ranker(split, candidates, data.item_category, persona_of, len(names),
                                                   customer_vectors, data.user_index, product_vectors, k)
    saved = PersonaRecommender.save(run_dir, data.profile_featurizer, data.product_featurizer, data.product_records,
                                    Personas(centroids, names), {**serving, "article_ids": candidates,
                                                                 "persona_popularity": persona_scores.tolist()})
    evaluation = evaluate_rankers(split, candidates, [data.item_category[a] for a in candidates], data.item_category,
                                  persona_of, names, customer_vectors, data.user_index, product_vectors, k,
                                  dict(zip(data.users, profile_cells(data.profiles, data.users, profile_fields,
                                                                     cfg.customer.bands))))
    metrics = {"note": inputs.note, "k": k, "n_customers": len(data.users), "n_candidates": len(candidates),
               "split": split.summary(), "train_seconds": train_seconds, "best_epoch": int(fitted["best_metrics"]["epoch"]),
               "selected_on": cfg.train.select_on, "served": serving, "personas": described, **evaluation,
               "data": {name: result.reconciliation() for name, result in inputs.tables.items()},
               "accounting": data.accounting,
               "featurizer": {"numeric_mean_std": data.profile_featurizer.stats,
                              "price_edges": data.product_featurizer.price_edges},
               "history": fitted["history"]}
    write_json(run_dir / "metrics.json", metrics)
    sizes = [p["size"] for p in described]
    persona_chart({r: evaluation["warm"][r] for r in RANKERS}, names, sizes,
                  run_dir / "personas.png", f"persona two-tower vs popularity, warm customers' last purchase day "
                  f"({len(candidates)} candidates)" + (f"\n{inputs.note}" if inputs.note else ""), k)
    tsne_plot(customer_vectors, labels, names, product_vectors,
              [str(r.get(cfg.product.colour_by)) for r in data.product_records], run_dir / "tsne.png",
              "persona two-tower: customers (by persona) and products in one space (t-SNE sample)",
              cfg.evaluation.tsne_sample, cfg.evaluation.seed)
    line_panels(fitted["history"], {"loss": ["train_loss"], f"validation hit@{k}": [f"val_hit@{k}", f"val_category_hit@{k}"],
                                    "validation AUC": ["val_auc"]}, run_dir / "training_charts.png", "persona two-tower")
    example = PersonaRecommender.load(run_dir) if cfg.example_profile else None  # before staging is uploaded
    write_manifest(run_dir, "train_persona", inputs.paths,
                   {"model": fitted["best_model"], **saved, "metrics": str(run_dir / "metrics.json")})
    _print_summary(metrics, names, sizes, k)
    if example:
        print(f"example {cfg.example_profile} -> persona {example.persona(cfg.example_profile)!r}: "
              f"{example.recommend(cfg.example_profile, top_n=5)}")
    print(f"run directory: {location_of(run_dir)}")
    return metrics | {"run_dir": location_of(run_dir)}


def _print_summary(metrics: dict, names: list[str], sizes: list[int], k: int) -> None:
    hit, cat = f"hit@{k}", f"category_hit@{k}"
    served = metrics["served"][f"validation_{hit}"]
    print(f"served for profile-only requests: {metrics['served']['ranker']} (chosen on the validation day: {hit} "
          f"model {served['model']:.4f}, persona_popular {served['persona_popular']:.4f}; the test day is not used)")
    if metrics["note"]:
        print(f"data: {metrics['note']}")
    for population in ("warm", "cold"):
        block = metrics[population]
        print(f"{population} customers ({block['n_customers']}), chance {hit} {block['chance']['overall'][hit]:.4f}:")
        for ranker in RANKERS:
            overall = block[ranker]["overall"]
            print(f"  {ranker:16s} {hit} {overall[hit]:.4f}  {cat} {overall[cat]:.4f}")
        print("  one article per category: " + ", ".join(
            f"{r.removesuffix('_one_per_category')} {cat} {block[r]['overall'][cat]:.4f}" for r in ONE_PER_CATEGORY))
        ceiling = {name: value for name, value in block[f"{cat}_ceiling"].items() if value is not None}
        if ceiling:
            print(f"  {cat} at best (an oracle choosing on this day), " + ", ".join(
                f"{name.replace('_', ' ')} {value:.4f}" for name, value in ceiling.items()))
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
