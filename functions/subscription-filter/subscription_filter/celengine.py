"""CEL behind one small adapter, with two engines that pass one conformance suite:
``celpy`` (cel-python, pure Python) and ``cel-expr`` (cel-expr-python, Google's cel-cpp,
much faster; used when importable). Both see ``ce`` (the CloudEvent: attributes,
extensions, ``data``), ``subscriber`` (``spec.subscriber``, text leaves) and
``__subscriber__``, which ``$(subscriber.*)`` is rewritten to.

The same limits for both, before either engine sees an expression: lexical ones
(``check_limits``), the syntax tree's depth (measured without recursion, so no recursion
limit or native stack is reached) and the worst cost of one evaluation (``limits``). At
run time a comprehension runs at most ``limits.ITERATIONS`` times per evaluation
(cel-cpp's budget; celpy counts the same), a celpy evaluation at most
``EVALUATION_SECONDS``. ``True`` matches; an error or a non-bool result raises
``CelEvalError`` (no match), a bound reached ``CelLimitError`` (no answer: shown on the
subscription).

One event, many subscribers: ``Engine.event`` converts the event once, and
``Program.for_event`` gives a function of a subscriber's binding. cel-cpp converts an
activation's data on its first evaluation, so cel-expr keeps one activation per event
holding only ``ce`` and compiles ``subscriber``/``__subscriber__`` as calls of functions
returning the subscriber being evaluated (per thread); what cannot be compiled so
(``subscriber`` as a macro's variable) gets an activation per subscriber. Most filters
can be true only for subscribers named among some values of the event (``name_key``),
evaluated once per event (``Engine.compile_values``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from . import limits
from .binding import BINDING_VARIABLE, COMPREHENSIONS, BindingError, Token, decode, scan
from .limits import at, bare, children, identifier, walk

MAX_EXPRESSION_BYTES = 4096
MAX_NESTING = 32
MAX_DEPTH = 32
MAX_LOGICAL = 64
MAX_UNARY_RUN = 8
# The CRD's admission rule says the same, so such a filter is refused when it is written.
MAX_COMPREHENSIONS = 8
MAX_DATA_DEPTH = 64
SUBSCRIBER = ("subscriber", BINDING_VARIABLE)  # the names of the subscriber's binding
VARIABLES = ("ce", *SUBSCRIBER)
ENGINES = ("celpy", "cel-expr")
_INT64 = (-(2**63), 2**63 - 1)


class CelError(Exception):
    """Carries a one-line ``message``."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(str(message).split())[:500]
        super().__init__(self.message)


# How both engines name a place in the expression in a compile error (1-based).
_POSITION = re.compile(r"line (\d+), column (\d+): ")


class CelCompileError(CelError):
    @property
    def position(self) -> tuple[int, int] | None:
        """(line, column) of the first place the message names, if it names one."""
        found = _POSITION.search(self.message)
        return (int(found[1]), int(found[2])) if found else None

    def placed(self, position: tuple[int, int] | None) -> str:
        """The message with that first place replaced by ``position`` (or left out)."""
        shown = at(*position) if position else ""
        return _POSITION.sub(lambda _: shown, self.message, count=1)


class CelEvalError(CelError):
    pass


class CelLimitError(CelEvalError):
    """The evaluation was stopped at a bound: neither a match nor a no."""


# How long one celpy evaluation may run (cel-cpp's are bounded by ``limits`` alone).
EVALUATION_SECONDS = 5.0
ITERATIONS_MESSAGE = (f"evaluation stopped after {limits.ITERATIONS:,} comprehension "
                      f"iterations, the limit per evaluation")
TIME_MESSAGE = "evaluation stopped after {seconds:g} s, the limit per evaluation"


class Program(Protocol):
    key: str | None  # the filter's name lookup (``name_key``)
    values: Values | None  # its compiled values (``Engine.compile_values``), set by the caller

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        """The program against ``event``, as a function of a subscriber's binding
        (converted with ``Engine.value``): ``True``/``False``, else ``CelEvalError``."""
        ...


