"""Role defaults and per-token overrides of peer permissions."""

from __future__ import annotations

from livesessions.domain.permissions import ROLE_PERMISSIONS, resolve_permissions


def test_resolve_permissions_defaults_to_speaker() -> None:
    assert resolve_permissions(None, None) == ROLE_PERMISSIONS["speaker"]
    assert resolve_permissions("guest", {"canSendData": True})["canSendData"] is True
    # the role table itself is never changed by an override
    assert ROLE_PERMISSIONS["guest"]["canSendData"] is False
