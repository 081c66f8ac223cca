"""A small K-Fashion corpus in AI Hub's parallel layout, built from the 3 real samples plus faults."""
import json
import shutil
from pathlib import Path


def fault_corpus(samples: Path, root: Path) -> tuple[Path, Path]:
    """labels/{style}/{id}.json + images/{style}/{id}.jpg: 3 good files, then one corrupt JSON,
    one label whose image is missing and one whose JPEG is truncated (copies of 100026)."""
    labels, images = root / "labels", root / "images"
    for name in ("100026", "1070263", "1092253"):
        style = "로맨틱" if name == "100026" else "기타"
        (labels / style).mkdir(parents=True, exist_ok=True)
        (images / style).mkdir(parents=True, exist_ok=True)
        shutil.copy(samples / f"{name}.json", labels / style / f"{name}.json")
        shutil.copy(samples / f"{name}.jpg", images / style / f"{name}.jpg")
    raw = (samples / "100026.json").read_bytes()
    (labels / "로맨틱" / "900001.json").write_bytes(raw[: len(raw) // 3])          # corrupt JSON
    (labels / "로맨틱" / "900002.json").write_bytes(raw)                           # image missing
    (labels / "로맨틱" / "900003.json").write_bytes(raw)                           # truncated JPEG
    jpeg = (samples / "100026.jpg").read_bytes()
    (images / "로맨틱" / "900003.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    # The two copies reuse 100026's 이미지 파일명; give them their own so only {id}.jpg matches.
    for name in ("900002", "900003"):
        path = labels / "로맨틱" / f"{name}.json"
        obj = json.loads(path.read_text())
        obj["이미지 정보"]["이미지 파일명"] = f"{name}.jpg"
        path.write_text(json.dumps(obj, ensure_ascii=False))
    return labels, images
