"""Prometheus metrics, served at ``GET /metrics`` on each function's own port.

One registry (with the process collector) per copy of this module: one per function.
Every function counts its CloudEvent requests by status and times them; each function
adds its own families (``counter``, ``histogram``, ``gauge`` here make them once, so a
module imported twice does not register twice). No label ever holds a user or object
name: every label value comes from a small fixed set. Under a server with several worker
processes set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode); the
functions run one worker by default.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

# This copy's registry: each function carries its own copy of shared/, and where several
# share a process (the tests, the CLI) their families must not collide.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
_made: dict[str, Any] = {}
_lock = threading.Lock()
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


def _once(kind: type, name: str, documentation: str, labels: Sequence[str],
          **kwargs: Any) -> Any:
    with _lock:
        found = _made.get(name)
        if found is None:
            found = _made[name] = kind(name, documentation, list(labels), registry=REGISTRY,
                                       **kwargs)
        return found


def counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    return _once(Counter, name, documentation, labels)


def gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    return _once(Gauge, name, documentation, labels)


def histogram(name: str, documentation: str, labels: Sequence[str] = (),
              buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
    return _once(Histogram, name, documentation, labels, buckets=tuple(buckets))


REQUESTS = counter("kubeevent_requests", "CloudEvent requests answered, by status",
                   ("function", "status"))
DURATION = histogram("kubeevent_request_duration_seconds",
                     "Time from a CloudEvent request's body to its answer", ("function",))


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type."""
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
