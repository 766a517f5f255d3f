"""The OpenAPI 3.1 document at /openapi.json (filled in below)."""

from __future__ import annotations

from typing import Any


def openapi_document() -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "livesessions", "version": "0.1.0"}, "paths": {}}
