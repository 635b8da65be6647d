"""What one evaluation of a filter can cost at most, worked out from its text alone.

A filter is refused when it is compiled when the
worst event it may see could make one evaluation do more than ``MAX_COST`` units of
work (one unit: one operation, or 16 bytes compared or copied) or build a value over
``MAX_VALUE_BYTES``. What the estimate assumes:

* ``ce`` and everything under it is at most ``EVENT_BYTES`` (the largest body a
  function accepts), the subscriber's binding at most ``SUBSCRIBER_BYTES``; a list
  of ``n`` bytes has at most ``n / 2`` elements.
* A comprehension (``all``, ``exists``, ``exists_one``, ``map``, ``filter``) runs at
  most ``ITERATIONS`` times per evaluation: cel-cpp stops there (``celengine``).
* The elements of a collection together are no bigger than the collection, so a
  body that reads its element (``x.name``) costs in total what the collection
  weighs, not its length times its size: sizes and costs are kept as
  ``fixed + k·|v|`` for the innermost comprehension variable ``v``.

Refused: a ``map`` doubling a string 24 times, a comprehension over a list nested in one
over another, ``in`` over a large list inside a loop. The seed's filters cost under a
fifth of the limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .celtree import (
    COMPREHENSIONS,
    LISTS,
    children,
    expressions,
    identifier,
    place_of,
    unwrapped,
)

ITERATIONS = 10_000
EVENT_BYTES = 1024 * 1024
SUBSCRIBER_BYTES = 2048
MAX_COST = 10_000_000
MAX_VALUE_BYTES = 4 * 1024 * 1024
_BYTES_PER_UNIT = 16
_SMALL = 8.0  # a number, a bool, a timestamp
_SMALL_RESULTS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "has", "int", "uint",
    "double", "bool", "type", "duration", "timestamp", "exists", "all", "exists_one",
}) | {f"get{p}" for p in ("FullYear", "Month", "Date", "DayOfMonth", "DayOfYear",
                             "DayOfWeek", "Hours", "Minutes", "Seconds", "Milliseconds")}


class TooCostly(ValueError):
    """The one-line reason a filter is refused."""


@dataclass(frozen=True)
class Bound:
    """At most ``fixed + k·|var|``: ``|var|`` is the size of comprehension variable
    ``var``'s current element (``var`` ``None``: a constant)."""

    fixed: float
    k: float = 0.0
    var: str | None = None


@dataclass(frozen=True)
class Estimate:
    size: Bound  # bytes of the value
    count: Bound  # elements, when iterated
    cost: Bound  # work, comprehensions summed element by element
    budgeted: float  # work, every node in a comprehension counted ``ITERATIONS`` times


_ONE = Bound(1.0)