class Values(Protocol):
    """An expression that reads only ``ce``, evaluated for the text it gives."""

    def strings(self, event: EventScope) -> frozenset[str] | None:
        """Its value against ``event`` when a list of strings; else ``None`` (errors too)."""
        ...


EventScope = Any  # one event, converted for the engine once (``Engine.event``)


class Engine(Protocol):
    name: str

    def compile(self, expression: str) -> Program: ...

    def compile_values(self, expression: str) -> Values:
        """``CelCompileError`` if ``expression`` does not compile."""
        ...

    def event(self, ce_value: Any) -> EventScope:
        """``ce_value`` (converted with ``value``), for every subscriber."""
        ...

    def value(self, plain_value: Any) -> Any:
        """A plain JSON value (see ``plain``) in this engine's own representation."""
        ...


def raising(message: str) -> Callable[[Any], bool]:
    """A program's function for an event it cannot be evaluated against."""
    def run(bound: Any) -> bool:
        raise CelEvalError(message)

    return run


# --------------------------------------------------------------------- shared rules


NUL_STANDIN = "\ufffd"


def plain(value: Any, depth: int = 0) -> Any:
    """JSON data as both engines read it alike.

    Integers outside int64 become doubles (no engine has bigger ints); mapping keys
    become text; anything else that is not JSON (e.g. a datetime) becomes its text.
    ``ValueError`` beyond ``MAX_DATA_DEPTH`` levels.
    """
    if depth > MAX_DATA_DEPTH:
        raise ValueError(f"data is nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, str):
        # cel-cpp ends a string at NUL, so "alice\0mallory" would equal "alice": a NUL is
        # replaced, and the string can then equal no NUL-free one, in either engine.
        return value.replace("\x00", NUL_STANDIN) if "\x00" in value else value
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, (dict, Mapping)):
        return {plain(str(k), depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return str(value)


_parse_lock = threading.Lock()  # held around every use of the parser (lark's is not safe)


@functools.cache
def _parser() -> Any:
    import celpy

    return celpy.Environment()


# Parse-tree nodes that are an AST level of their own; the precedence levels
# (conditionalor … member) only count when they hold an operator (two children).
_ALWAYS = frozenset({
    "member_dot", "member_dot_arg", "member_index", "member_object", "dot_ident_arg",
    "ident_arg", "list_lit", "map_lit", "literal", "ident", "dot_ident",
})
# ``&&``/``||`` chains are not counted: cel-cpp balances them, and their length is
# limited by ``MAX_LOGICAL`` instead.
_OPERATOR_LEVELS = frozenset({"relation", "addition", "multiplication", "unary"})


def check_limits(expression: str) -> tuple[Token, ...]:
    """The limits both engines apply before compiling; ``CelCompileError`` if refused.
    Returns the expression's tokens."""
    size = len(expression.encode("utf-8"))
    if size > MAX_EXPRESSION_BYTES:
        raise CelCompileError(
            f"expression is {size} bytes, over the limit of {MAX_EXPRESSION_BYTES}")
    if not expression.strip():
        raise CelCompileError("expression is empty")
    scanned = tuple(scan(expression))
    bad_escape = ""  # the first invalid escape in a non-raw literal
    for literal in (t for t in scanned if t.kind == "literal"):
        if literal.closed and "r" not in literal.prefix.lower() and not bad_escape:
            try:
                decode(literal.body)
            except BindingError as exc:
                bad_escape = str(exc)
    # Outside literals and comments: the deepest ``( [ {`` nesting, the ``&&``/``||``, the
    # comprehensions and the longest run of prefix ``!``/``-``.
    tokens = [t for t in scanned
              if t.kind != "comment" and not (t.kind == "char" and t.text.isspace())]
    depth = nesting = logical = comprehensions = run = unary = 0
    second = False  # the token is the second character of ``&&`` or ``||``
    for i, token in enumerate(tokens):
        ch = token.text if token.kind == "char" else ""
        following = tokens[i + 1].text if i + 1 < len(tokens) else ""
        comprehensions += token.kind == "ident" and token.text in COMPREHENSIONS \
            and following == "(" and i > 0 and tokens[i - 1].text == "."
        if ch and ch in "([{":
            depth += 1
            nesting = max(nesting, depth)
        elif ch and ch in ")]}":
            depth = max(0, depth - 1)
        second = ch in ("&", "|") and following == ch and not second
        logical += second
        run = run + 1 if ch == "-" or (ch == "!" and following != "=") else 0
        unary = max(unary, run)
    for found, limit, what in (
            (nesting, MAX_NESTING, "brackets are nested {} deep"),
            (logical, MAX_LOGICAL, "expression has {} && and || operators"),
            (comprehensions, MAX_COMPREHENSIONS,
             "expression has {} comprehensions (all, exists, exists_one, map, filter)"),
            (unary, MAX_UNARY_RUN, "{} ! or - operators in a row")):
        if found > limit:
            raise CelCompileError(f"{what.format(found)}, over the limit of {limit}")
    if bad_escape:
        raise CelCompileError(bad_escape)
    return scanned


def parse(expression: str) -> Any:
    """cel-python's parse tree, within the limits and at most ``MAX_DEPTH`` deep."""
    check_limits(expression)
    return _checked_tree(expression)


def _checked_tree(expression: str) -> Any:
    """``parse`` after ``check_limits``: the tree, its depth and its cost checked."""
    from celpy.celparser import CELParseError

    try:
        with _parse_lock:
            tree = _parser().compile(expression)
    except CELParseError as exc:
        raise CelCompileError(f"syntax error: {_parse_error(exc)}") from None
    except RecursionError:
        raise CelCompileError("expression is nested too deeply") from None
    depth = tree_depth(tree)
    if depth > MAX_DEPTH:
        raise CelCompileError(f"expression is {depth} levels deep, over the limit of {MAX_DEPTH}")
    try:
        limits.check(tree)
    except limits.TooCostly as exc:
        raise CelCompileError(str(exc)) from None
    return tree


def _parse_error(exc: Exception) -> str:
    """Position and what was unexpected, from cel-python's parse error (and lark's)."""
    cause = exc.__cause__ or exc.__context__
    token, char = getattr(cause, "token", None), getattr(cause, "char", None)
    what = ("unexpected end of expression" if getattr(token, "type", "") == "$END"
            else f"unexpected {str(token)!r}" if token is not None
            else f"unexpected character {char!r}" if char else "unexpected input")
    return at(getattr(exc, "line", None), getattr(exc, "column", None)) + what


def tree_depth(tree: Any) -> int:
    """AST depth of a cel-python parse tree, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        kids = children(node)
        data = str(getattr(node, "data", ""))
        if data in _ALWAYS or (data in _OPERATOR_LEVELS and len(kids) == 2) or (
                data == "expr" and len(kids) == 3):
            depth += 1
        deepest = max(deepest, depth)
        stack.extend((kid, depth) for kid in kids if hasattr(kid, "children"))
    return deepest


# ------------------------------------------------------------------ name lookup


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
            body = bare(args[1]) if variable not in (None, *SUBSCRIBER) else None
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
        with _parse_lock:
            tree = _parser().compile(expression)
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
    node = bare(node)
    kids = children(node)
    if str(node.data) == "conditionaland" and len(kids) == 2:
        return [*_conjuncts(kids[0]), *_conjuncts(kids[1])]
    return [node]


def _is_name(node: Any) -> bool:
    """``subscriber.name``, ``subscriber["name"]`` (or ``__subscriber__``'s)."""
    node = bare(node)
    kids = children(node)
    if str(node.data) not in ("member_dot", "member_index") or len(kids) != 2 \
            or identifier(kids[0]) not in SUBSCRIBER:
        return False
    if str(node.data) == "member_dot":
        return str(kids[1]) == "name"
    literal = bare(kids[1])
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


# ------------------------------------------------------------------------- celpy

# Identifiers CEL knows without declarations (type names used as values).
_TYPE_NAMES = frozenset({
    "bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint",
    "dyn", "google",
})


class CelPyProgram:
    """A program, and the values of an expression of ``ce`` alone (``strings``)."""

    def __init__(self, runner: Any, seconds: float, key: str | None) -> None:
        self.key = key
        self.values: Values | None = None
        self._runner = runner
        self._seconds = seconds

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        from celpy import celtypes

        def run(bound: Any) -> bool:
            result = self.value({"ce": event, "subscriber": bound, BINDING_VARIABLE: bound})
            if not isinstance(result, celtypes.BoolType):
                raise CelEvalError(f"result is {_celpy_type(result)}, not bool")
            return bool(result)

        return run

    def strings(self, event: EventScope) -> frozenset[str] | None:
        from celpy import celtypes

        try:
            result = self.value({"ce": event})
        except CelEvalError:
            return None
        if isinstance(result, celtypes.ListType) and all(
                isinstance(item, celtypes.StringType) for item in result):
            return frozenset(str(item) for item in result)
        return None

    def value(self, activation: Any) -> Any:
        """The expression's value; ``CelEvalError`` (``CelLimitError`` at a bound)."""
        from celpy.evaluation import CELEvalError

        _budget.left = limits.ITERATIONS
        _budget.deadline = time.monotonic() + self._seconds
        _budget.seconds = self._seconds
        try:
            result = self._runner.evaluate(activation)
        except _Stopped as exc:
            raise CelLimitError(str(exc)) from None
        except CELEvalError as exc:
            raise CelEvalError(_celpy_error(exc)) from None
        except RecursionError:
            raise CelEvalError("expression is too deeply nested to evaluate") from None
        except Exception as exc:
            raise CelEvalError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, CELEvalError):
            raise CelEvalError(_celpy_error(result))
        return result


class _Stopped(Exception):
    """Raised inside celpy when an evaluation reaches a bound (not a ``CELEvalError``, so
    no short-circuit operator or macro swallows it)."""


# Iterations left and the deadline of the evaluation running on this thread.
_budget = threading.local()


def _counted(body: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def step(value: Any) -> Any:
        left = _budget.left - 1
        if left < 0:
            raise _Stopped(ITERATIONS_MESSAGE)
        if time.monotonic() > _budget.deadline:
            raise _Stopped(TIME_MESSAGE.format(seconds=_budget.seconds))
        _budget.left = left
        return body(value)

    return step


def _bounded_runner() -> type:
    """celpy's interpreter with every comprehension iteration counted (``_counted``)."""
    import celpy
    from celpy import celtypes
    from celpy.evaluation import Evaluator

    class BoundedEvaluator(Evaluator):
        def sub_evaluator(self, ast: Any) -> Evaluator:
            return BoundedEvaluator(ast, activation=self.activation)

        def build_macro_eval(self, child: Any) -> Callable[[Any], Any]:
            return _counted(super().build_macro_eval(child))

        def build_ss_macro_eval(self, child: Any) -> Callable[[Any], Any]:
            # ``exists``/``all``: once settled, cel-cpp stops iterating; celpy's reduce
            # goes on, so the rest are answered without being evaluated or counted.
            body = _counted(super().build_ss_macro_eval(child))
            settles = str(child.children[1]) == "exists"
            settled: list[Any] = []

            def step(value: Any) -> Any:
                if settled:
                    return settled[0]
                result = body(value)
                if isinstance(result, celtypes.BoolType) and bool(result) is settles:
                    settled.append(result)
                return result

            return step

    class BoundedRunner(celpy.InterpretedRunner):
        def evaluate(self, context: Any) -> Any:
            return BoundedEvaluator(ast=self.ast, activation=self.new_activation()
                                    ).evaluate(context)

    return BoundedRunner


def _celpy_error(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _celpy_type(value: Any) -> str:
    """``IntType`` → ``int``, as CEL names its types."""
    return "null" if value is None else type(value).__name__.removesuffix("Type").lower()


def _numeric_functions() -> dict[str, Any]:
    """Numeric comparisons across int, uint and double, as cel-cpp does them."""
    import operator

    from celpy import celtypes
    from celpy.evaluation import base_functions

    numbers = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)

    def wrap(name: str, op: Any) -> Any:
        fallback = base_functions[name]

        def compare(a: Any, b: Any) -> Any:
            if type(a) is type(b) or not all(isinstance(v, numbers) and not isinstance(
                    v, celtypes.BoolType) for v in (a, b)):
                return fallback(a, b)
            x, y = (float(v) if isinstance(v, celtypes.DoubleType) else int(v) for v in (a, b))
            if math.isnan(x) or math.isnan(y):
                return celtypes.BoolType(name == "_!=_")
            return celtypes.BoolType(op(x, y))

        return compare

    return {name: wrap(name, op) for name, op in (
        ("_==_", operator.eq), ("_!=_", operator.ne), ("_<_", operator.lt),
        ("_<=_", operator.le), ("_>_", operator.gt), ("_>=_", operator.ge))}


class CelPyEngine:
    """cel-python: interpreted, pure Python."""

    name = "celpy"

    def __init__(self, seconds: float = EVALUATION_SECONDS) -> None:
        from celpy.evaluation import base_functions

        self.seconds = seconds  # how long one evaluation may run
        self._functions = _numeric_functions()
        self._known_functions = frozenset(base_functions) | {"has", "dyn"} | COMPREHENSIONS
        self._runner_class = _bounded_runner()
        with _parse_lock:
            _parser()  # build the grammar now (about a second), not on the first compile

    def compile(self, expression: str) -> Program:
        tree = parse(expression)
        self._check_references(tree)
        try:
            with _parse_lock:
                runner = self._runner_class(_parser(), tree, self._functions)
        except RecursionError:
            raise CelCompileError("expression is too deeply nested") from None
        except Exception as exc:
            raise CelCompileError(f"{type(exc).__name__}: {exc}") from None
        return CelPyProgram(runner, self.seconds, name_key(tree, expression))

    def compile_values(self, expression: str) -> Values:
        return self.compile(expression)  # type: ignore[return-value]  # a CelPyProgram

    def _check_references(self, tree: Any) -> None:
        """Refuse undeclared variables and unknown functions at compile time, as the
        cel-cpp type checker does (cel-python would only fail when evaluating)."""
        known: set[str | None] = {*VARIABLES, *_TYPE_NAMES}  # and comprehension variables
        names: list[tuple[bool, str]] = []  # (a function?, name)
        for node in walk(tree):
            kids = children(node)
            data = str(getattr(node, "data", ""))
            name = next((str(k) for k in kids if not hasattr(k, "children")), "")
            if name and data in ("ident", "dot_ident", "ident_arg", "dot_ident_arg",
                                 "member_dot_arg"):
                names.append((data.endswith("_arg"), name))
            if data == "member_dot_arg" and name in COMPREHENSIONS:
                args = [children(k) for k in kids if str(getattr(k, "data", "")) == "exprlist"]
                known.add(identifier(args[0][0]) if args and args[0] else None)
        for function, name in names:
            if not (name in self._known_functions if function else name in known):
                what = "function " if function else ""
                raise CelCompileError(f"undeclared reference to {what}'{name}'")

    def value(self, plain_value: Any) -> Any:
        from celpy.adapter import json_to_cel

        return json_to_cel(plain_value)

    def event(self, ce_value: Any) -> EventScope:
        return ce_value  # shared by every subscriber's activation (no copy)


# ---------------------------------------------------------------------- cel-expr


# The subscriber that ``subscriber()`` / ``__subscriber__()`` return: set before each
# evaluation, on the thread that evaluates (cel-cpp calls the function on it).
_current = threading.local()


def _current_subscriber() -> Any:
    return _current.bound


def as_calls(expression: str, names: tuple[str, ...] = SUBSCRIBER,
             scanned: tuple[Token, ...] = ()) -> str | None:
    """``expression`` with each reference to a variable in ``names`` made a call of the
    function of that name (``subscriber.name`` → ``subscriber().name``); literals,
    comments and fields (``x.subscriber``) are left alone (``scanned``: its tokens, when the
    caller has them). ``None`` when it calls one of ``names`` itself (``subscriber()`` must
    stay an error)."""
    tokens = scanned or tuple(scan(expression))
    significant = [t for t in tokens
                   if t.kind != "comment" and not (t.kind == "char" and t.text.isspace())]
    texts = {}
    for n, token in enumerate(significant):
        # Only a char token's text is "." or "(" (literals keep their quotes).
        if token.kind != "ident" or token.text not in names \
                or (n and significant[n - 1].text == "."):
            continue
        if n + 1 < len(significant) and significant[n + 1].text == "(":
            return None
        texts[id(token)] = token.text + "()"
    return "".join(texts.get(id(t), t.text) for t in tokens)


class CelExprProgram:
    """One compiled form: for the event's activation (``shared``: the subscriber through
    ``_current_subscriber``), else for an activation per subscriber."""

    def __init__(self, compiled: Any, engine: CelExprEngine, shared: bool,
                 key: str | None) -> None:
        self.key = key
        self.values: Values | None = None
        self.shares_the_event = shared
        self._compiled = compiled
        self._engine = engine

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        if not isinstance(event, CelExprEvent):
            raise TypeError("not an event of the cel-expr engine")
        if event.error is not None:
            return raising(event.error)
        run, activation = self._run, event.activation
        if self.shares_the_event:
            return lambda bound: run(activation, bound)
        own = self._engine.activation
        return lambda bound: run(own({"ce": event.ce, "subscriber": bound,
                                      BINDING_VARIABLE: bound}))

    def _run(self, activation: Any, bound: Any = None) -> bool:
        cel = self._engine.cel
        _current.bound = bound  # what ``_current_subscriber`` gives while this evaluates
        try:
            result = self._compiled.eval(activation)
            kind = result.type()
            if kind == cel.Type.ERROR:
                raise RuntimeError(str(result.value()))
        except Exception as exc:
            message = _cel_expr_error(str(exc))
            # How cel-cpp says an evaluation reached its iteration budget.
            if "iteration budget exceeded" in message.lower():
                raise CelLimitError(ITERATIONS_MESSAGE) from None
            raise CelEvalError(message) from None
        if kind == cel.Type.BOOL:
            return bool(result.value())
        raise CelEvalError(f"result is {kind.name().lower()}, not bool")


class CelExprValues:
    def __init__(self, compiled: Any, cel: Any) -> None:
        self._compiled = compiled
        self._string, self._list = cel.Type.STRING, cel.Type.LIST

    def strings(self, event: EventScope) -> frozenset[str] | None:
        try:
            result = self._compiled.eval(event.activation)
            items = result.value() if result.type() == self._list else None
            if items is None or any(item.type() != self._string for item in items):
                return None
            return frozenset(item.value() for item in items)
        except Exception:
            return None


_CEL_EXPR_POSITION = re.compile(r"ERROR: <input>:(-?\d+):(-?\d+): ")


def _cel_expr_error(text: str) -> str:
    """cel-cpp's status text in the words cel-python's errors use: no status codes, no
    source excerpt, no list of expected tokens."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("|")]
    message = " ".join(" ".join(lines).split())
    if "recursion" in message.lower():
        return f"expression is nested too deeply (over {MAX_DEPTH} levels)"
    message = re.sub(r"(INVALID_ARGUMENT|NOT_FOUND|UNKNOWN|CANCELLED): ", "", message)
    message = re.sub(r" \[[A-Z_]+\]$", "", message)
    message = re.sub(r" expecting (\{[^}]*\}|\S+)", "", message)
    message = message.replace(" (in container '')", "")
    message = message.replace("mismatched input '<EOF>'", "unexpected end of expression")
    message = re.sub(r"(mismatched|extraneous) input ('[^']*')", r"unexpected \2", message)
    message = _CEL_EXPR_POSITION.sub(
        lambda m: at(m.group(1), m.group(2)) if m.group(1) != "-1" else "",
        message, count=1)
    message = re.sub(r" ?" + _CEL_EXPR_POSITION.pattern, "; ", message)
    message = message.replace(": Syntax error: ", ": ").strip()
    if "Syntax error" in text:
        message = "syntax error: " + message.replace("Syntax error: ", "")
    return message


class CelExprEngine:
    """cel-expr-python: Google's cel-cpp with its type checker."""

    name = "cel-expr"

    def __init__(self) -> None:
        from cel_expr_python import cel

        self.cel = cel
        subscriber = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
        self._env = cel.NewEnv(variables={
            "ce": cel.Type.DYN, "subscriber": subscriber, BINDING_VARIABLE: subscriber,
        })
        # The same, with the subscriber as functions: for one activation per event.
        self._shared_env = cel.NewEnv(variables={"ce": cel.Type.DYN}, functions=[
            cel.FunctionDecl(name, [cel.Overload(
                id=f"{name}_current", return_type=subscriber, parameters=[],
                impl=_current_subscriber)])
            for name in SUBSCRIBER])
        self._lock = threading.Lock()

    def compile(self, expression: str) -> Program:
        """One form: the shared activation's when it compiles (the common case), else
        the plain one, which also gives a failing expression its error."""
        text = as_calls(expression, scanned=check_limits(expression))
        compiled = None
        if text is not None:
            with contextlib.suppress(CelCompileError):
                compiled = self._compiled(self._shared_env, text)
        shared = compiled is not None
        compiled = self._compiled(self._env, expression) if compiled is None else compiled
        returns = compiled.return_type()
        if returns not in (self.cel.Type.BOOL, self.cel.Type.DYN):
            raise CelCompileError(
                f"expression returns {returns.name().lower()}, but a filter must return bool"
            )
        tree = _checked_tree(expression)  # depth and cost, on the tree both engines share
        return CelExprProgram(compiled, self, shared, name_key(tree, expression))

    def compile_values(self, expression: str) -> Values:
        return CelExprValues(self._compiled(self._shared_env, expression), self.cel)

    def _compiled(self, env: Any, text: str) -> Any:
        try:
            with self._lock:
                return env.compile(text)
        except Exception as exc:
            raise CelCompileError(_cel_expr_error(str(exc))) from None

    def event(self, ce_value: Any) -> EventScope:
        try:
            return CelExprEvent(ce_value, self._shared_env.Activation({"ce": ce_value}))
        except Exception as exc:
            return CelExprEvent(ce_value, None, f"cannot bind variables: {exc}")

    def value(self, plain_value: Any) -> Any:
        return plain_value

    def activation(self, values: Mapping[str, Any]) -> Any:
        """``CelEvalError`` when cel-expr cannot take ``values``."""
        try:
            return self._env.Activation(dict(values))
        except Exception as exc:
            raise CelEvalError(f"cannot bind variables: {exc}") from None


class CelExprEvent(NamedTuple):
    """One event: its activation holds only ``ce`` (converted by cel-cpp once, on the
    first evaluation) and is shared by every subscriber; ``error`` when cel-cpp cannot
    take the event."""

    ce: Any
    activation: Any
    error: str | None = None


# -------------------------------------------------------------------------- choice


def cel_expr_available() -> bool:
    try:
        import cel_expr_python.cel  # noqa: F401
    except ImportError:  # not installed, or its native part does not load
        return False
    return True


def select(name: str) -> Engine:
    """``auto`` → cel-expr when importable, else celpy; ``ValueError`` if unknown or
    unavailable."""
    if name == "cel-expr" and not cel_expr_available():
        raise ValueError("cel-expr-python is not installed")
    if name == "celpy" or (name == "auto" and not cel_expr_available()):
        return CelPyEngine()
    if name in ("auto", "cel-expr"):
        return CelExprEngine()
    raise ValueError(f"unknown CEL engine {name!r}: use auto, celpy or cel-expr")
