"""Item towers: STD/RE attribute tokens (``recsys.data.item_features``) -> 512-d L2-normalised vectors.

All towers share one token embedding table over the shared STD+RE id space plus a field embedding
table, and end in the same :class:`ResidualPyramidHead`:

- :class:`ConcatMLPTower` (baseline): masked mean per group (STD, RE, title), concatenated, MLP.
- :class:`CoarseToFineTower`: self-attention within STD and within RE, then STD tokens (query)
  cross-attend to RE tokens (key/value): the coarse description asks the fine one for details.
- :class:`UnifiedTower`: one sequence; a RE token is its own delta embedding on top of a
  stop-gradient copy of its parent STD value ("cotton" under "Tshirts" starts from "Tshirts"), so
  RE tokens learn only what their parent does not already say and cannot drag the STD embedding.

Title input (``title_mode``): "tokens" adds the hashed title words (``title_*`` arrays);
"vector" adds one token projected from a frozen 384-d MiniLM vector (``batch["title_vec"]``, rows
of NaN or a missing key mean "no title").

Stage 1 (SimCSE): :func:`simcse_views` masks a batch two complementary ways (STD-heavy vs
RE-heavy); the loss is NT-Xent over the two views (``recsys.losses.contrastive.nt_xent``).
Stage 2 trains :class:`MetricAdapter` (512 -> 128) with triplets (``recsys.losses.metric``) over
batches of ``recsys.samplers``.

Padding never changes an output: there are no positional encodings, attention ignores masked
keys, pooling ignores masked tokens, and a row with no valid token in a group gets a zero result
instead of the NaN of a softmax over nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from recsys.data.vectors import column_matrix, vector_column
from recsys.models.json_encoder import masked_mean

TITLE_MODES = ("none", "tokens", "vector")
FEATURE_PREFIXES = ("std_", "re_", "title_")
# A train_item_tower run directory: what later stages (build_index, rerankers, evaluate_seq) read.
TOWER_FILE = "checkpoints/tower.pt"
ADAPTER_FILE = "checkpoints/adapter.pt"
FEATURIZER_FILE = "checkpoints/featurizer.json"
ITEM_VECTORS_FILE = "item_vectors.parquet"


@dataclass
class ItemTowerConfig:
    embedding_dim: int = 64
    heads: int = 4
    layers: int = 1               # transformer layers per encoder
    ffn_dim: int = 128            # transformer feed-forward width
    head_hidden: int = 256
    head_blocks: int = 2
    output_dim: int = 512
    dropout: float = 0.1
    title_mode: str = "none"      # none | tokens | vector
    title_dim: int = 384          # MiniLM all-MiniLM-L6-v2

    def __post_init__(self):
        if self.title_mode not in TITLE_MODES:
            raise ValueError(f"title_mode must be one of {TITLE_MODES}, got {self.title_mode!r}")
        if self.embedding_dim % self.heads:
            raise ValueError(f"embedding_dim {self.embedding_dim} is not divisible by heads {self.heads}")


def batch_to_tensors(features: Mapping[str, np.ndarray], rows=None, device=None) -> dict[str, torch.Tensor]:
    """Item-feature arrays (optionally a row selection) -> tensors for a tower's ``forward``."""
    return {k: torch.as_tensor(v if rows is None else v[rows], device=device) for k, v in features.items()}


def _attendable(mask: torch.Tensor) -> torch.Tensor:
    """``mask`` with position 0 made valid in rows that have no valid token, so attention never
    normalises over nothing (NaN); callers drop those rows' results through the original mask."""
    empty = ~mask.any(dim=1, keepdim=True)
    first = torch.zeros_like(mask)
    first[:, 0] = True
    return mask | (empty & first)


def _encoder(config: ItemTowerConfig) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(config.embedding_dim, config.heads, config.ffn_dim, config.dropout,
                                       activation="gelu", batch_first=True, norm_first=True)
    # Nested tensors would skip padded positions differently in eval and train; keep one code path.
    return nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)


class ResidualPyramidHead(nn.Module):
    """d -> hidden, ``blocks`` x (x + Linear(Dropout(GELU(Linear(LayerNorm(x)))))), hidden -> out, L2."""

    def __init__(self, in_dim: int = 64, hidden: int = 256, blocks: int = 2, out_dim: int = 512,
                 dropout: float = 0.1):
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.GELU(),
                                                  nn.Dropout(dropout), nn.Linear(hidden, hidden))
                                    for _ in range(blocks))
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inp(x)
        for block in self.blocks:
            x = x + block(x)
        return F.normalize(self.out(x), dim=-1)


