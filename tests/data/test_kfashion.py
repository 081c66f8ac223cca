import json
import shutil

import pytest
from PIL import Image

from recsys.data.images import ImageLimits
from recsys.data.kfashion import (KFashionOptions, LabelSchemaError, parse_label, polygon_to_box,
                                  process_label_file)

pytestmark = pytest.mark.real_data


def _load(samples, name):
    return json.loads((samples / f"{name}.json").read_text())


def _copy_sample(samples, tmp_path, name="100026"):
    shutil.copy(samples / f"{name}.json", tmp_path / f"{name}.json")
    shutil.copy(samples / f"{name}.jpg", tmp_path / f"{name}.jpg")
    return tmp_path / f"{name}.json"


def test_polygon_to_box_matches_hand_computed_extremes():
    points = {"X좌표1": 10.0, "Y좌표1": 5.0, "X좌표2": 30.5, "Y좌표2": 8.0, "X좌표3": 12.0, "Y좌표3": 40.0}
    assert polygon_to_box(points, "p", "f") == (10.0, 5.0, 20.5, 35.0)
    assert polygon_to_box({}, "p", "f") is None
    with pytest.raises(LabelSchemaError, match="X좌표<n> for every Y좌표<n>"):
        polygon_to_box({"X좌표1": 1.0, "Y좌표1": 1.0, "X좌표2": 2.0, "Y좌표2": 2.0, "X좌표3": 3.0}, "p", "f")


def test_real_full_label_parses_into_two_garments(kfashion_samples):
    label = parse_label(_load(kfashion_samples, "100026"), "100026.json")
    assert (label.image_id, label.width, label.height) == (100026, 800, 800)
    assert label.styles == ["로맨틱"] and label.sub_styles == []
    by_slot = {g.slot: g for g in label.garments}
    assert set(by_slot) == {"상의", "하의"}
    top = by_slot["상의"]
    assert top.labels["category"] == "블라우스" and top.labels["silhouette"] == "루즈"
    assert top.labels["material"] == ["우븐", "레이스"] and top.labels["print"] == ["도트"]
    # Polygon extremes of the 상의 polygon in the file: x 260.644..556.233, y 59.9236..395.457.
    x, y, w, h = top.polygon_box
    assert (x, y) == (260.644, 59.9236)
    assert w == pytest.approx(556.233 - 260.644) and h == pytest.approx(395.457 - 59.9236)
    # ...and agrees with the annotator's rectangle (X 260.144, Y 59.4236, 295 x 335) within a pixel.
    assert top.rect_box == (260.144, 59.4236, 295.0, 335.0)
    assert abs(w - 295) < 1.5 and abs(h - 335) < 1.5


def test_real_sparse_labels_keep_slot_as_category(kfashion_samples, tmp_path):
    path = _copy_sample(kfashion_samples, tmp_path, "1070263")
    items, quarantined = process_label_file(path, path.read_bytes(), KFashionOptions())
    assert quarantined == []
    top = next(i for i in items if i["item_id"] == "1070263-top")
    assert top["category_path"] == ["상의"] and top["category"] == "상의"
    assert top["std_attributes"] == [{"field": "color", "values": ["화이트"]},
                                     {"field": "sleeve_length", "values": ["7부소매"]}]
    assert top["styles"] == [] and top["re_attributes"] == []


def test_crops_have_the_box_size(kfashion_samples, tmp_path):
    path = _copy_sample(kfashion_samples, tmp_path)
    items, quarantined = process_label_file(path, path.read_bytes(),
                                            KFashionOptions(crop_dir=str(tmp_path / "crops")))
    assert quarantined == [] and [i["item_id"] for i in items] == ["100026-top", "100026-bottom"]
    for item in items:
        crop = Image.open(item["crop_path"])
        box = item["bbox"]
        assert abs(crop.width - box["width"]) <= 2 and abs(crop.height - box["height"]) <= 2
        assert "/로맨틱/" in item["crop_path"]


def test_image_found_in_parallel_tree(kfashion_samples, tmp_path):
    (tmp_path / "labels" / "로맨틱").mkdir(parents=True)
    (tmp_path / "images" / "로맨틱").mkdir(parents=True)
    label = tmp_path / "labels" / "로맨틱" / "100026.json"
    shutil.copy(kfashion_samples / "100026.json", label)
    shutil.copy(kfashion_samples / "100026.jpg", tmp_path / "images" / "로맨틱" / "100026.jpg")
    options = KFashionOptions(label_root=str(tmp_path / "labels"), image_root=str(tmp_path / "images"))
    items, quarantined = process_label_file(label, label.read_bytes(), options)
    assert len(items) == 2 and quarantined == []
    assert items[0]["image_path"].endswith("images/로맨틱/100026.jpg")



