"""Ray Train for real: the alignment loop learns, checkpoints the best epoch and resumes; the ASHA sweep
releases its own trials' leaked placement groups and no other job's."""
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from ray_jobs.common.alignment_trainer import ScalingSettings, fit_alignment
from recsys.models.json_encoder import JsonEncoderConfig, featurize, load_encoder
from recsys.train_loops.alignment import AlignmentTrainConfig
from recsys.vocab import AttributeVocabulary

pytestmark = pytest.mark.ray


def _toy(n, rng, prototypes):
    colors, categories = rng.integers(0, 4, n), rng.integers(0, 5, n)
    records = [{"color": f"c{c}", "category": f"k{k}", "material": [f"m{c}", f"m{k}"]} for c, k in zip(colors, categories)]
    targets = prototypes[colors * 5 + categories] + 0.05 * rng.normal(size=(n, 32))
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    return records, targets.astype(np.float32)


def toy_alignment(n: int, seed: int) -> tuple[dict, np.ndarray, dict, JsonEncoderConfig]:
    """(features, targets, vocabulary sizes, encoder) of ``n`` toy records whose targets follow their
    colour and category: the small JSON-encoder setup several Ray tests train on."""
    rng = np.random.default_rng(seed)
    prototypes = rng.normal(size=(20, 32))
    records, targets = _toy(n, rng, prototypes)
    encoder = JsonEncoderConfig(fields=["color", "category", "material"], multi_fields=["material"], max_values=2,
                                embedding_dim=8, hidden_dim=32, output_dim=32, dropout=0.0)
    vocab = AttributeVocabulary.build(records, ["color", "category"], ["material"], num_buckets=64)
    sizes = {"color": vocab.std.size("color"), "category": vocab.std.size("category"), "material": vocab.hashed.size}
    return featurize(vocab, records, encoder), targets, sizes, encoder


def test_alignment_trains_checkpoints_and_resumes(idle_ray, tmp_path):
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(20, 32))
    train_records, train_targets = _toy(256, rng, prototypes)
    val_records, val_targets = _toy(64, rng, prototypes)
    encoder = JsonEncoderConfig(fields=["color", "category", "material"], multi_fields=["material"], max_values=2,
                                embedding_dim=8, hidden_dim=32, output_dim=32, dropout=0.0)
    vocab = AttributeVocabulary.build(train_records, ["color", "category"], ["material"], num_buckets=64)
    sizes = {"color": vocab.std.size("color"), "category": vocab.std.size("category"), "material": vocab.hashed.size}
    train = {**featurize(vocab, train_records, encoder), "target": train_targets,
             "label": np.arange(256, dtype=np.int64)}
    val = {**featurize(vocab, val_records, encoder), "target": val_targets, "label": np.arange(64, dtype=np.int64)}
    training = AlignmentTrainConfig(epochs=3, batch_size=32, lr=0.01, temperature=0.1, field_dropout=0.0)

    fitted = fit_alignment(train, val, sizes, encoder, training, ScalingSettings(num_workers=1), tmp_path, "toy")
    history = fitted["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # 20 attribute combinations: a learned encoder ranks the right cluster first (chance top-5 = 5/64).
    assert fitted["best_metrics"]["val_top5"] > 0.3
    model = load_encoder(fitted["best_model"])
    assert model.embeddings["material"].num_embeddings == 65

    resumed = fit_alignment(train, val, sizes, encoder, AlignmentTrainConfig(**{**training.__dict__, "epochs": 4}),
                            ScalingSettings(num_workers=1), tmp_path, "toy")
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]  # epochs 0-2 came from the checkpoint


def _bystander_group(address: str, out: dict) -> None:
    """Another driver (its own job) connects, creates a detached placement group and exits; its id."""
    time.sleep(5)  # the sweep has recorded the groups that existed before it by then
    code = ("import ray; from ray.util import placement_group; ray.init(address=%r, log_to_driver=False); "
            "pg = placement_group([{'CPU': 0.01}], lifetime='detached'); ray.get(pg.ready(), timeout=60); "
            "print('PG', pg.id.hex())" % address)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=110)
    lines = [line for line in done.stdout.splitlines() if line.startswith("PG ")]
    out.update(id=lines[-1][3:] if lines else None, stderr=done.stderr[-2000:])


