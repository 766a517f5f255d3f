"""Counting the peers connected at each instant, against the definition."""

from __future__ import annotations

import random

import pytest

from livesessions.http.routes.history import peers_at


def by_definition(stints: list[tuple[int, int | None]], at: int) -> int:
    return sum(1 for joined, left in stints if joined <= at and (left is None or left > at))


@pytest.mark.parametrize("seed", range(20))
def test_counts_match_the_definition(seed: int) -> None:
    rng = random.Random(seed)
    stints: list[tuple[int, int | None]] = []
    for _ in range(rng.randrange(0, 300)):
        joined = rng.randrange(0, 100)
        # Open, zero-length, and ordinary stints; times that fall on instants.
        left = rng.choice((None, joined, joined + rng.randrange(0, 50)))
        stints.append((joined, left))
    instants = sorted({rng.randrange(-5, 160) for _ in range(61)} | {0, 50, 100})
    assert peers_at(stints, instants) == [by_definition(stints, at) for at in instants]


def test_a_peer_that_leaves_at_an_instant_is_not_counted_there() -> None:
    assert peers_at([(10, 20), (20, None), (5, 10)], [9, 10, 19, 20, 21]) == [1, 1, 1, 1, 1]
    assert peers_at([(10, 20)], [20]) == [0]
