"""The main job end to end on a tiny generated corpus, then the evaluation command on its result, and
the users step's artifacts read back by the Serve app's user components."""
import json
from dataclasses import replace
from pathlib import Path

import pytest

from ray_jobs import evaluate_json_encoder, pipeline
from ray_jobs.build_index import BuildIndexConfig
from ray_jobs.embed import EmbedConfig
from recsys.index import IndexConfig
from recsys.ranking.rerankers import RerankEvalConfig
from ray_jobs.preprocess import PreprocessConfig
from ray_jobs.train_json_encoder import TrainJsonEncoderConfig
from ray_jobs.train_persona import TrainPersonaConfig
from ray_jobs.train_users import TrainUsersConfig
from recsys.config import load_config
from recsys.data.demo_users import UserLogConfig
from recsys.data.synthetic import SyntheticCorpusConfig
from recsys.encoders.image import ImageEncoderConfig
from recsys.eval.json_alignment import JsonEvalConfig
from recsys.models.rerankers import DeepFMConfig
from recsys.models.user_tower import UserTowerConfig
from recsys.train_loops.alignment import AlignmentTrainConfig
from recsys.train_loops.rerankers import DeepFMTrainConfig
from recsys.train_loops.item_tower import AdapterConfig, SimCSEConfig, TrainItemTowerConfig
from recsys.train_loops.user_tower import UserTowerTrainConfig
from recsys.encoders.handcrafted import HAND_CRAFTED_LABEL
from recsys.encoders.image import STAND_IN

pytestmark = pytest.mark.ray


