"""Synthetic K-Fashion corpus: deterministic, schema-exact, images that follow their labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from recsys.config import load_config
from recsys.data.kfashion import (
    DATASET_INFO, DETAIL, GARMENT_FIELDS, IMAGE_HEIGHT, IMAGE_INFO, IMAGE_ID, IMAGE_WIDTH, LABELS, POLYGON,
    RECT, SLOTS, STYLE_KEY, KFashionOptions, parse_label, polygon_to_box, process_label_file, rect_to_box,
)
from recsys.data.synthetic import (
    COLORS, DRAW_ORDER, FAULT_KINDS, SPARSE_FIELDS, FaultConfig, SyntheticCorpusConfig, generate_corpus,
    label_key_signature, plan_image,
)

REPO = Path(__file__).resolve().parents[2]
SAMPLES = Path("/work/shared/data/kfashion_samples")
SAMPLE_IDS = ("100026", "1070263", "1092253")
N_IMAGES = 30


def _config(out: Path, **overrides) -> SyntheticCorpusConfig:
    settings = {"out_dir": str(out), "n_images": N_IMAGES, "seed": 7, "workers": 1, **overrides}
    return SyntheticCorpusConfig(**settings)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    return out, generate_corpus(_config(out), progress=False)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    out = tmp_path_factory.mktemp("faulty")
    faults = FaultConfig(corrupt_json=1, missing_image=1, truncated_image=1, no_box=1)
    return out, generate_corpus(_config(out, faults=faults), progress=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _label_files(root: Path) -> list[Path]:
    return sorted((root / "labels").rglob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _detail(obj: dict) -> dict:
    return obj[DATASET_INFO][DETAIL]


def _labelled_slots(obj: dict) -> list[str]:
    return [slot for slot in SLOTS if _detail(obj)[LABELS][slot][0]]


def _options(root: Path) -> KFashionOptions:
    return KFashionOptions(label_root=str(root / "labels"), image_root=str(root / "images"))


def test_same_seed_and_any_worker_count_give_identical_bytes(corpus, tmp_path):
    out, manifest = corpus
    again = generate_corpus(_config(tmp_path / "again"), progress=False)
    parallel = generate_corpus(_config(tmp_path / "parallel", workers=2), progress=False)
    reference = _tree(out)
    assert len(reference) == 2 * N_IMAGES
    assert _tree(tmp_path / "again") == reference
    assert _tree(tmp_path / "parallel") == reference

    def strip(m):
        return {**m, "config": {**m["config"], "out_dir": None, "workers": None}}
    assert strip(again) == strip(manifest) == strip(parallel)
    generate_corpus(_config(tmp_path / "other", seed=8), progress=False)
    assert _tree(tmp_path / "other") != reference


def test_labels_parse_and_yield_one_item_per_labelled_garment(corpus):
    out, manifest = corpus
    config = _config(out)
    n_items = 0
    for path in _label_files(out):
        raw = path.read_bytes()
        obj = json.loads(raw)
        assert len(parse_label(obj, str(path)).garments) == len(_labelled_slots(obj)) >= 1
        items, quarantined = process_label_file(path, raw, _options(out))
        assert quarantined == []
        assert sorted(item["category_path"][0] for item in items) == sorted(_labelled_slots(obj))
        image = out / "images" / path.parent.name / f"{path.stem}.jpg"
        assert {item["image_path"] for item in items} == {str(image)}
        n_items += len(items)
        # plan_image (no drawing) predicts exactly what was written
        plan = plan_image(config, obj[IMAGE_INFO][IMAGE_ID] - config.first_image_id)
        assert plan.style == path.parent.name
        written = {slot: _detail(obj)[LABELS][slot][0] for slot in _labelled_slots(obj)}
        assert {g.slot: g.label for g in plan.garments} == written
    assert manifest["n_label_files"] == len(_label_files(out)) == N_IMAGES
    assert n_items == manifest["n_garments"] == manifest["n_garments_with_box"] == manifest["n_expected_items"]
    assert sum(manifest["per_slot"].values()) == manifest["n_garments"]
    assert sum(v["label_files"] for v in manifest["per_style"].values()) == N_IMAGES
    assert manifest["faults"] == []


def _real_labels() -> dict[str, dict]:
    if not SAMPLES.is_dir():
        pytest.skip(f"real K-Fashion samples not found at {SAMPLES}; the schema comparison needs them")
    return {sample: _load(SAMPLES / f"{sample}.json") for sample in SAMPLE_IDS}


def test_label_schema_matches_the_real_files(corpus):
    out, _ = corpus
    real = _real_labels()
    generated = [_load(p) for p in _label_files(out)]
    real_signature = set().union(*(label_key_signature(o, merge_slots=True) for o in real.values()))
    generated_signature = set().union(*(label_key_signature(o, merge_slots=True) for o in generated))
    # The only key paths allowed beyond the three samples: garment fields of the documented schema
    # that none of them happens to use (디테일), with the type the parser declares for them.
    prefix = f"{DATASET_INFO}.{DETAIL}.{LABELS}.<slot>[]."
    declared = set()
    for spec in GARMENT_FIELDS:
        declared |= ({f"{prefix}{spec.korean}:list", f"{prefix}{spec.korean}[]:str"} if spec.multi
                     else {f"{prefix}{spec.korean}:str"})
    extra = generated_signature - real_signature
    assert extra <= declared, f"key paths/types absent from the real files: {sorted(extra - declared)}"

    full = [o for o in generated if _detail(o)[LABELS][STYLE_KEY] != [{}]]
    sparse = [o for o in generated if _detail(o)[LABELS][STYLE_KEY] == [{}]]
    assert full and sparse
    assert label_key_signature(real["100026"]) <= set().union(*(label_key_signature(o) for o in full))
    sparse_real = label_key_signature(real["1070263"], merge_slots=True)
    for obj in sparse:
        assert label_key_signature(obj, merge_slots=True) <= sparse_real
        for slot in _labelled_slots(obj):
            assert set(_detail(obj)[LABELS][slot][0]) <= set(SPARSE_FIELDS)


def _polygon_mask(size: tuple[int, int], entry: dict) -> np.ndarray:
    points = [(entry[f"X좌표{i}"], entry[f"Y좌표{i}"]) for i in range(1, len(entry) // 2 + 1)]
    mask = Image.new("1", size, 0)
    ImageDraw.Draw(mask).polygon(points, fill=1)
    return np.asarray(mask)


def _interior(mask: np.ndarray) -> np.ndarray:
    """Drop a 2-pixel rim: seams and JPEG ringing at garment edges are not the garment's colour."""
    image = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(5))
    return np.asarray(image) > 0