class MetricAdapter(nn.Module):
    """512 -> 128 L2-normalised projection trained with triplets on top of a (frozen) tower."""

    def __init__(self, in_dim: int = 512, out_dim: int = 128, hidden_dim: int | None = None):
        super().__init__()
        self.net = (nn.Linear(in_dim, out_dim) if hidden_dim is None else
                    nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class _ItemTower(nn.Module):
    """Shared pieces: token + field embeddings, title input, head."""

    def __init__(self, config: ItemTowerConfig, vocab_size: int, n_fields: int, head_in: int | None = None):
        super().__init__()
        self.config = config
        d = config.embedding_dim
        self.tokens = nn.Embedding(vocab_size, d, padding_idx=0)
        self.fields = nn.Embedding(n_fields, d, padding_idx=0)
        # Its bias plays the role of the title's field embedding.
        self.title_proj = nn.Linear(config.title_dim, d) if config.title_mode == "vector" else None
        self.head = ResidualPyramidHead(head_in or d, config.head_hidden, config.head_blocks, config.output_dim,
                                        config.dropout)

    def embed(self, ids: torch.Tensor, field_ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(ids) + self.fields(field_ids)

    def title(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(B, T, d) title token(s) and (B, T) mask, or None when the tower takes no title."""
        mode = self.config.title_mode
        if mode == "tokens":
            return self.embed(batch["title_ids"], batch["title_field_ids"]), batch["title_mask"].bool()
        if mode == "vector":
            ref = batch["std_ids"]
            vec = batch.get("title_vec")
            if vec is None:
                vec = torch.zeros(ref.shape[0], self.config.title_dim, device=ref.device)
                present = torch.zeros(ref.shape[0], 1, dtype=torch.bool, device=ref.device)
            else:
                present = ~torch.isnan(vec).any(dim=1, keepdim=True)
                vec = torch.nan_to_num(vec.to(self.title_proj.weight.dtype))
            return self.title_proj(vec).unsqueeze(1), present
        return None


class ConcatMLPTower(_ItemTower):
    """Baseline: mean STD embedding ‖ mean RE embedding (‖ title) -> MLP -> head."""

    def __init__(self, config: ItemTowerConfig, vocab_size: int, n_fields: int):
        super().__init__(config, vocab_size, n_fields)
        groups = 3 if config.title_mode != "none" else 2
        d = config.embedding_dim
        self.mlp = nn.Sequential(nn.Linear(groups * d, d), nn.GELU(), nn.Dropout(config.dropout))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pooled = [masked_mean(self.embed(batch["std_ids"], batch["std_field_ids"]), batch["std_mask"].bool()),
                  masked_mean(self.embed(batch["re_ids"], batch["re_field_ids"]), batch["re_mask"].bool())]
        title = self.title(batch)
        if title is not None:
            pooled.append(masked_mean(*title))
        return self.head(self.mlp(torch.cat(pooled, dim=-1)))


class CoarseToFineTower(_ItemTower):
    """STD self-attention, RE self-attention, STD-queries-RE cross-attention, pooled over STD."""

    def __init__(self, config: ItemTowerConfig, vocab_size: int, n_fields: int):
        super().__init__(config, vocab_size, n_fields)
        d = config.embedding_dim
        self.std_encoder = _encoder(config)
        self.re_encoder = _encoder(config)
        self.cross = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        std_mask, re_mask = batch["std_mask"].bool(), batch["re_mask"].bool()
        std = self.embed(batch["std_ids"], batch["std_field_ids"])
        fine = self.embed(batch["re_ids"], batch["re_field_ids"])
        title = self.title(batch)
        if title is not None:  # the title is one more fine-grained source of detail
            fine, re_mask = torch.cat([fine, title[0]], dim=1), torch.cat([re_mask, title[1]], dim=1)
        std = self.std_encoder(std, src_key_padding_mask=~_attendable(std_mask))
        fine = self.re_encoder(fine, src_key_padding_mask=~_attendable(re_mask))
        detail, _ = self.cross(std, fine, fine, key_padding_mask=~_attendable(re_mask), need_weights=False)
        has_fine = re_mask.any(dim=1).to(detail.dtype)[:, None, None]  # no RE: no cross-attention term
        return self.head(masked_mean(self.norm(std + detail * has_fine), std_mask))


class UnifiedTower(_ItemTower):
    """One token sequence with hierarchical residual RE inputs, one transformer, mean pool."""

    def __init__(self, config: ItemTowerConfig, vocab_size: int, n_fields: int):
        super().__init__(config, vocab_size, n_fields)
        self.encoder = _encoder(config)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        std_ids = batch["std_ids"]
        parent_ids = std_ids.gather(1, batch["re_parent_pos"].long())
        std = self.embed(std_ids, batch["std_field_ids"])
        # detach(): the parent term positions the RE token but sends no gradient to the STD value.
        fine = self.embed(batch["re_ids"], batch["re_field_ids"]) + self.tokens(parent_ids).detach()
        parts, masks = [std, fine], [batch["std_mask"].bool(), batch["re_mask"].bool()]
        title = self.title(batch)
        if title is not None:
            parts.append(title[0])
            masks.append(title[1])
        tokens, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        encoded = self.encoder(tokens, src_key_padding_mask=~_attendable(mask))
        return self.head(masked_mean(encoded, mask))


TOWERS = {"concat": ConcatMLPTower, "coarse_to_fine": CoarseToFineTower, "unified": UnifiedTower}


def build_item_tower(name: str, config: ItemTowerConfig, vocab_size: int, n_fields: int) -> nn.Module:
    """``name`` in concat | coarse_to_fine | unified; sizes from ``ItemFeaturizer.vocab_size/n_fields``."""
    if name not in TOWERS:
        raise ValueError(f"unknown item tower {name!r}; known: {sorted(TOWERS)}")
    return TOWERS[name](config, vocab_size, n_fields)


# --- SimCSE stage 1 ----------------------------------------------------------------------------

def _drop(mask: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """``mask`` with each True entry turned False with probability ``share``."""
    if share <= 0:
        return mask.clone()
    draw = torch.rand(mask.shape, generator=generator, device=generator.device).to(mask.device)
    return mask & (draw >= share)


def _keep_one(dropped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Give back the first originally valid token of rows that lost all of theirs."""
    lost = original.any(dim=1) & ~dropped.any(dim=1)
    first = torch.zeros_like(original)
    first[torch.arange(len(original), device=original.device), original.float().argmax(dim=1)] = True
    return dropped | (lost[:, None] & first)


def simcse_views(batch: Mapping[str, torch.Tensor], generator: torch.Generator, re_drop: float = 0.5,
                 std_drop: float = 0.5, feature_dropout: float = 0.1, title_drop: float = 0.3
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Two views of one batch by complementary masking (only masks change; ids stay).

    View A is STD-heavy: every STD token, RE tokens dropped with probability ``re_drop``.
    View B is RE-heavy: every RE token, STD tokens dropped with probability ``std_drop`` (each row
    keeps at least its first STD token, the coarsest category, so no view is empty).
    ``feature_dropout`` then drops tokens of the kept group in both views, and ``title_drop`` title
    tokens independently per view when ``title_mask`` is present. The tower's own dropout (train
    mode) adds the usual SimCSE noise on top. Same generator state -> same views.
    """
    std_mask, re_mask = batch["std_mask"].bool(), batch["re_mask"].bool()
    view_a, view_b = dict(batch), dict(batch)
    view_a["std_mask"] = _keep_one(_drop(std_mask, feature_dropout, generator), std_mask)
    view_a["re_mask"] = _drop(re_mask, re_drop, generator)
    view_b["std_mask"] = _keep_one(_drop(std_mask, std_drop, generator), std_mask)
    view_b["re_mask"] = _drop(re_mask, feature_dropout, generator)
    if "title_mask" in batch:
        title_mask = batch["title_mask"].bool()
        view_a["title_mask"] = _drop(title_mask, title_drop, generator)
        view_b["title_mask"] = _drop(title_mask, title_drop, generator)
    return view_a, view_b




# --- inference: trained towers and adapters, and the item vectors they export ---------------------

def load_tower(state_path: str | Path, device="cpu") -> nn.Module:
    """A trained tower from its ``state.pt`` (weights only)."""
    state = torch.load(state_path, map_location=device, weights_only=True)
    model = build_item_tower(state["tower"], ItemTowerConfig(**state["tower_config"]), state["vocab_size"],
                             state["n_fields"])
    model.load_state_dict(state["model"])
    return model.eval()


def load_adapter(state_path: str | Path, device="cpu") -> MetricAdapter:
    state = torch.load(state_path, map_location=device, weights_only=True)
    model = MetricAdapter(state["in_dim"], state["out_dim"], state["hidden_dim"])
    model.load_state_dict(state["model"])
    return model.eval()


def encode_items(model: nn.Module, features: Mapping[str, np.ndarray], device="cpu",
                 batch_size: int = 2048) -> np.ndarray:
    """Tower outputs for every row of item-feature arrays, eval mode."""
    model.eval()
    keys = [k for k in features if k.startswith(FEATURE_PREFIXES)]
    out = []
    with torch.no_grad():
        for start in range(0, len(features[keys[0]]), batch_size):
            batch = batch_to_tensors({k: features[k][start:start + batch_size] for k in keys}, device=device)
            out.append(model(batch).float().cpu().numpy())
    return np.concatenate(out)


def adapt(adapter: nn.Module, vectors: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    adapter.eval()
    with torch.no_grad():
        return np.concatenate([adapter(torch.as_tensor(vectors[s:s + batch_size])).numpy()
                               for s in range(0, len(vectors), batch_size)])


def write_item_vectors(path: str | Path, item_ids, categories, cold: np.ndarray, tower_vectors: np.ndarray,
                       adapted_vectors: np.ndarray) -> Path:
    """``item_vectors.parquet``: item_id, category, cold, vector_512 (the tower's) and vector (the
    adapter's L2-normalised output that indexes use; inner product is the metric)."""
    path = Path(path)
    pq.write_table(pa.table({"item_id": np.asarray(item_ids).astype(str), "category": np.asarray(categories).astype(str),
                             "cold": np.asarray(cold, dtype=bool), "vector_512": vector_column(tower_vectors),
                             "vector": vector_column(adapted_vectors)}), path)
    return path


def read_item_vectors(path: str | Path, column: str = "vector") -> tuple[np.ndarray, np.ndarray]:
    """(item ids as str, (N, d) float32 vectors) of an ``item_vectors.parquet`` (``column``: vector
    for the adapter's, vector_512 for the tower's); a run directory reads its ITEM_VECTORS_FILE."""
    path = Path(path)
    table = pq.read_table(path / ITEM_VECTORS_FILE if path.is_dir() else path, columns=["item_id", column])
    matrix = column_matrix(table, column)
    return np.asarray(table["item_id"].to_pylist(), dtype=str), (matrix if matrix is not None else
                                                                 np.zeros((0, 0), np.float32))


class ItemTowerEncoder:
    """A ``train_item_tower`` run as a serving model: item attributes -> the adapter's 128-d vectors.

    ``ItemTowerEncoder.load(run_dir)`` reads the featurizer (its STD vocabularies), the tower and the
    adapter; :meth:`encode` places any item by its canonical attributes (``category_path``,
    ``std_attributes``, ``re_attributes``, ``styles``, ``title``), so a product added after training
    (a cold start) lands in the same space as the catalog; :meth:`run_vectors` are the vectors the run
    exported for its own items (the same computation, done once at training time).
    """

    def __init__(self, run_dir: str | Path):
        from recsys.data.item_features import ItemFeaturizer

        self.run_dir = Path(run_dir)
        for name in (FEATURIZER_FILE, TOWER_FILE, ADAPTER_FILE, ITEM_VECTORS_FILE):
            if not (self.run_dir / name).exists():
                raise FileNotFoundError(f"{self.run_dir}: missing {name}; not a train_item_tower run")
        self.featurizer = ItemFeaturizer.load(self.run_dir / FEATURIZER_FILE)
        self.tower = load_tower(self.run_dir / TOWER_FILE)
        self.adapter = load_adapter(self.run_dir / ADAPTER_FILE)
        if getattr(self.tower, "config", None) is not None and self.tower.config.title_mode == "vector":
            raise ValueError(f"{self.run_dir}: a title_mode 'vector' tower needs MiniLM title vectors per item; "
                             "serve a tower trained with title_mode none or tokens")

    @classmethod
    def load(cls, run_dir: str | Path) -> "ItemTowerEncoder":
        return cls(run_dir)

    @property
    def std_fields(self) -> list[str]:
        """The STD fields of the featurizer (hierarchy levels first); other attributes are RE."""
        return list(self.featurizer.config.std_all)

    def encode(self, rows: list[Mapping]) -> np.ndarray:
        """(N, d) L2-normalised vectors for canonical item rows, in order."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self.featurizer.transform(rows)
        return adapt(self.adapter, encode_items(self.tower, features)).astype(np.float32)

    @property
    def dim(self) -> int:
        return int(self.adapter.net.out_features if isinstance(self.adapter.net, nn.Linear)
                   else self.adapter.net[-1].out_features)

    def run_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, vectors) the run exported (``item_vectors.parquet``'s adapter column)."""
        return read_item_vectors(self.run_dir)
