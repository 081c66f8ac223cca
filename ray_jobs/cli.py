"""Argument parsing shared by every stage: ``--config FILE`` plus ``--set key=value`` overrides."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, TypeVar

from recsys.config import ConfigError, load_config, parse_overrides
from recsys.data.result import AdapterError

T = TypeVar("T")


def stage_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """A stage's parser with the two arguments every stage takes; callers add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted keys for nested sections (repeatable)")
    return parser


def stage_config(args: argparse.Namespace, config_cls: type[T], extra: dict | None = None) -> T:
    """The YAML config with ``--set`` overrides, then ``extra`` (values of a stage's own flags) on top."""
    return load_config(args.config, config_cls, parse_overrides(args.overrides) | (extra or {}))


def load_stage_config(description: str, config_cls: type[T], default_config: str,
                      argv: list[str] | None = None) -> T:
    return stage_config(stage_parser(description, default_config).parse_args(argv), config_cls)


def run_main(main: Callable[[], object]) -> None:
    """Run a stage; bad input/config ends with one clear line and exit code 2, not a traceback."""
    try:
        main()
    except (ConfigError, AdapterError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`; `RAY_ADDRESS=auto` attaches to
    a cluster started with `ray start`), else start a private local Ray.

    Not plain ``ray.init()``: with no address it follows /tmp/ray/ray_current_cluster, which can
    name a head that has since stopped, and then waits for it indefinitely.
    """
    import os

    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local")
