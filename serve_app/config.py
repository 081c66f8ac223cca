"""Typed settings of the Serve application, read from the ``args:`` of ``configs/serve.yaml``.

The same YAML is a Serve config (``serve run configs/serve.yaml`` / ``serve deploy``): Serve hands
``applications[0].args`` to :func:`serve_app.serve.app_builder`, and the ``deployments:`` list there
sets replicas, autoscaling and resources. :func:`load_serve_yaml` reads both for ``serve.run`` in
Python (tests, notebooks), where Serve does not apply the YAML itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from recsys.config import ConfigError, from_dict
from recsys.crm.messages import CrmConfig
from recsys.index import IndexConfig
from recsys import storage
from recsys.llm.config import LLMConfig
from recsys.stores.item_log import PGVECTOR_NEEDS_POSTGRES_LOG, ItemLogConfig


@dataclass
class ArtifactSettings:
    """Where the served artifacts come from. ``None`` runs mean "the newest run under the root"."""
    preprocess_root: str = "artifacts/preprocess"
    embed_root: str = "artifacts/embed"
    json_encoder_root: str = "artifacts/train_json_encoder"
    json_encoder_run: str | None = None   # pin a stage-2 run directory
    embed_run: str | None = None          # pin an embed run directory
    items: str | None = None              # items parquet dir; None: the items the embed run read
    users_root: str = "artifacts/train_users"
    users_run: str | None = None          # pin a train_users run; None: the newest (none at all: no user endpoints)
    index_root: str = "artifacts/index"   # ray_jobs.build_index runs
    index_run: str | None = None          # pin one; None: the newest built over the embed run's image vectors
                                          # (none: the index is built from the vectors when a replica loads)
    item_tower_root: str = "artifacts/item_tower"   # ray_jobs.train_item_tower runs
    item_tower_run: str | None = None     # pin one; None: the newest trained on the served items (none: no tower)
    persona_root: str = "artifacts/persona_users"   # ray_jobs.train_persona runs on a users run's customers
    persona_run: str | None = None        # pin one; None: the newest whose products are served items (none: no persona)


@dataclass
class UploadLimits:
    max_bytes: int = 10_000_000            # a larger upload is refused with 413
    max_pixels: int = 40_000_000           # decompression-bomb guard (header checked before decoding)
    formats: list[str] = field(default_factory=lambda: ["JPEG", "PNG", "WEBP", "GIF", "BMP"])


@dataclass
class ImageSettings:
    """Upload embedding model. ``model: null`` takes the embed run's own image config, so uploaded
    images land in the same space as the indexed item vectors."""
    model: str | None = None
    pretrained: str | None = None
    seed: int | None = None
    threads: int = 1                       # torch threads per ImageEmbedder replica


@dataclass
class TextSettings:
    enabled: bool = True                   # free-text queries against the embed run's text vectors
    model: str | None = None               # None: the embed run's text model
    source: str = "title"                  # which text_embeddings source is searched
    weight: float = 0.3                    # share of the text score when a query has attributes and text


@dataclass
class SearchSettings:
    default_k: int = 10
    max_k: int = 100
    candidates: int = 100                  # retrieved before re-ranking


RERANKERS = ("auto", "mmr")


@dataclass
class RerankerSettings:
    name: str = "auto"                     # auto: the users run's learned reranker when it has one, else MMR; mmr: always MMR
    mmr_lambda: float = 0.7                # relevance vs diversity of search/similar results (1 = relevance only)


@dataclass
class UserSettings:
    enabled: bool = True                   # false: no user endpoints even when a users run exists
    candidates_per_source: int = 30        # per source (user tower, ItemKNN, popularity); as in training
    mmr_lambda: float = 1.0                # default diversity of user recommendations (1 = the reranker's order)


@dataclass
class CrmSettings:
    """``POST /api/crm/messages``: the writer (the offline template stand-in unless an
    OpenAI-compatible server is named) and the messages' settings (tones, channel limits, products)."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    crm: CrmConfig = field(default_factory=CrmConfig)


@dataclass
class BestSellerSettings:
    share: float = 0.1                     # top share of the catalog when no best sellers are given
    interactions: str | None = None        # interactions parquet (sales); None: centrality proxy


@dataclass
class ServeIndexSettings(IndexConfig):
    """``recsys.index.IndexConfig`` (used when no build_index run matches the embed run) plus how a
    replica loads a build_index artifact (``recsys.index.load_index``)."""
    mmap: bool = True                      # map index.faiss: replicas on a node share it in the page cache
    cache_dir: str = "artifacts/serve/cache"  # node-local copies of the served runs on object storage (s3://)
    backend: str = "faiss"                 # faiss: an index per replica; pgvector: the index_run's PostgreSQL
                                           # table, shared by every replica (needs item_log.kind: postgres)

    def __post_init__(self):
        super().__post_init__()
        if self.backend not in INDEX_BACKENDS:
            raise ConfigError(f"index.backend: expected one of {list(INDEX_BACKENDS)}, got {self.backend!r}")


INDEX_BACKENDS = ("faiss", "pgvector")


@dataclass
class KpiSettings:
    augmented_samples: int = 3             # items shown with their augmented training views
    augmented_views: int = 2


