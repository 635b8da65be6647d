"""Filter texts → programs, set up cheaply when a subscription is read and compiled when
an event first makes it a candidate.

A text here is a filter after its ``$(subscriber.*)`` placeholders are rewritten
(``binding.py``): the same for every subscriber, who is data bound when evaluating. So
subscriptions with the same filter share one ``Filter``, one compiled program and, for
filters with the same name lookup, one compiled lookup (its ``values``).

Reading a subscription costs the scanner's limits and the name lookup (``lookup_key``:
only the conditions that name the subscriber are parsed, each text once); the program is
compiled the first time an event reaches a subscription holding it, or when the store
checks every subscription in the background after listing (a filter that does not compile
makes its subscription not Ready, as it always did). A compile error is kept like a
program: a text is compiled once either way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .celengine import Engine, EventScope, Program, Values
from .celparse import CelCompileError, check_limits
from .namelookup import lookup_key
from .shared.cache import Cache

MAX_PROGRAMS = 4096


class Filter:
    """One filter text: its name lookup (``key``, ``values``), known when it is read, and
    its program, compiled on first use and then kept (by the rules holding it)."""

    __slots__ = ("_compiled", "_programs", "expression", "key", "values")

    def __init__(self, expression: str, key: str | None, values: Values | None,
                 programs: Programs) -> None:
        self.expression = expression
        self.key = key  # the expression of ``ce`` listing every name it can be true for
        self.values = values  # that expression compiled (``None``: no lookup)
        self._programs = programs
        self._compiled: Program | CelCompileError | None = None

    def program(self) -> Program:
        """``CelCompileError`` when the text does not compile (said once, then kept)."""
        found = self._compiled
        if found is None:
            found = self._compiled = self._programs.compile_or_error(self.expression)
        if isinstance(found, CelCompileError):
            raise CelCompileError(found.message)
        return found

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        """``Program.for_event`` of the compiled program."""
        return self.program().for_event(event)

    def __repr__(self) -> str:
        return f"Filter({self.expression!r})"


class Programs:
    """``engine`` with its filters and compiled programs kept by text (at most
    ``max_programs`` of each, least recently used dropped first; a subscription keeps the
    filters it holds, and a filter its program)."""

    def __init__(self, engine: Engine, max_programs: int = MAX_PROGRAMS) -> None:
        self.engine = engine
        self._filters: Cache[str, Filter] = Cache(max_programs)
        self._programs: Cache[str, Program | CelCompileError] = Cache(max_programs)
        self._values: Cache[str, Values | None] = Cache(max_programs)
        self.compiled = 0  # how many times the engine compiled a filter

    def filter(self, expression: str) -> Filter:
        """The text's filter, not compiled yet; ``CelCompileError`` when it is over the
        scanner's limits (size, nesting, operators, escapes)."""
        return self._filters.get_or(expression, lambda: self._filter(expression))

    def _filter(self, expression: str) -> Filter:
        key = lookup_key(expression, check_limits(expression))
        values = None if key is None else self._values.get_or(key, lambda: self._lookup(key))
        return Filter(expression, key, values, self)

    def compile(self, expression: str) -> Program:
        """The program of ``expression`` (``CelCompileError`` if it does not compile)."""
        found = self.compile_or_error(expression)
        if isinstance(found, CelCompileError):
            raise CelCompileError(found.message)
        return found

    def compile_or_error(self, expression: str) -> Program | CelCompileError:
        return self._programs.get_or(expression, lambda: self._compile(expression))

    def _compile(self, expression: str) -> Program | CelCompileError:
        self.compiled += 1
        try:
            return self.engine.compile(expression)
        except CelCompileError as exc:
            return exc

    def _lookup(self, key: str) -> Values | None:
        """``None`` when it does not compile: every subscriber is then evaluated."""
        try:
            return self.engine.compile_values(key)
        except CelCompileError:
            return None

    def __len__(self) -> int:
        return len(self._programs)
