"""Argument parsing shared by every stage: ``--config FILE`` plus ``--set key=value`` overrides."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, TypeVar

from recsys import logs
from recsys.config import ConfigError, load_config, parse_overrides
from recsys.data.result import AdapterError

T = TypeVar("T")
_command: str | None = None  # set by run_main: a command line run, whose console stays quiet


def stage_parser(description: str, default_config: str) -> argparse.ArgumentParser:
    """A stage's parser with the two arguments every stage takes; callers add their own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=default_config, help=f"YAML config (default {default_config})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, dotted keys for nested sections (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's logs and the per-epoch lines here instead of in the command's log file")
    return parser


SHIPPED_CONFIGS_ROOT = Path(__file__).resolve().parents[2]  # the checkout the code runs from


def config_path(path: str) -> Path:
    """``path`` as given when it exists; a relative path that does not exist here but names one of the
    configs shipped with the code (``configs/pipeline.yaml``) is that file. On a cluster, jobs run in
    the shared data folder (cluster.yaml), not in the checkout, and still take ``--config configs/...``."""
    given = Path(path)
    shipped = SHIPPED_CONFIGS_ROOT / given
    if given.is_file() or given.is_absolute() or not shipped.is_file():
        return given
    print(f"config: {path} is not in {Path.cwd()}; using the one shipped with the code, {shipped}")
    return shipped


def stage_config(args: argparse.Namespace, config_cls: type[T], extra: dict | None = None) -> T:
    """The YAML config with ``--set`` overrides, then ``extra`` (values of a stage's own flags) on top.
    On the command line (``run_main``) this also quiets the console (see ``recsys.logs``)."""
    config = load_config(config_path(args.config), config_cls, parse_overrides(args.overrides) | (extra or {}))
    if _command:
        logs.quiet_console(_command, verbose=getattr(args, "verbose", False))
    return config


def load_stage_config(description: str, config_cls: type[T], default_config: str,
                      argv: list[str] | None = None) -> T:
    return stage_config(stage_parser(description, default_config).parse_args(argv), config_cls)


def run_main(main: Callable[[], object]) -> None:
    """Run a stage; bad input/config ends with one clear line and exit code 2, not a traceback."""
    global _command
    spec = getattr(sys.modules["__main__"], "__spec__", None)  # `python -m ray_jobs.embed` -> "embed"
    _command = spec.name.rsplit(".", 1)[-1] if spec else Path(sys.argv[0]).stem
    try:
        main()
    except (ConfigError, AdapterError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def init_ray(dashboard: bool = False) -> None:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`; `RAY_ADDRESS=auto` attaches to
    a cluster started with `ray start`), else start a private local Ray.

    Not plain ``ray.init()``: with no address it follows /tmp/ray/ray_current_cluster, which can
    name a head that has since stopped, and then waits for it indefinitely.

    A private local Ray starts without the dashboard unless ``dashboard`` or FASHIONREC_RAY_DASHBOARD=1:
    on a 2-CPU laptop the dashboard and its agent take a few percent of the CPU the stage's actors
    need. Sweeps ask for it: Ray Train's placement-group cleaner of a trial that Tune stops asks the
    state API (served by the dashboard) whether its controller died, and without it loops on.
    Clusters keep theirs (it serves `ray job submit` and the state API).
    """
    import os

    import ray

    if ray.is_initialized():
        return
    quiet = logs.log_file() is not None
    if quiet:
        import ray.data  # configures its loggers on import

        logs.route_ray_logs()
        # One bar per dataset run, not one more per operator.
        ray.data.DataContext.get_current().enable_operator_progress_bars = False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(address="local", include_dashboard=dashboard or os.environ.get("FASHIONREC_RAY_DASHBOARD") == "1")
    logs.ray_started()  # worker output still comes to the driver: it carries the workers' progress bars
