"""Protocol E3's recipe around ``recsys.eval.sequential`` (the split and metrics): the stage config,
the inputs a run reads (the log, frozen item vectors, user profiles, the content source's vectors)
and each stage's candidate sources (``recsys.retrieval.sources``). ``ray_jobs.evaluate_seq`` runs it
on Ray (the user tower, the item tower); the sources, ranker and report are plain library calls.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from recsys.config import to_dict
from recsys.data.interactions import load_interaction_log
from recsys.data.item_catalog import CatalogConfig, SplitConfig
from recsys.data.result import read_table_file
from recsys.eval.sequential import SequenceSplit
from recsys.models.item_towers import ItemTowerConfig
from recsys.models.user_tower import UserTowerConfig, pad_right, zscore_stats
from recsys.retrieval.content import catalog_attribute_vectors, dense_vectors
from recsys.retrieval.ranker import RankerConfig
from recsys.retrieval.popularity import Popularity
from recsys.retrieval.recommender import CandidateConfig, StageResult, run_stage
from recsys.retrieval.sources import SourceInputs, SourcesConfig, build_sources
from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig
from recsys.train_loops.user_tower import SCORE, UserTowerTrainConfig
from recsys.train_loops.scaling import EvalTasks, ScalingSettings


@dataclass
class ItemVectorsConfig:
    path: str | None = None            # reuse an item_vectors.parquet (train_item_tower); else trained from --items
    column: str = "vector"
    catalog: CatalogConfig = field(default_factory=CatalogConfig)   # --items sets catalog.catalog
    tower_name: str = "unified"
    tower: ItemTowerConfig = field(default_factory=ItemTowerConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    adapter_dim: int = 128
    split: SplitConfig = field(default_factory=lambda: SplitConfig(cold_fraction=0.0))


@dataclass
class ProfileConfig:
    user_col: str | None = None        # id column of --users; None: the log's --user-col
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)


@dataclass
class SequentialEvalConfig(SourcesConfig):
    """E3's settings (the candidate sources' come from :class:`SourcesConfig`)."""
    scaling: ScalingSettings = field(default_factory=ScalingSettings)  # Ray Train workers of the stage's fits
    dedupe: bool = True
    k: int = 10
    user_tower: UserTowerConfig = field(default_factory=UserTowerConfig)
    train: UserTowerTrainConfig = field(default_factory=UserTowerTrainConfig)
    val_max_users: int | None = 5000   # validation users ranked every epoch (checkpoint selection)
    bootstrap_samples: int = 2000      # paired bootstrap of the model against each baseline
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    order: str = "auto"     # auto: learned ranker or a fallback, on validation users (recsys.retrieval.ordering)
    item_vectors: ItemVectorsConfig = field(default_factory=ItemVectorsConfig)
    # The user tower's frozen item vectors (with --items): attributes = a truncated SVD of the content
    # source's TF-IDF (the item tower is still trained, for the cold-target comparison) | item_tower.
    # An export given as item_vectors.path is used as it is.
    tower_item_vectors: str = "attributes"
    attributes_dim: int = 128
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    tasks: EvalTasks = field(default_factory=EvalTasks)   # Ray tasks of the heavy steps (ray_jobs.common.tasks)

    def __post_init__(self):
        super().__post_init__()
        if self.tower_item_vectors not in ("attributes", "item_tower"):
            raise ValueError(f"tower_item_vectors must be 'attributes' or 'item_tower', got {self.tower_item_vectors!r}")


def load_log(path: str, user_col: str, item_col: str, order_col: str, dedupe: bool) -> tuple[pd.DataFrame, dict]:
    result = load_interaction_log(path, user_col, item_col, order_col)
    frame = result.table.select(["user_id", "item_id", "timestamp", "position"]).to_pandas()
    info = {"rows_read": result.records_read, "quarantined": result.quarantine.num_rows, "duplicates_dropped": 0}
    if dedupe and frame["timestamp"].notna().any():
        repeated = frame.duplicated(["user_id", "item_id", "timestamp"], keep="first")
        info["duplicates_dropped"] = int(repeated.sum())
        frame = frame[~repeated]
    return frame, info


def align_item_vectors(ids: np.ndarray, vectors: np.ndarray, item_ids: np.ndarray, source: str
                       ) -> tuple[np.ndarray, dict]:
    """(I, k) ``vectors`` in the log's item order (zeros where ``ids`` has no row) and their summary."""
    where = {item: row for row, item in enumerate(ids)}
    out = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
    known = np.array([where.get(item, -1) for item in item_ids])
    out[known >= 0] = vectors[known[known >= 0]]
    return out, {"source": source, "dim": int(vectors.shape[1]), "coverage": round(float((known >= 0).mean()), 4)}


