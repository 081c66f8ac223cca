"""Item table -> STD/RE token arrays for the item towers.

Every canonical item (``recsys.data.schema.ITEM_SCHEMA``) becomes two token groups:

- **STD** (standard, finite vocabulary, :class:`recsys.vocab.StdVocabulary`): the category
  hierarchy levels (coarse -> fine, from ``category_path``) followed by ``std_fields`` (colour,
  gender, season, usage, ...). A STD field always yields at least one token: an absent value is the
  field's own UNKNOWN token, so "unknown colour" is learned like any colour.
- **RE** (reinforced, open vocabulary, :class:`recsys.vocab.HashedVocabulary`, crc32): the named
  ``re_fields`` (material, neckline, fit, pattern, ...), then every other attribute of the row as a
  ``key=value`` phrase under the catch-all field ``other_re_field``, then description keywords.
  Truncation to ``max_re_tokens`` drops from the end of that order (keywords first).

Title words are a third, optional group (``title_*``) that towers use only with
``title_mode="tokens"``.

Which field is STD and which RE is decided here per catalog, not by the adapters: a field is looked
up by name in the hierarchy, then ``std_attributes``, ``re_attributes`` and finally a top-level list
column (K-Fashion ``styles``), so a preset may move e.g. K-Fashion's 넥라인 from STD to RE.

One shared token id space (the towers use one 64-d embedding table for both groups)::

    0                        padding (masks and nn.Embedding(padding_idx=0) agree)
    1 .. S                   STD block: STD field f_i's local id k >= 1 (1 = f_i's UNKNOWN)
                             -> std_offsets[f_i] + k, with std_offsets[f_0] = 0 and
                             std_offsets[f_{i+1}] = std_offsets[f_i] + size(f_i) - 1
    S+1 .. S+num_buckets     RE block: hashed id h (1..num_buckets) -> S + h

so ``vocab_size = 1 + S + num_buckets``; titles and description keywords hash into the RE block
with their own field name in the hashed text. Field ids (for field embeddings) come from one
:class:`recsys.vocab.FieldIndex` over hierarchy + STD + RE fields + catch-all + description + title.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from recsys.data.schema import attributes
from recsys.vocab import UNKNOWN_ID, AttributeVocabulary, pad_multi

DESCRIPTION_FIELD = "description"
TITLE_FIELD = "title"
# Canonical columns a field may be read from besides the attribute lists (K-Fashion style labels).
_LIST_COLUMNS = ("styles", "sub_styles")
_COLUMNS = ("category_path", "std_attributes", "re_attributes", "title", "description") + _LIST_COLUMNS

# English function words plus the few words every catalog description repeats; kept short on
# purpose: keywords only need to drop words that carry no product information.
STOPWORDS = frozenset("""
a about above after all also an and any are as at be been but by can for from has have having her
his in into is it its made may more most no not of on one or other our out over own per so such than
that the their them then there these this those through to too under up very was were which while
who will with within without you your
""".split())
_WORD = re.compile(r"[^\W\d_]{2,}")  # runs of 2+ letters: drops numbers, punctuation, single letters


def keywords(text: str | None, limit: int, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """The first ``limit`` distinct lowercase words of ``text`` that are not stopwords.

    Deterministic and order-based (no corpus statistics to fit or save): product descriptions put
    the garment words first ("Blue round neck jersey, has short sleeves...").
    """
    if not text or limit <= 0:
        return []
    out, seen = [], set()
    for match in _WORD.finditer(text.lower()):  # lazy: long descriptions stop at ``limit``
        word = match.group()
        if word in stopwords or word in seen:
            continue
        seen.add(word)
        out.append(word)
        if len(out) == limit:
            break
    return out


@dataclass
class ItemFeatureConfig:
    """How one catalog's items split into STD and RE tokens."""
    hierarchy: list[str]                 # names of category_path levels, coarse -> fine
    std_fields: list[str]                # STD fields besides the hierarchy
    re_fields: list[str]                 # RE fields with their own field embedding
    other_re_field: str | None = "attribute"   # catch-all for unlisted RE attributes; None drops them
    ignore_fields: list[str] = field(default_factory=list)  # attributes never tokenized
    re_parents: dict[str, str] = field(default_factory=dict)  # RE field -> STD parent; default finest level
    description_keywords: int = 8        # keywords taken from the description (0: none)
    max_title_tokens: int = 8            # title words kept (title_* arrays)
    max_std_tokens: int = 12
    max_re_tokens: int = 24
    num_buckets: int = 100_000
    min_count: int = 1                   # STD values seen fewer times map to UNKNOWN
    # Attribute values dropped wherever they occur (normalised, see ``withhold_label``): the names
    # of withheld category levels, so "department: Sneakers" cannot carry the label.
    withheld_values: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._withheld = frozenset(self.withheld_values)
        if not self.hierarchy:
            raise ValueError("hierarchy needs at least one level (the category)")
        names = self.std_all + self.re_all
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"field(s) {duplicates} listed twice across hierarchy/std_fields/re_fields "
                             f"(note {DESCRIPTION_FIELD!r} and {TITLE_FIELD!r} are reserved)")
        for child, parent in self.re_parents.items():
            if child not in self.re_all:
                raise ValueError(f"re_parents: {child!r} is not a RE field {self.re_all}")
            if parent not in self.std_all:
                raise ValueError(f"re_parents: parent {parent!r} of {child!r} is not a STD field {self.std_all}")
        if self.max_std_tokens < len(self.hierarchy):
            raise ValueError(f"max_std_tokens={self.max_std_tokens} would truncate the "
                             f"{len(self.hierarchy)} hierarchy levels")

    @property
    def std_all(self) -> list[str]:
        """STD fields in token order: hierarchy levels (position k = level k), then std_fields."""
        return list(self.hierarchy) + list(self.std_fields)

    @property
    def re_all(self) -> list[str]:
        """Every RE field id owner: named fields, catch-all, description, title."""
        return (list(self.re_fields) + ([self.other_re_field] if self.other_re_field else [])
                + [DESCRIPTION_FIELD, TITLE_FIELD])

    def parent_of(self, re_field: str) -> str:
        return self.re_parents.get(re_field, self.hierarchy[-1])


