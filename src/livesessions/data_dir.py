"""One server per data directory, enforced with an advisory lock.

Two servers on one directory would each believe they own every live session:
the second closes the first one's sessions in history at its own start, writes
into the same recordings, and never hears of keys revoked through the first.
The lock is held for the life of the process and released by the kernel when
it exits, however it exits (kill -9 included), so it never goes stale.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_FILE = "livesessions.lock"


class DataDirInUse(Exception):
    """Another process holds the data directory."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Lock `data_dir` for this process; keep the returned file open while serving."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held open for the life of the process: that is the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(
            f"the data directory {data_dir.resolve()} is in use by another livesessions server "
            f"(pid {holder}); stop that one or give this one another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def holder_of(data_dir: Path) -> str | None:
    """The pid of the server holding `data_dir`, if one does (takes no lock)."""
    path = data_dir / LOCK_FILE
    if not path.exists():
        return None
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "unknown"
        return None
