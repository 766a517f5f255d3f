"""Responses: status, headers and bytes, sent in two ASGI messages (or, for a
stream, as its chunks are produced)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
# One encoder for every answer: msgspec Structs, lists and dicts of them.
encode = msgspec.json.Encoder().encode


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(self, status: int, body: bytes, headers: Headers | None = None, content_type: bytes = JSON) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type

    async def send(self, send: Send) -> None:
        if self.status == 204:  # no content: no content headers either
            headers = []
        else:
            headers = [(b"content-type", self.content_type), (b"content-length", str(len(self.body)).encode())]
        if self.headers:
            headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, value: object, headers: Headers | None = None) -> Response:
    return Response(status, encode(value), headers)


NO_CONTENT = Response(204, b"")


class StreamingResponse(Response):
    """A body sent as it is produced; stops producing when the client goes away."""

    __slots__ = ("_chunks", "_receive")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        receive: Receive,
        content_type: bytes,
        headers: Headers | None = None,
        status: int = 200,
    ) -> None:
        super().__init__(status, b"", headers, content_type)
        self._chunks = chunks
        self._receive = receive

    async def send(self, send: Send) -> None:
        headers = [(b"content-type", self.content_type), *(self.headers or [])]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        gone = asyncio.ensure_future(self._until_disconnect())
        try:
            while True:
                step = asyncio.ensure_future(anext(self._chunks))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _until_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


class Out(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every JSON body the service answers with. Closed: its schema
    says that no field but these is ever sent. No field has a default but
    msgspec.UNSET (left out of the answer), so every other field is always
    there and the schema says so."""
