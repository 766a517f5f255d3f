"""Random identifiers: the right shape, every character of the alphabet
equally likely (no modulo bias), and no two alike."""

from __future__ import annotations

import collections
import string

import pytest

from livesessions.domain.events import new_event_id
from livesessions.domain.ids import is_room_id, new_peer_id, new_room_id, new_session_id, random_text


@pytest.mark.parametrize("alphabet", [string.ascii_lowercase, string.ascii_lowercase + string.digits, "ab", "xyz"])
def test_characters_are_drawn_evenly_from_the_alphabet(alphabet: str) -> None:
    draws = 200_000
    counts = collections.Counter(random_text(alphabet, draws))
    assert set(counts) == set(alphabet)
    expected = draws / len(alphabet)
    chi_square = sum((counts[c] - expected) ** 2 / expected for c in alphabet)
    # 36 characters, 35 degrees of freedom: 80 is far past p = 0.0001. A
    # plain `byte % 36` would favour the first 4 characters by 1/7 and fail.
    assert chi_square < 80, counts


@pytest.mark.parametrize("length", [0, 1, 10, 24, 1000])
def test_the_length_asked_for(length: int) -> None:
    assert len(random_text(string.ascii_lowercase, length)) == length


def test_identifiers_have_their_shapes_and_do_not_repeat() -> None:
    rooms = {new_room_id() for _ in range(5000)}
    assert len(rooms) == 5000 and all(is_room_id(room) for room in rooms)
    assert all(s.startswith("ses_") and len(s) == 24 for s in {new_session_id() for _ in range(100)})
    assert all(p.startswith("peerId-") and len(p) == 23 for p in {new_peer_id() for _ in range(100)})
    events = {new_event_id() for _ in range(5000)}
    assert len(events) == 5000 and all(e.startswith("evt_") and len(e) == 28 for e in events)