def test_pipeline_runs_every_stage_and_the_evaluation_command_reproduces_it(idle_ray, tmp_path):
    corpus = tmp_path / "corpus"
    stage = TrainJsonEncoderConfig(train=AlignmentTrainConfig(epochs=2, batch_size=16),
                                   evaluation=JsonEvalConfig(search_k=5, search_samples=2))
    cfg = pipeline.PipelineConfig(
        corpus=SyntheticCorpusConfig(out_dir=str(corpus), n_images=150, workers=1),
        preprocess=PreprocessConfig(labels=str(corpus / "labels"), images=str(corpus / "images"),
                                    output_root=str(tmp_path / "pre")),
        embed=EmbedConfig(output_root=str(tmp_path / "emb"), image=ImageEncoderConfig(batch_size=16), batch_size=16,
                          text_sources=["title"]),
        build_index=BuildIndexConfig(output_root=str(tmp_path / "index"), view_column="view",
                                     index=IndexConfig(kind="exact"), recall_queries=50),
        item_tower=TrainItemTowerConfig(output_root=str(tmp_path / "tower"), tower="unified",
                                        simcse=SimCSEConfig(epochs=1, batch_size=64), adapter=AdapterConfig(epochs=1)),
        pretrain_json_encoder=replace(stage, output_root=str(tmp_path / "stage1"),
                                      train=replace(stage.train, objective="json_views")),
        train_json_encoder=replace(stage, output_root=str(tmp_path / "stage2")),
        train_users=TrainUsersConfig(
            output_root=str(tmp_path / "users"), log=UserLogConfig(n_users=200, median_length=6.0),
            user_tower=UserTowerConfig(dim=16, max_len=10, layers=1, ffn_dim=32),
            train=UserTowerTrainConfig(epochs=1, batch_size=64, patience=0, threads=1), val_max_users=100,
            rerankers=RerankEvalConfig(deepfm=DeepFMConfig(embedding_dim=16, hidden=[32]),
                                       deepfm_train=DeepFMTrainConfig(epochs=1, batch_lists=64))))
    persona = load_config(Path(__file__).resolve().parents[2] / "configs" / "persona_demo.yaml", TrainPersonaConfig)
    cfg.train_persona = replace(persona, output_root=str(tmp_path / "persona"), train=replace(persona.train, epochs=1),
                                evaluation=replace(persona.evaluation, personas=2, tsne_sample=100))
    cfg.image_baseline = pipeline.ImageBaselineConfig(image=ImageEncoderConfig(model="ViT-M-32", batch_size=16),
                                                      output_root=str(tmp_path / "baseline"))
    results = pipeline.run(cfg)

    image = results["embed"]["image"]
    assert image["vectors"] + image["unreadable"] == results["embed"]["items"]
    # Ray Data's stats give the actors' window: inside the stage, and the rate over it adds up.
    assert 0 < image["actor_window_seconds"] < image["seconds"]
    assert image["vectors_per_s_in_window"] == pytest.approx(image["vectors"] / image["actor_window_seconds"], rel=0.02)

    # the index Serve loads: one row per embedded item (view 0), other views skipped, counts reconcile
    vectors = results["build_index"]["vectors"]
    assert vectors["reconciles"] and vectors["indexed"] + vectors["quarantined"] == results["embed"]["items"]
    assert results["build_index"]["index"]["n_items"] == vectors["indexed"] > 0

    # the item tower Serve's similar uses: trained on the preprocessed items (its manifest names them, which
    # is how Serve matches it), and its exported vectors are what the served record of each item encodes to
    import numpy as np
    import pyarrow.parquet as pq

    from recsys.models.item_towers import ItemTowerEncoder
    from serve_app.catalog import ITEM_COLUMNS, item_record
    from serve_app.item_space import canonical_row

    tower_run = Path(results["item_tower"]["run_dir"])
    items_dir = Path(results["preprocess"]["run_dir"]) / "items"
    manifest = json.loads((tower_run / "manifest.json").read_text())
    assert Path(manifest["inputs"]["items"]) == items_dir.resolve()
    encoder = ItemTowerEncoder.load(tower_run)
    exported_ids, exported = encoder.run_vectors()
    rows = pq.read_table(items_dir, columns=ITEM_COLUMNS).to_pylist()
    assert sorted(exported_ids.tolist()) == sorted(r["item_id"] for r in rows)
    served = encoder.encode([canonical_row(item_record(r), encoder.std_fields) for r in rows])
    position = {item_id: n for n, item_id in enumerate(exported_ids.tolist())}
    assert np.abs(served - exported[[position[r["item_id"]] for r in rows]]).max() < 1e-5

    # what Serve would load from these roots: the index over this embed run, the tower trained on these
    # items, the persona run on these users (its products are served items)
    from serve_app.config import ArtifactSettings, ServeAppConfig
    from serve_app.versions import newest_version

    version = newest_version(ServeAppConfig(artifacts=ArtifactSettings(
        preprocess_root=str(tmp_path / "pre"), embed_root=str(tmp_path / "emb"),
        json_encoder_root=str(tmp_path / "stage2"), users_root=str(tmp_path / "users"),
        index_root=str(tmp_path / "index"), item_tower_root=str(tmp_path / "tower"),
        persona_root=str(tmp_path / "persona"))))
    assert version["index_run"] == str(Path(results["build_index"]["run_dir"]).resolve())
    assert version["item_tower_run"] == str(tower_run.resolve())
    assert version["persona_run"] == str(Path(results["train_persona"]["run_dir"]).resolve())
    persona_metrics = results["train_persona"]
    assert "synthetic stand-in" in persona_metrics["note"]
    assert {"model", "most_popular", "persona_popular"} <= set(persona_metrics["warm"])

    stage1, stage2 = results["pretrain_json_encoder"], results["train_json_encoder"]
    assert stage1["objective"] == "json_views" and 0 <= stage1["json_view_retrieval"]["top5"] <= 1
    assert stage2["init_from"] == str(Path(stage1["run_dir"]) / "checkpoints" / "best_model.pt")
    assert stage2["pretrained"] == HAND_CRAFTED_LABEL
    run_dir = Path(stage2["run_dir"])
    for name in ("checkpoints/best_model.pt", "checkpoints/vocab.json", "training_summary.json",
                 "training_charts.png", "results/training_results.json", "results/metrics.json",
                 "results/similarity_distribution.png", "results/image_to_json.png",
                 "results/centrality_per_category.png", "results/per_category_top5.png",
                 "results/similarity_search/query_000.png", "results/similarity_search/query_001.png"):
        assert (run_dir / name).is_file(), name
    n_val = stage2["n_val"]
    grid = json.loads((run_dir / "results/similarity_search/results.json").read_text())
    assert len(grid) == 2 and all(len(q["hits"]) == 5 for q in grid)
    assert stage2["json_to_image"]["full"]["n_queries"] == n_val
    assert stage2["image_to_json"]["full"]["n_queries"] == n_val
    assert sum(c["n"] for c in stage2["per_category"]["json_to_image"].values()) == n_val
    assert f"pretrained: {HAND_CRAFTED_LABEL}" in stage2["note"]

    # stage 2 again on the random ViT's vectors of the same crops: same held-out items, its runs apart
    # from the ones Serve loads (the newest embed run above is still the hand-crafted one)
    baseline = results["image_baseline"]
    assert baseline["pretrained"] == STAND_IN and baseline["n_val"] == n_val
    assert baseline["n_select"] == stage2["n_select"] > 0 and baseline["n_train_rows"] == stage2["n_train_rows"]
    assert Path(baseline["run_dir"]).parent == (tmp_path / "baseline" / "train_json_encoder").resolve()
    assert Path(baseline["image_embeddings"]).resolve().parent.parent == (tmp_path / "baseline" / "embed").resolve()
    assert version["embed_run"] == str(Path(results["embed"]["run_dir"]).resolve())

    # The command rebuilds the same split from the run's vocabulary and weights: identical numbers.
    report = evaluate_json_encoder.main(["--run", str(run_dir), "--out", str(tmp_path / "eval")])
    for direction in ("json_to_image", "image_to_json"):
        for protocol in ("full", "inbatch64"):
            assert report[direction][protocol] == pytest.approx(stage2[direction][protocol])
    assert (tmp_path / "eval" / "metrics.json").is_file() and (tmp_path / "eval" / "image_to_json.png").is_file()

    # The users step: a stand-in log over the embedded items, a user tower and DeepFM, in the layout
    # the Serve app's user components load (serve_app.users), with the same request-time features.
    from serve_app.users import LearnedReranker, UserModel, UserSources

    users = results["train_users"]
    assert "synthetic stand-in" in users["note"] and users["users"] == 200
    assert users["reranker"]["kind"] == "deepfm" and 0 <= users["reranker"]["test"]["reranker"]["ndcg@10"] <= 1
    # the untrained order Serve falls back to, reported beside the learned one (recsys.retrieval.recommender's
    # reciprocal_rank_fusion, written into the candidate contract)
    assert 0 <= users["reranker"]["test"]["rank fusion order"]["ndcg@10"] <= 1
    run = Path(users["run_dir"])
    # the order Serve uses was chosen on the selection lists (recsys.retrieval.ordering.pick_order), and saved
    served = users["reranker"]["served_order"]
    sums = {name: m["hr@10"] + m["ndcg@10"] for name, m in served["selection"].items()}
    assert set(sums) == {"learned", "rank_fusion"}
    assert served["order"] == ("learned" if sums["learned"] >= sums["rank_fusion"] else "rank_fusion")
    from serve_app.users import reranker_served_order
    assert reranker_served_order(run) == served
    model = UserModel(run)
    user_id = model.store.sample_ids(1)[0]
    user = model.store.get(user_id)
    assert user["history"] and model.context_dim == 384 and set(model.categorical) == {"style"}
    encoded = model.encode(user["history"], {"age": user["age"], "style": user["style"]}, None)
    found = UserSources(run, 30).candidates(encoded["vector"], user["history"])
    assert found["item_ids"] and not set(found["item_ids"]) & set(user["history"])
    scores = LearnedReranker(run).score(found["item_ids"], found["scores"], found["popularity"], user["history"])
    assert scores.shape == (len(found["item_ids"]),) and np.isfinite(scores).all()

    # No train/serve skew in ranking: on the run's own offline test lists (candidates.parquet), the
    # Serve app's request-time path (LearnedReranker.score on one user's list, then the library's MMR
    # as serve_app.components.reranker runs it) gives the scores and orders of the offline path
    # (build_lists over all users + score_lists, then mmr_lists) for the same inputs.
    from recsys.data.candidate_lists import build_lists, popularity, read_contract
    from recsys.models.rerankers import mmr_lists, mmr_with_gains, score_lists

    learned = LearnedReranker(run)
    candidates, sequences, score_columns = read_contract(run)
    assert score_columns == learned.score_columns
    offline = build_lists(candidates, sequences, "test", learned.index, score_columns, learned.item_vectors,
                          learned.max_history, ranker_features=False)
    offline_scores = score_lists(learned.model, offline.rows(scaler=learned.scaler))
    counts = popularity(sequences["history_test"].map(lambda h: [] if h is None else list(h)), learned.index)
    by_user = candidates[candidates["split"] == "test"].set_index("user_id")
    history_of = sequences.set_index("user_id")["history_test"]
    checked = 0
    for row, user_id in enumerate(offline.users[:20]):
        items = offline.items[row][offline.mask[row]]
        ids = [learned.index.ids[i - 1] for i in items]  # index 0 is padding
        listed = by_user.loc[[user_id]].set_index("item_id").loc[ids]
        served = learned.score(ids, {c: listed[c].to_numpy(np.float32) for c in score_columns}, counts[items],
                               [str(i) for i in history_of[user_id]])
        assert served == pytest.approx(offline_scores[row][offline.mask[row]], abs=1e-5), user_id
        vectors = learned.item_vectors[items]
        for lam in (1.0, 0.6):
            k = min(10, len(ids))
            order, _ = mmr_with_gains(served, vectors, lam, k, normalize=True)
            expected = mmr_lists(offline_scores[row:row + 1], learned.item_vectors[offline.items[row:row + 1]],
                                 offline.mask[row:row + 1], lam, k, normalize=True)[0]
            assert [ids[i] for i in order] == [learned.index.ids[offline.items[row][j] - 1] for j in expected]
        checked += 1
    assert checked >= 10


def test_an_image_baseline_that_would_land_where_serve_looks_is_refused(tmp_path):
    from recsys.config import ConfigError

    served = dict(preprocess=PreprocessConfig(labels="x", images="y"),
                  embed=EmbedConfig(output_root=str(tmp_path / "embed")),
                  train_json_encoder=TrainJsonEncoderConfig(output_root=str(tmp_path / "stage2")))
    with pytest.raises(ConfigError, match="where Serve looks"):
        pipeline.PipelineConfig(**served, image_baseline=pipeline.ImageBaselineConfig(output_root=str(tmp_path)))
    with pytest.raises(ConfigError, match="where Serve looks"):
        pipeline.PipelineConfig(**served, image_baseline=pipeline.ImageBaselineConfig(output_root=str(tmp_path / "stage2")))
    apart = pipeline.PipelineConfig(**served, image_baseline=pipeline.ImageBaselineConfig(output_root=str(tmp_path / "b")))
    assert apart.image_baseline.output_root == str(tmp_path / "b")
