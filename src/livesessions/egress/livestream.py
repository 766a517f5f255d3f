"""The built-in livestream: the room's timeline, live, as Server-Sent Events.

Any number of viewers may watch; each gets events from the moment it starts
watching. A viewer too slow to keep up is cut off rather than allowed to hold
memory without bound.
"""

from __future__ import annotations

import asyncio

VIEWER_BACKLOG = 1024

# A viewer's queue ends with this.
END = b""


class Broadcast:
    def __init__(self) -> None:
        self._viewers: set[asyncio.Queue[bytes]] = set()
        self.ended = False

    def watch(self) -> asyncio.Queue[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(VIEWER_BACKLOG + 1)
        if self.ended:
            queue.put_nowait(END)
        else:
            self._viewers.add(queue)
        return queue

    def unwatch(self, queue: asyncio.Queue[bytes]) -> None:
        self._viewers.discard(queue)

    def publish(self, event: bytes) -> None:
        frame = b"data: " + event + b"\n\n"
        for queue in list(self._viewers):
            if queue.qsize() >= VIEWER_BACKLOG:
                self._viewers.discard(queue)
                queue.put_nowait(END)
            else:
                queue.put_nowait(frame)

    def end(self) -> None:
        self.ended = True
        for queue in self._viewers:
            queue.put_nowait(END)
        self._viewers.clear()