def test_images_follow_their_labels(corpus):
    out, manifest = corpus
    checked = 0
    for path in _label_files(out):
        obj, detail = _load(path), _detail(_load(path))
        pixels = np.asarray(Image.open(out / "images" / path.parent.name / f"{path.stem}.jpg").convert("RGB"),
                            dtype=float)
        height, width = pixels.shape[:2]
        assert (width, height) == (obj[IMAGE_INFO][IMAGE_WIDTH], obj[IMAGE_INFO][IMAGE_HEIGHT])
        masks = {}
        for slot in DRAW_ORDER:
            polygon = detail[POLYGON][slot][0]
            if not polygon:
                continue
            box = polygon_to_box(polygon, slot, str(path))
            assert box == pytest.approx(rect_to_box(detail[RECT][slot][0], slot, str(path)), abs=1e-6)
            x, y, w, h = box
            assert 0 <= x and x + w < width and 0 <= y and y + h < height
            masks[slot] = _polygon_mask((width, height), polygon)
        background = np.median(pixels[~np.logical_or.reduce(list(masks.values()))], axis=0)
        covered = np.zeros((height, width), bool)
        for slot in reversed(DRAW_ORDER):  # topmost layer first: judge only the visible part
            if slot not in masks:
                continue
            visible = _interior(masks[slot] & ~covered)
            covered |= masks[slot]
            if visible.sum() < max(150, 0.25 * masks[slot].sum()):
                continue  # mostly hidden under a later layer (a top under a closed jacket)
            median = np.median(pixels[visible], axis=0)
            colour = np.array(COLORS[detail[LABELS][slot][0]["색상"]])
            assert np.linalg.norm(median - colour) < np.linalg.norm(median - background), \
                (path.name, slot, median, colour, background)
            checked += 1
    assert checked >= 0.6 * manifest["n_garments"]


