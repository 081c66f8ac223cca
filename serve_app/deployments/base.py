"""What every model-holding deployment shares: the served version and how it moves.

``reload(version)`` builds the new state completely while requests keep using the old one, then
swaps one attribute. ``follow_pin()`` (called at the start of requests, at most once a second)
notices a version pinned by another replica's reload that this replica missed, e.g. one started
or busy during the broadcast, and reloads it in a background thread.
"""
from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

from serve_app.config import ServeAppConfig
from serve_app.versions import current_version, pinned_version, same_version, version_label

log = logging.getLogger("ray.serve")


class Versioned(ABC):
    check_interval_s = 1.0

    def __init__(self, config: ServeAppConfig):
        self.config = config
        self.version = current_version(config)
        self._reload_lock = threading.Lock()
        self._last_check = time.monotonic()

    @abstractmethod
    def _load(self, version: dict):
        """Build this deployment's state for ``version`` (runs beside live traffic)."""

    @abstractmethod
    def _swap(self, version: dict, state) -> None:
        """Make ``state`` (from ``_load``) the served one: one reference swap."""

    def reload(self, version: dict) -> dict:
        with self._reload_lock:
            if same_version(version, self.version):
                self.version = version
                return {"deployment": type(self).__name__, "version": version_label(version), "changed": False}
            started = time.perf_counter()
            state = self._load(version)
            self._swap(version, state)
            self.version = version
            log.info("%s now serves %s (%.1fs)", type(self).__name__, version_label(version),
                     time.perf_counter() - started)
            return {"deployment": type(self).__name__, "version": version_label(version), "changed": True,
                    "seconds": round(time.perf_counter() - started, 2)}

    def follow_pin(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self.check_interval_s or self._reload_lock.locked():
            return
        self._last_check = now
        try:
            pinned = pinned_version(self.config)
        except (OSError, ValueError):
            return
        if pinned and not same_version(pinned, self.version):
            threading.Thread(target=self._reload_quietly, args=(pinned,), daemon=True).start()

    def _reload_quietly(self, version: dict) -> None:
        try:
            self.reload(version)
        except Exception:  # keep serving the old version; the next check retries
            log.exception("%s: reload to %s failed", type(self).__name__, version)

    def version_info(self) -> dict:
        return version_label(self.version)
