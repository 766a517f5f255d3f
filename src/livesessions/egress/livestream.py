"""The built-in livestream: the room's timeline, live, as Server-Sent Events.

Any number of viewers may watch; each gets events from the moment it starts
watching. A viewer too slow to keep up is cut off rather than allowed to hold
memory without bound: past VIEWER_BACKLOG frames or VIEWER_BACKLOG_BYTES
bytes waiting for it, its queue is emptied and ends. (A viewer whose client
stops reading altogether is cut off by the transport:
livesessions.http.protocols.)
"""

from __future__ import annotations

import asyncio

VIEWER_BACKLOG = 1024
VIEWER_BACKLOG_BYTES = 4 * 1024 * 1024

# A viewer's queue ends with this.
END = b""


class ViewerQueue(asyncio.Queue[bytes]):
    """A viewer's frames, and how many bytes they hold."""

    def __init__(self) -> None:
        # Unbounded here: publish() bounds it, and END must always fit.
        super().__init__()
        self.nbytes = 0

    # asyncio.Queue's hooks for storing and taking an item.
    def _put(self, item: bytes) -> None:
        super()._put(item)
        self.nbytes += len(item)

    def _get(self) -> bytes:
        item: bytes = super()._get()
        self.nbytes -= len(item)
        return item

    def drop(self) -> None:
        """Empty the queue at once, then end it."""
        while not self.empty():
            self.get_nowait()
        self.put_nowait(END)


class Broadcast:
    def __init__(self) -> None:
        self._viewers: set[ViewerQueue] = set()
        self.ended = False

    def watch(self) -> ViewerQueue:
        queue = ViewerQueue()
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
            backlog = queue.qsize()
            # A frame is always taken into an empty queue, however large.
            if backlog and (backlog >= VIEWER_BACKLOG or queue.nbytes + len(frame) > VIEWER_BACKLOG_BYTES):
                self._viewers.discard(queue)
                queue.drop()
            else:
                queue.put_nowait(frame)

    def end(self) -> None:
        self.ended = True
        for queue in self._viewers:
            queue.put_nowait(END)
        self._viewers.clear()
