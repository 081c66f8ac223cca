"""scripts/gpu_check.py on the CPU (CI has no GPU): every measurement is there, positive, and the
report says what each encoder's weights are."""
import json

import pytest

from scripts import gpu_check


@pytest.mark.timeout(300)
def test_the_gpu_check_runs_on_a_cpu_and_reports_every_measurement(tmp_path):
    report = gpu_check.main(["--device", "cpu", "--seconds", "0.1", "--rounds", "2", "--out", str(tmp_path / "g.json")])
    assert json.loads((tmp_path / "g.json").read_text()) == report
    encoders = report["image_encoders"]
    assert encoders["hand-crafted"]["pretrained"] == "none (hand-crafted stand-in)"
    assert encoders["clip-vit-b32 (random weights)"]["pretrained"] == "none (random weights)"
    for row in encoders.values():
        assert row["fp32_images_per_s"] > 0 and row["amp_images_per_s"] > 0
    for family in ("json_encoder_infonce_step", "item_tower_ntxent_step", "deepfm_pointwise_step",
                   "user_tower_sampled_softmax_step", "listwise_reranker_step", "persona_triplet_step"):
        step = report[family]
        assert step["fp32_steps_per_s"] > 0 and step["amp_steps_per_s"] > 0, family


def test_the_gpu_check_imports_without_pytorch_metric_learning():
    """The lent GPU machines have torch but not every library of ours (they cannot install packages)."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = "import sys; sys.modules['pytorch_metric_learning'] = None; import scripts.gpu_check"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