def profile_columns(cfg: ProfileConfig, users_path: str | None, user_col: str, user_ids: np.ndarray
                    ) -> tuple[dict[str, np.ndarray], dict]:
    """Per-user profile arrays in the split's user order, and the fields' sizes/statistics."""
    if not users_path or not (cfg.numeric or cfg.categorical):
        return {}, {}
    id_col = cfg.user_col or user_col
    frame = read_table_file(users_path, [id_col, *cfg.numeric, *cfg.categorical], "a users table")
    ids = frame[id_col].astype(str).str.strip()
    frame = frame.assign(_id=ids).drop_duplicates("_id").set_index("_id").reindex(user_ids)
    columns, info = {}, {"numeric": cfg.numeric, "categorical": cfg.categorical, "cardinalities": []}
    if cfg.numeric:
        columns["profile_numeric"] = frame[cfg.numeric].apply(pd.to_numeric, errors="coerce").to_numpy(np.float32)
        info["mean"], info["std"] = zscore_stats(columns["profile_numeric"])
    if cfg.categorical:
        ids = []
        for name in cfg.categorical:
            values = frame[name].astype("string").str.strip()
            codes, uniques = pd.factorize(values.where(values.notna() & (values != ""), None))
            ids.append(codes + 1)                                  # -1 (missing) -> 0
            info["cardinalities"].append(int(len(uniques) + 1))
        columns["profile_categorical"] = np.stack(ids, axis=1).astype(np.int64)
    info["coverage"] = round(float(frame.notna().any(axis=1).mean()), 4)
    return columns, info


def content_vectors(cfg: SequentialEvalConfig, items_path: str | None, item_ids: np.ndarray,
                    tower_vectors: np.ndarray | None) -> tuple[object | None, dict]:
    """The content source's item vectors in the log's item order (None: no content source)."""
    if not cfg.content.enabled:
        return None, {"source": "off (content.enabled: false)"}
    if cfg.content.vectors == "item_tower":
        if tower_vectors is None:
            return None, {"source": "none (content.vectors: item_tower needs --items or item_vectors.path)"}
        return tower_vectors, {"source": "item tower vectors",
                               "coverage": round(float((np.abs(tower_vectors).sum(1) > 0).mean()), 4)}
    if not items_path:
        return None, {"source": "none (no --items)"}
    return attribute_matrix(cfg, items_path, item_ids)


def attribute_matrix(cfg: SequentialEvalConfig, items_path: str, item_ids: np.ndarray) -> tuple[object, dict]:
    """TF-IDF of the catalog's category, attribute and title tokens in the log's item order."""
    return catalog_attribute_vectors(CatalogConfig(**{**asdict(cfg.item_vectors.catalog), "catalog": items_path}),
                                     item_ids, cfg.content.title, "item_vectors.catalog.id_col")


def tower_vectors(cfg: SequentialEvalConfig, items_path: str | None, item_ids: np.ndarray,
                  tower_vectors: np.ndarray | None, content) -> tuple[np.ndarray | None, dict]:
    """The user tower's frozen item vectors (``tower_item_vectors``): the item tower's (or the export of
    ``item_vectors.path``), or a truncated SVD of the catalog's TF-IDF (``content`` when it is that
    matrix, else built here)."""
    if cfg.tower_item_vectors == "item_tower" or not items_path or cfg.item_vectors.path:
        return tower_vectors, {"source": "the item vectors above"}
    matrix = content if content is not None and cfg.content.vectors == "attributes" else None
    if matrix is None:
        matrix, _ = attribute_matrix(cfg, items_path, item_ids)
    vectors = dense_vectors(matrix, cfg.attributes_dim)
    return vectors, {"source": f"attributes of {items_path} (TF-IDF, truncated SVD)", "dim": int(vectors.shape[1])}


