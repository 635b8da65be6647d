"""Filters as written → programs: nothing is done with a filter when a subscription is
read; it is read (its ``$(subscriber.*)`` placeholders bound, the scanner's limits checked,
its name lookup found) when the index first places it, and compiled when an event first
makes its subscription a candidate.

A text here is a filter after its placeholders are rewritten (``binding.py``): the same
for every subscriber, who is data bound when evaluating. So subscriptions with the same
filter share one reading, one compiled program and, for filters with the same name
lookup, one compiled lookup (its ``values``), kept by text in ``Programs``.

Reading costs the scanner and the name lookup (``lookup_key``: only the conditions that
name the subscriber are parsed, each text once); a start reads none of it, so it answers
after listing. The index reads the filters of one key (event type, object, namespace) on
the first event with that key (``index.Index``); the store reads and compiles every filter
in the background after listing, and takes out the subscriptions with one that cannot be
read or does not compile (``Ready=False``, ``InvalidCEL``, as when loaded alone). An error
is kept like a program: a text is read and compiled once either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .binding import BindingError, Rewritten, bind
from .celengine import Engine, Program, Values
from .celparse import CelCompileError, check_limits
from .namelookup import lookup_key
from .shared.cache import Cache

MAX_PROGRAMS = 4096


class Reading(NamedTuple):
    """A filter read: the text it compiles (placeholders rewritten) and its name lookup,
    ``key`` (the expression of ``ce`` listing every name it can be true for) and
    ``values`` (that expression compiled; ``None``: no lookup)."""

    expression: str
    key: str | None
    values: Values | None


class Filter:
    """One filter as written, for the subscribers whose bindings have the same text fields
    (``binding``: one of them): read and compiled on first use, each kept. One that
    cannot be read or compiled raises ``CelCompileError`` each time it is used."""

    __slots__ = ("_binding", "_compiled", "_programs", "_read", "source")

    def __init__(self, source: str, binding: Mapping[str, Any], programs: Programs) -> None:
        self.source = source
        self._binding = binding
        self._programs = programs
        self._read: Reading | CelCompileError | None = None
        self._compiled: Program | CelCompileError | None = None

    @property
    def is_read(self) -> bool:
        return self._read is not None

    def read(self) -> Reading:
        found = self._read
        if found is None:
            try:
                found = self._programs.read(bind(self.source, self._binding))
            except BindingError as exc:
                found = CelCompileError(str(exc))
            except Exception as exc:  # a text no check foresaw: only this filter fails
                found = CelCompileError(f"the filter cannot be read: {type(exc).__name__}")
            self._read = found
        if isinstance(found, CelCompileError):
            raise CelCompileError(found.message)
        return found

    def program(self) -> Program:
        found = self._compiled
        if found is None:
            found = self._compiled = self._programs.compile_or_error(self.read().expression)
        if isinstance(found, CelCompileError):
            raise CelCompileError(found.message)
        return found

    def __repr__(self) -> str:
        return f"Filter({self.source!r})"


class Programs:
    """``engine`` with the readings and compiled programs of filters kept by text (at
    most ``max_programs`` of each, least recently used dropped first; a subscription's
    filters keep theirs)."""

    def __init__(self, engine: Engine, max_programs: int = MAX_PROGRAMS) -> None:
        self.engine = engine
        self._reads: Cache[str, Reading | CelCompileError] = Cache(max_programs)
        self._programs: Cache[str, Program | CelCompileError] = Cache(max_programs)
        self._values: Cache[str, Values | None] = Cache(max_programs)
        self.compiled = 0  # how many times the engine compiled a filter

    def read(self, rewritten: Rewritten) -> Reading | CelCompileError:
        """The reading of a text (its placeholders rewritten), or why it is refused: over
        the scanner's limits (size, nesting, operators, escapes)."""
        return self._reads.get_or(rewritten.expression, lambda: self._reading(rewritten))

    def _reading(self, rewritten: Rewritten) -> Reading | CelCompileError:
        expression = rewritten.expression
        try:
            key = lookup_key(expression, check_limits(expression, rewritten.tokens))
        except CelCompileError as exc:
            return exc
        values = None if key is None else self._values.get_or(key, lambda: self._lookup(key))
        return Reading(expression, key, values)

    def compile_or_error(self, expression: str) -> Program | CelCompileError:
        """The program of ``expression``, or why it does not compile (kept alike)."""
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
