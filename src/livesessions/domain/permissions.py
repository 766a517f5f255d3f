"""Peer roles and the permissions each carries by default (Huddle01's defaults)."""

from __future__ import annotations

from typing import Any

ROLES = ("host", "coHost", "speaker", "listener", "guest", "bot")

# Recorders and agents join as bots: they never count as peers of a session.
BOT_ROLE = "bot"

_ALL_SOURCES = {"cam": True, "mic": True, "screen": True}
_NO_SOURCES = {"cam": False, "mic": False, "screen": False}

_SPEAKER: dict[str, Any] = {
    "admin": False,
    "canConsume": True,
    "canProduce": True,
    "canProduceSources": _ALL_SOURCES,
    "canSendData": True,
    "canRecvData": True,
    "canUpdateMetadata": True,
}

ROLE_PERMISSIONS: dict[str, dict[str, Any]] = {
    "host": {**_SPEAKER, "admin": True},
    "coHost": {**_SPEAKER, "admin": True},
    "speaker": _SPEAKER,
    "listener": {**_SPEAKER, "canProduce": False, "canProduceSources": _NO_SOURCES},
    "guest": {
        **_SPEAKER,
        "canProduce": False,
        "canProduceSources": _NO_SOURCES,
        "canSendData": False,
        "canUpdateMetadata": False,
    },
    # As Huddle01's SDK has it: a bot consumes media and nothing else, so an
    # invisible member cannot message or impersonate anyone unless its
    # token's permissions say so.
    "bot": {
        **_SPEAKER,
        "canProduce": False,
        "canProduceSources": _NO_SOURCES,
        "canSendData": False,
        "canRecvData": False,
        "canUpdateMetadata": False,
    },
}

# A token with no role gets the permissions of a speaker, as Huddle01 does.
DEFAULT_PERMISSIONS = _SPEAKER


def resolve_permissions(role: str | None, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The role's defaults with any explicitly given permission laid over them."""
    base = ROLE_PERMISSIONS.get(role or "", DEFAULT_PERMISSIONS)
    merged = {**base, "canProduceSources": dict(base["canProduceSources"])}
    for key, value in (overrides or {}).items():
        if key == "canProduceSources":
            merged["canProduceSources"].update(value)
        else:
            merged[key] = value
    return merged
