"""The chunked live list against a plain sorted list: same order, same pages,
and the same bytes as encoding the whole list, after any mix of adds,
removes and in-place changes, across chunk splits and empty chunks."""

from __future__ import annotations

import random

import msgspec
import pytest

from livesessions.domain.live import LiveSession
from livesessions.http.responses import encode
from livesessions.http.routes.live_sessions import LiveListings, LiveSessionList
from livesessions.stores.live_index import CHUNK, LiveIndex


def check(index: LiveIndex, model: dict[tuple[int, str], LiveSession], rng: random.Random) -> None:
    ordered = [model[place] for place in sorted(model)]
    assert len(index) == len(ordered)
    assert list(index) == ordered
    assert index.page(None, None) == ordered
    # What the route answers is exactly what encoding the whole list gives.
    answer = LiveListings().put("prj", 1, index.json())
    assert answer.body == encode(LiveSessionList(liveSessions=ordered))
    assert msgspec.json.decode(b"".join(index.json())) == msgspec.to_builtins(ordered)
    places = sorted(model)
    for _ in range(3):
        limit = rng.choice((1, 7, CHUNK, 3 * CHUNK, None))
        if places and rng.random() < 0.7:
            after = rng.choice(places)
            start = places.index(after) + 1
        else:
            # A place that is not in the list (a stale cursor) still pages on.
            after = (rng.randrange(-5, 5_000), "zzz-zzzz-zzz")
            start = sum(1 for place in places if place <= after)
        stop = len(places) if limit is None else start + limit
        assert index.page(after, limit) == [model[place] for place in places[start:stop]]


@pytest.mark.parametrize("seed", range(5))
def test_the_chunked_list_is_the_sorted_list(seed: int) -> None:
    rng = random.Random(seed)
    index, model = LiveIndex(), {}
    for step in range(3_000):
        roll = rng.random()
        # Grow past several chunk splits, then shrink to nothing, and back.
        growing = (step // 1_000) % 2 == 0
        if model and (roll < 0.3 or (not growing and roll < 0.7)):
            place = rng.choice(sorted(model))
            del model[place]
            index.remove(place)
        elif model and roll < 0.8:
            place = rng.choice(sorted(model))
            model[place].current_peer_count += 1
            index.changed(place)
        else:
            # Mostly new sessions (latest start), sometimes older ones.
            start = step * 10 if rng.random() < 0.8 else rng.randrange(step * 10 + 1)
            room = f"abc-defg-{rng.randrange(1000):03d}"
            if (start, room) in model:
                continue
            item = LiveSession(room, start, 1, rng.randrange(3), rng.randrange(3))
            model[(start, room)] = item
            index.add((start, room, item))
        if step % 50 == 0 or len(model) < 3:
            check(index, model, rng)
    check(index, model, rng)


def test_removing_what_is_not_listed_is_an_error() -> None:
    index = LiveIndex()
    index.add((1, "abc-defg-hij", LiveSession("abc-defg-hij", 1, 1, 0, 0)))
    with pytest.raises(KeyError):
        index.remove((2, "abc-defg-hij"))
    assert (
        b"".join(index.json())
        == b'[{"roomId":"abc-defg-hij","startTime":1,"currentPeerCount":1,"livestreamCount":0,"recordingCount":0}]'
    )
