"""Logging: application events with their context, as text or JSON lines.

Events are logged as `log.info("session started", extra=context(room=…))`;
the context (ids, reasons — never secrets) is appended to the text line as
key=value pairs, or becomes fields of the JSON object.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error")

_CONTEXT = "livesessions_context"
# Bearer secrets that could reach a log line through a URL (peer tokens in
# /ws?token=…, download signatures) are cut out before anything is written.
_SECRET = re.compile(r"((?:token|signature)=)[^&\s\"']+")


def context(**fields: Any) -> dict[str, Any]:
    """`extra=` for a log call: the event's context."""
    return {_CONTEXT: fields}


def redact(text: str) -> str:
    return _SECRET.sub(r"\1…", text)


class _RedactingFormatter(logging.Formatter):
    def message(self, record: logging.LogRecord) -> str:
        return redact(record.getMessage())


class TextFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, _CONTEXT, None)
        suffix = "".join(f" {k}={v}" for k, v in fields.items() if v is not None) if fields else ""
        line = f"{record.levelname}: {self.message(record)}{suffix}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JSONFormatter(_RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.message(record),
        }
        fields = getattr(record, _CONTEXT, None)
        if fields:
            entry.update((k, v) for k, v in fields.items() if v is not None and k not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "info", fmt: LogFormat = "text", access_log: bool = False) -> None:
    """Send every logger's records to stderr in the chosen format.

    The service's own loggers take `level`. uvicorn's take it only at debug:
    at info it would log every WebSocket connection opening and closing,
    which is noise on the hot path (the service logs what matters itself)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("livesessions").setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers[:] = []
        server_logger.propagate = True
        server_logger.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
