"""Sanity check of the JSON-encoder path on synthetic data; prints SANITY CHECK PASS or FAIL.

    python -m ray_jobs.sanity_check [--fast | --quick] [--out temp_logs/sanity_check_results.json]

Runs on CPU in seconds; no Ray needed. Exit code 0 only when every check passed.
"""
from __future__ import annotations

import argparse
import sys

from recsys.artifacts import write_json
from recsys.sanity import run_sanity_checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", "--quick", dest="fast", action="store_true", help="smaller data and model (demo)")
    parser.add_argument("--out", default="temp_logs/sanity_check_results.json")
    args = parser.parse_args(argv)
    report = run_sanity_checks(fast=args.fast)
    for name, result in report["checks"].items():
        print(f"[{'ok' if result['passed'] else 'FAIL'}] {name}: {result['detail']}")
    write_json(args.out, report)
    print("SANITY CHECK PASS" if report["passed"] else "SANITY CHECK FAIL", f"({args.out})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