def test_parallel_tree_with_relative_roots_and_a_label_name_without_suffix(kfashion_samples, tmp_path, monkeypatch):
    """Roots as a user types them (relative) and a label file without ``.json``: the image is still the
    parallel tree's ``<stem>.jpg`` (the name inside the label points nowhere), as an absolute path."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "labels" / "로맨틱").mkdir(parents=True)
    (tmp_path / "images" / "로맨틱").mkdir(parents=True)
    obj = json.loads((kfashion_samples / "100026.json").read_text())
    obj["이미지 정보"]["이미지 파일명"] = "not-there.jpg"
    raw = json.dumps(obj, ensure_ascii=False).encode()
    shutil.copy(kfashion_samples / "100026.jpg", tmp_path / "images" / "로맨틱" / "100026.jpg")
    options = KFashionOptions(label_root="labels", image_root="images")
    items, quarantined = process_label_file("labels/로맨틱/100026", raw, options)
    assert len(items) == 2 and quarantined == []
    assert items[0]["image_path"] == str(tmp_path / "images" / "로맨틱" / "100026.jpg")

@pytest.mark.parametrize("mutate, reason, named", [
    (lambda raw: raw[: len(raw) // 2], "corrupt_json", "not valid UTF-8 JSON"),
    (lambda raw: json.dumps({k: v for k, v in json.loads(raw).items() if k != "이미지 정보"}).encode(),
     "schema_error", "'이미지 정보'"),
])
def test_malformed_file_is_quarantined_with_reason(kfashion_samples, tmp_path, mutate, reason, named):
    path = _copy_sample(kfashion_samples, tmp_path)
    items, quarantined = process_label_file(path, mutate(path.read_bytes()), KFashionOptions())
    assert items == []
    assert len(quarantined) == 1 and quarantined[0]["reason"] == reason
    assert named in quarantined[0]["detail"] and str(path) in quarantined[0]["detail"]


def test_wrong_field_type_names_the_field(kfashion_samples):
    obj = _load(kfashion_samples, "100026")
    obj["데이터셋 정보"]["데이터셋 상세설명"]["라벨링"]["상의"][0]["소재"] = "우븐"
    with pytest.raises(LabelSchemaError) as error:
        parse_label(obj, "x.json")
    assert "라벨링.상의[0].소재" in str(error.value) and "a list of strings" in str(error.value)


def test_labelled_slot_without_box_is_quarantined_per_garment(kfashion_samples, tmp_path):
    path = _copy_sample(kfashion_samples, tmp_path)
    obj = json.loads(path.read_text())
    detail = obj["데이터셋 정보"]["데이터셋 상세설명"]
    detail["폴리곤좌표"]["하의"] = [{}]
    detail["렉트좌표"]["하의"] = [{}]
    items, quarantined = process_label_file(path, json.dumps(obj).encode(), KFashionOptions())
    assert [i["item_id"] for i in items] == ["100026-top"]
    assert [(q["record"], q["level"], q["reason"]) for q in quarantined] == [("하의[0]", "garment", "no_box")]


@pytest.mark.parametrize("damage, reason", [
    ("delete", "missing_image"),
    ("truncate", "unreadable_image"),
    ("not_an_image", "unreadable_image"),
    ("resize", "image_size_mismatch"),
])
def test_bad_images_quarantine_the_file(kfashion_samples, tmp_path, damage, reason):
    path = _copy_sample(kfashion_samples, tmp_path)
    image = tmp_path / "100026.jpg"
    if damage == "delete":
        image.unlink()
    elif damage == "truncate":
        image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    elif damage == "not_an_image":
        image.write_bytes(b"this is not a jpeg")
    else:
        Image.open(image).resize((400, 400)).save(image)
    items, quarantined = process_label_file(path, path.read_bytes(), KFashionOptions())
    assert items == [] and [q["reason"] for q in quarantined] == [reason]
    assert quarantined[0]["level"] == "file"


def test_oversized_image_is_rejected_before_decoding(kfashion_samples, tmp_path):
    path = _copy_sample(kfashion_samples, tmp_path)
    options = KFashionOptions(limits=ImageLimits(max_bytes=10_000_000, max_pixels=100_000))
    items, quarantined = process_label_file(path, path.read_bytes(), options)
    assert items == [] and quarantined[0]["reason"] == "oversized_image"
    assert "640000 pixels > max_pixels 100000" in quarantined[0]["detail"]
