"""How a model-holding deployment moves between versions: Serve's ``user_config``.

A version is a small dict of run directories (``serve_app.versions``). The application builder
resolves the newest runs once, at deploy time, and hands them to every replica as
``user_config: {"version": {...}}``; a later ``serve deploy`` of a config whose ``user_config`` names
other runs is one of Serve's lightweight updates: Serve calls :meth:`reconfigure` on each running
replica (no restart) and hands the same config to replicas the autoscaler starts later, so every
replica serves the version the config names and nothing is polled or pinned on one node's disk.

``reconfigure`` builds the new state in a thread while requests keep using the old one, then swaps
one reference: a request reads that reference once and answers wholly from one version.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from abc import ABC, abstractmethod

from serve_app.config import ServeAppConfig
from serve_app.versions import localise, newest_version, same_version, version_label

log = logging.getLogger("ray.serve")


def version_of(user_config: dict | None, config: ServeAppConfig) -> dict:
    """The version a ``user_config`` names; the newest runs when it names none."""
    version = (user_config or {}).get("version")
    if version is None:
        return newest_version(config)
    if not isinstance(version, dict) or not {"json_encoder_run", "embed_run", "items"} <= set(version):
        raise ValueError("user_config.version: expected an object with json_encoder_run, embed_run, items "
                         f"(and users_run) run directories, got {version!r}")
    return version


class Versioned(ABC):
    """``self.state`` is the served version's state; ``version`` is read from it."""

    def __init__(self, config: ServeAppConfig, version: dict | None = None):
        """``version`` given (the in-process server): load it now. None (a Serve replica): Serve
        calls :meth:`reconfigure` with the deployment's ``user_config`` before any request."""
        self.config = config
        self.state = None
        self._lock = threading.Lock()
        self.last_move: dict | None = None
        self.loads = 0  # versions this replica has loaded (more than 1: moved in place)
        if version is not None:
            self.move_to(version)

    @abstractmethod
    def _load(self, version: dict, previous):
        """Build this deployment's state for ``version`` (beside live traffic); ``previous`` is the
        state served now (or None), to reuse what did not change."""

    @property
    def version(self) -> dict | None:
        return self.state.version if self.state is not None else None

    def move_to(self, version: dict) -> dict:
        version = localise(version, self.config.index.cache_dir)  # object-store runs -> this node's copies
        with self._lock:
            previous = self.state
            if previous is not None and same_version(version, previous.version):
                return {"deployment": type(self).__name__, "version": version_label(version), "changed": False}
            started = time.perf_counter()
            self.state = self._load(version, previous)  # one reference swap
            self.loads += 1
            seconds = round(time.perf_counter() - started, 2)
        log.info("%s now serves %s (%.1fs)", type(self).__name__, version_label(version), seconds)
        self.last_move = {"deployment": type(self).__name__, "version": version_label(version), "changed": True,
                          "seconds": seconds}
        return self.last_move

    async def reconfigure(self, user_config: dict | None) -> None:
        """Serve's hook for ``user_config`` (at start and on every change)."""
        version = await asyncio.to_thread(version_of, user_config, self.config)
        await asyncio.to_thread(self.move_to, version)

    def version_info(self) -> dict:
        return version_label(self.version)
