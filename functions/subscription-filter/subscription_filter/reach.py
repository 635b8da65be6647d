"""Filters that cannot match, found from their text: shown, never refused. (Over 400
lines on purpose: one module for ``kubeevent lint`` and the filter's FiltersCanMatch, so
both say the same.)

A subscription that compiles is used (Ready); these are the mistakes that leave it Ready
and silent. Each is a ``Hint`` with the place in the subscription (and, for CEL, the line
and column in the expression), said by ``kubeevent lint`` and on the subscription's status
as the condition ``FiltersCanMatch`` (``False`` with the hints, ``True`` without), so
what may be legitimate still runs:

* ``UnknownField`` — a path under ``ce.data.object`` that the subscribed kind's schema
  (its CRD's ``openAPIV3Schema`` for the entry's version) does not have, or one under
  ``ce.data.event`` that no Kubernetes Event has. ``has()`` of it is never true; a
  comparison with it never matches. A field of a list element read without a
  comprehension (``users.name``) is said too. Fields under
  ``x-kubernetes-preserve-unknown-fields`` or a map (``additionalProperties``) are not
  checked; a kind without a known schema is not checked.
* ``LostBinding`` — a shell's ``${subscriber.…}`` (bindings are ``$(subscriber.…)``), or
  a comparison with an empty string in a filter that binds nobody (what an unquoted
  heredoc leaves of ``$(subscriber.name)``).
* ``UnknownEventType`` — a type the enricher never emits: not
  ``dev.katanomi.cloudevents.kubeevent.<kind>.<reason>.v1alpha1``, capital letters
  (the enricher writes kind and reason in lower case), or another kind than the entry's
  object.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .binding import BindingError, rewrite, source_position
from .celparse import CelError, parse
from .celtree import COMPREHENSIONS, children

CONDITION = "FiltersCanMatch"
PREFIX = "dev.katanomi.cloudevents.kubeevent."
SUFFIX = ".v1alpha1"
ANY: Mapping[str, Any] = {"x-kubernetes-preserve-unknown-fields": True}
_SHELL_BINDING = re.compile(r"\$\{\s*subscriber\.[^}]*\}")
_EMPTY_LITERAL = re.compile(r"""(==|!=)\s*(""|'')|(""|'')\s*(==|!=)""")
_ITEM = "[]"  # a list's element in a path
LIST = "is a list: read its elements with exists(), all() or [i]"

# What every object's metadata has (ObjectMeta), and the Event as the enricher passes it
# on (core/v1 and events.k8s.io/v1 fields together).
_STRINGS = {"type": "string"}
_MAP = {"type": "object", "additionalProperties": _STRINGS}
_REFERENCE = {"type": "object", "properties": {k: _STRINGS for k in (
    "apiVersion", "kind", "namespace", "name", "uid", "resourceVersion", "fieldPath")}}
OBJECT_META: Mapping[str, Any] = {"type": "object", "properties": {
    **{k: _STRINGS for k in ("name", "namespace", "generateName", "uid", "resourceVersion",
                             "creationTimestamp", "deletionTimestamp", "selfLink")},
    "generation": {"type": "integer"}, "deletionGracePeriodSeconds": {"type": "integer"},
    "labels": _MAP, "annotations": _MAP,
    "ownerReferences": {"type": "array", "items": {"type": "object", "properties": {
        **{k: _STRINGS for k in ("apiVersion", "kind", "name", "uid")},
        "controller": {"type": "boolean"}, "blockOwnerDeletion": {"type": "boolean"}}}},
    "finalizers": {"type": "array", "items": _STRINGS},
    "managedFields": {"type": "array", "items": ANY}}}
EVENT: Mapping[str, Any] = {"type": "object", "properties": {
    **{k: _STRINGS for k in ("apiVersion", "kind", "reason", "message", "type", "action",
                             "firstTimestamp", "lastTimestamp", "eventTime",
                             "reportingComponent", "reportingInstance", "note",
                             "reportingController", "deprecatedFirstTimestamp",
                             "deprecatedLastTimestamp")},
    "metadata": OBJECT_META, "involvedObject": _REFERENCE, "regarding": _REFERENCE,
    "related": _REFERENCE, "count": {"type": "integer"},
    "deprecatedCount": {"type": "integer"},
    "source": {"type": "object", "properties": {"component": _STRINGS, "host": _STRINGS}},
    "deprecatedSource": {"type": "object", "properties": {"component": _STRINGS,
                                                         "host": _STRINGS}},
    "series": {"type": "object", "properties": {"count": {"type": "integer"},
                                                "lastObservedTime": _STRINGS}}}}


@dataclass(frozen=True)
class Hint:
    """Why part of a filter can never match: ``where`` in the subscription, ``position``
    (line, column) in the CEL text when it is there."""

    reason: str  # UnknownField, LostBinding, UnknownEventType
    where: str
    message: str
    position: tuple[int, int] | None = None

    @property
    def text(self) -> str:
        at = f"line {self.position[0]}, column {self.position[1]}: " if self.position else ""
        return f"{self.where}: {at}{self.message}"


# ------------------------------------------------------------------ event types


def event_type_problem(event_type: str, kind: str) -> str | None:
    """Why ``event_type`` is never emitted for an entry about ``kind`` (``None``: it may)."""
    if not event_type.startswith(PREFIX) or not event_type.endswith(SUFFIX) \
            or "." not in event_type[len(PREFIX):-len(SUFFIX)]:
        return (f"{event_type!r} is not an enriched Kubernetes event type "
                f"({PREFIX}<kind>.<reason>{SUFFIX}): the filter never receives it")
    middle = event_type[len(PREFIX):-len(SUFFIX)]
    typed_kind, _, reason = middle.partition(".")
    if "." in reason or not typed_kind or not reason:
        return (f"{event_type!r} is not an enriched Kubernetes event type "
                f"({PREFIX}<kind>.<reason>{SUFFIX}): the filter never receives it")
    if middle != middle.lower():
        return (f"event type {event_type!r} has capital letters: the enricher writes the "
                "kind and the reason in lower case, so it never matches; did you mean "
                f"{PREFIX + middle.lower() + SUFFIX!r}?")
    if kind and typed_kind != kind.lower():
        return (f"event type {event_type!r} is about kind {typed_kind!r} but this entry's "
                f"object is {kind}: it never matches")
    return None


# ------------------------------------------------------------------ bindings


def binding_slips(cel: str) -> list[str]:
    """What a lost ``$(subscriber.…)`` leaves: legal CEL, a filter that names nobody."""
    found = [f"{m.group(0)!r} is not a binding (those are written $(subscriber.name)): the "
             "filter compares with that text, and names nobody"
             for m in _SHELL_BINDING.finditer(cel)]
    if _EMPTY_LITERAL.search(cel) and "$(subscriber." not in cel:
        found.append("the filter compares with an empty string and binds no "
                     "$(subscriber.…): was $(subscriber.name) taken by the shell (an "
                     "unquoted heredoc runs $(…))? Quote the heredoc ('EOF')")
    return found


# ------------------------------------------------------------------ paths


def _token(node: Any) -> str:
    return str(node) if not hasattr(node, "children") else ""


def _string_literal(node: Any) -> str | None:
    """The value of a plain quoted string literal node, else ``None``."""
    while hasattr(node, "children") and len(children(node)) == 1:
        node = children(node)[0]
    text = str(node) if not hasattr(node, "children") else ""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'" and "\\" not in text:
        return text[1:-1]
    return None


def _chain(node: Any, scope: Mapping[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The path a ``member`` node reads: from ``ce`` (or a comprehension variable bound to
    an element of a path), ``None`` when it is anything else."""
    data = str(getattr(node, "data", ""))
    kids = children(node)
    if data in ("member", "primary") and len(kids) == 1 and hasattr(kids[0], "children"):
        return _chain(kids[0], scope)
    if data == "ident" and kids:
        name = _token(kids[0])
        if name == "ce":
            return ("ce",)
        return scope.get(name)
    if data == "member_dot" and len(kids) == 2:
        base = _chain(kids[0], scope)
        return None if base is None else (*base, _token(kids[1]))
    if data == "member_index" and len(kids) == 2:
        base = _chain(kids[0], scope)
        key = _string_literal(kids[1])
        if base is None:
            return None
        return (*base, key) if key is not None else (*base, "*")
    return None


