"""A small mapping read from the API server and kept for a while."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping


class CachedMap:
    """A ConfigMap's non-empty string values, read again after ``ttl`` seconds.

    ``read()`` returns the data (``{}`` or ``None`` when the ConfigMap does not exist) and
    raises a typed error when the API server is in trouble (the caller's event is then
    retried)."""

    def __init__(self, read: Callable[[], Mapping[str, str] | None], ttl: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._data: tuple[float, dict[str, str]] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> dict[str, str]:
        with self._lock:
            if self._data is not None and self.clock() - self._data[0] < self.ttl:
                return self._data[1]
        data = {str(k): str(v).strip() for k, v in (self.read() or {}).items()
                if isinstance(v, str) and v.strip()}
        with self._lock:
            self._data = (self.clock(), data)
        return data