# --- per-catalog presets (inspected on ../shared/data) -----------------------------------------

def fashion_product_images_features(**overrides) -> ItemFeatureConfig:
    """Myntra: STD = master > sub > articleType + the Kaggle columns and brand; RE = articleAttributes.

    styles_full.parquet has 191 distinct articleAttributes keys; the ones that describe apparel
    and footwear for most items get their own field, the rest are "attribute" phrases, and
    logistics keys (size charts, shelf life, warranty) are ignored.
    """
    config = dict(
        hierarchy=["masterCategory", "subCategory", "articleType"],
        std_fields=["gender", "baseColour", "season", "usage", "ageGroup", "brandName"],
        re_fields=["type", "fabric", "fabric_2", "material", "pattern", "print_or_pattern_type", "fit",
                   "neck", "collar", "sleeve_length", "sleeve_styling", "length", "occasion"],
        ignore_fields=["body_or_garment_size", "wash_care", "multipack_set", "units_per_bundle",
                       "number_of_components", "warranty", "total_shelf_life_in_months",
                       "minimum_shelf_life_in_months", "minimum_usable_period_in_months"],
        re_parents={"occasion": "usage"},  # "Casual"/"Formal" occasion refines the usage value
        description_keywords=8, max_std_tokens=9, max_re_tokens=24)
    return ItemFeatureConfig(**{**config, **overrides})


def hm_article_features(**overrides) -> ItemFeatureConfig:
    """H&M: STD = product group > type + index and colour groups; RE = the finer merchandising
    columns (graphical appearance, department, section) and detail_desc keywords."""
    config = dict(
        hierarchy=["product_group_name", "product_type_name"],
        std_fields=["index_group_name", "index_name", "garment_group_name", "colour_group_name",
                    "perceived_colour_master_name", "perceived_colour_value_name"],
        re_fields=["graphical_appearance_name", "department_name", "section_name"],
        # Departments and sections subdivide an index ("Ladieswear"), not a product type.
        re_parents={"department_name": "index_name", "section_name": "index_name"},
        description_keywords=12, max_std_tokens=8, max_re_tokens=20)
    return ItemFeatureConfig(**{**config, **overrides})