def item_content(cfg: SequentialEvalConfig, items_path: str | None, item_ids: np.ndarray,
                 item_tower_vectors: np.ndarray | None) -> tuple[object | None, dict, np.ndarray | None, dict]:
    """The content source's vectors and the user tower's frozen item vectors (one Ray task in E3:
    both read the catalog and the second may reuse the first's TF-IDF)."""
    content, content_info = content_vectors(cfg, items_path, item_ids, item_tower_vectors)
    vectors, vectors_info = tower_vectors(cfg, items_path, item_ids, item_tower_vectors, content)
    return content, content_info, vectors, vectors_info


def resolved_tower(cfg: SequentialEvalConfig, vectors: np.ndarray | None, columns: dict, profile_info: dict
                   ) -> UserTowerConfig:
    """The tower's config with the inputs this run has (frozen vectors, profile fields)."""
    return UserTowerConfig(**{**asdict(cfg.user_tower),
                              "item_vector_dim": 0 if vectors is None else int(vectors.shape[1]),
                              "profile_numeric": cfg.profile.numeric if "profile_numeric" in columns else [],
                              "profile_categorical": (cfg.profile.categorical if "profile_categorical" in columns
                                                      else []),
                              "profile_cardinalities": profile_info.get("cardinalities", [])})


def stage_sources(cfg: SourcesConfig, split: SequenceSplit, stage: str, user_vectors: np.ndarray,
                  item_vectors: np.ndarray, content) -> dict:
    """The candidate sources fitted on what ``stage`` may see (``recsys.retrieval.sources``)."""
    baskets = split.has_baskets
    return build_sources(cfg, SourceInputs(split.training_sequences(stage), split.n_items, user_vectors, item_vectors,
                                           split.basket_ids(f"train_{stage}") if baskets else None,
                                           split.basket_ids(stage) if baskets else None, content))


def stage_candidates(cfg: SequentialEvalConfig, split: SequenceSplit, stage: str, user_vectors: np.ndarray,
                     item_vectors: np.ndarray, content, history: Sequence[np.ndarray], target: np.ndarray
                     ) -> tuple[Popularity, StageResult]:
    """A stage's popularity source (later steps break ties with it) and its merged, labelled candidates
    with each source's target ranks (one Ray task per stage in E3: the other fitted sources stay there)."""
    sources = stage_sources(cfg, split, stage, user_vectors, item_vectors, content)
    result = run_stage(sources, sources["mostpop"], history, target, cfg.candidates, evaluate=True,
                       progress=f"{stage} candidates")
    return sources["mostpop"], result


def user_arrays(histories, rows, columns: dict, max_len: int) -> dict:
    return {"items": pad_right(histories, max_len), **{k: v[rows] for k, v in columns.items()}}


def run_name(cfg: SequentialEvalConfig, *paths: str | None) -> str:
    """Ray Train resumes a run of the same name: only the same tower settings on the same files
    may (ranker or candidate settings do not retrain the tower)."""
    tower_settings = {key: to_dict(cfg)[key] for key in ("dedupe", "user_tower", "train", "val_max_users",
                                                          "item_vectors", "tower_item_vectors", "attributes_dim",
                                                          "content", "profile")}
    stamp = "|".join(f"{Path(p).resolve()}:{Path(p).stat().st_size}" for p in paths if p)
    digest = hashlib.sha1((json.dumps(tower_settings, sort_keys=True, default=str) + stamp).encode()).hexdigest()
    return f"user_tower-{digest[:10]}"


METRICS = ("hr@10", "ndcg@10", "mrr")


def short(summary: dict) -> dict:
    return {key: round(summary[key], 4) for key in METRICS}


@dataclass
class Ranking:
    """The ranker, its scores per stage (the contract's ``ranker_score``), the order served
    (``recsys.retrieval.ordering``) and full-ranking target ranks per stage, served and learned."""
    ranker: object
    scores: dict
    choice: object
    ranks: dict
    learned_ranks: dict
    seconds: dict            # the ranker's fit, the order's choice, the ranking


