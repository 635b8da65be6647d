"""At most one run of a periodic job at a time, across replicas, and one per interval.

A ``coordination.k8s.io/v1`` Lease in the API server: ``acquireTime`` is when the last run
started, ``holderIdentity`` is set while one runs (for at most ``leaseDurationSeconds``,
after which a crashed holder no longer counts). Taking it is a create, or a replace guarded
by the Lease's resourceVersion, so two replicas never both win.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from .kube import Conflict, Kube
from .times import micro_text, parse_micro_time

API_VERSION, KIND = "coordination.k8s.io/v1", "Lease"


class RunLease:
    def __init__(self, kube: Kube, namespace: str, name: str, *, interval: float,
                 duration: int = 600, clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.interval = interval
        self.duration = duration
        self.clock = clock
        self.identity = f"{socket.gethostname()}/{os.getpid()}"

    def acquire(self) -> str | None:
        """``None``: this process may run now (and holds the Lease); else why not."""
        now = self.clock()
        spec = {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                "acquireTime": micro_text(now), "renewTime": micro_text(now)}
        existing = self.kube.get(API_VERSION, KIND, self.name, self.namespace)
        try:
            if existing is None:
                self.kube.write("create", {
                    "apiVersion": API_VERSION, "kind": KIND, "spec": spec,
                    "metadata": {"name": self.name, "namespace": self.namespace}})
                return None
            held = existing.get("spec") or {}
            renewed = parse_micro_time(held.get("renewTime"))
            started = parse_micro_time(held.get("acquireTime"))
            duration = float(held.get("leaseDurationSeconds") or self.duration)
            if held.get("holderIdentity") and renewed is not None and now < renewed + duration:
                return f"a run is under way ({held['holderIdentity']})"
            if started is not None and now < started + self.interval:
                return f"the last run started {now - started:.0f} s ago (interval " \
                       f"{self.interval:g} s)"
            self.kube.write("replace", {**existing, "spec": {**held, **spec}})
            return None
        except Conflict:
            return "another replica took it first"

    def release(self) -> None:
        """Clear the holder (the start time stays: the interval counts from it)."""
        existing = self.kube.get(API_VERSION, KIND, self.name, self.namespace)
        if existing is None or (existing.get("spec") or {}).get("holderIdentity") \
                != self.identity:
            return
        spec = {k: v for k, v in existing["spec"].items() if k != "holderIdentity"}
        spec["renewTime"] = micro_text(self.clock())
        try:
            self.kube.write("replace", {**existing, "spec": spec})
        except Conflict:  # taken over after our duration ran out: theirs now
            pass