def kfashion_features(**overrides) -> ItemFeatureConfig:
    """K-Fashion: STD = slot > category, colours, lengths and style labels; RE = material, print,
    detail and the shape descriptors (neckline, collar, silhouette) that refine the category."""
    config = dict(
        hierarchy=["slot", "category"],
        std_fields=["color", "sub_color", "length", "sleeve_length", "styles", "sub_styles"],
        re_fields=["material", "print", "detail", "neckline", "collar", "silhouette"],
        description_keywords=0, max_std_tokens=10, max_re_tokens=16)
    return ItemFeatureConfig(**{**config, **overrides})


PRESETS = {"fashion_product_images": fashion_product_images_features, "hm": hm_article_features,
           "kfashion": kfashion_features}  # keyed by the item table's ``source`` value


# --- featurization -----------------------------------------------------------------------------

def _kept(values, config: ItemFeatureConfig) -> list[str]:
    """Non-empty attribute values, without ``config.withheld_values``."""
    if not config._withheld:
        return [str(v) for v in values or [] if v]
    return [str(v) for v in values or [] if v and _normalised(v) not in config._withheld]


def _row_values(row: Mapping, config: ItemFeatureConfig) -> dict[str, list[str]]:
    """Every field value of a canonical row by name (hierarchy levels, attributes, list columns)."""
    values: dict[str, list[str]] = {}
    for column in _LIST_COLUMNS:
        if row.get(column):
            values[column] = _kept(row[column], config)
    for column in ("re_attributes", "std_attributes"):  # STD wins when both hold a key
        for attribute in row.get(column) or []:
            values[attribute["field"]] = _kept(attribute["values"], config)
    path = row.get("category_path") or []
    for level, name in enumerate(config.hierarchy):
        values[name] = [path[level]] if level < len(path) and path[level] else []
    return values


def _rows(items: pa.Table | Sequence[Mapping]) -> list[Mapping]:
    if isinstance(items, pa.Table):
        return items.select([c for c in _COLUMNS if c in items.column_names]).to_pylist()
    return list(items)


