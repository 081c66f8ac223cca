"""Quiet consoles: a command shows its own progress bars and summary lines; Ray's own output (driver
and worker logs, Ray Data's execution plans, Ray Train's start-up lines) and the training loops'
per-epoch lines go to one log file per command. ``--verbose`` keeps Ray's default console instead.

Set up once per command: by ``ray_jobs.common.cli.run_main`` (through ``stage_config``) for the jobs,
whose ``init_ray`` then routes the workers' forwarded output, and by ``serve_app.demo``. Tests and
library callers that never call ``quiet_console`` keep Ray's defaults. Ray is imported lazily.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

LOG_ROOT = "artifacts/logs"
WORKER_LOGGER = "fashionrec.workers"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_log_file: Path | None = None       # this command's log; None: the console shows everything (Ray's default)
_ray_handler: logging.Handler | None = None  # the log for Ray's own loggers (ray.init restyles their handlers)


def log_file() -> Path | None:
    return _log_file


def quiet_console(command: str, verbose: bool = False, log_root: str = LOG_ROOT) -> Path | None:
    """Send everything but the command's own prints and progress bars to ``<log_root>/<command>-<time>.log``
    and say where; with ``verbose``, only make the library's INFO lines (per-epoch lines) visible."""
    global _log_file, _ray_handler
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return None
    if _log_file is not None:
        return _log_file
    path = Path(log_root).resolve() / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.addHandler(_file_handler(path))
    root.setLevel(logging.INFO)
    _ray_handler = _file_handler(path)
    logging.captureWarnings(True)  # deprecation warnings from the libraries, too
    _redirect_native_stderr(path)
    _log_file = path
    route_ray_logs()
    print(f"log: {path}  (Ray's own output and per-epoch lines; --verbose shows them here)")
    return path


def _file_handler(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")  # append mode: handlers on one file interleave lines
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.INFO)  # Ray Data's loggers run at DEBUG for its own files
    return handler


def _redirect_native_stderr(path: Path) -> None:
    """Ray's C++ core worker writes its errors straight to file descriptor 2: point that at the log,
    and keep Python's ``sys.stderr`` (progress bars, error messages, tracebacks) on the console."""
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                        errors="backslashreplace")
    log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stderr = console


def ray_started() -> None:
    """Call right after ``ray.init``: Ray's loggers and the workers' output to the log, when quiet."""
    route_ray_logs()
    route_worker_output()


def route_ray_logs() -> None:
    """Ray's loggers ("ray", "ray.data", "ray.serve", ...) print through console handlers of their own
    and do not propagate: swap those handlers for the log's. Call again after importing or starting a
    Ray library that configures its loggers (ray.init, Ray Serve)."""
    if _ray_handler is None:
        return
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or not (name == "ray" or name.startswith("ray.")):
            continue
        consoles = [h for h in logger.handlers
                    if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
        for handler in consoles:
            logger.removeHandler(handler)
        if consoles and not logger.propagate and _ray_handler not in logger.handlers:
            logger.addHandler(_ray_handler)


def route_worker_output() -> None:
    """Workers' stdout/stderr reach the driver through Ray's log forwarding, which also carries the
    updates of their progress bars (ray.experimental.tqdm_ray): draw the bars, log every other line.

    Ray has no public hook for this; its forwarding handler is replaced by name. ``log_to_driver=False``
    is no alternative: it would stop the bars, too. Also useful with ``log_to_driver=False`` (Serve),
    for the error notes Ray pushes to the driver.
    """
    if _ray_handler is None:
        return
    from ray._private import worker
    from ray.experimental import tqdm_ray

    logger = logging.getLogger(WORKER_LOGGER)
    closed_bars: set[str] = set()

    def forward(batch: dict) -> None:
        source = " ".join(filter(None, [batch.get("actor_name") or batch.get("task_name"), f"pid={batch.get('pid')}"]))
        lines = batch.get("lines", [])
        if batch.get("pid") == "autoscaler":  # its status tables every few seconds: events only, as Ray does
            lines = worker.filter_autoscaler_events(lines)
        for line in lines:
            if tqdm_ray.RAY_TQDM_MAGIC in line:
                # Ray Train workers print each bar update twice (stdout, and stderr through their
                # logger): a repeated "closed" update would draw the finished bar again.
                try:
                    state = json.loads(line)
                except ValueError:  # two workers' lines interleaved: skip one update, not the thread
                    continue
                if state["uuid"] not in closed_bars:
                    if state["closed"]:
                        closed_bars.add(state["uuid"])
                    tqdm_ray.instance().process_state_update(state)
            elif line.strip():
                logger.info("(%s) %s", source, line)

    dispatcher = worker.global_worker_stdstream_dispatcher
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", forward)
    # Error notes Ray pushes to the driver ("(raylet) Task ... failed ... will be retried") take
    # another path; a failure that matters still surfaces as the driver's exception.
    worker.print_to_stdstream = lambda batch, ignore_prefix=False: forward(batch)

