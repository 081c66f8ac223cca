"""bench/preprocess.py on a tiny generated corpus: interleaved rounds, medians, the same output on both sides."""
import json
import statistics

import pytest

from bench.preprocess import BenchPreprocessConfig, run
from recsys.data.synthetic import SyntheticCorpusConfig


@pytest.mark.ray
def test_rounds_interleave_the_sides_and_the_report_gives_medians(idle_ray, tmp_path):
    corpus = SyntheticCorpusConfig(out_dir=str(tmp_path / "corpus"), seed=5, n_images=24, image_width=64,
                                   image_height=64, workers=1)
    result = run(BenchPreprocessConfig(corpus=corpus, output_root=str(tmp_path / "out"), files_per_batch=4, rounds=3))
    rounds = result["per_round"]
    assert [r["order"] for r in rounds] == [["serial", "ray_data"], ["ray_data", "serial"], ["serial", "ray_data"]]
    assert result["same_output"] and result["n_label_files"] == 24 and result["serial"]["items"] > 24
    for side in ("serial", "ray_data"):
        assert result[side]["items_per_s"] == round(statistics.median(r[side]["items_per_s"] for r in rounds), 2)
    for r in rounds:  # each round's ratio from its own pair
        assert r["ratio_ray_over_serial"] == round(r["ray_data"]["items_per_s"] / r["serial"]["items_per_s"], 3)
    assert result["ratio_ray_over_serial_items_per_s"] == round(
        statistics.median(r["ratio_ray_over_serial"] for r in rounds), 2)
    saved = json.loads(next((tmp_path / "out").glob("preprocess-*.json")).read_text())
    assert saved["ratio_ray_over_serial_items_per_s"] == result["ratio_ray_over_serial_items_per_s"]
    assert next((tmp_path / "out").glob("preprocess-*.png")).stat().st_size > 10_000
    assert not list((tmp_path / "out").glob("work-*"))  # crops of both sides removed
