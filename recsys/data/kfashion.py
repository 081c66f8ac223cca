"""K-Fashion (AI Hub) label JSON -> canonical item rows.

The label schema, exactly as AI Hub ships it (see ../shared/data/kfashion_samples)::

    {"이미지 정보": {"이미지 식별자": int, "이미지 높이": int, "이미지 너비": int, "이미지 파일명": str},
     "데이터셋 정보": {"파일 번호": int, "파일 이름": str, "파일 생성일자": "YYYY-MM-DD HH:MM:SS",
        "데이터셋 상세설명": {
           "렉트좌표":   {slot: [{"X좌표", "Y좌표", "가로", "세로"}]},
           "폴리곤좌표": {slot: [{"X좌표1", "Y좌표1", ..., "X좌표n", "Y좌표n"}]},
           "라벨링": {"스타일": [{"스타일", "서브스타일"?}],
                      slot: [{"카테고리", "색상", "서브색상", "기장", "소매기장", "소재": [],
                              "프린트": [], "디테일": [], "넥라인", "옷깃", "핏"}]}}}}

with slot in 아우터 / 상의 / 하의 / 원피스 and ``[{}]`` for an empty slot or style. Every field of a
garment is optional (many real labels hold only 색상 and 소매기장).

One item row per labelled garment slot. The box comes from the polygon (min/max of its points),
else from the rectangle; a labelled slot with neither is excluded and recorded in quarantine with
reason ``no_box`` so the counts reconcile.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recsys import storage
from recsys.data.images import ImageLimits, ImageRejected, clip_box, open_checked, save_crop
from recsys.data.schema import attributes, quarantine_row

IMAGE_INFO = "이미지 정보"
DATASET_INFO = "데이터셋 정보"
DETAIL = "데이터셋 상세설명"
RECT = "렉트좌표"
POLYGON = "폴리곤좌표"
LABELS = "라벨링"
STYLE_KEY = "스타일"
SUB_STYLE_KEY = "서브스타일"

IMAGE_ID = "이미지 식별자"
IMAGE_HEIGHT = "이미지 높이"
IMAGE_WIDTH = "이미지 너비"
IMAGE_FILE = "이미지 파일명"
FILE_NUMBER = "파일 번호"
FILE_NAME = "파일 이름"
FILE_CREATED = "파일 생성일자"

# Slot (Korean, as in the files) -> ASCII name used in item ids and crop file names.
SLOTS = {"아우터": "outer", "상의": "top", "하의": "bottom", "원피스": "onepiece"}


@dataclass(frozen=True)
class LabelField:
    korean: str
    name: str
    multi: bool
    kind: str  # "std" (finite vocabulary) or "re" (hashed, open vocabulary)


# The seed fields of the K-Fashion study are category, style, silhouette(=핏), material, detail.
GARMENT_FIELDS = (
    LabelField("카테고리", "category", False, "std"),
    LabelField("색상", "color", False, "std"),
    LabelField("서브색상", "sub_color", False, "std"),
    LabelField("기장", "length", False, "std"),
    LabelField("소매기장", "sleeve_length", False, "std"),
    LabelField("넥라인", "neckline", False, "std"),
    LabelField("옷깃", "collar", False, "std"),
    LabelField("핏", "silhouette", False, "std"),
    LabelField("소재", "material", True, "re"),
    LabelField("프린트", "print", True, "re"),
    LabelField("디테일", "detail", True, "re"),
)
GARMENT_FIELDS_BY_KOREAN = {f.korean: f for f in GARMENT_FIELDS}
RECT_KEYS = ("X좌표", "Y좌표", "가로", "세로")
_POLY_KEY = re.compile(r"^([XY])좌표(\d+)$")


class LabelSchemaError(ValueError):
    """A label file that does not follow the K-Fashion schema; names the file and the key path."""

    def __init__(self, source_file: str, key_path: str, expected: str, found: Any = None):
        found_text = "" if found is None else f", found {type(found).__name__} {str(found)[:60]!r}"
        super().__init__(f"{source_file}: field {key_path!r}: expected {expected}{found_text}")
        self.source_file, self.key_path, self.expected = source_file, key_path, expected


@dataclass
class Garment:
    slot: str                      # Korean slot key
    index: int                     # position in the slot's list (almost always 0)
    labels: dict[str, Any]         # English field name -> str | list[str]
    polygon_box: tuple[float, float, float, float] | None  # x, y, width, height
    rect_box: tuple[float, float, float, float] | None

    @property
    def box(self) -> tuple[float, float, float, float] | None:
        return self.polygon_box or self.rect_box


@dataclass
class KFashionLabel:
    source_file: str
    image_id: int
    image_file_name: str
    width: int
    height: int
    styles: list[str] = field(default_factory=list)
    sub_styles: list[str] = field(default_factory=list)
    garments: list[Garment] = field(default_factory=list)


def _require(obj: Any, key: str, types: type | tuple, path: str, source: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise LabelSchemaError(source, f"{path}.{key}" if path else key, "a present key")
    value = obj[key]
    if not isinstance(value, types) or isinstance(value, bool):
        names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise LabelSchemaError(source, f"{path}.{key}" if path else key, names, value)
    return value


def _slot_entries(section: dict, slot: str, path: str, source: str) -> list[dict]:
    """A slot's list of objects; absent slot == empty."""
    entries = section.get(slot, [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LabelSchemaError(source, f"{path}.{slot}", "a list of objects", entries)
    return entries


def polygon_to_box(points: dict, path: str, source: str) -> tuple[float, float, float, float] | None:
    """{"X좌표1": .., "Y좌표1": .., ...} -> (x, y, width, height) of its bounding box; {} -> None."""
    xs, ys = {}, {}
    for key, value in points.items():
        match = _POLY_KEY.match(key)
        if not match:
            raise LabelSchemaError(source, f"{path}.{key}", "keys named X좌표<n>/Y좌표<n>")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LabelSchemaError(source, f"{path}.{key}", "a number", value)
        (xs if match.group(1) == "X" else ys)[int(match.group(2))] = float(value)
    if not xs and not ys:
        return None
    if set(xs) != set(ys):
        raise LabelSchemaError(source, path, "an X좌표<n> for every Y좌표<n>",
                               sorted(set(xs) ^ set(ys)))
    if len(xs) < 3:
        raise LabelSchemaError(source, path, "a polygon of at least 3 points", len(xs))
    x0, y0 = min(xs.values()), min(ys.values())
    return x0, y0, max(xs.values()) - x0, max(ys.values()) - y0


def rect_to_box(rect: dict, path: str, source: str) -> tuple[float, float, float, float] | None:
    if not rect:
        return None
    values = []
    for key in RECT_KEYS:
        value = rect.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise LabelSchemaError(source, f"{path}.{key}", "a number", value)
        values.append(float(value))
    return tuple(values)


def _garment_labels(entry: dict, path: str, source: str) -> dict[str, Any]:
    labels = {}
    for key, value in entry.items():
        spec = GARMENT_FIELDS_BY_KOREAN.get(key)
        if spec is None:
            raise LabelSchemaError(source, f"{path}.{key}", "one of " + ", ".join(GARMENT_FIELDS_BY_KOREAN))
        if spec.multi:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise LabelSchemaError(source, f"{path}.{key}", "a list of strings", value)
        elif not isinstance(value, str):
            raise LabelSchemaError(source, f"{path}.{key}", "a string", value)
        labels[spec.name] = value
    return labels


def parse_label(obj: Any, source_file: str) -> KFashionLabel:
    """Validate one decoded label file and return its garments. Raises LabelSchemaError."""
    src = str(source_file)
    if not isinstance(obj, dict):
        raise LabelSchemaError(src, "<root>", "a JSON object", obj)
    info = _require(obj, IMAGE_INFO, dict, "", src)
    image_id = _require(info, IMAGE_ID, int, IMAGE_INFO, src)
    height = _require(info, IMAGE_HEIGHT, int, IMAGE_INFO, src)
    width = _require(info, IMAGE_WIDTH, int, IMAGE_INFO, src)
    file_name = _require(info, IMAGE_FILE, str, IMAGE_INFO, src)
    dataset = _require(obj, DATASET_INFO, dict, "", src)
    detail_path = f"{DATASET_INFO}.{DETAIL}"
    detail = _require(dataset, DETAIL, dict, DATASET_INFO, src)
    rects = _require(detail, RECT, dict, detail_path, src)
    polygons = _require(detail, POLYGON, dict, detail_path, src)
    labelling = _require(detail, LABELS, dict, detail_path, src)
    if width <= 0 or height <= 0:
        raise LabelSchemaError(src, f"{IMAGE_INFO}.{IMAGE_WIDTH}/{IMAGE_HEIGHT}", "positive sizes",
                               (width, height))
    for section, path in ((rects, RECT), (polygons, POLYGON), (labelling, LABELS)):
        for key in section:
            if key not in SLOTS and not (section is labelling and key == STYLE_KEY):
                raise LabelSchemaError(src, f"{detail_path}.{path}.{key}",
                                       "a slot key (" + ", ".join(SLOTS) + ")")

    label = KFashionLabel(src, image_id, file_name, width, height)
    for entry in _slot_entries(labelling, STYLE_KEY, f"{detail_path}.{LABELS}", src):
        for key, target in ((STYLE_KEY, label.styles), (SUB_STYLE_KEY, label.sub_styles)):
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise LabelSchemaError(src, f"{detail_path}.{LABELS}.{STYLE_KEY}.{key}", "a string", value)
            if value:
                target.append(value)

    for slot in SLOTS:
        label_path = f"{detail_path}.{LABELS}.{slot}"
        entries = _slot_entries(labelling, slot, f"{detail_path}.{LABELS}", src)
        slot_polys = _slot_entries(polygons, slot, f"{detail_path}.{POLYGON}", src)
        slot_rects = _slot_entries(rects, slot, f"{detail_path}.{RECT}", src)
        for index, entry in enumerate(entries):
            labels = _garment_labels(entry, f"{label_path}[{index}]", src)
            if not labels:
                continue  # [{}]: slot not present in this image
            poly = slot_polys[index] if index < len(slot_polys) else {}
            rect = slot_rects[index] if index < len(slot_rects) else {}
            label.garments.append(Garment(
                slot, index, labels,
                polygon_to_box(poly, f"{detail_path}.{POLYGON}.{slot}[{index}]", src),
                rect_to_box(rect, f"{detail_path}.{RECT}.{slot}[{index}]", src)))
    return label


def item_id(image_id: int, garment: Garment) -> str:
    suffix = f"-{garment.index}" if garment.index else ""
    return f"{image_id}-{SLOTS[garment.slot]}{suffix}"


def _stem(path: str) -> str:
    return posixpath.splitext(storage.name(path))[0]  # Path.stem's rule, for URIs too


def resolve_image(label_path: str | os.PathLike, label: KFashionLabel, label_root: str | None,
                  image_root: str | None) -> str | None:
    """Find the image of a label: beside the JSON, or in a parallel image folder.

    AI Hub ships labels and images in parallel trees (라벨링데이터/{style}/{id}.json next to
    원천데이터/{style}/{id}.jpg); the samples keep them side by side. Both the label file's stem and
    the ``이미지 파일명`` field are tried. Folders or object-store URIs (joined as text, so the scheme stays);
    local results are absolute.
    """
    label_path = os.fspath(label_path)
    names = [_stem(label_path) + ext for ext in (".jpg", ".jpeg", ".png", ".JPG")] + [label.image_file_name]
    folder = storage.parent(label_path)
    folders = [folder]
    if image_root is not None:
        root, image_root = (storage.normalise(label_root) if label_root else ""), storage.normalise(image_root)
        relative = folder[len(root) + 1:] if root and folder.startswith(root + "/") else ""
        # The parallel tree first: on an object store every miss is a request.
        folders = [storage.join(image_root, relative), folder, image_root]
    for candidate in (storage.join(f, n) for f in folders for n in names):
        if storage.is_file(candidate) if storage.is_uri(candidate) else os.path.isfile(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class KFashionOptions:
    """What :func:`process_label_file` needs besides the file itself."""
    label_root: str | None = None
    image_root: str | None = None
    crop_dir: str | None = None  # None: boxes only, no crops written
    limits: ImageLimits = ImageLimits()
    crop_quality: int = 90


def garment_row(label: KFashionLabel, garment: Garment, image_path: str | None,
                crop_path: str | None, box: tuple[float, float, float, float]) -> dict:
    std = {f.name: garment.labels.get(f.name) for f in GARMENT_FIELDS if f.kind == "std"}
    re_fields = {f.name: garment.labels.get(f.name) for f in GARMENT_FIELDS if f.kind == "re"}
    category = garment.labels.get("category")
    path = [garment.slot] + ([category] if category else [])
    return {
        "item_id": item_id(label.image_id, garment),
        "source": "kfashion",
        "category_path": path,
        "category": path[-1],
        "std_attributes": attributes(std),
        "re_attributes": attributes(re_fields),
        "styles": label.styles,
        "sub_styles": label.sub_styles,
        "title": " ".join(v for v in (garment.labels.get("color"), category) if v) or None,
        "description": None,
        "image_path": image_path,
        "crop_path": crop_path,
        "bbox": dict(zip(("x", "y", "width", "height"), box)),
        "image_width": label.width,
        "image_height": label.height,
        "price": None,
        "source_file": label.source_file,
    }


def process_label_file(path: str | Path, raw: bytes, options: KFashionOptions) -> tuple[list[dict], list[dict]]:
    """One label file's bytes -> (item rows, quarantine rows). Never raises for bad data.

    File-level problems (corrupt JSON, schema errors, missing/unreadable/oversized image) quarantine
    the whole file as one record ('*'); garment-level problems (no box, box outside the image)
    quarantine that garment. Every labelled garment ends up in exactly one of the two lists.
    """
    path = src = os.fspath(path)
    try:
        obj = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [], [quarantine_row(src, "*", "file", "corrupt_json", f"{src}: not valid UTF-8 JSON: {exc}")]
    try:
        label = parse_label(obj, src)
    except LabelSchemaError as exc:
        return [], [quarantine_row(src, "*", "file", "schema_error", str(exc))]

    image_path = resolve_image(path, label, options.label_root, options.image_root)
    image = None
    if label.garments:
        if image_path is None:
            return [], [quarantine_row(src, "*", "file", "missing_image",
                                       f"{src}: no image named {_stem(path)}.jpg or "
                                       f"{label.image_file_name!r} beside the label or under image_root")]
        try:
            image = open_checked(image_path, options.limits)
        except ImageRejected as exc:
            return [], [quarantine_row(src, "*", "file", exc.reason, exc.detail)]
        if image.size != (label.width, label.height):
            return [], [quarantine_row(
                src, "*", "file", "image_size_mismatch",
                f"{image_path}: image is {image.width}x{image.height} but {IMAGE_INFO}.{IMAGE_WIDTH}/"
                f"{IMAGE_HEIGHT} say {label.width}x{label.height}; boxes would be wrong")]

    items, quarantined = [], []
    for garment in label.garments:
        record = f"{garment.slot}[{garment.index}]"
        if garment.box is None:
            quarantined.append(quarantine_row(
                src, record, "garment", "no_box",
                f"{src}: slot {garment.slot} is labelled but has no {POLYGON} or {RECT} entry"))
            continue
        pixel_box = clip_box(*garment.box, label.width, label.height)
        if pixel_box is None:
            quarantined.append(quarantine_row(
                src, record, "garment", "invalid_box",
                f"{src}: box {garment.box} of slot {garment.slot} lies outside the "
                f"{label.width}x{label.height} image"))
            continue
        crop_path = None
        if options.crop_dir:
            style_dir = label.styles[0] if label.styles else "_unstyled"
            crop_path = save_crop(image, pixel_box,  # crop_dir may be an object-store URI: joined as text
                                  f"{options.crop_dir.rstrip('/')}/{style_dir}/{item_id(label.image_id, garment)}.jpg",
                                  options.crop_quality)
        items.append(garment_row(label, garment, str(image_path), crop_path, garment.box))
    return items, quarantined