def rank_candidates(cfg: SequentialEvalConfig, stages: dict, popularity: dict, history: dict, target: dict
                    ) -> Ranking:
    """The ranker trained on the validation stage's candidates, the order chosen on the validation
    users' held-out scores, and the recommender's full-ranking target ranks per stage (one Ray task in E3).
    ``popularity``: each stage's MostPop source (ties)."""
    from recsys.retrieval.ordering import LEARNED, choose_order, order_scores
    from recsys.retrieval.ranker import CandidateRanker
    from recsys.retrieval.recommender import recommender_ranks
    from recsys.timing import timed

    seconds = {}
    with timed(seconds, "ranker"):
        names = sorted(stages["val"].candidates.features)
        matrix = lambda s: np.stack([stages[s].candidates.features[n] for n in names], axis=1)  # noqa: E731
        ranker = CandidateRanker(cfg.ranker, names).fit(matrix("val"), stages["val"].labels,
                                                        stages["val"].candidates.row, held_out_scores=True)
        scores = {s: ranker.predict(matrix(s)) for s in stages}
    with timed(seconds, "order_choice"):
        choice = choose_order(stages["val"], ranker.held_out_scores, popularity["val"], history["val"], target["val"],
                              cfg.k, cfg.candidates.chunk_size, cfg.order)
    print(f"order served: {choice.order} ({choice.reason})")

    def ranks_of(order: str, s: str) -> np.ndarray:
        ordered = order_scores(stages[s].candidates, order, scores[s], popularity[s])
        return recommender_ranks(stages[s].candidates, ordered, popularity[s], history[s], target[s],
                                 cfg.candidates.chunk_size, progress=f"{s} recommender ranks ({order})")

    with timed(seconds, "ranking"):
        ranks = {s: ranks_of(choice.order, s) for s in stages}
        learned = {s: ranks[s] if choice.learned else ranks_of(LEARNED, s) for s in stages}
    return Ranking(ranker, scores, choice, ranks, learned, seconds)


def best_source(ranks: dict, k: int) -> str:
    """The source with the highest HR@k + NDCG@k on these ranks (the strongest single-source rival)."""
    from recsys.metrics.ranking import hit_rate_at_k, ndcg_at_k

    return max(ranks, key=lambda name: hit_rate_at_k(ranks[name], k) + ndcg_at_k(ranks[name], k))


