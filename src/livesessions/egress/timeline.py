"""The built-in recorder's file: the room's timeline as JSON Lines.

Each line is `{"t": <epoch ms>, "event": <the message as peers got it>}`; the
first is the `joined` the recorder bot received, listing who was there.

The file is written by a thread of its own, never on the event loop: `append`
is called inside a broadcast to the room, so it only queues the line, in the
same step that the peers get the event (once any peer has an event, the
recording has it too: handed over, if not yet written). A disk that fails or
falls behind fails the recording, never the room: `append` never raises or
blocks, and the failure is reported to the loop, once, for the job to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from livesessions.clock import Clock

# Bytes handed over but not yet written beyond which the disk counts as
# stalled: the recording fails rather than hold memory without bound.
PENDING_LIMIT_BYTES = 16 * 1024 * 1024
# How long the end of a recording waits for the last lines to be written.
CLOSE_TIMEOUT_S = 5.0
# Lines waiting together are written with one call, up to about this much.
BATCH_BYTES = 256 * 1024
_READ_BACK = 64 * 1024


def describe(exc: OSError, what: str = "the recording could not be written") -> str:
    """An error as a job's failure reason: no file paths, which are the server's business."""
    name = errno.errorcode.get(exc.errno or 0)
    text = exc.strerror or exc.__class__.__name__
    return f"{what}: {text}" + (f" ({name})" if name else "")


class TimelineFile:
    """One recording's file. Create it on the event loop, which `on_failure`
    is then called on (with the reason) if the file cannot be written."""

    def __init__(self, path: Path, clock: Clock, on_failure: Callable[[str], None]) -> None:
        self.path = path
        self._clock = clock
        self._on_failure = on_failure
        self._loop = asyncio.get_running_loop()
        self._pending_limit = PENDING_LIMIT_BYTES
        # None in the queue: no more lines, close the file.
        self._lines: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        # Each counter has one writer, so neither needs a lock: `_handed` is
        # changed on the loop only, `size` (bytes written, whole lines) by the
        # writer thread only.
        self._handed = 0
        self.size = 0
        self._failure_lock = threading.Lock()
        self.failed_reason: str | None = None
        self.failed_at: int | None = None
        self._ending = False
        self._written: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._write_all, name=f"recorder-{path.stem}", daemon=True)
        self._thread.start()

    def append(self, event: bytes) -> None:
        """Queue an event's line. Called inside a broadcast: never raises, never blocks."""
        if self.failed_reason is not None or self._ending:
            return
        try:
            line = b'{"t":%d,"event":%s}\n' % (self._clock(), event)
            if self._handed - self.size + len(line) > self._pending_limit:
                self._fail(f"the recording storage is too slow: over {self._pending_limit} bytes waiting to be written")
                return
            self._handed += len(line)
            self._lines.put(line)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is the recording's problem, not the room's
            self._fail(f"the recording failed: {exc.__class__.__name__}")

    def end_writing(self) -> None:
        """No more lines: the writer writes what is queued, closes the file and ends."""
        if not self._ending:
            self._ending = True
            self._lines.put(None)

    async def close(self) -> int:
        """Write what is queued and close the file; the recording's final size.

        Never raises: a failure to finish is a failed recording (see
        `failed_reason`), and the size is then what was whole on disk.
        """
        self.end_writing()
        try:
            # shield: a stop that gives up waiting leaves the writer be.
            await asyncio.wait_for(asyncio.shield(self._written), CLOSE_TIMEOUT_S)
        except TimeoutError:
            self._fail(f"the recording storage did not finish writing within {CLOSE_TIMEOUT_S:g} s")
        return self.size

    def _fail(self, reason: str) -> None:
        """Record the first failure and tell the loop; from any thread."""
        with self._failure_lock:
            if self.failed_reason is not None:
                return
            self.failed_at = self._clock()
            self.failed_reason = reason
        self._call_on_loop(self._on_failure, reason)

    def _call_on_loop(self, callback: Callable[..., object], *args: object) -> None:
        # Always scheduled, even from the loop itself: the failure may be
        # found inside a broadcast, which must not see the room change.
        with contextlib.suppress(RuntimeError):  # the loop is gone: the process is ending
            self._loop.call_soon_threadsafe(callback, *args)

    # --- the writer thread ------------------------------------------------

    def _write_all(self) -> None:
        file = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Unbuffered: each write goes to the OS at once, so a crash of the
            # process loses at most the lines still queued.
            file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed below, on this thread
            more = True
            while more and self.failed_reason is None:
                batch, more = self._next_batch()
                if batch and self.failed_reason is None:
                    _write_fully(file, batch)
                    self.size += len(batch)
        except Exception as exc:  # noqa: BLE001 - a recording that cannot go on fails, whatever stopped it
            self._fail(describe(exc) if isinstance(exc, OSError) else f"the recording failed: {exc.__class__.__name__}")
            if file is not None:
                # Cut back to the last whole line written: a short write on a
                # full disk must not leave half a line for downloads to hit.
                with contextlib.suppress(OSError):
                    file.truncate(self.size)
        finally:
            if file is not None:
                try:
                    file.close()
                except OSError as exc:
                    self._fail(describe(exc))
            self._call_on_loop(_set_done, self._written)

    def _next_batch(self) -> tuple[bytes, bool]:
        """The next lines to write, waiting for one; and whether more may come."""
        line = self._lines.get()
        if line is None:
            return b"", False
        lines = [line]
        size = len(line)
        while size < BATCH_BYTES:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                return b"".join(lines), False
            lines.append(line)
            size += len(line)
        return b"".join(lines), True


def _write_fully(file: io.FileIO, data: bytes) -> None:
    # A raw file may take part of what it is given (a disk filling up does).
    view = memoryview(data)
    while view:
        written = file.write(view)
        if not written:
            raise OSError(errno.EIO, "the file took no bytes")
        view = view[written:]


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def recover(path: Path) -> tuple[int, int | None]:
    """Cut a file left by a crash back to its last whole line. Blocking: run
    it off the event loop.

    Returns its size and when it was last written (epoch ms), or (0, None).
    Reading it may raise OSError; cutting it back may not be possible (a
    read-only disk), which is no harm: downloads serve only `size` bytes.
    """
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return 0, None
    with file:
        stat = os.fstat(file.fileno())
        end = stat.st_size
        whole = 0
        # From the end backwards: only the tail can be cut off.
        position = end
        while position > 0:
            start = max(0, position - _READ_BACK)
            file.seek(start)
            block = file.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                whole = start + newline + 1
                break
            position = start
    if whole != end:
        with contextlib.suppress(OSError), open(path, "r+b") as writable:
            writable.truncate(whole)
    return whole, stat.st_mtime_ns // 1_000_000
