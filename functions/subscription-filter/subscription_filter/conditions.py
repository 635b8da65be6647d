"""The conditions the filter writes on a ClusterSubscription's status: ``Ready`` (used, or
the first reason it is not), ``FilterEvaluated`` (a filter stopped at an evaluation
limit), as merge patches guarded by the copy's resourceVersion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .subscriptions import CONDITION, LIMIT_CONDITION, LIMIT_REASON, Readiness, metadata


def ready_condition(readiness: Readiness) -> dict[str, Any]:
    return _condition(CONDITION, "True" if readiness.ready else "False", readiness.reason,
                      readiness.message, readiness.generation)


def limit_condition(where: str, message: str, generation: Any) -> dict[str, Any]:
    """The filter at ``where`` stopped at an evaluation limit (``message``)."""
    text = (f"{where}: {message}; the events it could not evaluate were not notified to "
            f"this subscriber")[:1000]
    return _condition(LIMIT_CONDITION, "False", LIMIT_REASON, text, generation)


def _condition(type_: str, status: str, reason: str, message: str,
               generation: Any) -> dict[str, Any]:
    condition = {"type": type_, "status": status, "reason": reason, "message": message}
    if isinstance(generation, int):
        condition["observedGeneration"] = generation
    return condition


def _stated(condition: Mapping[str, Any]) -> tuple[Any, ...]:
    return (condition.get("status"), condition.get("reason"), condition.get("message") or "",
            condition.get("observedGeneration"))


def conditions_of(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The object's status conditions, whatever its status holds."""
    status = obj.get("status")
    listed = status.get("conditions") if isinstance(status, Mapping) else None
    return [c for c in listed if isinstance(c, Mapping)] if isinstance(listed, list) else []


def condition_patch(obj: Mapping[str, Any], condition: Mapping[str, Any],
                    now: str) -> dict[str, Any] | None:
    """The merge patch for ``/status`` setting ``condition`` (in place of the one of its
    type), or ``None`` when the object already says so. Other conditions are kept, but
    a ``FilterEvaluated`` of another generation is dropped; a merge patch replaces the
    list whole, so it is guarded by the object's resourceVersion. ``lastTransitionTime``
    only moves when the status flips; ``Ready`` also sets ``status.observedGeneration``."""
    status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
    conditions = conditions_of(obj)
    kind, generation = condition["type"], condition.get("observedGeneration")
    current = next((c for c in conditions if c.get("type") == kind), None)
    if current is not None and _stated(current) == _stated(condition) and (
            kind != CONDITION or status.get("observedGeneration") == generation):
        return None
    transition = now
    if current is not None and current.get("status") == condition["status"] \
            and current.get("lastTransitionTime"):
        transition = str(current["lastTransitionTime"])
    others = [c for c in conditions if c.get("type") != kind and not (
        c.get("type") == LIMIT_CONDITION and c.get("observedGeneration") != generation)]
    body: dict[str, Any] = {
        "conditions": [*others, {**condition, "lastTransitionTime": transition}]}
    if kind == CONDITION and generation is not None:
        body["observedGeneration"] = generation
    patch: dict[str, Any] = {"status": body}
    version = metadata(obj).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch
