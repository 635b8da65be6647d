"""The filter's writes on ClusterSubscription statuses, off the request path, by one
thread: ``Ready`` (from the listed or watched copy, or read fresh when a per-subscriber cap
or a filter found not to compile changed it), ``FilterEvaluated`` (a filter stopped at an
evaluation limit, reported by request threads, once per generation, place and message) and
``FiltersCanMatch`` (``reach``: worked out from the rules in memory, the object read only
when there is something to write). Each is a merge patch guarded by the copy's
resourceVersion: a copy that is no longer current is refused, and the watch brings the
newer one (or the write reads it again)."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Mapping
from typing import Any

from . import reach
from .conditions import condition_patch, conditions_of, limit_condition, ready_condition
from .shared import logs
from .shared.cache import Cache
from .shared.errors import FunctionError
from .shared.kube import Kube, NotFound
from .shared.times import now_text
from .subscriptions import GROUP, KIND, VERSION, Loaded, ObjectRule, Readiness, metadata

# Limit reports waiting to be written; more at once are dropped (and logged by the caller).
LIMIT_QUEUE = 256


class StatusWriter:
    def __init__(self, kube: Kube, *, enabled: bool,
                 schemas: Callable[[str, str], Mapping[str, Any] | None] | None,
                 loaded: Callable[[str], Loaded | None],
                 readiness: Callable[[str], Readiness | None],
                 idle: Callable[[], None] = lambda: None) -> None:
        self.kube = kube
        self.enabled = enabled
        # The kinds' schemas for FiltersCanMatch (None: paths not checked).
        self.schemas = schemas or (lambda api_version, kind: None)
        self._loaded = loaded  # a subscription as the store loaded it
        self._readiness = readiness  # its Ready as the snapshot says it
        self._idle = idle  # returns when requests leave room (``store._yield_to_requests``)
        self.writes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._limits: queue.Queue[tuple[str, str, str] | None] = queue.Queue(maxsize=LIMIT_QUEUE)
        self._limits_reported: set[tuple[str, int, str, str]] = set()
        self._limit_lock = threading.Lock()
        # Subscriptions whose Ready changed after they were listed: written, read fresh.
        self._due: dict[str, None] = {}
        self._due_lock = threading.Lock()
        # name → whether its copy said FiltersCanMatch (then a sound one is written True).
        self._hints_due: dict[str, bool] = {}
        # ``id`` of a spec's rules → (the rules, their hints): thousands share one spec.
        self._hints_of: Cache[int, tuple[Any, list[reach.Hint]]] = Cache(4096)

    def start(self) -> None:
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="subscription-status",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """A write under way is finished, not cut off."""
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._limits.put_nowait(None)  # wake it from its wait
            self._thread.join(timeout)

    def ready_due(self, names: list[str]) -> None:
        """Write these subscriptions' Ready conditions (read fresh first)."""
        with self._due_lock:
            self._due.update(dict.fromkeys(names))

    def report_limit(self, name: str, generation: int, where: str, message: str) -> None:
        """Say on subscription ``name``'s status that its filter at ``where`` stopped at
        an evaluation limit; written in the background, once per generation."""
        if not self.enabled:
            return
        key = (name, generation, where, message)
        with self._limit_lock:  # only reporters put: a queue not full here takes one more
            if key in self._limits_reported or self._limits.full():
                return
            self._limits_reported.add(key)
            self._limits.put_nowait((name, where, message))

    def _run(self) -> None:
        """Writes, read fresh: the limits reported, and the Ready conditions a cap changed."""
        while not self._stop.is_set():
            with self._due_lock:
                due = next(iter(self._due), None)
                if due is not None:
                    del self._due[due]
            if due is not None:
                self._write_fresh(due, lambda obj, name=due: ready_condition(
                    self._readiness(name)) if self._readiness(name) is not None else None)
                continue
            try:
                report = self._limits.get(timeout=0.5 if not self._hints_due else 0.0)
            except queue.Empty:
                report = ()
            if report is None:  # stop() woke it
                continue
            if not report:
                with self._due_lock:
                    hinted = next(iter(self._hints_due), None)
                    said = self._hints_due.pop(hinted) if hinted is not None else False
                if hinted is not None:
                    self._idle()  # working hints out is the heavy part: requests first
                    if said or self._hints_found(hinted):
                        self._write_fresh(hinted, self._hints_condition)  # read to write
                continue
            name, where, message = report
            self._write_fresh(name, lambda obj, where=where, message=message: limit_condition(
                where, message, metadata(obj).get("generation")))

    def _hints_condition(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """``FiltersCanMatch`` for a subscription in use (one not used says why already)."""
        loaded = self._loaded(str(metadata(obj).get("name") or ""))
        if loaded is None or loaded.subscription is None:
            return None
        try:
            found = reach.hints(obj, self.schemas)
        except Exception as exc:  # a hint is a help: never a reason to stop
            logs.warning("could not check the filters for mistakes", error=describe(exc),
                         subscription=loaded.name)
            return None
        said = any(c.get("type") == reach.CONDITION for c in conditions_of(obj))
        if not found and not said:
            return None  # nothing to say: a sound subscription carries no extra condition
        if found:
            logs.info("a filter can never match", subscription=loaded.name,
                      hints=len(found), first=found[0].text[:300])
        return reach.condition(found, metadata(obj).get("generation"))

    def check_hints(self, obj: Mapping[str, Any]) -> None:
        """Queue the filters-that-cannot-match check unless the object says it for its
        generation already (a sound one says nothing: checked again after a restart, from
        the rules in memory, and read from the API server only when there is something to
        write)."""
        if not self.enabled:
            return
        generation = metadata(obj).get("generation")
        said = False
        for condition in conditions_of(obj):
            if condition.get("type") == reach.CONDITION:
                if condition.get("observedGeneration") == generation:
                    return
                said = True
        name = str(metadata(obj).get("name") or "")
        if name:
            with self._due_lock:
                self._hints_due[name] = said

    def _hints_found(self, name: str) -> bool:
        """Whether subscription ``name``, as loaded, has a filter that cannot match: from its
        rules (what ``reach.hints`` reads of the object), once per distinct spec."""
        loaded = self._loaded(name)
        if loaded is None or loaded.subscription is None:
            return False
        objects = loaded.subscription.objects
        known = self._hints_of.get(id(objects))
        if known is None or known[0] is not objects:
            try:
                known = (objects, reach.hints({"spec": _rules_spec(objects)}, self.schemas))
            except Exception as exc:  # a hint is a help: never a reason to stop
                logs.warning("could not check the filters for mistakes", error=describe(exc),
                             subscription=name)
                known = (objects, [])
            self._hints_of.put(id(objects), known)
        return bool(known[1])

    def _write_fresh(self, name: str,
                     condition: Callable[[Mapping[str, Any]], dict[str, Any] | None]) -> None:
        for _attempt in range(3):  # a conflict: someone wrote meanwhile, read again
            if self._stop.is_set():
                return
            try:
                obj = self.kube.get(f"{GROUP}/{VERSION}", KIND, name)
                wanted = None if obj is None else condition(obj)
                if obj is None or wanted is None or self.write(obj, wanted):
                    return
            except Exception as exc:  # one status must never stop the others
                if not self._stop.is_set():
                    logs.warning("could not write subscription status", subscription=name,
                                 error=describe(exc))
                return

    def write(self, obj: Mapping[str, Any], condition: dict[str, Any]) -> bool:
        """Set ``condition`` on the status of ``obj`` unless it says so already. False on a
        conflict: the object changed since ``obj`` was read."""
        name = str(metadata(obj).get("name"))
        patch = condition_patch(obj, condition, now_text())
        if patch is None:
            return True
        written = self.kube.merge_status(f"{GROUP}/{VERSION}", KIND, name, patch)
        if written is None:
            raise NotFound(f"clustersubscription {name} is gone")
        if not written:
            return False
        self.writes += 1
        logs.info("subscription status written", subscription=name, condition=condition["type"],
                  status=condition["status"], reason=condition["reason"])
        return True


def _rules_spec(objects: tuple[ObjectRule, ...]) -> dict[str, Any]:
    """``spec.subscriptions`` as far as ``reach.hints`` reads it, from a subscription in
    use (every entry of it valid, so in the order written)."""
    return {"subscriptions": [
        {"object": {"kind": o.written_kind, "apiVersion": o.api_version},
         "events": [{"type": r.type, "filter": {"cel": r.cel_source}} for r in o.events]}
        for o in objects]}


def describe(exc: BaseException) -> str:
    if isinstance(exc, FunctionError):
        return exc.reason
    return f"{type(exc).__name__}: {exc}"[:300]
