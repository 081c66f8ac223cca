import json
import subprocess
import sys

from recsys.sanity import run_sanity_checks
from tests.conftest import REPO_ROOT


def test_sanity_checks_pass_on_cpu():
    report = run_sanity_checks(fast=True)
    assert report["passed"], report["checks"]
    assert set(report["checks"]) == {"fields_processed", "output_512d_unit_norm", "loss_finite_and_decreasing",
                                     "gradients_reach_every_table", "eval_batch_consistency"}


def test_sanity_command_prints_pass_and_writes_json(tmp_path):
    out = tmp_path / "sanity.json"
    result = subprocess.run([sys.executable, "-m", "ray_jobs.sanity_check", "--quick", "--out", str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "SANITY CHECK PASS" in result.stdout
    assert json.loads(out.read_text())["passed"] is True
