import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from ray_jobs.preprocess import PreprocessConfig, run
from recsys.data.schema import ITEM_SCHEMA, QUARANTINE_SCHEMA
from tests.conftest import REPO_ROOT
from tests.ray_jobs.corpus import fault_corpus


@pytest.mark.ray
@pytest.mark.real_data
def test_ray_data_preprocess_quarantines_bad_records_and_reconciles(ray_session, kfashion_samples, tmp_path):
    labels, images = fault_corpus(kfashion_samples, tmp_path / "corpus")
    report = run(PreprocessConfig(labels=str(labels), images=str(images), output_root=str(tmp_path / "out"),
                                  files_per_batch=2))
    assert report["files"] == {"read": 6, "processed": 3, "quarantined": 3, "reconciles": True}
    assert report["garments"] == {"labelled_in_processed_files": 6, "written": 6, "quarantined": 0,
                                  "reconciles": True}
    assert report["quarantine_reasons"] == {"corrupt_json": 1, "missing_image": 1, "unreadable_image": 1}
    assert report["distribution"]["style"] == {"(none)": 4, "로맨틱": 2}

    items = pq.read_table(report["outputs"]["items"])
    assert items.num_rows == 6
    assert [(f.name, f.type) for f in items.schema] == [(f.name, f.type) for f in ITEM_SCHEMA]
    assert sorted(items.column("item_id").to_pylist()) == sorted(
        f"{i}-{s}" for i in (100026, 1070263, 1092253) for s in ("top", "bottom"))
    for crop in items.column("crop_path").to_pylist():
        assert crop and (tmp_path / "out").as_posix() in crop

    quarantine = pq.read_table(report["outputs"]["quarantine"])
    assert quarantine.schema.names == QUARANTINE_SCHEMA.names
    by_file = {r["source_file"].rsplit("/", 1)[-1]: r["reason"] for r in quarantine.to_pylist()}
    assert by_file == {"900001.json": "corrupt_json", "900002.json": "missing_image", "900003.json": "unreadable_image"}
    run_dir = tmp_path / "out" / (tmp_path / "out" / "LATEST").read_text().strip()
    for name in ("reconciliation.json", "distribution.png", "manifest.json", "config.yaml"):
        assert (run_dir / name).is_file()


def test_empty_label_path_is_a_clear_error(tmp_path):
    (tmp_path / "labels").mkdir()
    result = subprocess.run([sys.executable, "-m", "ray_jobs.preprocess", "--set", f"labels={tmp_path / 'labels'}",
                             "--set", f"output_root={tmp_path / 'out'}"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "holds no label files" in result.stderr and str(tmp_path / "labels") in result.stderr
    assert not (tmp_path / "out").exists()
