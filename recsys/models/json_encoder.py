"""Attribute-JSON encoder: Embedding + MLP only (no attention), 512-d L2-normalised output.

Every field gets its own embedding table. A single-valued field is one lookup; a multi-valued field
(materials, details, styles) is a masked mean over its values' embeddings, so one code path serves
both (a single value is a list of length one). The pooled field vectors are concatenated and an MLP
maps them to the output space.

A trained encoder is a run directory's ``checkpoints/best_model.pt`` (weights, architecture and
vocabulary sizes) plus ``checkpoints/vocab.json``: :func:`save_vocabulary` / :func:`load_json_encoder`
are the one writer/reader pair the training jobs, the evaluation and the Serve QueryEncoder use.
"""
from __future__ import annotations

import io

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys.vocab import AttributeVocabulary

CHECKPOINT_FILE = "checkpoints/best_model.pt"
VOCAB_FILE = "checkpoints/vocab.json"


@dataclass
class JsonEncoderConfig:
    fields: list[str] = field(default_factory=lambda: ["category", "style", "silhouette", "material", "detail"])
    multi_fields: list[str] = field(default_factory=lambda: ["style", "material", "detail", "print"])
    max_values: int = 8          # values kept per multi-valued field
    embedding_dim: int = 64
    hidden_dim: int = 512
    output_dim: int = 512
    dropout: float = 0.1


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of ``values`` (B, L, D) where ``mask`` (B, L) is True; all-masked rows -> 0."""
    weights = mask.unsqueeze(-1).to(values.dtype)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class JsonEncoder(nn.Module):
    def __init__(self, config: JsonEncoderConfig, vocab_sizes: Mapping[str, int]):
        super().__init__()
        missing = [f for f in config.fields if f not in vocab_sizes]
        if missing:
            raise ValueError(f"no vocabulary size for field(s) {missing}")
        self.config = config
        self.fields = list(config.fields)
        self.embeddings = nn.ModuleDict({f: nn.Embedding(vocab_sizes[f], config.embedding_dim, padding_idx=0)
                                         for f in self.fields})
        self.mlp = nn.Sequential(
            nn.Linear(len(self.fields) * config.embedding_dim, config.hidden_dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.hidden_dim), nn.GELU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.output_dim))

    def forward(self, ids: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> torch.Tensor:
        pooled = [masked_mean(self.embeddings[f](ids[f]), masks[f]) for f in self.fields]
        return F.normalize(self.mlp(torch.cat(pooled, dim=-1)), dim=-1)


def featurize(vocab: AttributeVocabulary, records: Sequence[Mapping[str, object]], config: JsonEncoderConfig
              ) -> dict[str, np.ndarray]:
    """Records ``{field: value | [values]}`` -> ``{"ids/<field>": int64 (N, L), "mask/<field>": bool (N, L)}``.

    Single-valued fields get L = 1; multi-valued ones L = ``max_values``. An absent value encodes
    as the field's UNKNOWN id, so "unknown" is a learned value of its own.
    """
    out = {}
    for f in config.fields:
        length = config.max_values if f in config.multi_fields else 1
        ids, mask = vocab.encode_batch(records, f, max_len=length)
        out[f"ids/{f}"], out[f"mask/{f}"] = ids, mask
    return out


def split_features(batch: Mapping[str, torch.Tensor], fields: Sequence[str]) -> tuple[dict, dict]:
    return {f: batch[f"ids/{f}"] for f in fields}, {f: batch[f"mask/{f}"].bool() for f in fields}


def orthonormal_lift(source_dim: int, target_dim: int, seed: int = 0) -> np.ndarray:
    """A fixed (target_dim, source_dim) matrix Q with QᵀQ = I, so ``Q @ x`` keeps every inner product
    and norm: 384-d MiniLM targets become 512-d without changing any cosine."""
    if target_dim < source_dim:
        raise ValueError(f"cannot lift {source_dim}-d into fewer ({target_dim}) dimensions")
    gaussian = np.random.default_rng(seed).normal(size=(target_dim, source_dim))
    q, _ = np.linalg.qr(gaussian)
    return q.astype(np.float32)


# --- inference: a trained encoder and its vocabulary -----------------------------------------------

def encode_features(model: nn.Module, features: Mapping[str, np.ndarray]) -> np.ndarray:
    """Featurized rows (``ids/<field>``, ``mask/<field>`` arrays) -> encoder outputs, eval mode."""
    model.eval()
    inner = getattr(model, "module", model)  # inside DistributedDataParallel while training
    batch = {k: torch.as_tensor(v) for k, v in features.items() if k.startswith(("ids/", "mask/"))}
    with torch.no_grad():
        return model(*split_features(batch, inner.fields)).numpy()


def load_encoder(state_path: str | Path, device="cpu") -> JsonEncoder:
    """A trained encoder from a checkpoint's ``state.pt`` (weights only, no pickled code); the path may be
    an object-store URI (Ray Train workers of a stage-2 run read stage 1's weights from where it lives)."""
    from recsys import storage

    source = state_path if storage.is_local(state_path) else io.BytesIO(storage.read_bytes(state_path))
    state = torch.load(source, map_location=device, weights_only=True)
    model = JsonEncoder(JsonEncoderConfig(**state["encoder"]), state["vocab_sizes"])
    model.load_state_dict(state["model"])
    return model.eval()


def encoder_config(state_path: str | Path) -> JsonEncoderConfig:
    """The architecture a checkpoint was trained with (to featurize for it without loading weights)."""
    return JsonEncoderConfig(**torch.load(state_path, map_location="cpu", weights_only=True)["encoder"])


def save_vocabulary(run_dir: str | Path, vocab: AttributeVocabulary) -> Path:
    """Write the vocabulary beside the run's checkpoint (the training job's half of the pair)."""
    path = Path(run_dir) / VOCAB_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    vocab.save(path)
    return path


def json_encoder_files(run_dir: str | Path) -> tuple[Path, Path]:
    """(checkpoint, vocabulary) paths of a trained JSON-encoder run directory."""
    return Path(run_dir) / CHECKPOINT_FILE, Path(run_dir) / VOCAB_FILE


def has_json_encoder(run_dir: str | Path) -> bool:
    return all(path.is_file() for path in json_encoder_files(run_dir))


def load_json_encoder(run_dir: str | Path, device="cpu") -> tuple[JsonEncoder, AttributeVocabulary]:
    """The trained encoder of a run directory and the vocabulary it was trained with."""
    checkpoint, vocab = json_encoder_files(run_dir)
    return load_encoder(checkpoint, device), AttributeVocabulary.load(vocab)
