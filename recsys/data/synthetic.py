"""Seeded synthetic K-Fashion corpus: AI Hub-schema label JSON plus drawn images.

The real K-Fashion data cannot be redistributed, so demos, tests and benchmarks run on a corpus
generated here. It follows the real label schema key for key (see ``recsys/data/kfashion.py`` and
``label_key_signature``), is laid out like AI Hub's parallel trees::

    {out_dir}/labels/{style}/{image_id}.json
    {out_dir}/images/{style}/{image_id}.jpg
    {out_dir}/manifest.json

and its images follow their labels: every garment is a category-specific silhouette filled with
its 색상, its 프린트 rendered in the 서브색상 (or a contrasting colour), and its 폴리곤좌표 are the
vertices of exactly that silhouette. Styles skew the attribute distributions so models have signal.

Everything about image ``index`` comes from ``numpy.random.default_rng([seed, index])``, so the
output is byte-identical for any worker count and any image can be regenerated on its own.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from collections import Counter
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw
from tqdm import tqdm

from recsys.config import ConfigError
from recsys.data.kfashion import (
    DATASET_INFO, DETAIL, FILE_CREATED, FILE_NAME, FILE_NUMBER, GARMENT_FIELDS_BY_KOREAN, IMAGE_FILE,
    IMAGE_HEIGHT, IMAGE_ID, IMAGE_INFO, IMAGE_WIDTH, LABELS, POLYGON, RECT, SLOTS, STYLE_KEY,
)

# --------------------------------------------------------------------------------------------
# Vocabularies (K-Fashion's own value sets) and the priors the generator samples from
# --------------------------------------------------------------------------------------------

COLORS: dict[str, tuple[int, int, int]] = {
    "블랙": (25, 25, 28), "화이트": (245, 245, 242), "그레이": (128, 128, 130), "레드": (200, 30, 40),
    "핑크": (240, 160, 185), "오렌지": (240, 130, 40), "베이지": (222, 200, 165),
    "브라운": (120, 75, 45), "옐로우": (245, 210, 60), "그린": (50, 140, 70), "카키": (110, 110, 60),
    "민트": (160, 225, 200), "블루": (40, 80, 200), "네이비": (30, 40, 90),
    "스카이블루": (140, 195, 235), "퍼플": (120, 60, 150), "라벤더": (190, 170, 225),
    "와인": (115, 25, 45), "실버": (185, 185, 195), "골드": (200, 165, 60),
}
CATEGORIES = {
    "아우터": ("코트", "재킷", "점퍼", "패딩", "베스트", "가디건", "짚업"),
    "상의": ("탑", "블라우스", "티셔츠", "니트웨어", "셔츠", "브라탑", "후드티"),
    "하의": ("청바지", "팬츠", "스커트", "레깅스", "조거팬츠"),
    "원피스": ("드레스", "점프수트"),
}
LENGTHS = {"아우터": ("크롭", "노멀", "하프", "롱"), "상의": ("크롭", "노멀", "롱"),
           "하의": ("미니", "니렝스", "미디", "발목", "맥시"), "원피스": ("미니", "니렝스", "미디", "발목", "맥시")}
SLEEVES = ("민소매", "반팔", "캡", "7부소매", "긴팔")
MATERIALS = ("우븐", "레이스", "니트", "데님", "면", "린넨", "시폰", "가죽", "울/캐시미어", "저지", "실크",
             "코듀로이", "스웨이드", "퍼", "패딩", "트위드", "벨벳", "플리스")
PRINTS = ("무지", "스트라이프", "체크", "도트", "플로럴", "레터링", "그래픽", "호피", "카무플라쥬")
DETAILS = ("단추", "포켓", "리본", "프릴", "셔링", "플리츠", "자수", "집업", "스티치", "슬릿", "드롭숄더",
           "레이스업", "퀼팅", "컷오프", "롤업", "버클")
NECKLINES = ("라운드넥", "브이넥", "유넥", "스퀘어넥", "터틀넥", "후드", "보트넥", "오프숄더", "홀터넥")
COLLARS = ("셔츠칼라", "보우칼라", "세일러칼라", "숄칼라", "폴로칼라", "피터팬칼라", "너치드칼라", "차이나칼라",
           "테일러드칼라", "밴드칼라")
FITS = ("노멀", "루즈", "오버사이즈", "스키니", "와이드", "타이트", "벨보텀")
DEFAULT_STYLES = ("로맨틱", "스트리트", "모던")

# Order in which slots are painted: what comes later covers what came earlier (outer over top).
DRAW_ORDER = ("하의", "상의", "원피스", "아우터")
# Order of a garment's keys in the label file (as in the real 100026.json).
LABEL_ORDER = ("기장", "색상", "서브색상", "카테고리", "옷깃", "소매기장", "소재", "프린트", "디테일", "넥라인", "핏")
assert set(CATEGORIES) == set(SLOTS) == set(DRAW_ORDER)
assert set(LABEL_ORDER) == set(GARMENT_FIELDS_BY_KOREAN)


def _uniform(values) -> dict[str, float]:
    return dict.fromkeys(values, 1.0)


# Silhouette family of a category; it decides the polygon builder and the length/fit priors.
SHAPE_OF = {"스커트": "skirt", "청바지": "pants", "팬츠": "pants", "레깅스": "pants", "조거팬츠": "pants",
            "드레스": "dress", "점프수트": "jumpsuit", **{c: "outer" for c in CATEGORIES["아우터"]},
            **{c: "upper" for c in CATEGORIES["상의"]}}
CATEGORY_PRIOR = {
    "아우터": {"코트": 2, "재킷": 3, "점퍼": 2, "패딩": 1, "베스트": 0.7, "가디건": 2, "짚업": 1},
    "상의": {"탑": 1, "블라우스": 2, "티셔츠": 4, "니트웨어": 2, "셔츠": 2.5, "브라탑": 0.4, "후드티": 1},
    "하의": {"청바지": 3, "팬츠": 3, "스커트": 3, "레깅스": 0.7, "조거팬츠": 1},
    "원피스": {"드레스": 5, "점프수트": 1},
}
COLOR_PRIOR = {**_uniform(COLORS), "블랙": 3.0, "화이트": 3.0, "그레이": 1.5, "네이비": 1.5, "베이지": 1.5}
LENGTH_PRIOR = {
    "upper": {"크롭": 1, "노멀": 6, "롱": 1.5}, "outer": {"크롭": 1, "노멀": 4, "하프": 2, "롱": 2},
    "skirt": {"미니": 3, "니렝스": 2, "미디": 3, "발목": 1, "맥시": 1},
    "pants": {"미니": 1, "니렝스": 0.5, "미디": 0.7, "발목": 6, "맥시": 1},
    "dress": {"미니": 2, "니렝스": 2, "미디": 3, "발목": 1.5, "맥시": 1.5},
    "jumpsuit": {"미니": 1, "미디": 1, "발목": 4, "맥시": 1},
    "코트": {"노멀": 1, "하프": 3, "롱": 4}, "브라탑": {"크롭": 1}, "레깅스": {"발목": 4, "미디": 1},
}
SLEEVE_PRIOR = {"upper": {"민소매": 1, "캡": 0.7, "반팔": 3, "7부소매": 1, "긴팔": 3},
                "outer": {"긴팔": 8, "7부소매": 1},
                "dress": {"민소매": 2, "캡": 1, "반팔": 2, "7부소매": 1, "긴팔": 2}}
SLEEVE_PRIOR["jumpsuit"] = SLEEVE_PRIOR["dress"]
FORCED_SLEEVE = {"베스트": "민소매", "브라탑": "민소매"}
FIT_PRIOR = {
    "upper": {"노멀": 4, "루즈": 2, "오버사이즈": 1.5, "타이트": 1.5},
    "outer": {"노멀": 4, "루즈": 2, "오버사이즈": 2, "타이트": 0.5},
    "skirt": {"노멀": 4, "루즈": 1.5, "타이트": 2, "와이드": 0.5},
    "pants": {"노멀": 4, "스키니": 2, "와이드": 2, "루즈": 1.5, "벨보텀": 0.7, "타이트": 1},
    "dress": {"노멀": 4, "루즈": 2, "타이트": 2, "와이드": 0.7},
    "jumpsuit": {"노멀": 3, "루즈": 2, "와이드": 2},
    "레깅스": {"스키니": 2, "타이트": 2}, "조거팬츠": {"노멀": 2, "루즈": 2, "오버사이즈": 1},
}
NECKLINE_PRIOR = {"라운드넥": 5, "브이넥": 3, "유넥": 1, "스퀘어넥": 1, "터틀넥": 1, "보트넥": 1,
                  "오프숄더": 0.7, "홀터넥": 0.5}
OUTER_NECKLINE_PRIOR = {"라운드넥": 1, "브이넥": 2, "후드": 2, "터틀넥": 0.5}
# Collar options and the chance that a garment of the category has a collar at all.
COLLAR_PRIOR = {
    "셔츠": (0.95, {"셔츠칼라": 5, "밴드칼라": 1, "차이나칼라": 1}),
    "블라우스": (0.5, {"보우칼라": 2, "셔츠칼라": 1, "피터팬칼라": 2, "세일러칼라": 1, "밴드칼라": 1}),
    "코트": (0.85, {"테일러드칼라": 3, "너치드칼라": 3, "숄칼라": 1}),
    "재킷": (0.85, {"테일러드칼라": 3, "너치드칼라": 3, "숄칼라": 1, "밴드칼라": 1}),
    "티셔츠": (0.1, {"폴로칼라": 1}),
}
DEFAULT_COLLAR = (0.05, _uniform(COLLARS))
FORCED_MATERIAL = {"청바지": "데님", "니트웨어": "니트", "가디건": "니트", "패딩": "패딩", "후드티": "저지",
                   "레깅스": "저지", "조거팬츠": "저지"}
MATERIAL_PRIOR = {**_uniform(MATERIALS), "면": 2.0, "우븐": 2.0, "퍼": 0.3, "패딩": 0.3}
PRINT_PRIOR = {**_uniform(PRINTS), "무지": 5.0}
# Details that only make sense on some silhouettes; the rest go anywhere.
DETAIL_SHAPES = {"플리츠": ("skirt", "dress"), "집업": ("outer", "upper", "jumpsuit"),
                 "드롭숄더": ("upper", "outer"), "롤업": ("pants", "upper"), "컷오프": ("pants", "skirt"),
                 "퀼팅": ("outer",), "슬릿": ("skirt", "dress")}

# Multipliers per style on top of the priors; unknown styles get none (uniform skew).
STYLE_BIAS: dict[str, dict[str, dict[str, float]]] = {
    "로맨틱": {
        "category": {"블라우스": 4, "스커트": 4, "드레스": 4, "가디건": 3, "탑": 2},
        "color": {"핑크": 5, "화이트": 3, "라벤더": 5, "스카이블루": 4, "민트": 4, "베이지": 2},
        "material": {"레이스": 5, "시폰": 5, "실크": 2, "우븐": 1.5},
        "print": {"플로럴": 6, "도트": 5, "그래픽": 0.2, "카무플라쥬": 0.1},
        "detail": {"리본": 5, "프릴": 5, "셔링": 3, "자수": 2},
        "neckline": {"스퀘어넥": 3, "오프숄더": 3, "브이넥": 2, "유넥": 2},
        "collar": {"보우칼라": 4, "피터팬칼라": 3, "세일러칼라": 2},
        "fit": {"노멀": 2, "루즈": 1.5, "오버사이즈": 0.3},
    },
    "스트리트": {
        "category": {"후드티": 6, "티셔츠": 3, "조거팬츠": 5, "점퍼": 4, "청바지": 2, "짚업": 4, "패딩": 2,
                     "블라우스": 0.2, "드레스": 0.5},
        "color": {"블랙": 2, "카키": 4, "그레이": 2, "레드": 3, "옐로우": 3, "오렌지": 3},
        "material": {"저지": 4, "면": 3, "데님": 3, "패딩": 3, "플리스": 3},
        "print": {"그래픽": 8, "레터링": 8, "카무플라쥬": 4, "무지": 0.6},
        "detail": {"포켓": 3, "집업": 4, "스티치": 2, "드롭숄더": 4, "롤업": 2},
        "neckline": {"후드": 4, "라운드넥": 3},
        "collar": {"밴드칼라": 2, "폴로칼라": 2},
        "fit": {"오버사이즈": 8, "루즈": 3, "와이드": 3, "타이트": 0.3, "스키니": 0.3},
    },
    "모던": {
        "category": {"셔츠": 4, "팬츠": 5, "코트": 4, "재킷": 3, "니트웨어": 2, "후드티": 0.2},
        "color": {"블랙": 3, "화이트": 2, "그레이": 4, "네이비": 5, "베이지": 2, "핑크": 0.3,
                  "옐로우": 0.3, "오렌지": 0.3},
        "material": {"울/캐시미어": 5, "우븐": 2, "면": 1.5, "가죽": 3},
        "print": {"무지": 4, "스트라이프": 2, "플로럴": 0.2, "호피": 0.2, "카무플라쥬": 0.1},
        "detail": {"단추": 5, "포켓": 2, "슬릿": 2, "버클": 2},
        "neckline": {"라운드넥": 2, "브이넥": 2, "터틀넥": 4},
        "collar": {"셔츠칼라": 3, "테일러드칼라": 4, "너치드칼라": 3, "차이나칼라": 2},
        "fit": {"노멀": 3, "타이트": 2, "와이드": 2},
    },
}
# (share of one-piece outfits, share with an outer layer); 2 - onepiece + outer garments per image.
OUTFIT_RATES = {"로맨틱": (0.35, 0.45), "스트리트": (0.05, 0.35), "모던": (0.15, 0.35)}
DEFAULT_OUTFIT_RATES = (0.15, 0.35)
# How often the annotator filled a field that the garment has (full labels); absent = always.
LABEL_RATE = {"기장": 0.9, "소재": 0.9, "프린트": 0.95, "넥라인": 0.85, "핏": 0.85}
SPARSE_FIELDS = ("색상", "소매기장")  # what the sparse labels (like 1070263.json) carry

FAULT_KINDS = ("corrupt_json", "missing_image", "truncated_image", "no_box")
MANIFEST = "manifest.json"
FORMAT = "fashionrec-synthetic-kfashion/1"


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

@dataclass
class FaultConfig:
    """How many images get each injected fault (distinct images), to exercise quarantine."""
    corrupt_json: int = 0     # label file truncated mid-way
    missing_image: int = 0    # image file not written
    truncated_image: int = 0  # JPEG cut to half its bytes
    no_box: int = 0           # one labelled slot's 폴리곤좌표 and 렉트좌표 set to [{}]


@dataclass
class SyntheticCorpusConfig:
    out_dir: str = "data/generated/kfashion_demo"
    seed: int = 0
    n_images: int = 1000  # ~2,200 garments over 3 styles, the size of the original study
    styles: list[str] = field(default_factory=lambda: list(DEFAULT_STYLES))
    image_width: int = 320
    image_height: int = 416
    sparse_label_rate: float = 0.1  # labels with only 색상/소매기장 and style [{}], like 1070263
    first_image_id: int = 1_000_000
    jpeg_quality: int = 90
    workers: int = 0  # 0 = os.cpu_count()
    faults: FaultConfig = field(default_factory=FaultConfig)


def _validate(config: SyntheticCorpusConfig) -> None:
    problems = []
    if config.n_images < 1:
        problems.append(f"n_images must be >= 1, got {config.n_images}")
    if not config.styles or len(set(config.styles)) != len(config.styles):
        problems.append(f"styles must be a non-empty list of distinct names, got {config.styles}")
    if any(not s or "/" in s or s.startswith(".") for s in config.styles):
        problems.append("styles are folder names and must not be empty, contain '/' or start with '.': "
                        f"{config.styles}")
    if config.image_width < 64 or config.image_height < 64:
        problems.append(f"image size must be at least 64x64, got {config.image_width}x{config.image_height}")
    if not 0.0 <= config.sparse_label_rate <= 1.0:
        problems.append(f"sparse_label_rate must be in [0, 1], got {config.sparse_label_rate}")
    if not 1 <= config.jpeg_quality <= 100:
        problems.append(f"jpeg_quality must be in [1, 100], got {config.jpeg_quality}")
    if config.workers < 0:
        problems.append(f"workers must be >= 0, got {config.workers}")
    counts = asdict(config.faults)
    if any(v < 0 for v in counts.values()):
        problems.append(f"fault counts must be >= 0, got {counts}")
    if sum(counts.values()) > config.n_images:
        problems.append(f"{sum(counts.values())} faults need as many distinct images; "
                        f"n_images is {config.n_images}")
    if problems:
        raise ConfigError("invalid synthetic corpus config: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Planning: what is in each image and what its label says (cheap, no drawing)
# --------------------------------------------------------------------------------------------

@dataclass
class PlannedGarment:
    slot: str
    truth: dict[str, Any]  # every attribute as drawn (Korean keys; None / [] = the garment has none)
    label: dict[str, Any]  # the subset written to the label file


@dataclass
class ImagePlan:
    index: int
    image_id: int
    style: str    # folder style; the label's 스타일 is empty when sparse
    sparse: bool
    created: str  # 파일 생성일자
    garments: list[PlannedGarment]  # in SLOTS order

    @property
    def file_name(self) -> str:
        return f"synth_{self.image_id}.jpg"


def _pick(rng: np.random.Generator, options: dict[str, float], bias: dict[str, float] | None = None) -> str:
    values = list(options)
    weights = np.array([options[v] * (bias or {}).get(v, 1.0) for v in values], dtype=float)
    return values[rng.choice(len(values), p=weights / weights.sum())]


def _pick_distinct(rng, options: dict[str, float], bias, k: int, first: str | None = None) -> list[str]:
    chosen = [first] if first else []
    while len(chosen) < k and len(chosen) < len(options):
        chosen.append(_pick(rng, {v: w for v, w in options.items() if v not in chosen}, bias))
    return chosen


def _sample_garment(rng: np.random.Generator, slot: str, style: str) -> dict[str, Any]:
    """All attributes of one garment (the ground truth the image is drawn from)."""
    bias = STYLE_BIAS.get(style, {})
    category = _pick(rng, CATEGORY_PRIOR[slot], bias.get("category"))
    shape = SHAPE_OF[category]
    color = _pick(rng, COLOR_PRIOR, bias.get("color"))
    sub_color = None
    if rng.random() < 0.5:
        sub_color = _pick(rng, {c: w for c, w in COLOR_PRIOR.items() if c != color}, bias.get("color"))
    length = _pick(rng, LENGTH_PRIOR.get(category) or LENGTH_PRIOR[shape])
    sleeve = neckline = collar = None
    if slot != "하의":
        if category == "후드티":
            neckline = "후드"
        elif shape == "outer":
            neckline = _pick(rng, OUTER_NECKLINE_PRIOR, bias.get("neckline")) if rng.random() < 0.5 else None
        else:
            neckline = _pick(rng, NECKLINE_PRIOR, bias.get("neckline"))
        sleeve = "민소매" if neckline == "홀터넥" else FORCED_SLEEVE.get(category) or _pick(rng, SLEEVE_PRIOR[shape])
        collar_rate, collar_options = COLLAR_PRIOR.get(category, DEFAULT_COLLAR)
        collar = _pick(rng, collar_options, bias.get("collar")) if rng.random() < collar_rate else None
    fit = _pick(rng, FIT_PRIOR.get(category) or FIT_PRIOR[shape], bias.get("fit"))
    materials = _pick_distinct(rng, MATERIAL_PRIOR, bias.get("material"), 1 + (rng.random() < 0.3),
                               FORCED_MATERIAL.get(category))
    prints = [_pick(rng, PRINT_PRIOR, bias.get("print"))]
    if prints[0] != "무지" and rng.random() < 0.08:
        prints = _pick_distinct(rng, {p: w for p, w in PRINT_PRIOR.items() if p != "무지"}, bias.get("print"),
                                2, prints[0])
    detail_options = {d: 1.0 for d in DETAILS if shape in DETAIL_SHAPES.get(d, (shape,))}
    details = _pick_distinct(rng, detail_options, bias.get("detail"), int(rng.choice(3, p=[0.45, 0.4, 0.15])))
    return {"카테고리": category, "색상": color, "서브색상": sub_color, "기장": length, "소매기장": sleeve,
            "소재": materials, "프린트": prints, "디테일": details, "넥라인": neckline, "옷깃": collar, "핏": fit}


def _label_of(rng: np.random.Generator, truth: dict[str, Any], sparse: bool) -> dict[str, Any]:
    """The label an annotator wrote: a garment dict holds only the keys that are labelled."""
    label = {}
    for key in (SPARSE_FIELDS if sparse else LABEL_ORDER):
        value = truth[key]
        if value is None or value == []:
            continue
        if not sparse and rng.random() >= LABEL_RATE.get(key, 1.0):
            continue
        label[key] = list(value) if isinstance(value, list) else value
    return label


def _sample_slots(rng: np.random.Generator, style: str) -> list[str]:
    onepiece_rate, outer_rate = OUTFIT_RATES.get(style, DEFAULT_OUTFIT_RATES)
    worn = {"원피스"} if rng.random() < onepiece_rate else {"상의", "하의"}
    if rng.random() < outer_rate:
        worn.add("아우터")
    return [slot for slot in SLOTS if slot in worn]


def _plan(rng: np.random.Generator, config: SyntheticCorpusConfig, index: int) -> ImagePlan:
    style = config.styles[int(rng.integers(len(config.styles)))]
    sparse = bool(rng.random() < config.sparse_label_rate)
    garments = []
    for slot in _sample_slots(rng, style):
        truth = _sample_garment(rng, slot, style)
        garments.append(PlannedGarment(slot, truth, _label_of(rng, truth, sparse)))
    created = datetime(2020, 8, 1) + timedelta(seconds=int(rng.integers(0, 150 * 86400)))
    return ImagePlan(index, config.first_image_id + index, style, sparse,
                     created.strftime("%Y-%m-%d %H:%M:%S"), garments)


def plan_image(config: SyntheticCorpusConfig, index: int) -> ImagePlan:
    """Outfit and labels of image ``index`` without drawing it (same values the generator uses)."""
    return _plan(np.random.default_rng([config.seed, index]), config, index)


# --------------------------------------------------------------------------------------------
# Geometry: garment silhouettes on a simple fashion figure, in "head" units
# --------------------------------------------------------------------------------------------
# A point is (ox, y): ox = distance outward from the body's centre line, y = heads below the top of
# the head. Silhouettes are built as one half outline and mirrored, so they are simple polygons.

ARM = ((0.92, 1.45), (1.2, 3.0), (1.36, 4.25))   # shoulder, elbow, wrist
LEG = ((0.4, 3.7), (0.36, 5.5), (0.34, 7.3))     # hip joint, knee, ankle
TORSO_Y = (2.05, 3.0, 3.6, 4.1, 5.5, 7.5)
TORSO_W = (0.78, 0.62, 0.78, 0.82, 0.8, 0.78)
WAIST_Y, HIP_Y, CROTCH_Y, KNEE_Y = 3.0, 3.6, 4.05, 5.5
# neckline -> (half width of the neck opening, y of its edge points, y of its front centre)
NECKLINE_SHAPE = {"라운드넥": (0.3, 1.3, 1.55), "브이넥": (0.3, 1.3, 2.05), "유넥": (0.34, 1.3, 1.95),
                  "스퀘어넥": (0.36, 1.35, 1.85), "터틀넥": (0.22, 1.02, 1.05), "후드": (0.3, 1.3, 1.6),
                  "보트넥": (0.5, 1.35, 1.45), "오프숄더": (0.7, 1.58, 1.75), "홀터넥": (0.16, 1.15, 1.35),
                  None: (0.3, 1.3, 1.6)}
SLEEVE_T = {"민소매": 0.0, "캡": 0.1, "반팔": 0.3, "7부소매": 0.72, "긴팔": 1.0}  # share of the arm covered
UPPER_HEM = {"크롭": 2.7, "노멀": 3.75, "롱": 4.4}
OUTER_HEM = {"크롭": 3.0, "노멀": 3.95, "하프": 4.7, "롱": 6.0}
LOWER_HEM = {"미니": 4.45, "니렝스": 5.5, "미디": 6.3, "발목": 7.15, "맥시": 7.45}
FIT_EASE = {"타이트": 0.94, "스키니": 0.94, "노멀": 1.04, "루즈": 1.14, "오버사이즈": 1.26, "와이드": 1.14,
            "벨보텀": 1.04}
SKIRT_FLARE = {"타이트": 0.0, "노멀": 0.1, "루즈": 0.2, "와이드": 0.28, "오버사이즈": 0.25}
LEG_WIDTH = {"스키니": (0.33, 0.2, 0.14), "타이트": (0.33, 0.21, 0.15), "노멀": (0.37, 0.25, 0.21),  # thigh, knee, ankle
             "루즈": (0.4, 0.32, 0.3), "와이드": (0.42, 0.4, 0.44), "벨보텀": (0.36, 0.22, 0.42),
             "오버사이즈": (0.42, 0.38, 0.36)}

OPEN_FRONT_RATE = {"코트": 0.8, "재킷": 0.8, "가디건": 0.8, "베스트": 0.8}  # others (zipped): 0.5

Point = tuple[float, float]


@dataclass(frozen=True)
class _Body:
    cx: float   # centre line, pixels
    top: float  # top of the head, pixels
    u: float    # pixels per head

    def xy(self, ox: float, y: float, side: int) -> Point:
        return self.cx + side * ox * self.u, self.top + y * self.u


def _place_body(rng: np.random.Generator, width: int, height: int) -> _Body:
    u = min(height * rng.uniform(0.9, 0.97) / 7.75, width * 0.26)  # arms must fit sideways too
    top = rng.uniform(0.01 * height, max(0.01 * height, height - 7.65 * u))
    return _Body(width / 2 + rng.uniform(-0.07, 0.07) * width, top, u)


def _torso_width(y: float, ease: float) -> float:
    return float(np.interp(y, TORSO_Y, TORSO_W)) * ease


def _arm_at(t: float) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """Point and outward normal at share ``t`` of the arm, plus the (vertex, normal) passed on the way."""
    pts = np.array(ARM)
    segs = np.diff(pts, axis=0)
    lengths = np.hypot(segs[:, 0], segs[:, 1])
    target, passed = t * lengths.sum(), []
    for i, (seg, length) in enumerate(zip(segs, lengths)):
        normal = np.array([seg[1], -seg[0]]) / length  # points away from the body
        if target <= length or i == len(segs) - 1:
            return pts[i] + seg * min(1.0, target / length), normal, passed
        target -= length
        passed.append((pts[i + 1], normal))
    raise AssertionError("unreachable")


def _neck_and_sleeves(neckline: str | None, sleeve: str | None, ease: float, drop: float,
                      open_front: bool) -> tuple[Point, list[Point]]:
    """Front centre of the neckline and the half outline from the neck to the armpit."""
    hw, edge_y, centre_y = NECKLINE_SHAPE[neckline]
    top = (0.0, 2.3 if open_front else centre_y)  # open jackets show lapels down to the chest
    half: list[Point] = []
    if neckline == "유넥":
        half.append((hw * 0.7, centre_y - (centre_y - edge_y) * 0.2))
    if neckline == "스퀘어넥":
        half.append((hw, centre_y))
    half.append((hw, edge_y))
    if neckline == "후드":
        half += [(0.48, 1.05), (0.58, 1.3)]  # hood folded behind the neck
    t = SLEEVE_T[sleeve or "민소매"]
    if t == 0:
        if neckline != "홀터넥":
            half.append((0.7 * ease, ARM[0][1]))  # shoulder strap
    else:
        thick = 0.19 * ease
        half.append((ARM[0][0] * ease, ARM[0][1] + drop))
        end, normal, passed = _arm_at(t)
        half += [tuple(v + n * thick) for v, n in passed]
        half += [tuple(end + normal * thick), tuple(end - normal * thick)]
        half += [tuple(v - n * thick) for v, n in reversed(passed)]
    half.append((TORSO_W[0] * ease, TORSO_Y[0]))
    return top, half


def _torso_side(ease: float, hem_y: float, boxy: bool, flare: float) -> list[Point]:
    """Side seam from below the armpit to the hem."""
    def width(y):
        return max(_torso_width(y, ease), TORSO_W[0] * ease) if boxy else _torso_width(y, ease)
    side = [(width(y), y) for y in TORSO_Y[1:] if y < hem_y - 0.15]
    return side + [(width(hem_y) + flare * max(0.0, hem_y - WAIST_Y), hem_y)]


def _skirt_side(fit: str, hem_y: float) -> list[Point]:
    side = [(0.64, WAIST_Y)] + ([(0.82, HIP_Y)] if hem_y > HIP_Y + 0.15 else [])
    return side + [(max(0.82, _torso_width(hem_y, 1.0)) + SKIRT_FLARE.get(fit, 0.1) * (hem_y - HIP_Y), hem_y)]


def _legs_side(fit: str, hem_y: float, cuffed: bool) -> list[Point]:
    """Waist to the outer hem, then the inner hem and inseam up to (not including) the crotch."""
    thigh, knee, ankle = LEG_WIDTH.get(fit, LEG_WIDTH["노멀"])
    if cuffed and hem_y > 6.8:
        ankle = 0.14
    def centre(y):
        return float(np.interp(y, (CROTCH_Y, 7.3), (0.42, 0.38)))
    def width(y):
        return float(np.interp(y, (CROTCH_Y, KNEE_Y, 7.2), (thigh, knee, ankle)))
    side = [(0.64, WAIST_Y), (0.8, HIP_Y)]
    knee_pts = hem_y > KNEE_Y + 0.2
    if knee_pts:
        side.append((centre(KNEE_Y) + width(KNEE_Y), KNEE_Y))
    side += [(centre(hem_y) + width(hem_y), hem_y), (max(0.03, centre(hem_y) - width(hem_y)), hem_y)]
    if knee_pts:
        side.append((max(0.03, centre(KNEE_Y) - width(KNEE_Y)), KNEE_Y))
    return side


def _outline(truth: dict[str, Any], rng: np.random.Generator) -> tuple[Point, list[Point], Point | None]:
    """Silhouette of a garment as (front-top centre, left half outline, bottom centre or None)."""
    shape, fit = SHAPE_OF[truth["카테고리"]], truth["핏"]
    ease = FIT_EASE.get(fit, 1.04) + (0.1 if shape == "outer" else 0.0)
    drop = 0.08 if fit == "오버사이즈" or "드롭숄더" in truth["디테일"] else 0.0
    length = truth["기장"]
    if shape == "skirt":
        hem = LOWER_HEM[length] - (0.05 if length == "미니" else 0.0)
        return (0.0, WAIST_Y - 0.02), _skirt_side(fit, hem), (0.0, hem + 0.04)
    if shape == "pants":
        hem = LOWER_HEM[length]
        return (0.0, WAIST_Y - 0.02), _legs_side(fit, hem, truth["카테고리"] == "조거팬츠"), (0.0, CROTCH_Y)
    open_front = shape == "outer" and rng.random() < OPEN_FRONT_RATE.get(truth["카테고리"], 0.5)
    top, half = _neck_and_sleeves(truth["넥라인"], truth["소매기장"], ease, drop, open_front)
    if shape in ("dress", "jumpsuit"):
        half += _torso_side(min(ease, 1.04), WAIST_Y, False, 0.0)
        hem = LOWER_HEM[length]
        half += (_skirt_side(fit, hem) if shape == "dress" else _legs_side(fit, hem, False))[1:]
        return top, half, (0.0, hem + 0.04) if shape == "dress" else (0.0, CROTCH_Y)
    hem = (OUTER_HEM if shape == "outer" else UPPER_HEM)[length]
    boxy = fit in ("루즈", "오버사이즈") or truth["카테고리"] in ("패딩", "점퍼")
    half += _torso_side(ease, hem, boxy, 0.05 if truth["카테고리"] == "블라우스" else 0.0)
    if not open_front:
        return top, half, None
    half.append((0.12, hem))  # front opening: the garment beneath shows through
    return top, half, (0.0, max(top[1] + 0.3, hem - 1.5))


def _to_pixels(body: _Body, outline, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Mirror the half outline, map to pixels with a hand-drawn wobble, snap to the label grid.

    Vertices land on integers plus one per-garment fraction per axis (like the .004 of real labels),
    so the polygon's bounding box has whole-pixel width/height and matches 렉트좌표 exactly.
    """
    top, half, bottom = outline
    pts = [body.xy(*top, 1)] + [body.xy(*p, -1) for p in half] + ([body.xy(*bottom, 1)] if bottom else [])
    pts += [body.xy(*p, 1) for p in reversed(half)]
    arr = np.array(pts) + rng.normal(0.0, 0.012 * body.u, (len(pts), 2))
    arr = np.rint(arr)
    arr[:, 0] = np.clip(arr[:, 0], 0, width - 1)
    arr[:, 1] = np.clip(arr[:, 1], 0, height - 1)
    keep = np.any(arr != np.roll(arr, 1, axis=0), axis=1)  # drop repeated vertices
    arr = arr[keep]
    return np.round(arr + rng.integers(1, 500, 2) / 1000.0, 3)


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