@dataclass
class SimilarSettings:
    """Which vectors ``GET /api/similar`` compares: ``image`` (the embed run's image vectors),
    ``item_tower`` (the item tower's attribute vectors: new products are placed by their attributes),
    ``auto`` (the item tower when the version has one, else image)."""
    space: str = "auto"


SIMILAR_SPACES = ("auto", "image", "item_tower")


@dataclass
class ServeAppConfig:
    artifacts: ArtifactSettings = field(default_factory=ArtifactSettings)
    state_dir: str = "artifacts/serve/state"   # the file item log's folder (item_log.kind file)
    item_log: ItemLogConfig = field(default_factory=ItemLogConfig)  # products added/deleted through the API:
                                           # file (one node) or postgres (every replica on every node)
    admin_token_env: str = "FASHIONREC_ADMIN_TOKEN"
    uploads: UploadLimits = field(default_factory=UploadLimits)
    max_request_bytes: int = 60_000_000    # whole request body (several uploads); 413 above
    image: ImageSettings = field(default_factory=ImageSettings)
    text: TextSettings = field(default_factory=TextSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    similar: SimilarSettings = field(default_factory=SimilarSettings)
    index: ServeIndexSettings = field(default_factory=lambda: ServeIndexSettings(kind="exact"))  # hnsw/ivfpq for big catalogs
    reranker: RerankerSettings = field(default_factory=RerankerSettings)
    users: UserSettings = field(default_factory=UserSettings)
    best_sellers: BestSellerSettings = field(default_factory=BestSellerSettings)
    new_items_file: str | None = None      # optional list of catalog item ids that count as new products
    kpi: KpiSettings = field(default_factory=KpiSettings)
    crm: CrmSettings = field(default_factory=CrmSettings)
    latency_window: int = 10_000           # requests kept for the live latency percentiles

    def __post_init__(self):
        if self.index.backend == "pgvector" and self.item_log.kind != "postgres":
            raise ConfigError(PGVECTOR_NEEDS_POSTGRES_LOG)
        if self.similar.space not in SIMILAR_SPACES:
            raise ConfigError(f"similar.space must be one of {list(SIMILAR_SPACES)}, got {self.similar.space!r}")
        if self.reranker.name not in RERANKERS:
            raise ConfigError(f"reranker.name must be one of {list(RERANKERS)}, got {self.reranker.name!r}")
        for key, value in (("reranker.mmr_lambda", self.reranker.mmr_lambda), ("users.mmr_lambda", self.users.mmr_lambda)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{key} must be in [0, 1], got {value}")
        if self.users.candidates_per_source < 1:
            raise ConfigError(f"users.candidates_per_source must be >= 1, got {self.users.candidates_per_source}")
        if not 0.0 < self.best_sellers.share <= 1.0:
            raise ConfigError(f"best_sellers.share must be in (0, 1], got {self.best_sellers.share}")
        if not 0.0 <= self.text.weight <= 1.0:
            raise ConfigError(f"text.weight must be in [0, 1], got {self.text.weight}")
        if self.search.candidates < self.search.max_k:
            raise ConfigError(f"search.candidates ({self.search.candidates}) must be >= search.max_k "
                              f"({self.search.max_k})")


PATH_KEYS = {("artifacts", "preprocess_root"), ("artifacts", "embed_root"), ("artifacts", "json_encoder_root"),
             ("artifacts", "json_encoder_run"), ("artifacts", "embed_run"), ("artifacts", "items"),
             ("artifacts", "users_root"), ("artifacts", "users_run"), ("artifacts", "item_tower_root"),
             ("artifacts", "item_tower_run"), ("artifacts", "persona_root"), ("artifacts", "persona_run"),
             ("state_dir",), ("best_sellers", "interactions"), ("new_items_file",), ("index", "cache_dir")}


def resolve_paths(config: ServeAppConfig, base: str | Path | None = None) -> ServeAppConfig:
    """Relative paths -> absolute against ``base`` (the working directory of whoever builds the app),
    so replicas find the files whatever their own working directory is."""
    base = Path(base or os.getcwd())

    def absolute(value):  # object-store URIs (s3://...) stay as written: Path() would fold them into local paths
        if value is None or Path(value).is_absolute() or not storage.is_local(value):
            return value
        return str((base / value).resolve())

    def walk(obj, prefix=()):
        changes = {}
        for f in fields(obj):
            value = getattr(obj, f.name)
            key = prefix + (f.name,)
            if is_dataclass(value):
                changes[f.name] = walk(value, key)
            elif key in PATH_KEYS:
                changes[f.name] = absolute(value)
        return replace(obj, **changes)

    return walk(config)


def config_from_args(args: dict[str, Any] | None) -> ServeAppConfig:
    return from_dict(ServeAppConfig, dict(args or {}), where="serve app args")


def load_serve_yaml(path: str | Path, app_name: str | None = None) -> tuple[ServeAppConfig, dict[str, dict]]:
    """``configs/serve.yaml`` -> (app settings from ``args``, ``{deployment name: options}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"serve config {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    apps = data.get("applications") or []
    if not apps:
        raise ConfigError(f"{path}: no applications: entry")
    app = next((a for a in apps if app_name is None or a.get("name") == app_name), None)
    if app is None:
        raise ConfigError(f"{path}: no application named {app_name!r}")
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments") or []}
    return config_from_args(app.get("args")), options
