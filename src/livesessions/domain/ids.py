"""Identifiers handed to clients. All random, never derived from anything secret."""

from __future__ import annotations

import os
import re
import string

_LOWER = string.ascii_lowercase
_ALNUM = string.ascii_lowercase + string.digits

ROOM_ID_PATTERN = re.compile(r"^[a-z]{3}-[a-z]{4}-[a-z]{3}$")


def random_text(alphabet: str, length: int) -> str:
    """`length` characters drawn uniformly from `alphabet` (at most 256),
    from the OS's secure source: one read for them all, where one
    `secrets.choice` per character made one system call each."""
    size = len(alphabet)
    # Bytes at or past the largest multiple of `size` are dropped, so every
    # character is as likely as any other (no modulo bias).
    limit = 256 - 256 % size
    picked: list[str] = []
    while len(picked) < length:
        for byte in os.urandom(length + length // 2 + 4):
            if byte < limit:
                picked.append(alphabet[byte % size])
                if len(picked) == length:
                    break
    return "".join(picked)


def new_room_id() -> str:
    """A Huddle01-style room id: ``abc-defg-hij`` (26**10 possibilities)."""
    letters = random_text(_LOWER, 10)
    return f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"


def is_room_id(value: str) -> bool:
    return ROOM_ID_PATTERN.match(value) is not None


def _random(prefix: str, length: int) -> str:
    return prefix + random_text(_ALNUM, length)


SESSION_ID_PREFIX = "ses_"
PEER_ID_PREFIX = "peerId-"


def new_session_id() -> str:
    return _random(SESSION_ID_PREFIX, 20)


def new_peer_id() -> str:
    return _random(PEER_ID_PREFIX, 16)


def new_project_id() -> str:
    return _random("prj_", 16)