def test_injected_faults_are_listed_and_quarantined(faulty):
    out, manifest = faulty
    faults = {f["fault"]: f for f in manifest["faults"]}
    assert sorted(faults) == sorted(FAULT_KINDS)
    assert len({f["file"] for f in manifest["faults"]}) == len(FAULT_KINDS)
    expected = {str(out / faults[kind]["file"]): reason for kind, reason in
                (("corrupt_json", "corrupt_json"), ("missing_image", "missing_image"),
                 ("truncated_image", "unreadable_image"))}
    items, file_reasons, garment_rows, labelled = [], {}, [], 0
    for path in _label_files(out):
        raw = path.read_bytes()
        rows, quarantined = process_label_file(path, raw, _options(out))
        items += rows
        if any(q["level"] == "file" for q in quarantined):
            assert not rows and len(quarantined) == 1
            file_reasons[str(path)] = quarantined[0]["reason"]
            continue
        garment_rows += quarantined
        labelled += len(_labelled_slots(json.loads(raw)))
    assert file_reasons == expected
    no_box = faults["no_box"]
    assert [(q["source_file"], q["record"], q["reason"]) for q in garment_rows] == \
        [(str(out / no_box["file"]), f"{no_box['slot']}[0]", "no_box")]
    assert labelled == len(items) + len(garment_rows)
    assert len(items) == manifest["n_expected_items"]
    assert manifest["n_garments_with_box"] == manifest["n_garments"] - 1
    assert manifest["n_image_files"] == N_IMAGES - 1
    assert not (out / faults["missing_image"]["image"]).exists()


def test_default_config_gives_about_2200_garments_for_1000_images(corpus):
    config = SyntheticCorpusConfig()
    total = sum(len(plan_image(config, i).garments) for i in range(config.n_images))
    assert 2100 <= total <= 2300
    _, manifest = corpus
    assert 1.9 <= manifest["n_garments"] / manifest["n_label_files"] <= 2.5


def _share(plans, style: str, key: str, values: set[str]) -> float:
    truths = [g.truth for p in plans if p.style == style for g in p.garments if g.truth[key] is not None]
    hits = [t for t in truths if set(t[key] if isinstance(t[key], list) else [t[key]]) & values]
    return len(hits) / len(truths)


def test_styles_skew_the_attributes():
    plans = [plan_image(SyntheticCorpusConfig(), i) for i in range(900)]
    assert _share(plans, "로맨틱", "카테고리", {"블라우스", "스커트", "드레스"}) > \
        2 * _share(plans, "스트리트", "카테고리", {"블라우스", "스커트", "드레스"})
    assert _share(plans, "스트리트", "핏", {"오버사이즈"}) > 3 * _share(plans, "모던", "핏", {"오버사이즈"})
    assert _share(plans, "스트리트", "프린트", {"그래픽", "레터링"}) > \
        3 * _share(plans, "모던", "프린트", {"그래픽", "레터링"})
    assert _share(plans, "모던", "색상", {"블랙", "화이트", "그레이", "네이비"}) > \
        1.5 * _share(plans, "로맨틱", "색상", {"블랙", "화이트", "그레이", "네이비"})


def test_yaml_defaults_and_cli(tmp_path, capsys):
    from ray_jobs.generate_corpus import main
    config_path = REPO / "configs" / "corpus.yaml"
    assert load_config(config_path, SyntheticCorpusConfig) == SyntheticCorpusConfig()
    out = tmp_path / "cli"
    returned = main(["--config", str(config_path), "--set", f"out_dir={out}", "--set", "n_images=6",
                     "--set", "workers=1", "--set", "faults.no_box=1"])
    manifest = _load(out / "manifest.json")
    assert returned == manifest
    assert manifest["n_label_files"] == 6 and [f["fault"] for f in manifest["faults"]] == ["no_box"]
    assert str(out.resolve()) in capsys.readouterr().out
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not a corpus")
    with pytest.raises(FileExistsError):
        generate_corpus(_config(tmp_path / "foreign"), progress=False)
