"""What one function emits must fit what the next accepts (``events.MAX_BODY_BYTES``).

The enricher sends the involved object on to the filter, and the filter the whole
enriched event on to the notifier with its recipients. ``ENRICHED_BYTES`` is what an
enriched event may weigh, so a notification request still has room for recipients
(``recipient_parts`` splits them when it does not). ``fit_object`` makes an object
lighter, step by step, saying what it did:

1. ``managedFields`` and kubectl's last-applied copy go (always: they only bloat);
2. strings longer than 16,384, then 4,096, 1,024 and 256 characters are cut, each
   ending in ``TRIM_MARK``;
3. as a last resort only the object's identity is kept (apiVersion, kind, name,
   namespace, uid, resourceVersion, generation, labels).

Sizes are of the compact JSON text, as a body carries it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .events import MAX_BODY_BYTES

ENRICHED_BYTES = 640 * 1024
# The enriched event's extension saying what was cut (``fit_enriched``'s note).
TRIMMED_EXTENSION = "kubeeventtrimmed"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
TRIM_MARK = "…(trimmed)"
STRING_STEPS = (16_384, 4_096, 1_024, 256)
IDENTITY_FIELDS = ("name", "namespace", "uid", "resourceVersion", "generation", "labels")
# What a CloudEvent adds around its data (attributes, headers), with room to spare.
ENVELOPE_BYTES = 8 * 1024


def size_of(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                          allow_nan=False).encode("utf-8", "surrogatepass"))


def without_bloat(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without ``managedFields`` and kubectl's last-applied copy (shallow copies
    of what changes; the rest is shared)."""
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        meta = {k: v for k, v in meta.items() if k != "managedFields"}
        annotations = meta.get("annotations")
        if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
            meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
        out["metadata"] = meta
    return out


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value[:limit] + TRIM_MARK if len(value) > limit else value
    if isinstance(value, Mapping):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, limit) for v in value]
    return value


def identity(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), Mapping) else {}
    kept = {k: meta[k] for k in IDENTITY_FIELDS if k in meta}
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind") if k in obj}
    out["metadata"] = kept
    if size_of(out) > ENVELOPE_BYTES:
        kept.pop("labels", None)
    return out


def fit_object(obj: Mapping[str, Any], budget: int) -> tuple[dict[str, Any], str]:
    """``obj`` made to weigh at most ``budget`` bytes (see the module doc), and what was
    done to it: ``""`` (nothing but the bloat), ``strings-<n>`` (strings cut at ``n``
    characters) or ``identity`` (only its identity is left)."""
    out = without_bloat(obj)
    if size_of(out) <= budget:
        return out, ""
    for limit in STRING_STEPS:
        cut = _cut(out, limit)
        if size_of(cut) <= budget:
            return cut, f"strings-{limit}"
    return identity(out), "identity"


def fit_beside(event: Any, obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The object of an enriched event made to fit ``ENRICHED_BYTES`` beside its
    ``event`` (``fit_object``)."""
    return fit_object(obj, ENRICHED_BYTES - ENVELOPE_BYTES - size_of(event))


def noted(notes: str, part: str, note: str) -> str:
    """``notes`` (a ``TRIMMED_EXTENSION`` value) with ``part:note`` added, if ``note``."""
    return ",".join(n for n in (notes, f"{part}:{note}" if note else "") if n)


def fit_enriched(event: Mapping[str, Any], obj: Mapping[str, Any] | None
                 ) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """The Event and the object of an enriched event made to fit ``ENRICHED_BYTES``
    together (the Event gets at most a quarter), and what was trimmed (the
    ``TRIMMED_EXTENSION`` value; ``""``: nothing)."""
    event_out, event_note = fit_object(event, ENRICHED_BYTES // 4)
    notes = noted("", "event", event_note)
    if obj is None:
        return event_out, None, notes
    obj_out, obj_note = fit_beside(event_out, obj)
    return event_out, obj_out, noted(notes, "object", obj_note)


def recipient_parts(recipients: Sequence[Mapping[str, Any]], room: int
                    ) -> list[list[Mapping[str, Any]]]:
    """``recipients`` (in their order) in consecutive parts of at most ``room`` bytes each
    (a recipient heavier than ``room`` alone makes a part). Deterministic: the same list
    always gives the same parts."""
    parts: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    used = 2
    for recipient in recipients:
        weight = size_of(recipient) + 1
        if current and used + weight > room:
            parts.append(current)
            current, used = [], 2
        current.append(recipient)
        used += weight
    if current or not parts:
        parts.append(current)
    return parts


def request_room(event_bytes: int, limit: int = MAX_BODY_BYTES) -> int:
    """Bytes left for recipients in a notification request carrying an event of
    ``event_bytes``."""
    return limit - ENVELOPE_BYTES - event_bytes
