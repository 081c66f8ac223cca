"""Durable item changes made through the API: added items (metadata, vectors, image) and deletions.

Layout under ``state_dir``::

    items.jsonl        one operation per line: {"op": "add", "item": {...}, "vector": b64, ...}
                                               {"op": "delete", "item_id": "..."}
    images/<sha1>.<ext>  uploaded images, written atomically before the line that names them

A line is appended with one ``write`` under an exclusive ``flock`` and fsynced before the request
is answered; replay applies every complete line in order (a torn last line from a crash is
skipped). Operations are idempotent set/remove, so replaying any prefix twice gives the same
state. Replicas follow the log by byte offset (:meth:`ItemStore.read_since`), so an item added on
one Retriever replica is visible on the others at their next request.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from serve_app.versions import write_atomic

log = logging.getLogger("ray.serve")

LOG_NAME = "items.jsonl"


def encode_vector(vector: np.ndarray | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).decode("ascii")


def decode_vector(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


class ItemStore:
    def __init__(self, state_dir: str | Path):
        self.root = Path(state_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        self.log_path = self.root / LOG_NAME
        self.log_path.touch(exist_ok=True)

    # -- writing -------------------------------------------------------------------------------
    def save_image(self, item_id: str, data: bytes, extension: str) -> str:
        """Store an uploaded image under a name derived from id and content (never the raw id)."""
        digest = hashlib.sha1(item_id.encode("utf-8") + b"\0" + data).hexdigest()
        path = self.root / "images" / f"{digest}.{extension.lower()}"
        if not path.exists():
            write_atomic(path, data)
        return str(path.relative_to(self.root))

    def append(self, operation: dict) -> int:
        """Append one operation durably; returns the log size after it."""
        line = (json.dumps({**operation, "ts": time.time()}, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and not self._ends_with_newline(size):
                os.write(fd, b"\n")  # isolate a torn line left by a crash
            os.write(fd, line)
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _ends_with_newline(self, size: int) -> bool:
        with open(self.log_path, "rb") as handle:
            handle.seek(size - 1)
            return handle.read(1) == b"\n"

    def add(self, item: dict, vector: np.ndarray, text_vector: np.ndarray | None) -> int:
        return self.append({"op": "add", "item": item, "vector": encode_vector(vector),
                            "text_vector": encode_vector(text_vector)})

    def delete(self, item_id: str) -> int:
        return self.append({"op": "delete", "item_id": item_id})

    # -- reading -------------------------------------------------------------------------------
    def size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_since(self, offset: int) -> tuple[list[dict], int]:
        """Complete operations after byte ``offset`` and the offset after the last complete line."""
        if self.size() <= offset:
            return [], offset
        with open(self.log_path, "rb") as handle:
            handle.seek(offset)
            chunk = handle.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], offset
        operations = []
        for raw in chunk[:end].split(b"\n"):
            if not raw.strip():
                continue
            try:
                operation = json.loads(raw)
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line near byte %d", self.log_path, offset)
                continue
            for key in ("vector", "text_vector"):
                if key in operation:
                    operation[key] = decode_vector(operation[key])
            operations.append(operation)
        return operations, offset + end + 1

    def image_path(self, relative: str) -> Path:
        return self.root / relative
