"""Rerankers over a user's ~100 retrieved candidates.

- :class:`DeepFM`: pointwise click/purchase logit per (user, candidate). Sparse fields are item id,
  the item's STD/RE tokens (pooled), its category, and on the user side the pooled tokens, ids and
  categories ("profile categories") of the recent history; dense fields (candidate-source scores,
  popularity, user-item cosine, ...) enter as value x learned vector. Logit = first order + FM
  second order (every pair of field vectors) + DNN over the concatenated fields.
- :class:`ListwiseReranker`: a transformer encoder over the whole candidate list (no positional
  encoding, so the order of the input list carries no information unless the retrieval rank is
  given as a dense feature). Trained with ``recsys.losses.ranking.ListwiseLoss``: softmax
  cross-entropy for the target plus ``diversity_weight`` x the expected pairwise similarity under
  the (sharpened) score softmax, so probability mass on near-duplicates costs.
- :func:`mmr` / :func:`mmr_lists`: maximal marginal relevance, the untrained diversity baseline.

Both trained models share :class:`ItemUserEmbedder`, whose token table lives in the same STD+RE id
space as the item towers' ``tokens`` table (:func:`init_from_item_tower` copies it). The
item -> tokens/category lookups are buffers of the model, so a model scores item ids alone and its
``state.pt`` carries everything needed to rebuild it: :func:`load_reranker`, :func:`score_lists`
(inference) and :func:`load_reranker_artifact` (a served reranker with its feature contract).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recsys.data.candidate_lists import RerankerFiles, read_reranker_files
from recsys.models.json_encoder import masked_mean


@dataclass
class DeepFMConfig:
    embedding_dim: int = 64       # = the item towers' token dimension, so their table can be copied
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    dropout: float = 0.1


@dataclass
class ListwiseConfig:
    embedding_dim: int = 64
    model_dim: int = 64
    heads: int = 4
    layers: int = 2
    ffn_dim: int = 128
    dropout: float = 0.1

    def __post_init__(self):
        if self.model_dim % self.heads:
            raise ValueError(f"model_dim {self.model_dim} is not divisible by heads {self.heads}")


class ItemUserEmbedder(nn.Module):
    """Item and user field vectors from item ids (0 = padding / unknown item).

    ``item_tokens`` (N+1, T): each item's STD+RE token ids in the shared id space (0 = pad);
    ``item_category`` (N+1,): category index (0 = unknown). Both are buffers (saved, not trained).
    """

    ITEM_FIELDS = ("item_id", "item_tokens", "item_category")
    USER_FIELDS = ("history_tokens", "history_items", "history_categories")

    def __init__(self, item_tokens: torch.Tensor, item_category: torch.Tensor, vocab_size: int,
                 n_categories: int, dim: int = 64):
        super().__init__()
        self.register_buffer("item_tokens", torch.as_tensor(item_tokens, dtype=torch.long))
        self.register_buffer("item_category", torch.as_tensor(item_category, dtype=torch.long))
        n_items = self.item_tokens.shape[0]
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.items = nn.Embedding(n_items, dim, padding_idx=0)
        self.categories = nn.Embedding(n_categories + 1, dim, padding_idx=0)
        for table in (self.tokens, self.items, self.categories):
            nn.init.normal_(table.weight, std=0.05)  # small: FM pair products start near 0
            with torch.no_grad():
                table.weight[0].zero_()

    def _pooled_tokens(self, items: torch.Tensor) -> torch.Tensor:
        """Mean token embedding over all valid tokens of ``items`` (..., M) -> (..., d)."""
        ids = self.item_tokens[items].flatten(-2)                       # (..., M*T)
        shape = ids.shape
        flat = ids.reshape(-1, shape[-1])
        return masked_mean(self.tokens(flat), flat > 0).reshape(*shape[:-1], -1)

    def item_fields(self, items: torch.Tensor) -> torch.Tensor:
        """(B, L) item ids -> (B, L, 3, d): id, pooled tokens, category."""
        return torch.stack([self.items(items), self._pooled_tokens(items.unsqueeze(-1)),
                            self.categories(self.item_category[items])], dim=-2)

    def user_fields(self, history: torch.Tensor) -> torch.Tensor:
        """(B, H) history item ids (0 = pad) -> (B, 3, d): pooled tokens, ids, categories."""
        valid = history > 0
        return torch.stack([self._pooled_tokens(history.unsqueeze(1)).squeeze(1),
                            masked_mean(self.items(history), valid),
                            masked_mean(self.categories(self.item_category[history]), valid)], dim=-2)

    def item_vectors(self, chunk: int = 4096) -> torch.Tensor:
        """(N+1, d) one vector per item (sum of its fields): a fallback item space for diversity."""
        ids = torch.arange(self.item_tokens.shape[0], device=self.item_tokens.device)
        return torch.cat([self.item_fields(ids[s:s + chunk].unsqueeze(0)).sum(dim=-2).squeeze(0)
                          for s in range(0, len(ids), chunk)])


def fm_second_order(fields: torch.Tensor) -> torch.Tensor:
    """Sum over field pairs i < j of <e_i, e_j> for (..., F, d), by the O(F d) identity
    0.5 * sum_d ((sum_f e_f)^2 - sum_f e_f^2)."""
    return 0.5 * (fields.sum(dim=-2).pow(2) - fields.pow(2).sum(dim=-2)).sum(dim=-1)


def _mlp(in_dim: int, hidden: list[int], dropout: float) -> nn.Sequential:
    layers, width = [], in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 1))


class DeepFM(nn.Module):
    """Pointwise logit for every (user, candidate): first order + FM + DNN (Guo et al. 2017)."""

    def __init__(self, embedder: ItemUserEmbedder, n_dense: int, config: DeepFMConfig | None = None):
        super().__init__()
        self.config = config or DeepFMConfig()
        d = self.config.embedding_dim
        self.embedder = embedder
        self.n_dense = n_dense
        self.dense_vectors = nn.Parameter(torch.randn(n_dense, d) * 0.05)  # field j = x_j * v_j
        self.item_bias = nn.Embedding(embedder.item_tokens.shape[0], 1, padding_idx=0)
        nn.init.zeros_(self.item_bias.weight)
        self.linear = nn.Linear(n_dense, 1)
        n_fields = len(ItemUserEmbedder.ITEM_FIELDS) + len(ItemUserEmbedder.USER_FIELDS) + n_dense
        self.dnn = _mlp(n_fields * d, self.config.hidden, self.config.dropout)

    def fields(self, items: torch.Tensor, history: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """(B, L, F, d): item fields, the user's fields (computed once per user), dense fields."""
        item = self.embedder.item_fields(items)
        user = self.embedder.user_fields(history).unsqueeze(1).expand(-1, items.shape[1], -1, -1)
        return torch.cat([item, user, dense.unsqueeze(-1) * self.dense_vectors], dim=-2)

    def forward(self, items: torch.Tensor, history: torch.Tensor, dense: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """items (B, L), history (B, H), dense (B, L, n_dense) -> logits (B, L) (``mask`` unused:
        each candidate is scored on its own)."""
        fields = self.fields(items, history, dense)
        first = self.item_bias(items).squeeze(-1) + self.linear(dense).squeeze(-1)
        return first + fm_second_order(fields) + self.dnn(fields.flatten(-2)).squeeze(-1)


class ListwiseReranker(nn.Module):
    """Scores every candidate in the context of the whole list (self-attention across candidates).

    Per candidate: [item vector, item vector * user vector, projected dense features] -> model_dim,
    a transformer encoder over the list with padding masked, a linear score. Permuting the
    candidates permutes the scores (no positional encoding).
    """

    def __init__(self, embedder: ItemUserEmbedder, n_dense: int, config: ListwiseConfig | None = None):
        super().__init__()
        self.config = cfg = config or ListwiseConfig()
        d = cfg.embedding_dim
        self.embedder = embedder
        self.n_dense = n_dense
        self.dense = nn.Linear(n_dense, d)
        self.inp = nn.Sequential(nn.Linear(3 * d, cfg.model_dim), nn.GELU(), nn.LayerNorm(cfg.model_dim))
        layer = nn.TransformerEncoderLayer(cfg.model_dim, cfg.heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Linear(cfg.model_dim, 1)
        self.skip = nn.Linear(n_dense, 1)  # the dense features' direct say, as in wide & deep

    def forward(self, items: torch.Tensor, history: torch.Tensor, dense: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """items (B, L), history (B, H), dense (B, L, n_dense), mask (B, L) -> scores (B, L)."""
        mask = items > 0 if mask is None else mask.bool()
        item = self.embedder.item_fields(items).sum(dim=-2)
        user = self.embedder.user_fields(history).sum(dim=-2).unsqueeze(1)
        x = self.inp(torch.cat([item, item * user, self.dense(dense)], dim=-1))
        x = self.encoder(x, src_key_padding_mask=~mask)
        return self.out(x).squeeze(-1) + self.skip(dense).squeeze(-1)


RERANKERS = {"deepfm": DeepFM, "listwise": ListwiseReranker}


def build_reranker(name: str, config: dict, item_tokens, item_category, vocab_size: int, n_categories: int,
                   n_dense: int) -> nn.Module:
    """``name`` in deepfm | listwise; ``config`` the matching config dataclass as a dict."""
    if name not in RERANKERS:
        raise ValueError(f"unknown reranker {name!r}; known: {sorted(RERANKERS)}")
    config_cls = DeepFMConfig if name == "deepfm" else ListwiseConfig
    cfg = config_cls(**config)
    embedder = ItemUserEmbedder(item_tokens, item_category, vocab_size, n_categories, cfg.embedding_dim)
    return RERANKERS[name](embedder, n_dense, cfg)


def init_from_item_tower(model: nn.Module, tower: nn.Module, freeze: bool = False) -> nn.Module:
    """Copy a trained item tower's shared STD+RE token table into ``model``'s (same id space, same
    width); ``freeze`` keeps it fixed, else it is fine-tuned with the rest."""
    source, target = tower.tokens.weight, model.embedder.tokens.weight
    if source.shape != target.shape:
        raise ValueError(f"item tower token table {tuple(source.shape)} does not match the reranker's "
                         f"{tuple(target.shape)}: featurize items with the tower's featurizer.json")
    with torch.no_grad():
        target.copy_(source)
    target.requires_grad_(not freeze)
    return model


# --- inference ----------------------------------------------------------------------------------

def load_reranker(state_path: str | Path, device="cpu") -> nn.Module:
    """A trained reranker from its checkpoint (the item lookups are in the weights), eval mode."""
    state = torch.load(state_path, map_location=device, weights_only=True)
    weights = state["model"]
    model = build_reranker(state["reranker"], state["model_config"], torch.zeros_like(weights["embedder.item_tokens"]),
                           torch.zeros_like(weights["embedder.item_category"]), state["vocab_size"],
                           state["n_categories"], state["n_dense"])
    model.load_state_dict(weights)
    return model.eval()


def load_reranker_artifact(directory: str | Path, device="cpu") -> tuple[RerankerFiles, nn.Module]:
    """A served reranker (``recsys.data.candidate_lists.write_reranker_files``): its feature
    contract and the model."""
    files = read_reranker_files(directory)
    return files, load_reranker(files.checkpoint_path, device)


def list_tensors(rows: dict[str, np.ndarray], which, device="cpu") -> dict[str, torch.Tensor]:
    """Rows ``which`` of list columns (items, mask, dense, history, ...) as tensors."""
    return {k: torch.as_tensor(v[which], device=device) for k, v in rows.items()}


def score_lists(model: nn.Module, rows: dict[str, np.ndarray], device="cpu", batch_lists: int = 64) -> np.ndarray:
    """(U, L) scores of every candidate, eval mode; padding scores -inf."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows["items"]), batch_lists):
            b = list_tensors(rows, slice(start, start + batch_lists), device)
            scores = model(b["items"], b["history"], b["dense"], b["mask"])
            out.append(scores.masked_fill(~b["mask"].bool(), float("-inf")).float().cpu().numpy())
    return np.concatenate(out)


# --- maximal marginal relevance ------------------------------------------------------------------

def mmr(relevance: np.ndarray, vectors: np.ndarray, lam: float, k: int | None = None) -> np.ndarray:
    """Greedy MMR order of one list: repeatedly take argmax_i lam * rel_i - (1 - lam) * max_{j
    taken} cos(i, j) (the first pick is the most relevant; ties go to the earlier index).
    ``lam`` = 1 is the relevance order; smaller trades relevance for novelty. Returns indices."""
    return mmr_with_gains(relevance, vectors, lam, k)[0]


def mmr_with_gains(relevance: np.ndarray, vectors: np.ndarray, lam: float, k: int | None = None,
                   normalize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mmr`'s picks and each pick's MMR value when it was picked. ``normalize`` min-max
    scales the relevance to [0, 1] first (all equal: all 1), as :func:`mmr_lists` does, so lambda
    weighs it against cosine on one scale whatever produced the scores (Serve and the offline
    evaluations rank with this one function)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    n = len(relevance)
    k = n if k is None else min(k, n)
    if normalize and n:
        low, high = relevance.min(), relevance.max()
        relevance = (relevance - low) / (high - low) if high > low else np.ones_like(relevance)
    if k == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    vectors = np.asarray(vectors, dtype=np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    max_sim = np.zeros(n)
    taken = np.zeros(n, dtype=bool)
    order, gains = [], []
    for step in range(k):
        value = lam * relevance - (1 - lam) * (max_sim if step else 0.0)
        value[taken] = -np.inf
        pick = int(np.argmax(value))
        order.append(pick)
        gains.append(value[pick])
        taken[pick] = True
        max_sim = np.maximum(max_sim, similarity[pick])
    return np.array(order, dtype=np.int64), np.array(gains, dtype=np.float32)


def mmr_lists(relevance: np.ndarray, vectors: np.ndarray, mask: np.ndarray, lam: float, k: int,
              normalize: bool = True) -> np.ndarray:
    """:func:`mmr` for a batch of padded lists: relevance (U, L), candidate vectors (U, L, d), mask
    (U, L) -> (U, k) positions in MMR order. ``normalize`` min-max scales each list's relevance to
    [0, 1] first, so lambda weighs it against cosine on a comparable scale whatever the scorer."""
    relevance = np.where(mask, relevance, np.nan).astype(np.float64)
    if normalize:
        low, high = np.nanmin(relevance, axis=1, keepdims=True), np.nanmax(relevance, axis=1, keepdims=True)
        relevance = (relevance - low) / np.maximum(high - low, 1e-12)
    relevance = np.where(mask, relevance, -np.inf)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
    rows = np.arange(len(relevance))
    max_sim = np.zeros(relevance.shape)
    taken = ~mask.astype(bool)
    order = np.zeros((len(relevance), k), dtype=np.int64)
    for step in range(k):
        with np.errstate(invalid="ignore"):
            value = lam * relevance - (1 - lam) * (max_sim if step else 0.0)
        value[taken] = -np.inf
        pick = np.argmax(value, axis=1)
        order[:, step] = pick
        taken[rows, pick] = True
        max_sim = np.maximum(max_sim, np.einsum("uld,ud->ul", unit, unit[rows, pick]))
    return order