def e3_report(cfg: SequentialEvalConfig, split: SequenceSplit, stages: dict, ranking: Ranking, repeated: np.ndarray,
              tower_cfg: UserTowerConfig, fitted: dict, data: dict) -> dict:
    """metrics.json's numbers: the model (the served order), the learned ranker's order, the user
    tower, the baselines and every source on the test targets, the paired bootstrap against the
    baselines and the best source, the order choice, validation-stage numbers, candidate recall and
    the hits on repeated targets."""
    from recsys.eval.sequential import paired_bootstrap
    from recsys.metrics.ranking import rank_summary

    n_users, n_items, k = len(split.eval_rows), split.n_items, cfg.k
    test_ranks, val_ranks = stages["test"].ranks, stages["val"].ranks
    model_ranks, learned_ranks = ranking.ranks, ranking.learned_ranks
    # the strongest single source on the test targets: the rival the served order must not lose to
    rival = best_source(test_ranks, k)
    report = {"model": short(rank_summary(model_ranks["test"], k)),
              "learned_ranker": short(rank_summary(learned_ranks["test"], k)),
              "order": ranking.choice.summary(),
              "best_source": rival,
              "user_tower": short(rank_summary(test_ranks["user_tower"], k)),
              "baselines": {"mostpop": short(rank_summary(test_ranks["mostpop"], k)),
                            "itemknn": short(rank_summary(test_ranks["itemknn"], k))},
              "sources": {name: short(rank_summary(test_ranks[name], k)) for name in test_ranks},
              "comparison": {f"model_vs_{name}": paired_bootstrap(model_ranks["test"], test_ranks[name], k,
                                                                  cfg.bootstrap_samples)
                             for name in ("itemknn", "mostpop")},
              "n_users": int(n_users), "n_items": int(n_items),
              "config": {**to_dict(cfg), "user_tower_resolved": asdict(tower_cfg)}}
    report["comparison"]["model_vs_best_source"] = paired_bootstrap(model_ranks["test"], test_ranks[rival], k,
                                                                    cfg.bootstrap_samples)
    # the tower alone against popularity (issue: a tower below MostPop on sparse logs earns no place)
    report["comparison"]["user_tower_vs_mostpop"] = paired_bootstrap(test_ranks["user_tower"], test_ranks["mostpop"],
                                                                     k, cfg.bootstrap_samples)
    report["comparison"]["learned_ranker_vs_best_source"] = paired_bootstrap(learned_ranks["test"], test_ranks[rival],
                                                                             k, cfg.bootstrap_samples)
    report["validation"] = {"model (in-sample if learned: the ranker is trained on these targets)":
                            short(rank_summary(model_ranks["val"], k)),
                            **{name: short(rank_summary(val_ranks[name], k)) for name in val_ranks}}
    report["candidate_recall"] = {"n_per_source": cfg.candidates.n_per_source,
                                  **{s: {key: round(v, 4) for key, v in stages[s].recall.items()}
                                     for s in ("val", "test")}}
    # The metric excludes the history but never the target, so a target the user already had can be
    # hit by any method that scores history items; shown apart so a gain is not that artefact.
    report["hits_on_repeated_test_targets"] = {
        "repeated_targets": int(repeated.sum()),
        **{name: {"hits@k": int(np.sum(ranks < k)), "of_which_repeated": int(np.sum((ranks < k) & repeated))}
           for name, ranks in {"model": model_ranks["test"], **test_ranks}.items()}}
    report["candidates_per_user"] = {s: round(len(stages[s].candidates) / n_users, 1) for s in ("val", "test")}
    report["ranker"] = ranking.ranker.summary()
    report["user_tower_training"] = {"best_epoch": fitted["best_metrics"]["epoch"],
                                     "epochs_run": len(fitted["history"]),
                                     f"best_{SCORE}": round(fitted["best_metrics"][SCORE], 4),
                                     "checkpoint": fitted["best_model"]}
    report["data"] = {**data, "test_targets_in_history": round(float(repeated.mean()), 4),
                      "baskets": split.has_baskets}
    report["protocol"] = ("E3 leave-last-out: order by the order column (ties: file order); test = last item, "
                          "validation = second-to-last; users with >= 3 interactions; full ranking over all "
                          f"{n_items} items with the user's history excluded (the target never); equal scores "
                          "ordered by popularity")
    return report


def cold_target_content(cfg: SequentialEvalConfig, split: SequenceSplit, items_path: str | None,
                        tower_vectors: np.ndarray | None, served_content, history: list, target: np.ndarray,
                        popularity, model_ranks: np.ndarray, source_ranks: dict) -> dict:
    """The test targets never bought in training (new products to this log): the content source built on the
    item tower's vectors beside the one built on TF-IDF of the catalog's attributes, in the same run, on the
    same users, with the same weights, candidates and metric; the model and every source on those users too.
    Which of the two the recommender serves stays ``content.vectors``; ``served_content`` is its matrix,
    already built by the run (None: build both here)."""
    from dataclasses import replace

    from recsys.eval.sequential import paired_bootstrap
    from recsys.metrics.ranking import rank_summary
    from recsys.retrieval.content import ContentSource
    from recsys.retrieval.recommender import run_stage

    bought = np.zeros(split.n_items, dtype=bool)
    for sequence in split.training_sequences("test"):
        bought[sequence] = True
    cold = ~bought[target]
    variants = {}
    for kind in ("attributes", "item_tower"):
        if cfg.content.enabled:
            vectors = served_content if kind == cfg.content.vectors and served_content is not None else \
                content_vectors(replace(cfg, content=replace(cfg.content, vectors=kind)), items_path,
                                split.item_ids, tower_vectors)[0]
            if vectors is not None:
                variants["content:tfidf" if kind == "attributes" else "content:item_tower"] = vectors
    report = {"n_users": int(cold.sum()), "share_of_test_users": round(float(cold.mean()), 4)}
    if len(variants) < 2 or not cold.any():
        why = ("content.enabled is false" if not cfg.content.enabled else
               "no test target is new to the log" if not cold.any() else
               "needs --items (TF-IDF and item-tower vectors of the catalog)")
        return report | {"skipped": why}
    stage = run_stage({name: ContentSource(vectors, cfg.content.weights) for name, vectors in variants.items()},
                      popularity, [history[i] for i in np.flatnonzero(cold)], target[cold], cfg.candidates,
                      evaluate=True, progress="cold test targets: content variants")
    k = cfg.k
    ranks = {"model": model_ranks[cold], **{name: r[cold] for name, r in source_ranks.items()}, **stage.ranks}
    return report | {"metrics": {name: short(rank_summary(r, k)) for name, r in ranks.items()},
                     "item_tower_vs_tfidf": paired_bootstrap(stage.ranks["content:item_tower"],
                                                             stage.ranks["content:tfidf"], k, cfg.bootstrap_samples)}