BACKGROUNDS = ((226, 224, 218), (218, 222, 226), (224, 218, 214), (216, 221, 214), (222, 222, 222))
SKIN = ((241, 205, 180), (224, 180, 150), (198, 150, 118), (160, 115, 85))
HAIR = ((30, 25, 22), (70, 45, 30), (120, 85, 55), (200, 170, 120))
Renderer = Callable[[ImageDraw.ImageDraw, int, int, float, float, np.random.Generator], None]


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Light backdrop with a soft lighting gradient (pixel noise is added to the whole image later)."""
    base = np.array(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]) + rng.integers(-4, 5, 3)
    coarse = np.clip(base + rng.integers(-6, 7, (4, 3, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BILINEAR)


def _draw_figure(draw: ImageDraw.ImageDraw, body: _Body, rng: np.random.Generator) -> None:
    """Model under the clothes: skin shows at short sleeves, crop tops and short bottoms."""
    skin, hair = SKIN[int(rng.integers(len(SKIN)))], HAIR[int(rng.integers(len(HAIR)))]
    shoes = tuple(int(v) for v in rng.integers(20, 200, 3))
    u = body.u
    for side in (-1, 1):
        draw.line([body.xy(*p, side) for p in LEG], fill=skin, width=max(2, round(0.3 * u)), joint="curve")
        fx, fy = body.xy(LEG[-1][0] + 0.05, 7.45, side)
        draw.ellipse((fx - 0.16 * u, fy - 0.1 * u, fx + 0.16 * u, fy + 0.1 * u), fill=shoes)
        draw.line([body.xy(*p, side) for p in ARM], fill=skin, width=max(2, round(0.26 * u)), joint="curve")
        hx, hy = body.xy(ARM[-1][0], ARM[-1][1] + 0.15, side)
        draw.ellipse((hx - 0.12 * u, hy - 0.17 * u, hx + 0.12 * u, hy + 0.17 * u), fill=skin)
    torso = [(0.78, 1.45), (0.78, 2.05), (0.62, WAIST_Y), (0.8, HIP_Y), (0.7, CROTCH_Y)]
    draw.polygon([body.xy(*p, -1) for p in torso] + [body.xy(*p, 1) for p in reversed(torso)], fill=skin)
    if rng.random() < 0.5:  # long hair behind the neck and shoulders
        draw.rectangle((*body.xy(0.42, 0.4, -1), *body.xy(0.42, 1.9, 1)), fill=hair)
    draw.rectangle((*body.xy(0.14, 0.9, -1), *body.xy(0.14, 1.45, 1)), fill=skin)
    draw.ellipse((*body.xy(0.36, 0.0, -1), *body.xy(0.36, 1.0, 1)), fill=skin)
    draw.chord((*body.xy(0.4, -0.05, -1), *body.xy(0.4, 0.75, 1)), 180, 360, fill=hair)


def _stripes(d, w, h, u, cx, rng):
    s = max(2, round(u * rng.uniform(0.07, 0.12)))
    vertical = rng.random() < 0.3
    for k in range(-int(rng.integers(0, 3 * s)), w if vertical else h, 3 * s):
        d.rectangle((k, 0, k + s - 1, h) if vertical else (0, k, w, k + s - 1), fill=255)


def _check(d, w, h, u, cx, rng):
    s = max(2, round(u * rng.uniform(0.06, 0.1)))
    for k in range(0, max(w, h), 6 * s):
        d.rectangle((0, k, w, k + s - 1), fill=190)
        d.rectangle((k, 0, k + s - 1, h), fill=190)


def _dots(d, w, h, u, cx, rng):
    r = max(1.5, u * rng.uniform(0.04, 0.07))
    for row, y in enumerate(np.arange(2 * r, h, 4 * r)):
        for x in np.arange(r + 2 * r * (row % 2), w, 4 * r):
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _floral(d, w, h, u, cx, rng):
    r = max(1.5, u * rng.uniform(0.05, 0.08))
    for _ in range(int(0.25 * w * h / (5 * math.pi * r * r)) + 1):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        for a in np.linspace(0, 2 * math.pi, 5, endpoint=False) + rng.uniform(0, 1):
            px, py = x + 1.1 * r * math.cos(a), y + 1.1 * r * math.sin(a)
            d.ellipse((px - r, py - r, px + r, py + r), fill=255)
        d.ellipse((x - r / 2, y - r / 2, x + r / 2, y + r / 2), fill=120)


def _lettering(d, w, h, u, cx, rng):
    c = max(4.0, u * 0.18)  # letter cell
    stroke = max(1, round(c / 6))
    for row in range(int(rng.integers(1, 4))):
        y = h * 0.28 + row * 1.4 * c
        for x in np.arange(cx - 0.45 * u, cx + 0.45 * u - c, 1.2 * c):
            for _ in range(2):  # two random strokes per letter
                dx0, dy0, dx1, dy1 = rng.uniform(0, c, 4)
                d.line((x + dx0, y + dy0, x + dx1, y + dy1), fill=255, width=stroke)


def _graphic(d, w, h, u, cx, rng):
    y, s = min(h * 0.35, 1.2 * u), 0.3 * u
    kind = int(rng.integers(3))
    if kind == 0:
        d.ellipse((cx - s, y - s, cx + s, y + s), fill=255)
        d.ellipse((cx - s / 2, y - s / 2, cx + s / 2, y + s / 2), fill=0)
    elif kind == 1:
        d.polygon([(cx, y - s), (cx + s, y + s), (cx - s, y + s)], fill=255)
    else:
        star = [(cx + (s if k % 2 == 0 else s / 2.5) * math.sin(k * math.pi / 5),
                 y - (s if k % 2 == 0 else s / 2.5) * math.cos(k * math.pi / 5)) for k in range(10)]
        d.polygon(star, fill=255)


def _leopard(d, w, h, u, cx, rng):
    r = max(2.0, u * 0.07)
    for _ in range(int(0.2 * w * h / (math.pi * r * r)) + 1):
        x, y, a, b = rng.uniform(0, w), rng.uniform(0, h), r * rng.uniform(0.7, 1.3), r * rng.uniform(0.6, 1.0)
        d.ellipse((x - a, y - b, x + a, y + b), outline=255, width=max(1, round(r / 3)))
        d.ellipse((x - a / 2, y - b / 2, x + a / 2, y + b / 2), fill=140)


def _camouflage(d, w, h, u, cx, rng):
    for k in range(int(0.3 * w * h / (math.pi * (0.15 * u) ** 2)) + 1):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        a, b = u * rng.uniform(0.08, 0.2, 2)
        d.ellipse((x - a, y - b, x + a, y + b), fill=255 if k % 2 else 110)


PRINT_RENDERERS: dict[str, Renderer] = {
    "스트라이프": _stripes, "체크": _check, "도트": _dots, "플로럴": _floral, "레터링": _lettering,
    "그래픽": _graphic, "호피": _leopard, "카무플라쥬": _camouflage,
}


def _buttons(d, w, h, u, cx, rng):
    r = max(1.0, 0.04 * u)
    for y in np.linspace(0.3 * h, 0.9 * h, 5):
        d.ellipse((cx - r, y - r, cx + r, y + r), fill=255)


def _pockets(d, w, h, u, cx, rng):
    s = 0.28 * u
    for side in (-1, 1):
        x = cx + side * 0.42 * u
        d.rectangle((x - s / 2, 0.62 * h, x + s / 2, 0.62 * h + s), outline=255, width=1)


def _stitch(d, w, h, u, cx, rng):
    y = h - max(2.0, 0.08 * u)
    for x in range(0, w, 4):
        d.line((x, y, x + 2, y), fill=255)


def _pleats(d, w, h, u, cx, rng):
    for x in np.arange(0, w, max(3.0, 0.18 * u)):
        d.line((x, 0.3 * h, x, h), fill=150)


def _ribbon(d, w, h, u, cx, rng):
    y, s = min(0.12 * h, 0.5 * u), 0.18 * u
    for side in (-1, 1):
        d.polygon([(cx, y), (cx + side * s, y - s / 2), (cx + side * s, y + s / 2)], fill=255)


def _frill(d, w, h, u, cx, rng):
    r = max(1.5, 0.06 * u)
    for x in np.arange(0, w, 2 * r):
        d.ellipse((x - r, h - 2 * r, x + r, h), outline=170)


def _quilting(d, w, h, u, cx, rng):
    step = max(4, round(0.35 * u))
    for k in range(-h, w + h, step):
        d.line((k, 0, k + h, h), fill=140)
        d.line((k + h, 0, k, h), fill=140)


def _zip(d, w, h, u, cx, rng):
    d.line((cx, 0.12 * h, cx, h), fill=255, width=2)


def _slit(d, w, h, u, cx, rng):
    d.line((cx + 0.3 * u, h, cx + 0.3 * u, 0.75 * h), fill=255, width=2)


DETAIL_RENDERERS: dict[str, Renderer] = {
    "단추": _buttons, "포켓": _pockets, "스티치": _stitch, "플리츠": _pleats, "리본": _ribbon, "프릴": _frill,
    "퀼팅": _quilting, "슬릿": _slit, "집업": _zip,
}


def _jitter(rgb, rng: np.random.Generator, spread: int = 6) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(np.array(rgb) + rng.integers(-spread, spread + 1, 3), 0, 255))


def _shade(rgb) -> tuple[int, int, int]:
    """Seam/detail colour: darker, or lighter on near-black garments."""
    if sum(rgb) < 180:
        return tuple(min(255, v + 90) for v in rgb)
    return tuple(int(v * 0.6) for v in rgb)


def _contrast(rgb) -> tuple[int, int, int]:
    return (40, 40, 45) if 0.3 * rgb[0] + 0.59 * rgb[1] + 0.11 * rgb[2] > 140 else (235, 235, 230)


def _paint(image: Image.Image, mask: Image.Image, origin: tuple[int, int], colour, render: Renderer,
           u: float, cx: float, rng: np.random.Generator) -> None:
    """Draw a pattern into a layer and paste ``colour`` through it, clipped to the garment mask."""
    layer = Image.new("L", mask.size, 0)
    render(ImageDraw.Draw(layer), mask.size[0], mask.size[1], u, cx, rng)
    x0, y0 = origin
    image.paste(colour, (x0, y0, x0 + mask.size[0], y0 + mask.size[1]), ImageChops.multiply(layer, mask))


def _draw_garment(image: Image.Image, body: _Body, truth: dict[str, Any], polygon: np.ndarray,
                  rng: np.random.Generator) -> None:
    base = _jitter(COLORS[truth["색상"]], rng)
    x0, y0 = (int(v) for v in np.floor(polygon.min(axis=0)))
    x1, y1 = (min(size, int(v) + 2) for size, v in zip(image.size, np.ceil(polygon.max(axis=0))))
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in polygon], fill=255)
    image.paste(base, (x0, y0, x1, y1), mask)
    sub = truth["서브색상"]
    print_colour = _jitter(COLORS[sub], rng) if sub else _contrast(base)
    prints = [name for name in truth["프린트"] if name in PRINT_RENDERERS]
    for k, name in enumerate(prints):  # two prints share the garment (upper/lower part), never stack
        band = Image.new("L", mask.size, 0)
        top, bottom = mask.size[1] * k // len(prints), mask.size[1] * (k + 1) // len(prints)
        band.paste(mask.crop((0, top, mask.size[0], bottom)), (0, top))
        _paint(image, band, (x0, y0), print_colour, PRINT_RENDERERS[name], body.u, body.cx - x0, rng)
    for name in truth["디테일"]:
        if name in DETAIL_RENDERERS:
            _paint(image, mask, (x0, y0), _shade(base), DETAIL_RENDERERS[name], body.u, body.cx - x0, rng)
    points = [tuple(p) for p in polygon]
    ImageDraw.Draw(image).line(points + [points[0]], fill=_shade(base), width=1)


def _render(plan: ImagePlan, rng: np.random.Generator, width: int, height: int
            ) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """Draw the image; returns it and each slot's polygon (pixel vertices, as in the label)."""
    image = _background(rng, width, height)
    body = _place_body(rng, width, height)
    _draw_figure(ImageDraw.Draw(image), body, rng)
    by_slot = {g.slot: g for g in plan.garments}
    polygons = {}
    for slot in DRAW_ORDER:
        if slot in by_slot:
            truth = by_slot[slot].truth
            polygons[slot] = _to_pixels(body, _outline(truth, rng), rng, width, height)
            _draw_garment(image, body, truth, polygons[slot], rng)
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-5, 6, (height, width, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), polygons


