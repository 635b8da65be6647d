"""shared/cache.py: the one cache every function uses."""

from __future__ import annotations

from shared.cache import Cache, CachedMap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: Cache[str, int] = Cache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_an_entry_older_than_its_ttl_is_gone() -> None:
    clock = Clock()
    cache: Cache[str, int] = Cache(10, ttl=30, clock=clock)
    cache.put("a", 1)
    clock.now = 29.9
    assert cache.get("a") == 1
    clock.now = 30.0
    assert cache.get("a", -1) == -1
    assert len(cache) == 0


def test_get_or_makes_a_value_once_and_keeps_falsy_ones() -> None:
    made: list[str] = []
    cache: Cache[str, int | None] = Cache(10)

    def make() -> None:
        made.append("x")
        return None

    assert cache.get_or("x", make) is None
    assert cache.get_or("x", make) is None
    assert made == ["x"]
    cache.discard("x")
    cache.get_or("x", make)
    assert made == ["x", "x"]


def test_a_cached_map_is_read_again_after_its_ttl() -> None:
    clock = Clock()
    reads: list[int] = []

    def read() -> dict[str, str]:
        reads.append(1)
        return {"alice": " a, b ", "bob": "", "carol": 3}  # type: ignore[dict-item]

    directory = CachedMap(read, ttl=10, clock=clock)
    assert directory() == {"alice": "a, b"}  # blanks and non-text dropped
    clock.now = 9
    directory()
    assert len(reads) == 1
    clock.now = 10
    directory()
    assert len(reads) == 2
