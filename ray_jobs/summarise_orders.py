"""Summarise E3 runs: which order each log's recommender served and how it compares with the best source.

    python -m ray_jobs.summarise_orders --report NAME=DIR [--report NAME=DIR ...] --out FILE.json [--towers]

``--towers``: the user tower alone against MostPop per run instead (an ablation of the tower's settings).

Each DIR is an ``ray_jobs.evaluate_seq`` output (its metrics.json). Plain Python, no Ray: it reads
reports only (``recsys.eval.orders``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ray_jobs.common.cli import run_main
from recsys.artifacts import write_json
from recsys.config import ConfigError
from recsys.eval.orders import order_rows, order_summary, print_orders, print_towers, tower_rows


def read_reports(pairs: list[str]) -> dict[str, dict]:
    reports = {}
    for pair in pairs:
        name, sep, directory = pair.partition("=")
        if not sep or not name or not directory:
            raise ConfigError(f"--report {pair!r}: expected NAME=DIR (an evaluate_seq output directory)")
        path = Path(directory) / "metrics.json"
        if not path.is_file():
            raise ConfigError(f"--report {name}: {path} does not exist (run ray_jobs.evaluate_seq --out {directory})")
        report = json.loads(path.read_text())
        if "order" not in report:
            raise ConfigError(f"--report {name}: {path} has no 'order' (an E3 report from before the order choice)")
        reports[name] = report
    return reports


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="append", required=True, help="NAME=DIR of an evaluate_seq run")
    parser.add_argument("--out", required=True, help="JSON file for the table and the summary")
    parser.add_argument("--towers", action="store_true", help="tabulate the user tower against MostPop instead")
    args = parser.parse_args(argv)
    if args.towers:
        rows = tower_rows(read_reports(args.report))
        print_towers(rows)
        write_json(Path(args.out), {"runs": rows})
        print(f"-> {args.out}")
        return {"runs": rows}
    rows = order_rows(read_reports(args.report))
    summary = order_summary(rows)
    print_orders(rows, summary)
    result = {"logs": rows, "summary": summary}
    write_json(Path(args.out), result)
    print(f"-> {args.out}")
    return result


if __name__ == "__main__":
    run_main(main)
