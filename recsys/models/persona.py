"""Persona two-tower: customer profile attributes and product attributes in one 32-d L2 space.

The cosmetics study's model, generalised to any profile fields and any item fields:

- :class:`ProfileFeaturizer` (customer side): categorical fields -> ``StdVocabulary`` ids (unseen or
  missing values -> the reserved UNKNOWN id); numeric fields (age) z-scored with the training
  mean/std it stores (missing -> the mean, i.e. 0), or, with ``numeric_encoding="bucket"``, turned
  into band tokens ("25-34") with their own vocabulary.
- :class:`ProductFeaturizer` (product side): the configured item fields (category, a brand or its
  stand-in, colour, ...) -> ids; the virtual field ``price_bucket`` is the quantile bucket of the
  article's mean transaction price, with the bucket edges stored.
- :class:`FieldTower`: Embedding(16) per token field (+ the numeric inputs) -> concat -> MLP(64 -> 32)
  -> L2. :class:`PersonaTwoTower` is a customer tower and a product tower of that shape.
- :func:`triplet_loss` (``recsys.losses.persona``): customer anchor, purchased product positive,
  sampled non-purchased negative.
- :class:`PersonaRecommender`: ``recommend(profile)`` for a visitor with no id and no history.

Every fitted statistic (vocabularies, z-score mean/std, price edges) is saved with the model
(``to_dict``/``from_dict``) so serving never refits anything.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.vocab import PAD_ID, UNKNOWN_ID, StdVocabulary

NUMERIC_ENCODINGS = ("zscore", "bucket")
PRICE_BUCKET = "price_bucket"


# ---------------------------------------------------------------- customer side

def band_label(value: float, edges: Sequence[float]) -> str:
    """Numeric value -> its band between sorted ``edges``: edges [25, 35] give "<25", "25-34", "35+"
    (integer edges read as whole years; other edges as half-open ranges "1.5-<2.5")."""
    edges = list(edges)
    index = int(np.searchsorted(edges, value, side="right"))
    integral = all(float(e).is_integer() for e in edges)
    if index == 0:
        return f"<{edges[0]:g}"
    if index == len(edges):
        return f"{edges[-1]:g}+"
    low, high = edges[index - 1], edges[index]
    return f"{low:g}-{high - 1:g}" if integral else f"{low:g}-<{high:g}"


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


@dataclass
class ProfileFeaturizer:
    """Profile dict -> (token ids [n, F], numeric [n, N]); fitted on training profiles, then frozen."""
    categorical: list[str]
    numeric: list[str]
    vocab: StdVocabulary
    stats: dict[str, list[float]]                       # numeric field -> [mean, std] of training values
    bands: dict[str, list[float]] = field(default_factory=dict)
    numeric_encoding: str = "zscore"

    def __post_init__(self):
        if self.numeric_encoding not in NUMERIC_ENCODINGS:
            raise ValueError(f"numeric_encoding must be one of {NUMERIC_ENCODINGS}, got {self.numeric_encoding!r}")
        if self.numeric_encoding == "bucket":
            missing = [f for f in self.numeric if not self.bands.get(f)]
            if missing:
                raise ValueError(f"numeric_encoding 'bucket' needs band edges for numeric field(s) {missing}")

    @property
    def fields(self) -> list[str]:
        return list(self.categorical) + list(self.numeric)

    @property
    def token_fields(self) -> list[str]:
        bucketed = [f"{f}_band" for f in self.numeric] if self.numeric_encoding == "bucket" else []
        return list(self.categorical) + bucketed

    @property
    def n_numeric(self) -> int:
        return len(self.numeric) if self.numeric_encoding == "zscore" else 0

    def sizes(self) -> list[int]:
        return [self.vocab.size(f) for f in self.token_fields]

    @classmethod
    def fit(cls, profiles: Sequence[Mapping], categorical: Sequence[str], numeric: Sequence[str],
            bands: Mapping[str, Sequence[float]] | None = None, numeric_encoding: str = "zscore") -> "ProfileFeaturizer":
        stats = {}
        for name in numeric:
            values = np.array([float(p[name]) for p in profiles if not _is_missing(p.get(name))], dtype=float)
            mean = float(values.mean()) if len(values) else 0.0
            std = float(values.std()) if len(values) > 1 else 0.0
            stats[name] = [mean, std if std > 0 else 1.0]  # a constant field must not divide by zero
        featurizer = cls(list(categorical), list(numeric), StdVocabulary(), stats,
                         {k: [float(e) for e in v] for k, v in (bands or {}).items()}, numeric_encoding)
        featurizer.vocab = StdVocabulary.build([featurizer._tokens(p) for p in profiles], featurizer.token_fields)
        return featurizer

    def validate(self, profile: Mapping) -> None:
        """Clear errors for what a caller can get wrong: unknown keys and wrong value types.
        Missing keys, None, NaN and unseen values are fine (UNKNOWN id / the training mean)."""
        if not isinstance(profile, Mapping):
            raise ValueError(f"profile: expected a dict of {self.fields}, got {type(profile).__name__}")
        unknown = sorted(set(profile) - set(self.fields))
        if unknown:
            raise ValueError(f"profile field(s) {unknown} are not model inputs; known fields: {self.fields}")
        for name in self.categorical:
            value = profile.get(name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"profile field {name!r}: expected text or None, got {type(value).__name__} {value!r}")
        for name in self.numeric:
            value = profile.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                      or math.isinf(value)):
                raise ValueError(f"profile field {name!r}: expected a finite number or None, got "
                                 f"{type(value).__name__} {value!r}")

    def _tokens(self, profile: Mapping) -> dict[str, str | None]:
        tokens = {name: None if _is_missing(profile.get(name)) else str(profile[name]).strip()
                  for name in self.categorical}
        if self.numeric_encoding == "bucket":
            for name in self.numeric:
                value = profile.get(name)
                tokens[f"{name}_band"] = None if _is_missing(value) else band_label(float(value), self.bands[name])
        return tokens

    def transform(self, profiles: Sequence[Mapping]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(profiles), len(self.token_fields)), UNKNOWN_ID, dtype=np.int64)
        numeric = np.zeros((len(profiles), self.n_numeric), dtype=np.float32)
        for row, profile in enumerate(profiles):
            self.validate(profile)
            tokens = self._tokens(profile)
            for col, name in enumerate(self.token_fields):
                ids[row, col] = (self.vocab.encode(name, tokens[name]) or [UNKNOWN_ID])[0]
            for col in range(self.n_numeric):
                name = self.numeric[col]
                value = profile.get(name)
                mean, std = self.stats[name]
                numeric[row, col] = 0.0 if _is_missing(value) else (float(value) - mean) / std
        return ids, numeric

    def to_dict(self) -> dict:
        return {"categorical": self.categorical, "numeric": self.numeric, "vocab": self.vocab.to_dict(),
                "stats": self.stats, "bands": self.bands, "numeric_encoding": self.numeric_encoding}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ProfileFeaturizer":
        return cls(list(data["categorical"]), list(data["numeric"]), StdVocabulary.from_dict(data["vocab"]),
                   {k: [float(x) for x in v] for k, v in data["stats"].items()},
                   {k: [float(x) for x in v] for k, v in data.get("bands", {}).items()},
                   data.get("numeric_encoding", "zscore"))


# ---------------------------------------------------------------- product side

def price_bucket_edges(prices: Sequence[float], n_buckets: int) -> list[float]:
    """Inner quantile edges (n_buckets - 1 of them, duplicates merged) of per-article mean prices."""
    prices = np.asarray([p for p in prices if p is not None and np.isfinite(p)], dtype=float)
    if n_buckets < 2 or not len(prices):
        return []
    return [float(e) for e in np.unique(np.quantile(prices, np.arange(1, n_buckets) / n_buckets))]


def price_bucket(price, edges: Sequence[float]) -> str | None:
    """"q1" (cheapest bucket) .. "q<n>"; None (-> UNKNOWN) without a price."""
    if price is None or not np.isfinite(price):
        return None
    return f"q{int(np.searchsorted(edges, price, side='right')) + 1}"


@dataclass
class ProductFeaturizer:
    """Item record ``{field: value, "price": mean price}`` -> token ids [n, F] over ``fields``."""
    fields: list[str]
    vocab: StdVocabulary
    price_edges: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, records: Sequence[Mapping], fields: Sequence[str], n_price_buckets: int = 5) -> "ProductFeaturizer":
        edges = price_bucket_edges([r.get("price") for r in records], n_price_buckets) if PRICE_BUCKET in fields else []
        featurizer = cls(list(fields), StdVocabulary(), edges)
        featurizer.vocab = StdVocabulary.build([featurizer.tokens(r) for r in records], featurizer.fields)
        return featurizer

    def sizes(self) -> list[int]:
        return [self.vocab.size(f) for f in self.fields]

    def tokens(self, record: Mapping) -> dict[str, str | None]:
        out = {}
        for name in self.fields:
            value = price_bucket(record.get("price"), self.price_edges) if name == PRICE_BUCKET else record.get(name)
            out[name] = None if _is_missing(value) else str(value)
        return out

    def transform(self, records: Sequence[Mapping]) -> np.ndarray:
        ids = np.full((len(records), len(self.fields)), UNKNOWN_ID, dtype=np.int64)
        for row, record in enumerate(records):
            tokens = self.tokens(record)
            for col, name in enumerate(self.fields):
                ids[row, col] = (self.vocab.encode(name, tokens[name]) or [UNKNOWN_ID])[0]
        return ids

    def to_dict(self) -> dict:
        return {"fields": self.fields, "vocab": self.vocab.to_dict(), "price_edges": self.price_edges}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ProductFeaturizer":
        return cls(list(data["fields"]), StdVocabulary.from_dict(data["vocab"]), [float(e) for e in data["price_edges"]])


# ---------------------------------------------------------------- towers and loss

@dataclass
class PersonaModelConfig:
    embedding_dim: int = 16
    hidden_dim: int = 64
    output_dim: int = 32
    dropout: float = 0.0


class FieldTower(nn.Module):
    """One Embedding per token field (id 0 = pad, 1 = unknown) and the numeric inputs, concatenated,
    MLP(hidden -> output), L2-normalised."""

    def __init__(self, sizes: Sequence[int], n_numeric: int, config: PersonaModelConfig):
        super().__init__()
        self.n_numeric = n_numeric
        self.embeddings = nn.ModuleList(nn.Embedding(n, config.embedding_dim, padding_idx=PAD_ID) for n in sizes)
        self.mlp = nn.Sequential(nn.Linear(len(sizes) * config.embedding_dim + n_numeric, config.hidden_dim),
                                 nn.ReLU(), nn.Dropout(config.dropout),
                                 nn.Linear(config.hidden_dim, config.output_dim))

    def forward(self, ids: torch.Tensor, numeric: torch.Tensor | None = None) -> torch.Tensor:
        parts = [table(ids[:, col]) for col, table in enumerate(self.embeddings)]
        if self.n_numeric:
            parts.append(numeric.float())
        return F.normalize(self.mlp(torch.cat(parts, dim=-1)), dim=-1)


class PersonaTwoTower(nn.Module):
    def __init__(self, customer_sizes: Sequence[int], n_numeric: int, product_sizes: Sequence[int],
                 config: PersonaModelConfig):
        super().__init__()
        self.customer = FieldTower(customer_sizes, n_numeric, config)
        self.product = FieldTower(product_sizes, 0, config)

    def forward(self, customer_ids: torch.Tensor, customer_numeric: torch.Tensor | None,
                product_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Both towers in one forward so DistributedDataParallel syncs the gradients of both.
        return self.customer(customer_ids, customer_numeric), self.product(product_ids)


def sample_negatives(users: np.ndarray, candidates: np.ndarray, bought: np.ndarray, n_items: int, per_positive: int,
                     rng: np.random.Generator, retries: int = 100) -> np.ndarray:
    """(len(users), per_positive) product indices drawn uniformly from ``candidates``, redrawn where
    the user bought them (``bought``: sorted codes ``user * n_items + item``). Only clashes are
    redrawn, so rounds are cheap; ``retries`` bounds them for a user who bought nearly everything."""
    out = rng.choice(candidates, size=(len(users), per_positive))
    for _ in range(retries):
        clash = np.isin(users[:, None] * n_items + out, bought)
        if not clash.any():
            break
        out[clash] = rng.choice(candidates, size=int(clash.sum()))
    return out


@torch.no_grad()
def encode(tower: FieldTower, ids: np.ndarray, numeric: np.ndarray | None = None, device="cpu",
           batch_size: int = 8192) -> np.ndarray:
    """Tower outputs (eval mode) for every row."""
    tower.eval()
    out = []
    for start in range(0, len(ids), batch_size):
        num = None if numeric is None else torch.as_tensor(numeric[start:start + batch_size], device=device)
        out.append(tower(torch.as_tensor(ids[start:start + batch_size], device=device), num).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, tower.mlp[-1].out_features), np.float32)


def model_state_extra(config: PersonaModelConfig, customer_sizes: Sequence[int], n_numeric: int,
                      product_sizes: Sequence[int]) -> dict:
    """What a checkpoint holds besides weights so the file alone rebuilds the model."""
    return {"model_config": asdict(config), "customer_sizes": [int(n) for n in customer_sizes],
            "n_numeric": int(n_numeric), "product_sizes": [int(n) for n in product_sizes]}


def load_model(state_path: str | Path, device="cpu") -> PersonaTwoTower:
    state = torch.load(state_path, map_location=device, weights_only=True)
    model = PersonaTwoTower(state["customer_sizes"], state["n_numeric"], state["product_sizes"],
                            PersonaModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


# ---------------------------------------------------------------- cold-start recommender

@dataclass
class Personas:
    """k-means centroids in the customer space and their names; a profile's persona is the nearest."""
    centroids: np.ndarray
    names: list[str]

    def assign(self, vectors: np.ndarray) -> np.ndarray:
        distances = ((vectors[:, None, :] - self.centroids[None, :, :]) ** 2).sum(-1)
        return distances.argmin(axis=1)

    def to_dict(self) -> dict:
        return {"names": self.names, "centroids": self.centroids.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Personas":
        return cls(np.asarray(data["centroids"], dtype=np.float32), list(data["names"]))


class PersonaRecommender:
    """Ranks products for a profile alone (no customer id, no history).

    ``PersonaRecommender.load(run_dir).recommend({"age": 31, "club_member_status": "ACTIVE"}, top_n=5)``
    -> ``[(article_id, score), ...]``, best first; score = cosine between the customer and product
    vectors. Products with identical attributes get identical vectors, so equal scores are common:
    they rank by the record's ``purchases`` (training purchase count, when given), then article id.
    When the training job found PersonaPop better on the validation day (``serving.json``), the
    score is instead the profile's persona's training purchases of the product (plus overall
    popularity / (max + 1), which only breaks ties): ``ranker`` says which.
    """

    FEATURIZER_FILE = "checkpoints/featurizer.json"
    MODEL_FILE = "checkpoints/best_model.pt"
    PRODUCTS_FILE = "products.parquet"
    PERSONAS_FILE = "personas.json"
    SERVING_FILE = "serving.json"   # which ranker answers (chosen on validation) and PersonaPop's counts

    def __init__(self, model: PersonaTwoTower, profiles: ProfileFeaturizer, products: ProductFeaturizer,
                 product_records: Sequence[Mapping], id_key: str = "article_id", personas: Personas | None = None,
                 serving: Mapping | None = None):
        order = sorted(range(len(product_records)), key=lambda i: (-(product_records[i].get("purchases") or 0),
                                                                   str(product_records[i][id_key])))
        self.model, self.profiles, self.products, self.personas = model.eval(), profiles, products, personas
        self.article_ids = [str(product_records[i][id_key]) for i in order]
        self.product_vectors = encode(model.product, products.transform([product_records[i] for i in order]))
        # "model": cosine of the two towers; "persona_popular": the persona's training purchases (chosen on
        # validation by the training job when it ranks better there; the towers still pick the persona)
        self.serving = dict(serving or {"ranker": "model"})
        self.ranker = self.serving["ranker"]
        if self.ranker == "persona_popular":
            if personas is None:
                raise ValueError("serving ranker persona_popular needs the personas (personas.json)")
            column = {a: n for n, a in enumerate(self.serving["article_ids"])}
            self._persona_popularity = np.asarray(self.serving["persona_popularity"], np.float64)[
                :, [column[a] for a in self.article_ids]]
        elif self.ranker != "model":
            raise ValueError(f"serving ranker: expected model or persona_popular, got {self.ranker!r}")

    @classmethod
    def load(cls, run_dir: str | Path) -> "PersonaRecommender":
        import pyarrow.parquet as pq

        run_dir = Path(run_dir)
        featurizers = json.loads((run_dir / cls.FEATURIZER_FILE).read_text())
        personas_path = run_dir / cls.PERSONAS_FILE
        personas = Personas.from_dict(json.loads(personas_path.read_text())) if personas_path.is_file() else None
        records = pq.read_table(run_dir / cls.PRODUCTS_FILE).to_pylist()
        serving_path = run_dir / cls.SERVING_FILE
        serving = json.loads(serving_path.read_text()) if serving_path.is_file() else None
        return cls(load_model(run_dir / cls.MODEL_FILE), ProfileFeaturizer.from_dict(featurizers["profile"]),
                   ProductFeaturizer.from_dict(featurizers["product"]), records, personas=personas, serving=serving)

    @classmethod
    def save(cls, run_dir: str | Path, profiles: ProfileFeaturizer, products: ProductFeaturizer,
             product_records: Sequence[Mapping], personas: Personas | None = None,
             serving: Mapping | None = None) -> dict[str, str]:
        """Write what :meth:`load` reads besides the checkpoint (``MODEL_FILE``, copied there by the
        training job): featurizers, the candidates' records and the personas. Returns {what: path}."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from recsys.artifacts import write_json

        run_dir = Path(run_dir)
        paths = {"featurizer": run_dir / cls.FEATURIZER_FILE, "products": run_dir / cls.PRODUCTS_FILE,
                 "personas": run_dir / cls.PERSONAS_FILE}
        write_json(paths["featurizer"], {"profile": profiles.to_dict(), "product": products.to_dict()})
        pq.write_table(pa.Table.from_pylist(list(product_records)), paths["products"])
        if personas is not None:
            write_json(paths["personas"], personas.to_dict())
        if serving is not None:  # {"ranker", ..., "article_ids", "persona_popularity": (personas, products)}
            paths["serving"] = run_dir / cls.SERVING_FILE
            write_json(paths["serving"], dict(serving))
        return {name: str(path) for name, path in paths.items() if path.exists()}

    def embed(self, profiles: Sequence[Mapping]) -> np.ndarray:
        ids, numeric = self.profiles.transform(profiles)
        return encode(self.model.customer, ids, numeric if self.profiles.n_numeric else None)

    def recommend(self, profile: Mapping, top_n: int = 10) -> list[tuple[str, float]]:
        if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:
            raise ValueError(f"top_n: expected a positive integer, got {top_n!r}")
        vector = self.embed([profile])[0]
        if self.ranker == "persona_popular":
            scores = self._persona_popularity[int(self.personas.assign(vector[None])[0])]
        else:
            scores = self.product_vectors @ vector
        return self._top(scores, top_n)

    def _top(self, scores: np.ndarray, top_n: int) -> list[tuple[str, float]]:
        """Best first; equal scores keep ``article_ids`` order (training purchases, then id)."""
        best = np.argsort(-scores, kind="stable")[:top_n]
        return [(self.article_ids[i], float(scores[i])) for i in best]

    def persona_index(self, name: str) -> int:
        """Index of the persona named ``name``; KeyError naming the known personas."""
        names = self.personas.names if self.personas is not None else []
        if name not in names:
            raise KeyError(f"unknown persona {name!r}; this run's personas: {names}")
        return names.index(name)

    def persona_scores(self) -> np.ndarray:
        """(personas, products in ``article_ids`` order): what a whole persona gets, the served ranker's
        scores for the segment: its training purchases (PersonaPop) or the cosine with its centroid."""
        if self.personas is None:
            raise ValueError("this run has no personas (personas.json)")
        if self.ranker == "persona_popular":
            return self._persona_popularity
        centroids = np.asarray(self.personas.centroids, np.float32)
        centroids = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        return centroids @ self.product_vectors.T

    def recommend_persona(self, name: str, top_n: int = 10) -> list[tuple[str, float]]:
        """A persona's products, best first (ties in ``article_ids`` order: training purchases, then id)."""
        return self._top(self.persona_scores()[self.persona_index(name)], top_n)

    def persona(self, profile: Mapping) -> str | None:
        """Name of the persona (nearest k-means centroid) a profile falls into; None without personas."""
        if self.personas is None:
            return None
        return self.personas.names[int(self.personas.assign(self.embed([profile]))[0])]