def write_e3_outputs(out_dir: Path, split: SequenceSplit, stages: dict, ranker_scores: dict, report: dict) -> None:
    """candidates.parquet and sequences.parquet (the reranker contract) and comparison.png."""
    from recsys.plots import grouped_bars
    from recsys.retrieval.export import write_candidates, write_sequences

    rows = split.eval_rows
    write_candidates(out_dir / "candidates.parquet",
                     [(s, stages[s].candidates, stages[s].labels, ranker_scores[s]) for s in ("val", "test")],
                     split.user_ids[rows], split.item_ids)
    write_sequences(out_dir / "sequences.parquet", split.user_ids[rows], split.history("val"), split.history("test"),
                    split.targets("val"), split.targets("test"), split.item_ids)
    grouped_bars(_shown(report), out_dir / "comparison.png", f"E3 leave-last-out, {len(rows)} users, full ranking "
                 f"over {split.n_items} items (test targets)")


def _shown(report: dict) -> dict:
    served = report["order"]["served"]
    shown = {f"recommender ({served})": report["model"]}
    if served != "learned":
        shown["learned ranker (not served)"] = report["learned_ranker"]
    return {**shown, "user tower": report["user_tower"],
            "ItemKNN (transitions)": report["baselines"]["itemknn"], "MostPop": report["baselines"]["mostpop"]}


def print_e3_summary(report: dict, out_dir: Path) -> None:
    from recsys.eval.report import print_metric_table

    print_metric_table(_shown(report), METRICS, ["HR@10", "NDCG@10", "MRR"], width=7)
    print(f"order served: {report['order']['served']} ({report['order']['reason']}); best source on the test "
          f"targets: {report['best_source']}")
    for name, paired in report["comparison"].items():
        print(f"{name}: " + ", ".join(f"{m} {paired[m]['difference']:+.4f} (95% CI {paired[m]['ci95'][0]:+.4f}.."
                                      f"{paired[m]['ci95'][1]:+.4f})" for m in METRICS))
    cold = report.get("cold_test_targets", {})
    if "metrics" in cold:
        shown = ", ".join(f"{name} {m['hr@10']:.4f}/{m['ndcg@10']:.4f}" for name, m in cold["metrics"].items())
        paired = cold["item_tower_vs_tfidf"]
        print(f"test targets never bought in training ({cold['n_users']} users, {cold['share_of_test_users']:.0%}), "
              f"HR@10/NDCG@10: {shown}; item tower - TF-IDF content: " + ", ".join(
                  f"{m} {paired[m]['difference']:+.4f} ({paired[m]['ci95'][0]:+.4f}..{paired[m]['ci95'][1]:+.4f})"
                  for m in ("hr@10", "ndcg@10")))
    elif cold:
        print(f"test targets never bought in training: {cold['n_users']} users; content comparison skipped: "
              f"{cold['skipped']}")
    print(f"timings (s): {report['timings_s']}")
    print(f"report: {out_dir / 'metrics.json'}; plot comparison.png; candidates.parquet, sequences.parquet")
