"""Named model architectures (``configs/models.yaml``): one place for every architecture block.

``architecture("unified")`` -> the block as a dict (its ``kind`` included); ``named_config("unified",
ItemTowerConfig, "item_tower")`` -> the typed config, checked like any YAML config. Stage configs
accept a block's name where they accept the block itself (``tower: unified``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml

from recsys.config import ConfigError, from_dict

T = TypeVar("T")
MODELS_FILE = Path(__file__).resolve().parents[2] / "configs" / "models.yaml"


def architectures(path: str | Path | None = None) -> dict[str, dict]:
    """Every named block of the models file."""
    path = Path(path or MODELS_FILE)
    blocks = yaml.safe_load(path.read_text()) or {}
    if not isinstance(blocks, dict) or not all(isinstance(b, dict) for b in blocks.values()):
        raise ConfigError(f"{path}: expected a mapping of name -> architecture block")
    return blocks


def architecture(name: str, kind: str | None = None, path: str | Path | None = None) -> dict:
    """A copy of the block called ``name``; with ``kind``, it must be a block of that kind."""
    blocks = architectures(path)
    if name not in blocks:
        raise ConfigError(f"model {name!r} is not in {path or MODELS_FILE}; known: {sorted(blocks)}")
    block = dict(blocks[name])
    if kind is not None and block.get("kind") != kind:
        raise ConfigError(f"model {name!r} is a {block.get('kind')!r} block, expected {kind!r}")
    return block


def named_config(name: str | T, config_cls: type[T], kind: str, path: str | Path | None = None,
                 drop: tuple[str, ...] = ()) -> T:
    """The block ``name`` as a ``config_cls`` (``kind`` and the ``drop`` keys left out); a config
    given instead of a name comes back as it is (stage configs accept either)."""
    if not isinstance(name, str):
        return name
    block = architecture(name, kind, path)
    values = {k: v for k, v in block.items() if k != "kind" and k not in drop}
    return from_dict(config_cls, values, f"{path or MODELS_FILE}:{name}")