def _reads(tree: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every path the expression reads, with its node; comprehension variables stand for
    an element of the list (or a key of the map) they range over."""
    scope: dict[str, tuple[str, ...]] = {}
    clashing: set[str] = set()
    stack = [tree]
    nodes = []
    while stack:
        node = stack.pop()
        nodes.append(node)
        data = str(getattr(node, "data", ""))
        kids = children(node)
        if data == "member_dot_arg" and len(kids) >= 2 and _token(kids[1]) in COMPREHENSIONS:
            args = [k for k in children(kids[2])] if len(kids) > 2 else []
            variable = _variable(args[0]) if args else None
            target = _chain(kids[0], scope)
            if variable and target is not None:
                if variable in scope and scope[variable] != (*target, _ITEM):
                    clashing.add(variable)
                scope[variable] = (*target, _ITEM)
        stack.extend(reversed([k for k in kids if hasattr(k, "children")]))
    for name in clashing:  # one name over two lists: not followed
        scope.pop(name, None)
    for node in nodes:
        if str(getattr(node, "data", "")) in ("member_dot", "member_index"):
            path = _chain(node, scope)
            if path is not None:
                yield path, node


def _variable(node: Any) -> str | None:
    while hasattr(node, "children") and len(children(node)) == 1 \
            and str(getattr(node, "data", "")) != "ident":
        node = children(node)[0]
    if str(getattr(node, "data", "")) == "ident" and children(node):
        return _token(children(node)[0])
    return None


def _step(schema: Mapping[str, Any], name: str) -> Mapping[str, Any] | str | None:
    """The schema of ``name`` under ``schema``; ``None``: anything (not checked); a str:
    why it is not there. An object that keeps unknown fields but declares its fields is
    checked against what it declares (what it does not declare may be there, written by
    hand: said so)."""
    if schema.get("x-kubernetes-int-or-string"):
        return None
    kind = schema.get("type")
    properties = schema.get("properties")
    keeps = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
    if name == _ITEM or name == "*":
        if kind == "array":
            items = schema.get("items")
            return items if isinstance(items, Mapping) else None
        extra = schema.get("additionalProperties")
        return extra if isinstance(extra, Mapping) else None
    if kind == "array":
        return LIST
    if isinstance(properties, Mapping) and name in properties:
        found = properties[name]
        return found if isinstance(found, Mapping) else None
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        return extra
    if extra is True or not isinstance(properties, Mapping) or not properties:
        return None if kind in (None, "object") else f"is a {kind}, with no fields"
    known = ", ".join(sorted(properties)[:12]) + (", …" if len(properties) > 12 else "")
    if keeps:
        return f"declares no field {name!r} (it declares: {known}; it keeps fields it " \
               "does not declare, so only a hand-written one would be there)"
    return f"has no field {name!r} (it has: {known}): it is never there"


def _declared(schema: Mapping[str, Any], name: str, path: tuple[str, ...] = (),
              depth: int = 0) -> Iterator[tuple[str, ...]]:
    """Where in ``schema`` a field called ``name`` is declared (for "did you mean")."""
    if depth > 12:
        return
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        for key, sub in properties.items():
            if key == name:
                yield (*path, key)
            if isinstance(sub, Mapping):
                yield from _declared(sub, name, (*path, key), depth + 1)
    items = schema.get("items")
    if isinstance(items, Mapping):
        yield from _declared(items, name, (*path, _ITEM), depth + 1)


def path_problem(path: tuple[str, ...], object_schema: Mapping[str, Any] | None,
                 kind: str) -> tuple[int, str] | None:
    """(how many of ``path``'s names are fine, why the next is not there) or ``None``."""
    if len(path) < 3 or path[:2] != ("ce", "data") or path[2] not in ("object", "event"):
        return None
    root: Mapping[str, Any] | None
    if path[2] == "event":
        root, owner = EVENT, "a Kubernetes Event"
    else:
        root, owner = object_schema, f"{kind}'s schema"
    if root is None:
        return None
    schema: Mapping[str, Any] = root
    at = 3
    for name in path[3:]:
        step = OBJECT_META if (at == 3 and name == "metadata") else _step(schema, name)
        if step is None:
            return None
        if isinstance(step, str):
            where = _shown(path[3:at]) or "the top"
            meant = [] if step == LIST else \
                [p for p in _declared(root, name) if p != path[3:at + 1]][:3]
            if meant:
                step += "; did you mean " + " or ".join(
                    f"{'.'.join(path[:3])}.{_shown(p)}" for p in meant) + "?"
            return at, f"{owner}: {where} {step}"
        schema = step
        at += 1
    return None


def _shown(path: tuple[str, ...]) -> str:
    return ".".join(path).replace(f".{_ITEM}", "[]").replace(_ITEM, "[]")


def field_hints(cel: str, object_schema: Mapping[str, Any] | None, kind: str, where: str
                ) -> list[Hint]:
    """The paths of ``cel`` that ``kind``'s schema (or the Event's) does not have."""
    try:
        tree = parse(rewrite(cel).expression)
    except (CelError, BindingError):
        return []  # a filter that does not compile is refused (Ready=False) anyway
    hints: dict[tuple[str, ...], Hint] = {}
    for path, node in _reads(tree):
        problem = path_problem(path, object_schema, kind)
        if problem is None:
            continue
        at, why = problem
        wrong = path[:at + 1]
        if wrong in hints:
            continue
        shown = _shown(wrong)
        meta = getattr(node, "meta", None)
        line, column = getattr(meta, "line", None), getattr(meta, "column", None)
        hints[wrong] = Hint("UnknownField", where,
                            f"{shown}: {why}",
                            source_position(cel, line, column)
                            if line is not None and column is not None else None)
    return sorted(hints.values(), key=lambda h: h.position or (0, 0))


# ------------------------------------------------------------------ a subscription


def schema_of(crd: Mapping[str, Any], version: str) -> Mapping[str, Any] | None:
    """The ``openAPIV3Schema`` of ``version`` in a CustomResourceDefinition."""
    spec = crd.get("spec") if isinstance(crd.get("spec"), Mapping) else {}
    for entry in spec.get("versions") or []:
        if isinstance(entry, Mapping) and entry.get("name") == version:
            schema = (entry.get("schema") or {}).get("openAPIV3Schema")
            return schema if isinstance(schema, Mapping) else None
    return None


def hints(obj: Mapping[str, Any], schemas: Any) -> list[Hint]:
    """Every hint about a ClusterSubscription; ``schemas(api_version, kind)`` → the kind's
    schema or ``None`` (not checked)."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), Mapping) else {}
    found: list[Hint] = []
    entries = spec.get("subscriptions") if isinstance(spec.get("subscriptions"), list) else []
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            continue
        ref = entry.get("object") if isinstance(entry.get("object"), Mapping) else {}
        kind = str(ref.get("kind") or "")
        api_version = str(ref.get("apiVersion") or "")
        schema = schemas(api_version, kind) if kind and api_version else None
        events = entry.get("events") if isinstance(entry.get("events"), list) else []
        for j, event in enumerate(events):
            if not isinstance(event, Mapping):
                continue
            base = f"spec.subscriptions[{i}].events[{j}]"
            event_type = event.get("type")
            if isinstance(event_type, str) and event_type.strip():
                problem = event_type_problem(event_type.strip(), kind)
                if problem:
                    found.append(Hint("UnknownEventType", f"{base}.type", problem))
            filter_ = event.get("filter") if isinstance(event.get("filter"), Mapping) else {}
            cel = filter_.get("cel")
            if isinstance(cel, str) and cel.strip():
                where = f"{base}.filter.cel"
                found += [Hint("LostBinding", where, m) for m in binding_slips(cel)]
                found += [Hint(h.reason, where, h.message, h.position)
                          for h in _field_hints_cached(cel, schema, kind,
                                                       getattr(schemas, "epoch", None))]
    return found


_FIELD_HINTS: dict[tuple[str, int, str, int], list[Hint]] = {}


def _field_hints_cached(cel: str, schema: Mapping[str, Any] | None, kind: str,
                        epoch: int | None) -> list[Hint]:
    """``field_hints`` by text: thousands of subscriptions share a few filters. Kept only
    for ``Schemas`` (``epoch``: its list of the CRDs, whose schemas stay alive while it
    is current, so a schema's identity names it)."""
    if epoch is None:
        return field_hints(cel, schema, kind, "")
    key = (cel, id(schema), kind, epoch)
    found = _FIELD_HINTS.get(key)
    if found is None:
        if len(_FIELD_HINTS) > 4096:
            _FIELD_HINTS.clear()
        found = _FIELD_HINTS[key] = field_hints(cel, schema, kind, "")
    return found


def condition(found: list[Hint], generation: Any) -> dict[str, Any]:
    """``FiltersCanMatch``: ``False`` with the hints (the first's reason), else ``True``."""
    if found:
        text = "; ".join(h.text for h in found)
        message = (text if len(text) <= 1000 else text[:997] + "...")
        body = {"type": CONDITION, "status": "False", "reason": found[0].reason,
                "message": message}
    else:
        body = {"type": CONDITION, "status": "True", "reason": "NothingFound",
                "message": "no filter found that can never match"}
    if isinstance(generation, int):
        body["observedGeneration"] = generation
    return body


# ------------------------------------------------------------------ the cluster's schemas


class Schemas:
    """The kinds' schemas from the cluster's CustomResourceDefinitions, listed at most once
    per ``ttl`` (``list_crds()`` → the CRDs; ``None``: they cannot be read, e.g. no RBAC:
    then no path is checked)."""

    def __init__(self, list_crds: Any, ttl: float = 300.0, clock: Any = None) -> None:
        import time

        self.list_crds = list_crds
        self.ttl = ttl
        self.clock = clock or time.monotonic
        self._crds: dict[tuple[str, str], Mapping[str, Any]] = {}
        self._read_at: float | None = None
        self.epoch = 0  # which list of the CRDs is current

    def __call__(self, api_version: str, kind: str) -> Mapping[str, Any] | None:
        now = self.clock()
        if self._read_at is None or now - self._read_at > self.ttl:
            self._read_at = now
            listed = self.list_crds()
            self._crds = {}
            self.epoch += 1
            for crd in listed or []:
                spec = crd.get("spec") if isinstance(crd, Mapping) else None
                names = spec.get("names") if isinstance(spec, Mapping) else None
                if isinstance(names, Mapping):
                    self._crds[(str(spec.get("group") or ""), str(names.get("kind") or ""))] \
                        = crd
        group, _, version = api_version.rpartition("/")
        crd = self._crds.get((group, kind))
        return schema_of(crd, version) if crd is not None else None
