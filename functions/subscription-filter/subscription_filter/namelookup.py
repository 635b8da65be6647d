"""The name lookup: which subscribers a filter can be true for, from the event alone.

Most filters say "the subscriber is among these names", e.g. ``ce.data.object.status.
artifactPromotionSpec.approvalSpec.users.exists(x, x.name == "$(subscriber.name)")``. When
one of a filter's ``&&``-joined conditions has that form (``name_key``), the filter is
false for every subscriber not named, so the names are an expression of the event alone,
evaluated once per event (``Engine.compile_values``); only the subscribers it names are
evaluated, however many subscribe (``index.Index``). ``lookup_key`` finds the same
expression without parsing the whole filter, so that it is known before the filter is
compiled (``programs``)."""

from __future__ import annotations

import functools
from typing import Any

from .binding import SUBSCRIBER, Token, scan
from .celtree import PARSE_LOCK, children, identifier, parser, unwrapped, walk


def name_key(tree: Any, expression: str) -> str | None:
    """An expression of ``ce`` alone whose value lists every name for which the filter
    can be true, when one of its ``&&``-joined conditions is ``P == <name>`` (either
    side), ``<name> in P`` or ``P.exists(x, x.F == <name>)`` (also ``exists_one``) with
    ``P``, ``x.F`` free of the subscriber, and ``<name>`` ``subscriber.name`` or the
    rewritten ``$(subscriber.name)``. For every other name that condition is false,
    hence the filter is (``false && anything`` is ``false`` in CEL, errors included),
    provided the value is a list of strings: ``[P]``, ``P``, ``P.map(x, x.F)``. ``None``
    when no condition has that form."""

    def span(node: Any) -> str:
        return expression[node.meta.start_pos:node.meta.end_pos]

    for part in _conjuncts(tree):
        kids = children(part)
        data = str(part.data)
        operator = str(getattr(kids[0], "data", "")) if len(kids) == 2 else ""
        if data == "relation" and operator == "relation_in":
            if _is_name(children(kids[0])[0]) and _free(kids[1]):
                return span(kids[1])
        elif data == "relation" and operator == "relation_eq":
            other = _other_side(children(kids[0])[0], kids[1])
            if other is not None:
                return f"[{span(other)}]"
        elif data == "member_dot_arg" and len(kids) == 3 and str(kids[1]) in (
                "exists", "exists_one") and _free(kids[0]):
            args = children(kids[2])
            variable = identifier(args[0]) if len(args) == 2 else None
            body = unwrapped(args[1]) if variable not in (None, *SUBSCRIBER) else None
            found = children(body)
            if str(getattr(body, "data", "")) != "relation" or len(found) != 2 \
                    or str(getattr(found[0], "data", "")) != "relation_eq":
                continue
            other = _other_side(children(found[0])[0], found[1])
            if other is not None:
                return f"({span(kids[0])}).map({variable}, {span(other)})"
    return None


def lookup_key(expression: str, scanned: tuple[Token, ...] | None = None) -> str | None:
    """``name_key`` of ``expression`` without parsing all of it, so that the name lookup
    is known before the filter is compiled: the ``&&``-joined conditions are split at the
    top level by the scanner, and only those naming the subscriber are parsed, each kept
    by text (thousands of filters add their own condition to one shared text). With a
    top-level ``||`` or ``?:`` the whole expression is parsed. ``None`` also when it does
    not parse: compiling it says why."""
    parts = _top_level_conjuncts(tuple(scan(expression)) if scanned is None else scanned)
    if parts is None:
        return _parsed_key(expression)
    for part, mentions in parts:
        key = _parsed_key(part) if mentions else None
        if key is not None:
            return key
    return None


@functools.lru_cache(maxsize=4096)
def _parsed_key(expression: str) -> str | None:
    try:
        with PARSE_LOCK:
            tree = parser().compile(expression)
    except Exception:
        return None
    return name_key(tree, expression)


def _top_level_conjuncts(scanned: tuple[Token, ...]) -> list[tuple[str, bool]] | None:
    """The texts between top-level ``&&`` and whether each names the subscriber; ``None``
    when a top-level ``||`` or ``?`` makes ``&&`` not the outermost operator."""
    parts: list[tuple[str, bool]] = []
    current: list[str] = []
    mentions = False
    depth = i = 0
    while i < len(scanned):
        token = scanned[i]
        follows = scanned[i + 1].text if i + 1 < len(scanned) else ""
        if token.kind == "char" and token.text in "([{":
            depth += 1
        elif token.kind == "char" and token.text in ")]}":
            depth -= 1
        elif token.kind == "char" and depth == 0 and (
                token.text == "?" or (token.text == "|" and follows == "|")):
            return None
        elif token.kind == "char" and depth == 0 and token.text == "&" and follows == "&":
            parts.append(("".join(current), mentions))
            current, mentions = [], False
            i += 2
            continue
        elif token.kind == "ident" and token.text in SUBSCRIBER:
            mentions = True
        current.append(token.text)
        i += 1
    parts.append(("".join(current), mentions))
    return parts


def _conjuncts(node: Any) -> list[Any]:
    node = unwrapped(node)
    kids = children(node)
    if str(node.data) == "conditionaland" and len(kids) == 2:
        return [*_conjuncts(kids[0]), *_conjuncts(kids[1])]
    return [node]


def _is_name(node: Any) -> bool:
    """``subscriber.name``, ``subscriber["name"]`` (or ``__subscriber__``'s)."""
    node = unwrapped(node)
    kids = children(node)
    if str(node.data) not in ("member_dot", "member_index") or len(kids) != 2 \
            or identifier(kids[0]) not in SUBSCRIBER:
        return False
    if str(node.data) == "member_dot":
        return str(kids[1]) == "name"
    literal = unwrapped(kids[1])
    return str(literal.data) == "literal" and str(children(literal)[0]) in ('"name"', "'name'")


def _other_side(left: Any, right: Any) -> Any:
    """Of ``left == right``, the side that is not the name when the other is free of
    the subscriber."""
    for name, other in ((left, right), (right, left)):
        if _is_name(name) and _free(other):
            return other
    return None


def _free(node: Any) -> bool:
    """Whether ``node`` never names the subscriber."""
    return not any(str(getattr(n, "data", "")) in ("ident", "dot_ident") and children(n)
                   and str(children(n)[0]) in SUBSCRIBER for n in walk(node))
