"""The one cache every function uses: bounded, least recently used first out, entries
optionally kept only ``ttl`` seconds; thread-safe."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
_MISSING = object()


class Cache(Generic[K, V]):
    """At most ``size`` entries; with ``ttl``, an entry older than that is gone."""

    def __init__(self, size: int, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.size = max(1, size)
        self.ttl = ttl
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            found = self._entries.get(key, _MISSING)
            if found is _MISSING:
                return default
            stored, value = found  # type: ignore[misc]
            if self.ttl is not None and self.clock() - stored >= self.ttl:
                del self._entries[key]
                return default
            self._entries.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._entries[key] = (self.clock(), value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value

    def get_or(self, key: K, make: Callable[[], V]) -> V:
        """The entry, else ``make()`` (called without the lock held) kept and returned."""
        found = self.get(key, _MISSING)  # type: ignore[arg-type]
        return self.put(key, make()) if found is _MISSING else found  # type: ignore[return-value]

    def discard(self, key: K) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class Expiring(Generic[V]):
    """One value, made again once it is ``ttl`` seconds old (a Secret's settings, a
    ConfigMap's data): ``get_or(make)``."""

    def __init__(self, ttl: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cache: Cache[None, V] = Cache(1, ttl, clock)

    def get_or(self, make: Callable[[], V]) -> V:
        return self._cache.get_or(None, make)


class CachedMap:
    """A ConfigMap's non-empty string values, read again after ``ttl`` seconds.

    ``read()`` returns the data (``{}`` or ``None`` when the ConfigMap does not exist) and
    raises a typed error when the API server is in trouble (the caller's event is then
    retried)."""

    def __init__(self, read: Callable[[], Mapping[str, str] | None], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self._data: Expiring[dict[str, str]] = Expiring(ttl, clock)

    def __call__(self) -> dict[str, str]:
        return self._data.get_or(lambda: {
            str(k): str(v).strip() for k, v in (self.read() or {}).items()
            if isinstance(v, str) and v.strip()})

    def listed(self, key: str) -> list[str]:
        """``key``'s value as the entries it lists, separated by commas."""
        return [e.strip() for e in self().get(key, "").split(",") if e.strip()]
