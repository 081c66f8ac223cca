"""The whole chain on one config: what `make demo` runs.

    python -m ray_jobs.pipeline --config configs/pipeline.yaml
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/pipeline.yaml

Stages: synthetic K-Fashion corpus (skipped when an identical one exists) -> Ray Data preprocessing
(canonical items, quarantine, reconciliation report) -> batch embedding on actor pools (crops,
texts) -> the FAISS index over the image vectors (``ray_jobs.build_index``, what Serve loads) ->
the item tower over the items' attributes (``ray_jobs.train_item_tower``: Serve's ``similar`` space,
new products placed by their attributes) -> JSON-encoder stage 1 (JSON-view pretraining) -> stage 2 (alignment to the image
embeddings, from stage 1's weights) on Ray Train, with its evaluation and similarity-search grids
-> users (``ray_jobs.train_users``: a synthetic stand-in interaction log over the embedded items, a
user tower and a learned reranker on Ray Train), which the Serve app's user endpoints load -> the
persona two-tower on those users' profiles (``ray_jobs.train_persona``: profile-only requests).
``python -m serve_app.demo`` then serves all of it (what ``make demo`` runs next).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from recsys.config import ConfigError
from recsys.data.synthetic import SyntheticCorpusConfig, existing_corpus
from recsys.encoders.image import ImageEncoderConfig
from ray_jobs import (build_index, embed, generate_corpus, preprocess, train_item_tower, train_json_encoder,
                      train_persona, train_users)
from ray_jobs.common.cli import load_stage_config, run_main
from ray_jobs.common.pipeline_report import print_results


@dataclass
class PipelineConfig:
    preprocess: preprocess.PreprocessConfig
    corpus: SyntheticCorpusConfig | None = field(default_factory=SyntheticCorpusConfig)  # null: real labels
    regenerate_corpus: bool = False
    embed: embed.EmbedConfig | None = field(default_factory=embed.EmbedConfig)            # null: stop after preprocess
    # the index Serve loads, over the embed run's image vectors (one row per item: view 0); null: skip
    build_index: build_index.BuildIndexConfig | None = field(default_factory=lambda: build_index.BuildIndexConfig(
        view_column="view"))
    item_tower: train_item_tower.TrainItemTowerConfig | None = None  # over the preprocessed items; null: skip
    pretrain_json_encoder: train_json_encoder.TrainJsonEncoderConfig | None = None  # stage 1; null: skip
    train_json_encoder: train_json_encoder.TrainJsonEncoderConfig | None = field(
        default_factory=train_json_encoder.TrainJsonEncoderConfig)
    train_users: train_users.TrainUsersConfig | None = field(default_factory=train_users.TrainUsersConfig)  # null: skip
    train_persona: train_persona.TrainPersonaConfig | None = None  # on train_users' run; null: skip
    image_baseline: ImageBaselineConfig | None = None  # stage 2 again on another image encoder's vectors; null: skip

    def __post_init__(self):
        if self.image_baseline is None:
            return
        root = Path(self.image_baseline.output_root).resolve()
        served = [Path(stage.output_root).resolve() for stage in (self.embed, self.train_json_encoder) if stage]
        if any(path in (root, root / "embed", root / "train_json_encoder") for path in served):
            raise ConfigError(f"image_baseline.output_root {self.image_baseline.output_root!r}: its runs would land "
                              f"where Serve looks for the served embed / JSON-encoder runs ({[str(p) for p in served]})")


@dataclass
class ImageBaselineConfig:
    """Stage 2 once more, identical but for the image encoder (the crops re-embedded by ``image``), so
    the run reports the served encoder's JSON->image Top-5 beside this baseline's. Its runs go under
    ``output_root``, never where Serve looks for the latest embed or JSON-encoder run."""
    image: ImageEncoderConfig = field(default_factory=lambda: ImageEncoderConfig(model="ViT-M-32"))
    output_root: str = "artifacts/image_baseline"


def run(cfg: PipelineConfig) -> dict:
    if cfg.corpus is not None:
        manifest = None if cfg.regenerate_corpus else existing_corpus(cfg.corpus)
        if manifest:
            print(f"[1/9] corpus: reusing {Path(cfg.corpus.out_dir).resolve()} "
                  f"({manifest['n_label_files']} label files, same config)")
        else:
            print("[1/9] corpus: generating the synthetic K-Fashion corpus")
            generate_corpus.run(cfg.corpus)
    print("[2/9] preprocess: Ray Data over the label corpus")
    report = preprocess.run(cfg.preprocess)
    run_dir = Path(report["run_dir"])
    results = {"preprocess": report}
    if cfg.embed is not None:
        print("[3/9] embed: image crops and item texts on Ray Data actor pools")
        results["embed"] = embed.run(replace(cfg.embed, items=str(run_dir / "items")))
        if cfg.build_index is not None:
            print(f"[4/9] build_index: the {cfg.build_index.backend} index over the item image vectors (what Serve loads)")
            vectors = str(Path(results["embed"]["run_dir"]) / "image_embeddings")
            results["build_index"] = build_index.run(replace(cfg.build_index, vectors=vectors))
    if cfg.item_tower is not None:
        print("[5/9] item_tower: the item tower over the items' attributes on Ray Train (Serve's similar space)")
        results["item_tower"] = train_item_tower.run(replace(cfg.item_tower, catalog=replace(
            cfg.item_tower.catalog, items=str(run_dir / "items"), catalog=None)))
    if cfg.embed is not None:
        inputs = {"items": str(run_dir / "items"),
                  "embeddings": str(Path(results["embed"]["run_dir"]) / "image_embeddings")}
        init_from = None
        if cfg.pretrain_json_encoder is not None:
            print("[6/9] pretrain_json_encoder: stage 1, JSON-view contrastive pretraining on Ray Train")
            results["pretrain_json_encoder"] = train_json_encoder.run(replace(cfg.pretrain_json_encoder, **inputs))
            init_from = results["pretrain_json_encoder"]["run_dir"]
        if cfg.train_json_encoder is not None:
            print("[7/9] train_json_encoder: stage 2, JSON encoder aligned to the image embeddings on Ray Train")
            results["train_json_encoder"] = train_json_encoder.run(replace(cfg.train_json_encoder, **inputs,
                                                                           init_from=init_from))
            if cfg.image_baseline is not None:
                results["image_baseline"] = _image_baseline(cfg, inputs["items"], init_from)
        if cfg.train_users is not None:
            print("[8/9] train_users: stand-in interaction log over the embedded items, user tower and reranker "
                  "on Ray Train")
            results["train_users"] = train_users.run(replace(cfg.train_users, embed_run=results["embed"]["run_dir"]))
            if cfg.train_persona is not None:
                print("[9/9] train_persona: persona two-tower on the users' profiles on Ray Train (profile-only "
                      "requests)")
                results["train_persona"] = train_persona.run(replace(cfg.train_persona, data=replace(
                    cfg.train_persona.data, users_run=results["train_users"]["run_dir"])))
    print_results(results, run_dir)
    return results


def _image_baseline(cfg: PipelineConfig, items: str, init_from: str | None) -> dict:
    baseline, root = cfg.image_baseline, Path(cfg.image_baseline.output_root)
    print(f"[7/9] image baseline: crops re-embedded by {baseline.image.model}, stage 2 trained again on them")
    embedded = embed.run(replace(cfg.embed, items=items, image=baseline.image, embed_texts=False,
                                 output_root=str(root / "embed")))
    return train_json_encoder.run(replace(cfg.train_json_encoder, items=items, init_from=init_from,
                                          embeddings=str(Path(embedded["run_dir"]) / "image_embeddings"),
                                          output_root=str(root / "train_json_encoder")))


def main(argv: list[str] | None = None) -> dict:
    return run(load_stage_config(__doc__.splitlines()[0], PipelineConfig, "configs/pipeline.yaml", argv))


if __name__ == "__main__":
    run_main(main)