# --------------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------------

def _polygon_entry(polygon: np.ndarray) -> dict[str, float]:
    entry = {}
    for i, (x, y) in enumerate(polygon, start=1):
        entry[f"X좌표{i}"], entry[f"Y좌표{i}"] = float(x), float(y)
    return entry


def _rect_entry(polygon: np.ndarray) -> dict[str, float | int]:
    (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
    return {"X좌표": float(x0), "Y좌표": float(y0), "가로": int(round(x1 - x0)), "세로": int(round(y1 - y0))}


def build_label(plan: ImagePlan, polygons: dict[str, np.ndarray], width: int, height: int) -> dict:
    """The label JSON object of one image, in the exact AI Hub schema."""
    by_slot = {g.slot: g for g in plan.garments}
    rects, polys, labelling = {}, {}, {STYLE_KEY: [{}] if plan.sparse else [{STYLE_KEY: plan.style}]}
    for slot in SLOTS:
        garment = by_slot.get(slot)
        rects[slot] = [_rect_entry(polygons[slot])] if garment else [{}]
        polys[slot] = [_polygon_entry(polygons[slot])] if garment else [{}]
        labelling[slot] = [dict(garment.label)] if garment else [{}]
    return {
        IMAGE_INFO: {IMAGE_ID: plan.image_id, IMAGE_HEIGHT: height, IMAGE_FILE: plan.file_name,
                     IMAGE_WIDTH: width},
        DATASET_INFO: {FILE_CREATED: plan.created,
                       DETAIL: {RECT: rects, POLYGON: polys, LABELS: labelling},
                       FILE_NUMBER: plan.image_id, FILE_NAME: plan.file_name},
    }


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------

def plan_faults(config: SyntheticCorpusConfig) -> dict[int, str]:
    """Image index -> injected fault; distinct images, chosen by a seeded permutation."""
    kinds = [kind for kind in FAULT_KINDS for _ in range(getattr(config.faults, kind))]
    order = np.random.default_rng([config.seed, config.n_images, 0xFA17]).permutation(config.n_images)
    return {int(index): kind for index, kind in zip(order, kinds)}


def _inject_no_box(label: dict, plan: ImagePlan) -> str:
    slot = plan.garments[0].slot  # every image has at least one garment, all labelled
    detail = label[DATASET_INFO][DETAIL]
    detail[POLYGON][slot] = [{}]
    detail[RECT][slot] = [{}]
    return slot


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------

def _generate_one(config: SyntheticCorpusConfig, task: tuple[int, str | None]) -> dict:
    """Plan, draw and write image ``index``; returns its manifest record."""
    index, fault = task
    width, height = config.image_width, config.image_height
    rng = np.random.default_rng([config.seed, index])
    plan = _plan(rng, config, index)
    image, polygons = _render(plan, rng, width, height)
    label = build_label(plan, polygons, width, height)
    label_rel = f"labels/{plan.style}/{plan.image_id}.json"
    image_rel = f"images/{plan.style}/{plan.image_id}.jpg"
    fault_slot = _inject_no_box(label, plan) if fault == "no_box" else None

    data = json.dumps(label, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if fault == "corrupt_json":
        data = data[: len(data) // 2]
    out = Path(config.out_dir)
    (out / label_rel).write_bytes(data)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=config.jpeg_quality)
    jpeg = buffer.getvalue()
    if fault == "truncated_image":
        jpeg = jpeg[: len(jpeg) // 2]
    if fault != "missing_image":
        (out / image_rel).write_bytes(jpeg)
    return {
        "style": plan.style, "sparse": plan.sparse, "file": label_rel,
        "garments": [(g.slot, g.label.get("카테고리"), g.slot != fault_slot) for g in plan.garments],
        "fault": None if fault is None else {"fault": fault, "file": label_rel, "image": image_rel,
                                             "slot": fault_slot},
    }


def _prepare_out_dir(out: Path) -> None:
    """Create ``out``; a previous corpus there is replaced, anything else is refused."""
    ours = {"labels", "images", MANIFEST, MANIFEST + ".tmp"}
    if out.exists():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if foreign:
            raise FileExistsError(f"{out} holds files that are not a synthetic corpus ({foreign[:5]}); "
                                  "choose an empty or new out_dir")
        for name in ("labels", "images"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (MANIFEST, MANIFEST + ".tmp"):
            (out / name).unlink(missing_ok=True)


def _manifest(config: SyntheticCorpusConfig, records: list[dict]) -> dict:
    per_style = {s: {"label_files": 0, "garments": 0} for s in config.styles}
    per_slot, per_category = Counter(), {slot: Counter() for slot in SLOTS}
    n_garments = n_with_box = n_expected = 0
    file_faults = {"corrupt_json", "missing_image", "truncated_image"}
    for rec in records:
        per_style[rec["style"]]["label_files"] += 1
        per_style[rec["style"]]["garments"] += len(rec["garments"])
        file_ok = rec["fault"] is None or rec["fault"]["fault"] not in file_faults
        for slot, category, has_box in rec["garments"]:
            n_garments += 1
            n_with_box += has_box
            n_expected += has_box and file_ok
            per_slot[slot] += 1
            if category:
                per_category[slot][category] += 1
    return {
        "format": FORMAT,
        "config": asdict(config),
        "seed": config.seed,
        "label_root": "labels",
        "image_root": "images",
        "n_label_files": len(records),
        "n_image_files": sum(1 for r in records if not (r["fault"] and r["fault"]["fault"] == "missing_image")),
        "n_sparse_labels": sum(r["sparse"] for r in records),
        "n_garments": n_garments,
        "n_garments_with_box": n_with_box,
        "n_expected_items": n_expected,
        "per_style": per_style,
        "per_slot": {slot: per_slot[slot] for slot in SLOTS},
        "per_category": {slot: {c: per_category[slot][c] for c in CATEGORIES[slot] if per_category[slot][c]}
                         for slot in SLOTS},
        "faults": [r["fault"] for r in records if r["fault"]],
    }


def generate_corpus(config: SyntheticCorpusConfig, progress: bool = True) -> dict:
    """Write the corpus and ``{out_dir}/manifest.json``; returns the manifest.

    Images are independent, so they are generated by a process pool of ``config.workers``; results
    are collected in index order and every image has its own seeded RNG, hence identical output
    for any worker count.
    """
    _validate(config)
    out = Path(config.out_dir)
    _prepare_out_dir(out)
    for style in config.styles:
        (out / "labels" / style).mkdir(parents=True, exist_ok=True)
        (out / "images" / style).mkdir(parents=True, exist_ok=True)
    faults = plan_faults(config)
    tasks = [(i, faults.get(i)) for i in range(config.n_images)]
    work = partial(_generate_one, config)
    workers = min(config.workers or os.cpu_count() or 1, config.n_images)
    with Pool(workers) if workers > 1 else nullcontext() as pool:
        results = pool.imap(work, tasks, chunksize=max(1, min(32, config.n_images // (8 * workers)))) \
            if pool else map(work, tasks)
        records = list(tqdm(results, total=config.n_images, desc="synthetic corpus", unit="img",
                            disable=not progress))
    manifest = _manifest(config, records)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)  # the manifest appears only once the corpus is complete
    return manifest


# --------------------------------------------------------------------------------------------
# Schema signature
# --------------------------------------------------------------------------------------------

_POINT_KEY = re.compile(r"^([XY]좌표)\d+$")


def label_key_signature(obj: Any, merge_slots: bool = False) -> set[str]:
    """Key paths with value type names, e.g. ``'데이터셋 정보.데이터셋 상세설명.폴리곤좌표.상의[].X좌표<n>:float'``.

    Polygon point keys become ``X좌표<n>``/``Y좌표<n>`` and list elements ``[]``, so two labels with
    the same schema have the same signature whatever their polygons. ``merge_slots`` also folds
    아우터/상의/하의/원피스 into ``<slot>`` (all four share one schema; the real samples label only
    상의 and 하의).
    """
    signature: set[str] = set()

    def walk(value: Any, path: str) -> None:
        if path:
            signature.add(f"{path}:{type(value).__name__}")
        if isinstance(value, dict):
            for key, child in value.items():
                key = _POINT_KEY.sub(r"\1<n>", key)
                if merge_slots and key in SLOTS:
                    key = "<slot>"
                walk(child, f"{path}.{key}" if path else key)
        elif isinstance(value, list):
            for child in value:
                walk(child, f"{path}[]")

    walk(obj, "")
    return signature


def existing_corpus(config: SyntheticCorpusConfig) -> dict | None:
    """The manifest of a complete corpus already at ``config.out_dir`` made with the same settings
    (worker count and path aside), else None: lets pipelines skip regenerating it."""
    path = Path(config.out_dir) / MANIFEST
    if not path.is_file():
        return None
    manifest = json.loads(path.read_text(encoding="utf-8"))
    ignored = {"workers", "out_dir"}
    wanted = {k: v for k, v in asdict(config).items() if k not in ignored}
    found = {k: v for k, v in manifest.get("config", {}).items() if k not in ignored}
    return manifest if found == wanted else None
