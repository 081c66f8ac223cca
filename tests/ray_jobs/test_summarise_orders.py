"""ray_jobs.summarise_orders: reads E3 reports, writes the table, names a bad --report."""
import json

import pytest

from ray_jobs import summarise_orders
from recsys.config import ConfigError
from tests.eval.test_orders import REPORTS


def test_the_command_reads_reports_and_names_what_is_wrong(tmp_path):
    for name, body in REPORTS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(body))
    out = tmp_path / "orders.json"
    result = summarise_orders.main([*(f"--report={n}={tmp_path / n}" for n in REPORTS), "--out", str(out)])
    assert json.loads(out.read_text())["summary"] == result["summary"] and result["summary"]["logs"] == 3
    with pytest.raises(ConfigError, match="NAME=DIR"):
        summarise_orders.main(["--report", str(tmp_path / "a"), "--out", str(out)])
    with pytest.raises(ConfigError, match="missing/metrics.json does not exist"):
        summarise_orders.main(["--report", f"x={tmp_path / 'missing'}", "--out", str(out)])
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "metrics.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(ConfigError, match="no 'order'"):
        summarise_orders.main(["--report", f"old={tmp_path / 'old'}", "--out", str(out)])
