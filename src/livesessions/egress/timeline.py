"""The built-in recorder's file: the room's timeline as JSON Lines.

Each line is `{"t": <epoch ms>, "event": <the message as peers got it>}`; the
first is the `joined` the recorder bot received, listing who was there.
"""

from __future__ import annotations

import os
from pathlib import Path

from livesessions.clock import Clock


class TimelineFile:
    def __init__(self, path: Path, clock: Clock) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._file = open(path, "ab")
        self.size = self._file.tell()

    def append(self, event: bytes) -> None:
        line = b'{"t":%d,"event":%s}\n' % (self._clock(), event)
        self._file.write(line)
        # Flushed line by line: a crash loses at most the line being written.
        self._file.flush()
        self.size += len(line)

    def close(self) -> int:
        self._file.close()
        return self.size


def recover(path: Path) -> tuple[int, int | None]:
    """Cut a file left by a crash back to its last whole line.

    Returns its size and when it was last written (epoch ms), or (0, None).
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0, None
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with open(path, "r+b") as file:
            file.truncate(len(whole))
    return len(whole), os.stat(path).st_mtime_ns // 1_000_000
