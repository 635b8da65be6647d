"""Why a subscription does or does not match an event, check by check, for ``simulate``
and ``explain``: the same checks in the same order as the filter's own decision
(the index's object, namespace and event type, ``candidates``' exact attributes, then
``Scope.decide``'s CEL, evaluated by the filter's own runner). Only the CLI carries
this; tests hold it equal to the filter's ``match``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .bridge import celengine, index

# What an entry is checked for, in order (``cel-error`` is the ``cel`` stage failing).
STAGES = ("object", "namespace", "type", "exact", "cel")


class Check(NamedTuple):  # a tuple: made for every candidate of every event
    """One check of an entry against the event. ``name``: ``ready``, ``object``,
    ``namespace``, ``type``, ``exact``, ``cel`` or ``cel-error``; ``where``: what it
    checks in the ClusterSubscription; ``message``: why it failed; ``detail``: the
    Ready reason (``ready``) or the engine's error (``cel-error``)."""

    name: str
    passed: bool
    where: str = ""
    message: str = ""
    detail: str = ""

    @property
    def stage(self) -> int:
        """How far an entry got when this check is its last one (a pass counts as past
        every stage, ``ready`` as before them)."""
        if self.passed:
            return len(STAGES)
        name = "cel" if self.name == "cel-error" else self.name
        return STAGES.index(name) if name in STAGES else -1


def _kind(kind: str, group: str) -> str:
    return kind + (f" ({group})" if group else "")


def subscribes_to(obj: Any) -> str:
    """An entry's object as written: ``Pod (apps) in namespace devops``, ``Pod in every
    namespace``."""
    group = obj.api_version.rpartition("/")[0]
    return _kind(obj.written_kind or obj.kind, group) + (
        f" in namespace {obj.namespace}" if obj.namespace else " in every namespace")


def _shown(rule: Any) -> str:
    """The filter as written, on one line."""
    return " ".join(rule.cel_source.split())


def evaluate(sub: Any, obj: Any, rule: Any, scope: Any) -> tuple[Check, ...]:
    """The checks of one entry (``obj`` and one of its ``rule``), in order, up to the
    first that fails: the entry matches when the last one passed."""
    event = scope.enriched
    done: list[Check] = []
    at = f"{obj.where}.object"
    if (obj.group, obj.kind) != (event.group.lower(), event.kind.lower()):
        return (Check("object", False, at, f"the event is about {_kind(event.kind, event.group)}"
                      f"; this entry subscribes to {subscribes_to(obj)}"),)
    done.append(Check("object", True, at))
    if obj.namespace not in ("", event.namespace):
        done.append(Check("namespace", False, f"{at}.namespace",
                          f"the object is in namespace {event.namespace or '(cluster scope)'}"
                          f"; this entry subscribes to namespace {obj.namespace}"))
        return tuple(done)
    done.append(Check("namespace", True, f"{at}.namespace"))
    if rule.type != event.type:
        done.append(Check("type", False, rule.where, f"event type {event.type} is not subscribed"))
        return tuple(done)
    done.append(Check("type", True, rule.where))
    attrs = event.attributes
    for name, want in rule.exact:
        at = f"{rule.where}.filter.exact.{name}"
        if name in attrs and attrs[name] == want:
            done.append(Check("exact", True, at))
            continue
        got = f"got {attrs[name]!r}" if name in attrs else "the event has no such attribute"
        done.append(Check("exact", False, at, f"exact filter {name}: expected {want!r}, {got}"))
        return tuple(done)
    if rule.cel is not None:
        at = f"{rule.where}.filter.cel"
        decided = scope.decide(index.Candidate(sub, rule))  # as the filter evaluates it
        if isinstance(decided, celengine.CelEvalError):
            said = ("CEL evaluation stopped at a limit (not notified; shown on the "
                    "subscription's status)" if isinstance(decided, celengine.CelLimitError)
                    else "CEL error (treated as no match)")
            done.append(Check("cel-error", False, at, f"{said}: {decided.message}; "
                              f"expression: {_shown(rule)}", decided.message))
            return tuple(done)
        done.append(Check("cel", decided, at,
                          "" if decided else f"CEL returned false: {_shown(rule)}"))
    return tuple(done)


@dataclass(frozen=True)
class Trial:
    """One entry (``spec.subscriptions[i].events[j]`` at ``where``) and its checks."""

    where: str
    checks: tuple[Check, ...]

    @property
    def matched(self) -> bool:
        return self.checks[-1].passed

    @property
    def last(self) -> Check:
        """The failed check, or the last one passed when the entry matches."""
        return self.checks[-1]


@dataclass(frozen=True)
class Explanation:
    """Why one subscription does or does not match an event: ``ready`` (whether the
    filter uses it at all), then every entry's trial in the order written."""

    subscription: str
    ready: Check
    trials: tuple[Trial, ...] = ()

    @property
    def matched(self) -> bool:
        return self.ready.passed and any(t.matched for t in self.trials)

    @property
    def deciding(self) -> Trial | None:
        """The first entry that matches, else the first that got furthest."""
        if not self.trials:
            return None
        return max(self.trials, key=lambda t: t.last.stage)

    @property
    def failed(self) -> Check | None:
        """The check that keeps the subscription from matching (``None`` if it matches)."""
        if not self.ready.passed:
            return self.ready
        deciding = self.deciding
        return None if deciding is None or deciding.matched else deciding.last


def explain(loaded: Any, scope: Any) -> Explanation:
    """Every entry of ``loaded`` evaluated as ``match`` evaluates a candidate."""
    readiness = loaded.readiness
    sub = loaded.subscription
    if sub is None:
        return Explanation(loaded.name, Check(
            "ready", False, "", f"not used ({readiness.reason}): {readiness.message}",
            readiness.reason))
    trials = tuple(Trial(rule.where, evaluate(sub, obj, rule, scope))
                   for obj in sub.objects for rule in obj.events)
    return Explanation(loaded.name, Check("ready", True, detail=readiness.reason), trials)
