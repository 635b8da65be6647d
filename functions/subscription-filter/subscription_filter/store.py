"""Every ClusterSubscription in memory, kept current by list + watch. (Over 400 lines on
purpose: one thread's whole life, from the list through the work a start leaves for later
to the watch, read top to bottom.)

One daemon thread lists (in pages), then watches from the list's resourceVersion,
resuming from the last version it saw (events and bookmarks) each time a watch
ends; a 410 Gone (as an HTTP status or as an ERROR event) makes it list again.
The store is ready after the first list. Each change rebuilds a ``Snapshot`` that
request threads read without locks (its index places a key's entries once, on the key's
first event: ``index.py``).

A start checks every subscription's spec but reads none of its filters
(``Compiler.load(..., compile_now=False)``), answers, then reads and compiles the filters
no event has yet and takes out the subscriptions with one that cannot be read or does not
compile. What goes on their statuses is the ``StatusWriter``'s (``status.py``).
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from kubernetes import watch as k8s_watch

from .conditions import condition_patch, ready_condition
from .index import Snapshot, build_snapshot
from .shared import logs, metrics
from .shared.kube import Gone, Kube, translate
from .shared.retry import backoff
from .status import StatusWriter, describe
from .subscriptions import (
    GROUP,
    PLURAL,
    VERSION,
    Compiler,
    Invalid,
    Loaded,
    Readiness,
    first_compile_error,
    metadata,
)

LIST_PAGE = 500
# Limit reports waiting to be written; more at once are dropped (and logged by the caller).
LIMIT_QUEUE = 256
MAX_BACKOFF = 30.0
# A watch that ends this soon without a single event, or a list whose watch at once says
# 410, is the server (or something between) refusing: wait before the next one.
QUICK_WATCH_SECONDS = 0.5
# Work a start leaves for later waits while a request is served, then until none has been
# for ``QUIET_SECONDS`` (a burst of events is answered first), but for that quiet at most
# ``YIELD_AT_MOST`` at a time (so it still gets done under a steady flow of events).
QUIET_SECONDS = 0.02
YIELD_AT_MOST = 0.5
_WRITE_META = ("name", "generation", "resourceVersion")


SUBSCRIPTIONS = metrics.gauge("kubeevent_subscriptions",
                              "ClusterSubscriptions known: ready, not_ready", ("state",))


class SubscriptionStore:
    def __init__(self, kube: Kube, compiler: Compiler, *, watch_timeout: int = 60,
                 retry_seconds: float = 1.0, write_status: bool = True,
                 list_page: int = LIST_PAGE, per_subscriber: int = 0,
                 schemas: Callable[[str, str], Mapping[str, Any] | None] | None = None
                 ) -> None:
        self.kube = kube
        self.per_subscriber = per_subscriber
        self.list_page = list_page
        self.compiler = compiler
        self.watch_timeout = watch_timeout
        self.retry_seconds = retry_seconds
        self.write_status = write_status
        self.resource_version: str | None = None
        self.events_seen = 0
        self._loaded: dict[str, Loaded] = {}
        self._snapshot = Snapshot()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: k8s_watch.Watch | None = None
        self._serving = 0  # requests served now: the start's compile waits for them
        self._served_at = float("-inf")  # when the last one ended (monotonic)
        self._serving_lock = threading.Lock()
        self.status = StatusWriter(
            kube, enabled=write_status, schemas=schemas,
            loaded=lambda name: self._loaded.get(name),
            readiness=lambda name: self._snapshot.readiness.get(name),
            idle=self._yield_to_requests)

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="subscription-watch",
                                        daemon=True)
        self._thread.start()
        self.status.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread: an open watch is cut off rather than waited for."""
        self._stop.set()
        thread = self._thread
        deadline = time.monotonic() + timeout
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            self._cut_watch()
            thread.join(0.05)
        self.status.stop(max(0.0, deadline - time.monotonic()))

    def report_limit(self, name: str, where: str, message: str) -> None:
        """Say on subscription ``name``'s status that its filter at ``where`` stopped at
        an evaluation limit; written in the background, once per generation."""
        sub = self._snapshot.subscriptions.get(name)
        self.status.report_limit(name, sub.generation if sub is not None else -1, where,
                                 message)

    @property
    def status_writes(self) -> int:
        return self.status.writes

    def _cut_watch(self) -> None:
        current = self._watch
        if current is None:
            return
        current.stop()
        shutdown = getattr(getattr(current, "_resp", None), "shutdown", None)
        if callable(shutdown):
            try:
                shutdown()
            except Exception as exc:  # best effort: the thread is a daemon anyway
                logs.debug("could not cut the watch off", error=str(exc))

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around a request: the work a start leaves for later (compiling, the
        FiltersCanMatch check) yields to it (``_yield_to_requests``)."""
        with self._serving_lock:
            self._serving += 1
        try:
            yield
        finally:
            with self._serving_lock:
                self._serving -= 1
                self._served_at = time.monotonic()

    def _yield_to_requests(self) -> None:
        """Wait while a request is served, and until none has been for ``QUIET_SECONDS``
        (at most ``YIELD_AT_MOST``), so that work in the background does not slow a
        start's first answers: it shares the interpreter with them."""
        quiet_by = time.monotonic() + YIELD_AT_MOST
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._serving and (now - self._served_at >= QUIET_SECONDS
                                      or now >= quiet_by):
                return
            time.sleep(0.005)

    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        failures = 0  # list/watch errors in a row
        refusals = 0  # watches ended at once, or expired right after a list, in a row
        while not self._stop.is_set():
            started = time.monotonic()
            events_before = self.events_seen
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch_once()
                failures = 0
                quick = time.monotonic() - started < QUICK_WATCH_SECONDS \
                    and self.events_seen == events_before
                refusals = refusals + 1 if quick else 0
                if quick and self._pause(refusals, "subscription watch ended at once"):
                    return
            except Exception as exc:  # keep watching whatever happens; log why
                if self._stop.is_set():
                    return
                if isinstance(exc, Gone):  # as an HTTP status or an ERROR event
                    logs.info("subscription watch expired; listing again", detail=str(exc))
                    self.resource_version = None
                    refusals += 1
                    if refusals > 1 and self._pause(refusals, "subscription watch expired "
                                                              "again right away"):
                        return
                    continue
                failures += 1
                if self._pause(failures, "subscription list/watch failed; retrying",
                               error=describe(exc), resource_version=self.resource_version):
                    return

    def _pause(self, times: int, message: str, **fields: Any) -> bool:
        """Wait ``retry_seconds`` doubled per time in a row (at most ``MAX_BACKOFF``), with
        jitter so many replicas do not come back together. True when stopped meanwhile."""
        wait = backoff(times, self.retry_seconds, MAX_BACKOFF, jitter=True)
        logs.warning(message, retry_in=round(wait, 2), times=times, **fields)
        return self._stop.wait(wait)

    def _relist(self) -> None:
        """List in pages, loading each page as it comes (what serves is the compiled form:
        the raw objects are not all held at once), serve, compile every filter (those an
        event has not compiled yet), then write the statuses."""
        with _collector_paused():
            pending = self._load_all()
        self._compile_all()
        while pending:
            meta, status, loaded = pending.popleft()
            self._sync_status({"metadata": dict(zip(_WRITE_META, meta, strict=True)),
                               "status": status or {}}, loaded)

    def _compile_all(self) -> None:
        """Read and compile the filters the list left for later: a subscription with one
        that cannot be read or does not compile is not used (``Ready=False``,
        ``InvalidCEL``), as when it was loaded alone. Each text compiles once; each
        distinct ``spec.subscriptions`` is checked once, each after waiting for requests
        (``_yield_to_requests``), so a start's first answers are not slowed by it."""
        checked: dict[int, Invalid | None] = {}
        failed: list[str] = []
        for name, item in list(self._loaded.items()):
            if self._stop.is_set():
                return
            sub = item.subscription
            if sub is None:
                continue
            key = id(sub.objects)
            if key not in checked:
                self._yield_to_requests()
                checked[key] = first_compile_error(sub.objects)
            problem = checked[key]
            if problem is not None:
                self._loaded[name] = Loaded(name, None, Readiness(
                    False, problem.reason, problem.message, item.readiness.generation),
                    item.created)
                failed.append(name)
        if failed:
            self._publish()
            for name in failed:
                _not_used(self._loaded[name])
            self.status.ready_due(failed)  # their copies may say Ready: written, read fresh

    def _load_all(self) -> deque[tuple[tuple[Any, ...], dict[str, Any] | None, Loaded]]:
        loaded: dict[str, Loaded] = {}
        # What a Ready write needs, as tuples (100,000 of them after an upgrade that changes
        # every Ready message): the metadata it is guarded by, the conditions, the result.
        pending: deque[tuple[tuple[Any, ...], dict[str, Any] | None, Loaded]] = deque()
        resource_version = ""
        for page in self._pages():
            for n, obj in enumerate(page.get("items") or []):
                if n % 32 == 0:
                    time.sleep(0)  # let the thread reading the next page have the GIL
                name = str(metadata(obj).get("name") or "") if isinstance(obj, dict) else ""
                if name:
                    loaded[name] = self.compiler.load(obj, compile_now=False)
                    if loaded[name].subscription is not None:
                        self.status.check_hints(obj)
                    if self.write_status and condition_patch(
                            obj, ready_condition(loaded[name].readiness), "") is not None:
                        # What the write needs, not the whole object.
                        written = metadata(obj)
                        pending.append((tuple(written.get(k) for k in _WRITE_META),
                                        _condition_status(obj) or None, loaded[name]))
            resource_version = str((page.get("metadata") or {}).get("resourceVersion")
                                   or resource_version)
        self._loaded = loaded
        ready = self._publish()
        self.resource_version = resource_version
        logs.info("subscriptions listed", total=len(self._loaded), ready=ready,
                  not_ready=len(self._loaded) - ready, resource_version=resource_version)
        for item in self._loaded.values():
            if item.subscription is None:
                _not_used(item)
        self._ready.set()
        return pending

    def _pages(self) -> Iterator[dict[str, Any]]:
        """The list's pages; the next one is fetched while the caller loads this one."""
        def fetch(token: str | None) -> dict[str, Any]:
            with translate(f"list {PLURAL}.{GROUP}"):
                return self.kube.custom().list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, limit=self.list_page, _continue=token,
                    _request_timeout=self.kube.timeout)

        with ThreadPoolExecutor(1, thread_name_prefix="subscription-list") as pool:
            future: Future[dict[str, Any]] | None = pool.submit(fetch, None)
            while future is not None:
                page = future.result()
                token = (page.get("metadata") or {}).get("continue")
                future = pool.submit(fetch, token) if token else None
                yield page

    def _watch_once(self) -> None:
        watcher = k8s_watch.Watch()
        self._watch = watcher
        connect = self.kube.timeout[0]
        try:
            stream = watcher.stream(
                self.kube.custom().list_cluster_custom_object, GROUP, VERSION, PLURAL,
                resource_version=self.resource_version, allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout,
                _request_timeout=(connect, self.watch_timeout + 15),
            )
            with translate(f"watch {PLURAL}.{GROUP}"):
                for event in stream:
                    if self._stop.is_set():
                        break
                    self._on_event(event)
        finally:
            watcher.stop()
            self._watch = None

    def _on_event(self, event: Mapping[str, Any]) -> None:
        self.events_seen += 1
        kind = event.get("type")
        obj = event.get("raw_object")
        if not isinstance(obj, dict):
            return
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(str(obj.get("message") or "410 Gone"))
            raise RuntimeError(f"watch error {obj.get('code')}: {obj.get('message')}")
        name = str(metadata(obj).get("name") or "")  # a BOOKMARK only moves the version on
        if kind == "DELETED" and name:
            if self._loaded.pop(name, None) is not None:
                self._publish()
                logs.info("subscription removed", subscription=name)
        elif kind in ("ADDED", "MODIFIED") and name:
            loaded = self.compiler.load(obj)
            if self._loaded.get(name) != loaded:
                self._loaded[name] = loaded
                self._publish()
                if loaded.subscription is not None:
                    logs.info("subscription in use", subscription=name,
                              subscriber=loaded.subscription.subscriber.name,
                              generation=loaded.readiness.generation)
                else:
                    _not_used(loaded)
            self._sync_status(obj, loaded)
            if loaded.subscription is not None:
                self.status.check_hints(obj)
        rv = str(metadata(obj).get("resourceVersion") or "")
        if rv:
            self.resource_version = rv

    def _publish(self) -> int:
        """A new snapshot of ``_loaded``; how many of its subscriptions are ready."""
        before = self._snapshot.capped
        with _collector_paused():
            self._snapshot = build_snapshot(self._loaded.values(), self.per_subscriber)
        changed = before ^ self._snapshot.capped
        if changed and self.write_status:
            self.status.ready_due(sorted(changed))
            logs.info("subscriptions over the per-subscriber cap changed",
                      capped=len(self._snapshot.capped), changed=len(changed),
                      per_subscriber=self.per_subscriber)
        ready = sum(1 for r in self._snapshot.readiness.values() if r.ready)
        SUBSCRIPTIONS.labels("ready").set(ready)
        SUBSCRIPTIONS.labels("not_ready").set(len(self._snapshot.readiness) - ready)
        return ready

    # ------------------------------------------------------------------ status

    def _sync_status(self, obj: Mapping[str, Any], loaded: Loaded) -> None:
        """Write ``loaded``'s Ready condition when ``obj`` says otherwise (on a conflict,
        the watch brings the newer copy)."""
        if not self.write_status or self._stop.is_set():
            return
        readiness = self._snapshot.readiness.get(loaded.name, loaded.readiness)
        try:
            self.status.write(obj, ready_condition(readiness))
        except Exception as exc:  # one object's status must never stop the watch
            logs.warning("could not write subscription status", subscription=loaded.name,
                         error=describe(exc))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cycle collector off while a big, cycle-free structure is built (its passes would
    walk everything built so far: most of a 100,000 list's time), and what was built kept
    out of later passes (``gc.freeze``: a pass over millions of objects stalls requests).
    Earlier cyclic garbage is collected first, not frozen with it. Reference counting
    still frees what is dropped, a replaced snapshot included."""
    outermost = gc.isenabled()
    if outermost:
        gc.collect()
        gc.disable()
    try:
        yield
    finally:
        if outermost:
            gc.freeze()
            gc.enable()


def _condition_status(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Of the object's status, what a condition's write reads (not the notifications)."""
    status = obj.get("status")
    if not isinstance(status, Mapping):
        return {}
    return {k: status[k] for k in ("conditions", "observedGeneration") if k in status}


def _not_used(loaded: Loaded) -> None:
    logs.warning("subscription not used", subscription=loaded.name,
                 reason=loaded.readiness.reason, detail=loaded.readiness.message)
