"""Secrets kept in the data directory: written whole or not at all, and
readable by the owner only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(partial, path)


def load_or_create(path: Path, create: Callable[[], bytes]) -> bytes:
    """The file's bytes; on first use, `create()`'s, written privately."""
    if path.exists():
        return path.read_bytes()
    data = create()
    write_private(path, data)
    return data
