"""User tower: what a user did, said and is -> one L2-normalised vector in the item space.

Three inputs, any of which may be absent (a missing batch key, or a row of NaN / all-zero ids):

- **behaviour**: the user's past items, each the item side's embedding (below) plus a position
  embedding, through a small causal transformer (pre-norm). Output position t sees items 0..t
  only, so one forward pass trains next-item prediction at every position of a sequence; the
  last real position is the user's current state. Sequences are right-padded (token 0), so
  padding only ever comes after the items a position may see and needs no mask of its own.
- **context**: a precomputed text vector (e.g. MiniLM 384-d of a cart or session concept), projected.
- **profile**: numeric fields z-scored with statistics stored in the model (buffers, saved with
  the weights; missing values -> the mean), plus one embedding per categorical field (id 0 = missing).

Fusion (``fusion``): ``gated`` (default): per-dimension sigmoid gates computed from all inputs
and their presence flags weight each present input, the sum is projected; ``concat``: an MLP over
the concatenated inputs and flags. The output is L2-normalised.

Item side (shared by input and output, as in SASRec): a learned item-ID embedding plus, when given,
a projection of the frozen item-tower vector (``item_vectors``, a buffer: the checkpoint alone
rebuilds the model). Item index i is token i + 1; token 0 is padding. ``mask_untrained_ids``: the
ID embedding of an item that never occurs in the training sequences (:meth:`UserTower.set_trained_items`,
a saved buffer) is zero, so such an item is represented by its frozen vector alone, or scores 0.
Why: its embedding never gets a positive gradient and keeps its random initialisation, a random
unit direction after normalisation; on a long-tailed log (H&M: 41% of test targets unseen in
training) thousands of such items outscored the real candidates by chance and the tower fell
below MostPop.

History skip (``history_skip`` > 0): every state gets, besides the transformer's output, the
recency-weighted sum of the items it has seen (their item-side vectors, normalised; weights
``history_decay``^age), scaled by a learned weight. At initialisation the tower then already ranks
items like the user's recent ones (with frozen content vectors: a content nearest-neighbour
recommender) and training only has to improve on that. Why: on H&M (25k purchases, ~1.7 per
article) the transformer alone never learnt that (test HR@10 0.0064 without the skip, below MostPop's
0.0082; 0.0411 with it: ``make eval-seq-tower-ablation``, README).
``min_id_count``: with item vectors, an item needs that many training interactions for an ID
embedding; below it an ID embedding trained on one or two purchases is noise on top of the vector.
An item with neither (no catalog row, few purchases: most of H&M's log) is a zero vector: the tower
never proposes it and other sources (ItemKNN, baskets) must; giving such items their ID embedding
back was not measured.

Training objective: :func:`recsys.losses.sampled_softmax.sampled_softmax_loss` (next-item InfoNCE
over sampled candidates, optional log-Q correction). Serving: :func:`save_user_model` /
:func:`load_user_model` write and read the served files (``user_model.json``, see
``recsys.retrieval.user_model``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.losses.sampled_softmax import sampled_softmax_loss
from recsys.retrieval.user_model import UserModelFiles, read_user_model, write_user_model

PAD = 0
FUSIONS = ("gated", "concat")


@dataclass
class UserTowerConfig:
    dim: int = 64
    max_len: int = 50                  # most recent items seen per user
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 128
    dropout: float = 0.1
    item_ids: bool = True              # learned item-ID embeddings (False: frozen vectors only)
    item_vector_dim: int = 0           # frozen item-tower vectors; 0: none
    context_dim: int = 0               # context text vector (384 for MiniLM); 0: no context input
    profile_numeric: list[str] = field(default_factory=list)
    profile_categorical: list[str] = field(default_factory=list)
    profile_cardinalities: list[int] = field(default_factory=list)   # per categorical field, id 0 = missing
    fusion: str = "gated"
    temperature: float = 0.1
    mask_untrained_ids: bool = True    # zero ID embedding for items never in the training sequences
    min_id_count: int = 1              # with item vectors: an ID embedding only from this many training
                                       # interactions (fewer: its vector alone; an item without one is then
                                       # a zero vector, left to other sources); needs mask_untrained_ids
    history_skip: float = 0.0          # > 0: the recent items' own vectors are added to every state with
                                       # this (learned) initial weight; 0: off (towers saved before it)
    history_decay: float = 0.5         # each older item in that sum weighs this much of the next

    def __post_init__(self):
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if not self.item_ids and not self.item_vector_dim:
            raise ValueError("the item side needs item_ids or item_vector_dim > 0")
        if len(self.profile_cardinalities) != len(self.profile_categorical):
            raise ValueError("profile_cardinalities needs one size per profile_categorical field")
        if self.min_id_count < 1:
            raise ValueError(f"min_id_count must be >= 1, got {self.min_id_count}")
        if self.history_skip < 0 or not 0 < self.history_decay <= 1:
            raise ValueError(f"history_skip must be >= 0 and history_decay in (0, 1], got {self.history_skip}, "
                             f"{self.history_decay}")


class ItemSide(nn.Module):
    """Token -> item embedding (ID embedding + projected frozen vector); padding -> 0."""

    def __init__(self, config: UserTowerConfig, n_items: int):
        super().__init__()
        self.ids = nn.Embedding(n_items + 1, config.dim, padding_idx=PAD) if config.item_ids else None
        # 1 where the ID embedding is used; set_trained_items zeroes items never trained
        self.register_buffer("id_mask", torch.ones(n_items + 1, 1))
        if config.item_vector_dim:
            self.register_buffer("frozen", torch.zeros(n_items + 1, config.item_vector_dim))
            self.project = nn.Linear(config.item_vector_dim, config.dim)
        else:
            self.frozen, self.project = None, None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = 0
        if self.ids is not None:
            out = out + self.ids(tokens) * self.id_mask[tokens]
        if self.project is not None:
            # only where the item has a vector: the projection's bias alone would give every item without
            # one (76% of H&M's log has no catalog row) the same direction, a block of exact score ties
            frozen = self.frozen[tokens]
            out = out + self.project(frozen) * (frozen != 0).any(-1, keepdim=True)
        return out


class UserTower(nn.Module):
    def __init__(self, config: UserTowerConfig, n_items: int):
        super().__init__()
        self.config, self.n_items = config, n_items
        d = config.dim
        self.items = ItemSide(config, n_items)
        self.positions = nn.Embedding(config.max_len, d)
        layer = nn.TransformerEncoderLayer(d, config.heads, config.ffn_dim, config.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.behaviour_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)
        self.context = nn.Linear(config.context_dim, d) if config.context_dim else None
        n_numeric = len(config.profile_numeric)
        self.register_buffer("numeric_mean", torch.zeros(n_numeric))
        self.register_buffer("numeric_std", torch.ones(n_numeric))
        self.numeric = nn.Linear(n_numeric, d) if n_numeric else None
        self.categorical = nn.ModuleList(nn.Embedding(size, d, padding_idx=0) for size in config.profile_cardinalities)
        self.has_profile = bool(n_numeric or config.profile_categorical)
        self.profile = nn.Sequential(nn.GELU(), nn.Linear(d, d)) if self.has_profile else None
        inputs = 3 * d + 3
        self.skip = nn.Parameter(torch.tensor(float(config.history_skip))) if config.history_skip else None
        if config.fusion == "gated":
            self.gates = nn.Linear(inputs, 3 * d)
            self.out = nn.Linear(d, d)
        else:
            self.out = nn.Sequential(nn.Linear(inputs, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    # ------------------------------------------------------------------ profile statistics
    def set_profile_stats(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Store the training users' numeric mean/std (see :func:`zscore_stats`); saved with the weights."""
        self.numeric_mean.copy_(torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.numeric_std.copy_(torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def set_item_vectors(self, vectors: np.ndarray) -> None:
        """Frozen item-tower vectors, row i for item i (zeros: no vector for that item)."""
        if self.items.frozen is None:
            raise ValueError("this tower was built without item vectors (item_vector_dim = 0)")
        self.items.frozen[1:].copy_(torch.as_tensor(np.asarray(vectors, dtype=np.float32)))

    def set_trained_items(self, counts: np.ndarray) -> None:
        """Items' training counts (I,): with ``mask_untrained_ids``, items with count 0 lose their ID
        embedding (see the module docstring); saved with the weights."""
        if self.config.mask_untrained_ids:
            trained = torch.as_tensor(np.asarray(counts) > 0, dtype=torch.float32, device=self.items.id_mask.device)
            if self.items.frozen is not None:
                trained = trained * torch.as_tensor(np.asarray(counts) >= self.config.min_id_count,
                                                    dtype=torch.float32, device=trained.device)
            self.items.id_mask[1:, 0].copy_(trained)

    # ------------------------------------------------------------------ inputs
    def _behaviour(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.config.max_len}")
        x = self.items(tokens) + self.positions(torch.arange(length, device=tokens.device))
        causal = torch.triu(torch.full((length, length), float("-inf"), device=tokens.device), diagonal=1)
        return self.behaviour_norm(self.encoder(self.dropout(x), mask=causal))

    def _context(self, batch: Mapping[str, torch.Tensor], size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        vectors = batch.get("context") if self.context is not None else None
        if vectors is None:
            return torch.zeros(size, self.config.dim, device=device), torch.zeros(size, device=device)
        present = ~torch.isnan(vectors).any(-1)
        return self.context(torch.nan_to_num(vectors)) * present.unsqueeze(-1), present.float()

    def _profile(self, batch: Mapping[str, torch.Tensor], size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        zero = torch.zeros(size, self.config.dim, device=device)
        if not self.has_profile:
            return zero, torch.zeros(size, device=device)
        x, present = zero, torch.zeros(size, dtype=torch.bool, device=device)
        numeric = batch.get("profile_numeric") if self.numeric is not None else None
        if numeric is not None:
            known = ~torch.isnan(numeric)
            z = torch.where(known, (numeric - self.numeric_mean) / self.numeric_std, torch.zeros_like(numeric))
            x, present = x + self.numeric(z), present | known.any(-1)
        categorical = batch.get("profile_categorical") if len(self.categorical) else None
        if categorical is not None:
            for field_index, table in enumerate(self.categorical):
                x = x + table(categorical[:, field_index])
            present = present | (categorical > 0).any(-1)
        return self.profile(x) * present.unsqueeze(-1), present.float()

    # ------------------------------------------------------------------ outputs
    def forward(self, batch: Mapping[str, torch.Tensor], targets: torch.Tensor | None = None,
                negatives: torch.Tensor | None = None, popularity: torch.Tensor | None = None) -> torch.Tensor:
        """The states (:meth:`states`), or with ``targets`` the training loss
        (:func:`sampled_softmax_loss`): one forward call, so DistributedDataParallel sees it."""
        if targets is None:
            return self.states(batch)
        return sampled_softmax_loss(self, batch, targets, negatives, popularity)

    def states(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, dim) L2-normalised user states at every sequence position (L = 1 without ``items``)."""
        tokens = batch.get("items")
        reference = next(v for v in batch.values() if isinstance(v, torch.Tensor))
        size, device = reference.shape[0], reference.device
        if tokens is not None and tokens.shape[1] > 0:
            behaviour = self._behaviour(tokens)
            has_behaviour = (tokens != PAD).float()                          # (B, L)
        else:
            behaviour = torch.zeros(size, 1, self.config.dim, device=device)
            has_behaviour = torch.zeros(size, 1, device=device)
        length = behaviour.shape[1]
        context, has_context = self._context(batch, size, device)
        profile, has_profile = self._profile(batch, size, device)
        parts = [behaviour * has_behaviour.unsqueeze(-1), context.unsqueeze(1).expand(-1, length, -1),
                 profile.unsqueeze(1).expand(-1, length, -1)]
        flags = torch.stack([has_behaviour, has_context.unsqueeze(1).expand(-1, length),
                             has_profile.unsqueeze(1).expand(-1, length)], dim=-1)
        joined = torch.cat(parts + [flags], dim=-1)
        if self.config.fusion == "gated":
            gates = torch.sigmoid(self.gates(joined)).chunk(3, dim=-1)
            fused = sum(g * p * f.unsqueeze(-1) for g, p, f in zip(gates, parts, flags.unbind(-1)))
            out = self.out(fused)
        else:
            out = self.out(joined)
        if self.skip is not None and tokens is not None and tokens.shape[1] > 0:
            out = out + self.skip * self._recent_items(tokens)
        return F.normalize(out, dim=-1)

    def _recent_items(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, dim): at each position t, sum over s <= t of decay^(t - s) * item vector of s
        (normalised; padding adds 0), itself normalised."""
        length = tokens.shape[1]
        t = torch.arange(length, device=tokens.device)
        age = (t[:, None] - t[None, :]).float()
        weights = torch.where(age >= 0, self.config.history_decay ** age.clamp(min=0), torch.zeros_like(age))
        return F.normalize(torch.einsum("ts,bsd->btd", weights, self.item_vectors(tokens)), dim=-1)

    def user_vectors(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, dim): the state after each user's last item (position 0 when there is none)."""
        states = self.states(batch)
        tokens = batch.get("items")
        if tokens is None or tokens.shape[1] == 0:
            return states[:, 0]
        last = ((tokens != PAD).sum(1) - 1).clamp(min=0)
        return states[torch.arange(len(states), device=states.device), last]

    def item_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.items(tokens), dim=-1)

    def all_item_vectors(self) -> torch.Tensor:
        """(n_items, dim), row i = item i."""
        return self.item_vectors(torch.arange(1, self.n_items + 1, device=self.positions.weight.device))


# ---------------------------------------------------------------------- data layout

def zscore_stats(numeric: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-column mean and std of training users' numeric fields, NaN (missing) ignored; a constant
    or empty column gets std 1 so it z-scores to 0 instead of dividing by zero."""
    numeric = np.asarray(numeric, dtype=np.float64)
    numeric = numeric.reshape(len(numeric), -1)
    counts = (~np.isnan(numeric)).sum(0)
    mean = np.where(counts > 0, np.nansum(numeric, 0) / np.maximum(counts, 1), 0.0)
    var = np.nansum((numeric - mean) ** 2, 0) / np.maximum(counts, 1)
    std = np.where(np.sqrt(var) > 1e-6, np.sqrt(var), 1.0)
    return mean.tolist(), std.tolist()


def pad_right(histories: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """(U, max_len) tokens: each history's last ``max_len`` items (item i -> token i + 1), left-aligned."""
    out = np.zeros((len(histories), max_len), dtype=np.int64)
    for row, history in enumerate(histories):
        recent = np.asarray(history[-max_len:], dtype=np.int64) if max_len else np.zeros(0, np.int64)
        out[row, :len(recent)] = recent + 1
    return out


def training_windows(sequences: Sequence[np.ndarray], max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Causal training examples: each sequence cut into windows of up to ``max_len + 1`` items
    (from its end, so the most recent window is complete; stride ``max_len`` so every transition is
    a target exactly once). Returns inputs and targets (W, max_len) tokens and the owner row (W,)."""
    inputs, targets, owners = [], [], []
    for owner, seq in enumerate(sequences):
        end = len(seq)
        while end >= 2:
            window = np.asarray(seq[max(0, end - max_len - 1):end], dtype=np.int64) + 1
            inputs.append(window[:-1])
            targets.append(window[1:])
            owners.append(owner)
            end -= max_len
    n = len(inputs)
    x = np.zeros((n, max_len), dtype=np.int64)
    y = np.zeros((n, max_len), dtype=np.int64)
    for row, (a, b) in enumerate(zip(inputs, targets)):
        x[row, :len(a)], y[row, :len(b)] = a, b
    return x, y, np.asarray(owners, dtype=np.int64)


USER_KEYS = ("items", "context", "profile_numeric", "profile_categorical")


def to_tensors(arrays: Mapping[str, np.ndarray], rows=None, device="cpu") -> dict[str, torch.Tensor]:
    """The model's batch from numpy columns (only the keys the model reads), optionally a row subset."""
    out = {}
    for key in USER_KEYS:
        if key in arrays:
            value = arrays[key] if rows is None else arrays[key][rows]
            dtype = torch.long if key in ("items", "profile_categorical") else torch.float32
            out[key] = torch.as_tensor(np.asarray(value), dtype=dtype, device=device)
    return out


def encode_users(model: UserTower, arrays: Mapping[str, np.ndarray], batch_size: int = 4096, device="cpu"
                 ) -> np.ndarray:
    """(U, dim) float32 user vectors, eval mode."""
    model.eval()
    n = len(next(iter(arrays.values())))
    with torch.no_grad():
        parts = [model.user_vectors(to_tensors(arrays, np.arange(s, min(s + batch_size, n)), device)).cpu().numpy()
                 for s in range(0, n, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, model.config.dim), np.float32)


def item_matrix(model: UserTower) -> np.ndarray:
    """(n_items, dim) float32 L2-normalised item vectors, row i = item i."""
    model.eval()
    with torch.no_grad():
        return model.all_item_vectors().cpu().numpy().astype(np.float32)


def state_extra(model: UserTower) -> dict:
    """What a checkpoint needs besides the weights to rebuild the model."""
    return {"model_config": asdict(model.config), "n_items": model.n_items}


def load_user_tower(path: str, device="cpu") -> UserTower:
    state = torch.load(path, map_location=device, weights_only=True)
    model = UserTower(UserTowerConfig(**state["model_config"]), int(state["n_items"]))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if unexpected or set(missing) - {"items.id_mask"}:        # checkpoints before the mask load unmasked
        raise RuntimeError(f"{path}: checkpoint does not match the tower (missing {missing}, unexpected {unexpected})")
    return model.eval()


def save_user_model(directory: str | Path, model: UserTower, checkpoint: str | Path, item_ids: Sequence[str],
                    categorical_values: Mapping[str, list[str]], text_model: str | None = None,
                    context_source: str = "title", note: str | None = None) -> Path:
    """The served user tower: its item vectors and ``user_model.json`` (checkpoint relative to
    ``directory``, item ids in token order, profile fields and their vocabularies, context input)."""
    return write_user_model(directory, item_matrix(model), checkpoint, list(item_ids),
                            list(model.config.profile_numeric), dict(categorical_values),
                            {"source": context_source, "text_model": text_model, "dim": model.config.context_dim},
                            model.config.max_len, note)


def load_user_model(directory: str | Path, device="cpu") -> tuple[UserModelFiles, UserTower]:
    """What :func:`save_user_model` wrote: the files' description and the tower in eval mode."""
    files = read_user_model(directory)
    return files, load_user_tower(str(files.checkpoint_path), device)
