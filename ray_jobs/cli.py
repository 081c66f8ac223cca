"""Argument parsing shared by every stage: ``--config FILE`` plus ``--set key=value`` overrides."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from recsys.config import ConfigError, load_config, parse_overrides
from recsys.data.result import AdapterError

T = TypeVar("T")


def load_stage_config(description: str, config_cls: type[T], default_config: str,
                      argv: list[str] | None = None) -> T:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted keys for nested sections (repeatable)")
    args = parser.parse_args(argv)
    return load_config(args.config, config_cls, parse_overrides(args.overrides))


def run_main(main: Callable[[], object]) -> None:
    """Run a stage; bad input/config ends with one clear line and exit code 2, not a traceback."""
    try:
        main()
    except (ConfigError, AdapterError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