class _Estimator:
    """Two bounds of the work, the least of which counts: ``cost`` sums a comprehension's
    body over its elements (tight when the body reads its element); ``budgeted`` counts
    every node inside a comprehension ``ITERATIONS`` times, the budget every
    comprehension of an evaluation shares (tight for nested ones)."""

    def __init__(self) -> None:
        self.env: dict[str, float] = {}  # comprehension variable → its worst element size
        self.depth = 0  # comprehensions around the node being estimated

    # ------------------------------------------------------------ linear forms

    def worst(self, lin: Bound) -> float:
        return lin.fixed + (lin.k * self.env.get(lin.var, EVENT_BYTES) if lin.var else 0.0)

    def add(self, *lins: Bound) -> Bound:
        var = next((x.var for x in lins if x.var), None)
        if any(x.var not in (None, var) for x in lins):
            return Bound(sum(self.worst(x) for x in lins))
        return Bound(sum(x.fixed for x in lins), sum(x.k for x in lins), var)

    def scale(self, lin: Bound, by: float) -> Bound:
        return Bound(lin.fixed * by, lin.k * by, lin.var)

    def least(self, a: Bound, b: Bound) -> Bound:
        return a if self.worst(a) <= self.worst(b) else b

    def most(self, a: Bound, b: Bound) -> Bound:
        return self.add(a, b) if a.var != b.var else (
            a if self.worst(a) >= self.worst(b) else b)

    def times(self, n: Bound, lin: Bound) -> Bound:
        """``n`` times ``lin`` (both bounds), kept linear where it can be."""
        if n.var is None:
            return self.scale(lin, n.fixed)
        if lin.var is None:
            return self.scale(n, lin.fixed)
        return Bound(self.worst(n) * self.worst(lin))

    def units(self, size: Bound) -> Bound:
        return self.scale(size, 1 / _BYTES_PER_UNIT)

    # --------------------------------------------------------------- the tree

    def node(self, parts: list[Estimate], own: Bound, size: Bound, count: Bound = _ONE) -> Estimate:
        """A node doing ``own`` work besides its ``parts``."""
        times = ITERATIONS if self.depth else 1
        return Estimate(size, count, self.add(own, *(p.cost for p in parts)),
                   sum(p.budgeted for p in parts) + self.worst(own) * times)

    def small(self, parts: list[Estimate], own: Bound = _ONE, size: float = _SMALL) -> Estimate:
        return self.node(parts, own, Bound(size))

    def of(self, node: Any) -> Estimate:
        node = unwrapped(node)  # a level that only wraps one child costs what the child does
        est = self._of(node)
        size = self.worst(est.size)
        if size > MAX_VALUE_BYTES:
            raise TooCostly(f"{place_of(node)}can build a value of up to {_bytes(size)} for one "
                            f"event, over the limit of {_bytes(MAX_VALUE_BYTES)}")
        return est

    def _of(self, node: Any) -> Estimate:
        data = str(getattr(node, "data", ""))
        kids = children(node)
        trees = [k for k in kids if hasattr(k, "children")]
        if data == "expr" and len(trees) == 3:
            test, yes, no = (self.of(t) for t in trees)
            return self.node([test, yes, no], _ONE, self.most(yes.size, no.size),
                             self.most(yes.count, no.count))
        if data in ("conditionalor", "conditionaland") and len(trees) == 2:
            return self.small([self.of(t) for t in trees], size=1)
        if data in ("relation", "addition", "multiplication") and len(trees) == 2:
            return self.binary(trees[0], trees[1])
        if data == "unary" and len(trees) == 2:
            return self.small([self.of(trees[1])])
        if data in ("member_dot", "member_index"):
            parts = [self.of(t) for t in trees]
            return self.node(parts, _ONE, parts[0].size, parts[0].count)
        if data in ("member_dot_arg", "ident_arg", "dot_ident_arg"):
            return self.call(data, kids, trees)
        if data in ("ident", "dot_ident"):
            name = str(kids[-1]) if kids else ""
            if name in self.env:
                return self.node([], _ONE, Bound(0, 1, name), Bound(1, 0.5, name))
            size = {"ce": EVENT_BYTES, "subscriber": SUBSCRIBER_BYTES,
                    "__subscriber__": SUBSCRIBER_BYTES}.get(name, _SMALL)
            return self.node([], _ONE, Bound(size), Bound(size / 2 + 1))
        if data == "literal":
            size = len((str(kids[0]) if kids else "").encode("utf-8"))
            return self.node([], _ONE, Bound(size), Bound(size / 2 + 1))
        if data in ("list_lit", "map_lit", "member_object"):
            parts = [self.of(e) for t in trees if str(getattr(t, "data", "")) in LISTS
                     for e in expressions(t)]
            if data == "member_object":
                parts.insert(0, self.of(trees[0]))
            return self.node(parts, Bound(len(parts) + 1),
                             self.add(Bound(len(parts)), *(p.size for p in parts)),
                             Bound(len(parts)))
        return self.together([self.of(t) for t in trees], _ONE)  # anything else

    def together(self, parts: list[Estimate], own: Bound) -> Estimate:
        """A node as big as its ``parts`` are together."""
        return self.node(parts, own, self.add(Bound(_SMALL), *(p.size for p in parts)),
                         self.add(_ONE, *(p.count for p in parts)))

    def binary(self, left_node: Any, right_node: Any) -> Estimate:
        operator = str(getattr(left_node, "data", ""))
        left = self.of(children(left_node)[0])
        right = self.of(right_node)
        parts = [left, right]
        if operator == "relation_in":
            return self.small(parts, self.add(_ONE, right.count, self.units(right.size)), 1)
        if operator.startswith("relation_"):
            return self.small(parts, self.add(_ONE, self.units(self.least(left.size,
                                                                           right.size))), 1)
        if operator == "addition_add":  # strings, bytes and lists: a copy of both
            size = self.add(left.size, right.size)
            return self.node(parts, self.add(_ONE, self.units(size)), size,
                             self.add(left.count, right.count))
        return self.small(parts)

    def call(self, data: str, kids: list[Any], trees: list[Any]) -> Estimate:
        names = [str(k) for k in kids if not hasattr(k, "children")]
        name = names[0] if names else ""
        target = self.of(trees[0]) if data == "member_dot_arg" else None
        arguments = [t for t in trees if str(getattr(t, "data", "")) == "exprlist"]
        args = expressions(arguments[0]) if arguments else []
        if target is not None and name in COMPREHENSIONS and len(args) in (2, 3):
            variable = identifier(args[0])
            if variable is not None:
                return self.comprehension(name, target, variable, args[1:])
        if name == "has":
            return self.small([], size=1)
        parts = ([target] if target is not None else []) + [self.of(a) for a in args]
        own = self.add(_ONE, *(self.units(p.size) for p in parts))
        if name == "matches" and len(parts) == 2:  # RE2: linear in the text, per state
            own = self.add(own, self.times(self.units(parts[0].size),
                                           self.add(_ONE, self.units(parts[1].size))))
        return self.small(parts, own) if name in _SMALL_RESULTS else self.together(parts, own)

    def comprehension(self, name: str, target: Estimate, variable: str,
                      body: list[Any]) -> Estimate:
        count = target.count
        n = count if count.var is not None or self.worst(count) <= ITERATIONS \
            else Bound(ITERATIONS)
        outer = self.env.get(variable)
        self.env[variable] = self.worst(target.size)
        self.depth += 1
        try:
            parts = [self.of(b) for b in body]
        finally:
            self.depth -= 1
            if outer is None:
                del self.env[variable]
            else:
                self.env[variable] = outer

        def total(lin: Bound) -> Bound:
            """``lin`` summed over the iterations: an element's share is its own size."""
            if lin.var != variable:
                return self.times(n, lin)
            return self.add(self.times(n, Bound(lin.fixed)), self.scale(target.size, lin.k))

        cost = self.add(target.cost, n, *(total(p.cost) for p in parts))
        flat = target.budgeted + sum(p.budgeted for p in parts) + ITERATIONS
        if name == "map":
            size, count = self.add(n, total(parts[-1].size)), n
        elif name == "filter":
            size, count = target.size, target.count
        else:
            size, count = _ONE, _ONE
        return Estimate(size, count, cost, flat)


def _bytes(size: float) -> str:
    return f"{size:,.0f} bytes"


def worst_case(tree: Any) -> tuple[float, float]:
    """(cost, largest value in bytes) of one evaluation of the parse tree ``tree``
    against the worst event; ``TooCostly`` as soon as a value is over the limit."""
    estimator = _Estimator()
    est = estimator.of(tree)
    return min(estimator.worst(est.cost), est.budgeted), estimator.worst(est.size)


def check(tree: Any) -> None:
    """``TooCostly`` when an evaluation of ``tree`` may cost over ``MAX_COST`` or build a
    value over ``MAX_VALUE_BYTES``."""
    cost, _ = worst_case(tree)
    if cost > MAX_COST:
        raise TooCostly(f"one evaluation may cost up to {cost:,.0f} units, over the limit of "
                        f"{MAX_COST:,} (a comprehension over event data nested in another, "
                        f"or inside a loop, costs the product of both)")