@dataclass
class ItemFeaturizer:
    """A fitted :class:`ItemFeatureConfig`: the STD vocabularies plus the id layout (module doc)."""
    config: ItemFeatureConfig
    vocab: AttributeVocabulary

    def __post_init__(self):
        self.std_offsets: dict[str, int] = {}
        offset = 0
        for name in self.config.std_all:
            self.std_offsets[name] = offset
            offset += self.vocab.std.size(name) - 1  # local ids 1.. (pad 0 is shared)
        self.re_offset = offset  # = S, the size of the STD block

    @classmethod
    def fit(cls, items: pa.Table | Sequence[Mapping], config: ItemFeatureConfig) -> "ItemFeaturizer":
        """Build the STD vocabularies from training items (RE needs no fitting: it is hashed)."""
        records = [_row_values(row, config) for row in _rows(items)]
        vocab = AttributeVocabulary.build(records, config.std_all, config.re_all,
                                          num_buckets=config.num_buckets, min_count=config.min_count)
        return cls(config, vocab)

    @property
    def vocab_size(self) -> int:
        return 1 + self.re_offset + self.config.num_buckets

    @property
    def n_fields(self) -> int:
        return self.vocab.field_index.size

    def std_token(self, field_name: str, value) -> int:
        """Shared-space id of one STD value (UNKNOWN of the field when absent or unseen)."""
        local = self.vocab.std.encode(field_name, value) or [UNKNOWN_ID]
        return self.std_offsets[field_name] + local[0]

    def re_token(self, field_name: str, value: str) -> int:
        """Shared-space id of one RE value hashed as ``field_name=value``."""
        return self.re_offset + self.vocab.hashed.encode(field_name, value)[0]

    def transform(self, items: pa.Table | Sequence[Mapping]) -> dict[str, np.ndarray]:
        """Items -> fixed-width arrays, rows in input order.

        ``std_ids/std_field_ids/std_mask`` (N, max_std_tokens); ``re_ids/re_field_ids/re_mask``
        and ``re_parent_pos`` (N, max_re_tokens): the position in ``std_ids`` of each RE token's
        parent STD token (0 under padding); ``title_ids/title_field_ids/title_mask``
        (N, max_title_tokens); ``hierarchy_labels`` (N, levels): each level's local STD id
        (1 = unknown), for samplers and metrics.
        """
        cfg, fields, hashed, std = self.config, self.vocab.field_index, self.vocab.hashed, self.vocab.std
        named = set(cfg.std_all) | set(cfg.re_fields) | set(cfg.ignore_fields)
        std_lists, std_field_lists, re_lists, re_field_lists, parent_lists = [], [], [], [], []
        title_lists, labels = [], []
        for row in _rows(items):
            values = _row_values(row, cfg)
            ids, field_ids, first_pos = [], [], {}
            for name in cfg.std_all:
                local = std.encode(name, values.get(name)) or [UNKNOWN_ID]
                first_pos.setdefault(name, len(ids))
                ids += [self.std_offsets[name] + i for i in local]
                field_ids += [fields[name]] * len(local)
            std_lists.append(ids[:cfg.max_std_tokens])
            std_field_lists.append(field_ids[:cfg.max_std_tokens])
            labels.append([ids[level] - self.std_offsets[name] for level, name in enumerate(cfg.hierarchy)])

            finest = len(cfg.hierarchy) - 1  # hierarchy level k is always at position k
            tokens: list[tuple[str, list[int]]] = [(n, hashed.encode(n, values.get(n))) for n in cfg.re_fields]
            if cfg.other_re_field:
                for attribute in row.get("re_attributes") or []:
                    if attribute["field"] not in named:  # hash the real key, share the catch-all field id
                        tokens.append((cfg.other_re_field, hashed.encode(attribute["field"],
                                                                          _kept(attribute["values"], cfg))))
            tokens.append((DESCRIPTION_FIELD, hashed.encode(
                DESCRIPTION_FIELD, keywords(row.get("description"), cfg.description_keywords))))
            re_ids, re_field_ids, parents = [], [], []
            for name, hashed_ids in tokens:
                parent = first_pos[cfg.parent_of(name)]
                parent = parent if parent < cfg.max_std_tokens else finest  # parent truncated away
                re_ids += [self.re_offset + h for h in hashed_ids]
                re_field_ids += [fields[name]] * len(hashed_ids)
                parents += [parent] * len(hashed_ids)
            re_lists.append(re_ids[:cfg.max_re_tokens])
            re_field_lists.append(re_field_ids[:cfg.max_re_tokens])
            parent_lists.append(parents[:cfg.max_re_tokens])
            title_lists.append([self.re_offset + h for h in
                                hashed.encode(TITLE_FIELD, keywords(row.get("title"), cfg.max_title_tokens))])

        out = {}
        out["std_ids"], out["std_mask"] = pad_multi(std_lists, cfg.max_std_tokens)
        out["std_field_ids"], _ = pad_multi(std_field_lists, cfg.max_std_tokens)
        out["re_ids"], out["re_mask"] = pad_multi(re_lists, cfg.max_re_tokens)
        out["re_field_ids"], _ = pad_multi(re_field_lists, cfg.max_re_tokens)
        out["re_parent_pos"], _ = pad_multi(parent_lists, cfg.max_re_tokens)
        title_len = max(1, cfg.max_title_tokens)
        out["title_ids"], out["title_mask"] = pad_multi(title_lists, title_len)
        out["title_field_ids"] = np.where(out["title_mask"], fields[TITLE_FIELD], 0).astype(np.int64)
        out["hierarchy_labels"] = np.asarray(labels, dtype=np.int64).reshape(-1, len(cfg.hierarchy))
        return out

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "vocab": self.vocab.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ItemFeaturizer":
        return cls(ItemFeatureConfig(**data["config"]), AttributeVocabulary.from_dict(data["vocab"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "ItemFeaturizer":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _normalised(value) -> str:
    """Lower case without spaces and punctuation, any script ("T-shirts" == "Tshirts", "블라우스")."""
    return re.sub(r"[\W_]+", "", str(value).lower())


def withhold_label(config: ItemFeatureConfig, items: pa.Table | Sequence[Mapping], label_level: int = -1,
                   copy_share: float = 0.5, name_items: pa.Table | Sequence[Mapping] = ()
                   ) -> tuple[ItemFeatureConfig, dict]:
    """The leak-free input config when a metric labels items by their category: hierarchy level
    ``label_level`` and every finer one leave the inputs, and so does any attribute field that
    copies a withheld level (its value equals that level's, compared normalised, on at least
    ``copy_share`` of the ``items`` that have the field). Any attribute value equal to a withheld
    level's name (in ``items`` or ``name_items``, e.g. the whole catalog, so a held-out category's
    name counts too) is dropped wherever it occurs: a field that names the type for some
    items only ("department: Sneakers") keeps its other values. A tower must then infer the category
    from the other attributes, the title and the description, as it would for a real new product.

    Returns ``(input config, {"levels": [...], "fields": {field: share}, "values": n})``. Withheld
    fields go to ``ignore_fields`` so the catch-all RE field cannot pick them up again."""
    depth = len(config.hierarchy)
    level = label_level % depth if -depth <= label_level < depth else None
    if level is None:
        raise ValueError(f"label_level {label_level} is not a level of the hierarchy {config.hierarchy}")
    if level == 0:
        raise ValueError(f"withholding label level {config.hierarchy[0]!r} and every finer one would leave no "
                         f"category level as input (hierarchy {config.hierarchy}); label a finer level")
    have, same = Counter(), Counter()
    names = {_normalised(v) for row in _rows(name_items) for v in (row.get("category_path") or [])[level:] if v}
    for row in _rows(items):
        labels = {_normalised(v) for v in (row.get("category_path") or [])[level:] if v} - {""}
        names |= labels
        for column in ("std_attributes", "re_attributes"):
            for attribute in row.get(column) or []:
                values = {_normalised(v) for v in attribute["values"] or [] if v}
                if values:
                    have[attribute["field"]] += 1
                    same[attribute["field"]] += bool(labels & values)
    copies = {name: round(same[name] / have[name], 4) for name in sorted(have)
              if same[name] / have[name] >= copy_share}
    withheld_levels = list(config.hierarchy[level:])
    gone = set(withheld_levels) | set(copies)
    kept_finest = config.hierarchy[level - 1]
    parents = {child: (parent if parent not in gone else kept_finest) for child, parent in config.re_parents.items()
               if child not in gone}
    input_config = replace(config, hierarchy=list(config.hierarchy[:level]),
                           std_fields=[f for f in config.std_fields if f not in gone],
                           re_fields=[f for f in config.re_fields if f not in gone],
                           ignore_fields=list(dict.fromkeys([*config.ignore_fields, *sorted(copies)])),
                           re_parents=parents, withheld_values=sorted(names - {""}))
    return input_config, {"levels": withheld_levels, "fields": copies, "values": len(input_config.withheld_values)}


def input_text(row: Mapping, config: ItemFeatureConfig) -> str:
    """One item's tower inputs as text, for text-encoder baselines that must see exactly what the
    tower sees: the title, the input category levels and attribute values (withheld and ignored
    fields left out), the description keywords."""
    values = _row_values(row, config)
    named = set(config.std_all) | set(config.re_fields)
    parts = [str(row.get("title") or "")]
    parts += [", ".join(values[name]) for name in config.std_all + config.re_fields if values.get(name)]
    if config.other_re_field:
        skip = named | set(config.ignore_fields)
        parts += [f"{a['field'].replace('_', ' ')} {', '.join(_kept(a['values'], config))}"
                  for a in row.get("re_attributes") or [] if a["field"] not in skip and _kept(a["values"], config)]
    parts.append(" ".join(keywords(row.get("description"), config.description_keywords)))
    return ". ".join(p for p in parts if p.strip())


def featurize_items(items: pa.Table | Sequence[Mapping], config: ItemFeatureConfig
                    ) -> tuple[ItemFeaturizer, dict[str, np.ndarray]]:
    """Fit on ``items`` and transform them (the usual one-catalog case)."""
    items = _rows(items)  # convert a table once, not once per pass
    featurizer = ItemFeaturizer.fit(items, config)
    return featurizer, featurizer.transform(items)


def token_counts(features: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean STD/RE/title tokens per item and the share of items without RE tokens (for reports)."""
    return {"std_per_item": float(features["std_mask"].sum(1).mean()),
            "re_per_item": float(features["re_mask"].sum(1).mean()),
            "title_per_item": float(features["title_mask"].sum(1).mean()),
            "share_without_re": float((~features["re_mask"].any(1)).mean())}


def records_to_items(records: Iterable[Mapping]) -> list[dict]:
    """Plain ``{category_path, std_attributes: {f: v}, re_attributes: {f: v}, ...}`` dicts -> the
    canonical row shape (attribute lists), for notebooks and tests."""
    out = []
    for record in records:
        row = dict(record)
        for column in ("std_attributes", "re_attributes"):
            if isinstance(row.get(column), Mapping):
                row[column] = attributes(row[column])
        out.append(row)
    return out