def test_asha_sweep_stops_trials_early_and_recommends_a_temperature(idle_ray, tmp_path):
    from ray_jobs.tune import SweepConfig, plot_sweep, sweep

    rng = np.random.default_rng(1)
    prototypes = rng.normal(size=(20, 32))
    train_records, train_targets = _toy(192, rng, prototypes)
    val_records, val_targets = _toy(64, rng, prototypes)
    encoder = JsonEncoderConfig(fields=["color", "category"], multi_fields=[], embedding_dim=8, hidden_dim=32,
                                output_dim=32, dropout=0.0)
    vocab = AttributeVocabulary.build(train_records, ["color", "category"], [])
    sizes = {"color": vocab.std.size("color"), "category": vocab.std.size("category")}
    train = {**featurize(vocab, train_records, encoder), "target": train_targets, "label": np.arange(192, dtype=np.int64)}
    val = {**featurize(vocab, val_records, encoder), "target": val_targets, "label": np.arange(64, dtype=np.int64)}
    cfg = SweepConfig(temperatures=[0.05, 1.0], batch_sizes=[16], lr_min=1e-4, lr_max=1e-2, samples_per_temperature=1,
                      max_epochs=3, grace_period=1, reduction_factor=2)
    # Another job on the same cluster creates a placement group while the sweep runs: the sweep's
    # clean-up of its trials' leaked groups must leave it alone.
    bystander: dict = {}
    creator = threading.Thread(target=_bystander_group, args=(idle_ray.get_runtime_context().gcs_address, bystander))
    # A trial holds driver (0.1) + worker CPUs, and the trial's dataset split needs a CPU outside them:
    # 0.5 per worker keeps the sum within this 2-CPU session.
    creator.start()
    report = sweep(train, val, sizes, encoder, AlignmentTrainConfig(field_dropout=0.0),
                   ScalingSettings(cpus_per_worker=0.5), cfg, tmp_path)
    creator.join(timeout=120)
    assert bystander.get("id"), f"the bystander job did not create its placement group: {bystander}"
    table = idle_ray.util.placement_group_table()
    assert table[bystander["id"]]["state"] == "CREATED", "the sweep removed another job's placement group"
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    idle_ray.util.remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(bystander["id"])))
    assert report["n_trials"] == 2 and all("error" not in t for t in report["trials"])
    for t in report["trials"]:
        print(t["config"], t["curve_val_top5"])
    # Seeded learning rates and one trial at a time: the same sweep everywhere. ASHA cut at least
    # one trial before max_epochs, and never the one leading after the first epoch.
    assert report["n_stopped_early"] >= 1
    leader = max(report["trials"], key=lambda t: t["curve_val_top5"][0])
    assert not leader["stopped_early"], report["trials"]
    assert report["recommended_temperature"] in (0.05, 1.0)
    assert report["best"]["best_val_top5"] == max(t["best_val_top5"] for t in report["trials"])
    plot_sweep(report, tmp_path / "sweep.png", "toy sweep")
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    # No trial's placement group may keep CPUs reserved after the sweep (Ray 2.60 leaks them).
    deadline = time.time() + 30
    while idle_ray.available_resources().get("CPU", 0) < idle_ray.cluster_resources()["CPU"]:
        assert time.time() < deadline, f"CPUs still reserved after the sweep: {idle_ray.available_resources()}"
        time.sleep(1)


def test_stage_one_json_views_pretrains_and_stage_two_starts_from_its_weights(idle_ray, tmp_path):
    import torch

    features, targets, sizes, encoder = toy_alignment(256, seed=1)
    # Stage 1 labels by distinct JSON: 20 combinations, so equal records are positives of each other.
    labels = np.unique(np.concatenate([features[f"ids/{f}"] for f in encoder.fields], axis=1), axis=0,
                       return_inverse=True)[1].reshape(-1)
    data = {**features, "target": targets, "label": labels.astype(np.int64)}
    stage1 = fit_alignment(data, data, sizes, encoder,
                           AlignmentTrainConfig(epochs=2, batch_size=32, lr=0.01, field_dropout=0.3,
                                                objective="json_views"),
                           ScalingSettings(num_workers=1), tmp_path / "s1", "stage1")
    assert stage1["history"][-1]["train_loss"] < stage1["history"][0]["train_loss"]
    # lr 0 (AdamW's decay is lr-scaled too): stage 2's weights must be exactly stage 1's.
    stage2 = fit_alignment(data, data, sizes, encoder, AlignmentTrainConfig(epochs=1, batch_size=32, lr=0.0),
                           ScalingSettings(num_workers=1), tmp_path / "s2", "stage2", init_model=stage1["best_model"])
    before, after = load_encoder(stage1["best_model"]).state_dict(), load_encoder(stage2["best_model"]).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(before["mlp.0.weight"], torch.zeros_like(before["mlp.0.weight"]))
