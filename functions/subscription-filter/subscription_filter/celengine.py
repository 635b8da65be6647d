"""CEL behind one small adapter, with two engines that pass one conformance suite.

* ``celpy`` (cel-python): pure Python, always installed.
* ``cel-expr`` (cel-expr-python, Google's cel-cpp binding): much faster; used when
  importable (``CEL_ENGINE=auto``) or when asked for (``CEL_ENGINE=cel-expr``).

Both see the same variables: ``ce`` (the CloudEvent: attributes, extensions and
``data``), ``subscriber`` (``spec.subscriber`` with text leaves) and the internal
``__subscriber__`` that ``$(subscriber.*)`` placeholders are rewritten to.

Absurd expressions are refused at compile time, before either engine sees them, by
the same lexical rules for both: at most ``MAX_EXPRESSION_BYTES`` bytes, brackets
nested at most ``MAX_NESTING`` deep, at most ``MAX_LOGICAL`` ``&&``/``||`` operators,
at most ``MAX_UNARY_RUN`` ``!``/``-`` in a row, at most ``MAX_COMPREHENSIONS``
comprehension macros, and valid string escapes (cel-python
is lenient about invalid ones, cel-cpp is not). Then each engine keeps its own
depth limit: cel-cpp refuses chains nested over 32 levels while parsing, and for
cel-python the abstract syntax tree is measured on its parse tree (built without
recursion) and refused over ``MAX_DEPTH`` levels. So neither a recursion limit nor
a native stack can be reached by a subscription's text, and both engines refuse
the same absurd expressions.

Evaluation is bounded the same way in both engines: ``limits`` refuses at compile time
what could cost too much for the worst event, and at run time a comprehension runs at
most ``limits.ITERATIONS`` times per evaluation (cel-cpp's own budget; the celpy engine
counts the same) and a celpy evaluation at most ``EVALUATION_SECONDS``.

Results: ``True`` matches; ``False`` does not; an evaluation error or a non-bool
result raises ``CelEvalError`` (the caller treats it as "does not match"), and an
evaluation stopped at a bound raises ``CelLimitError``: no answer, which the caller
shows on the subscription instead of taking it for a no.

One event is evaluated against many subscriptions: ``Engine.event`` takes the event
(converted once) and ``EventScope.bind`` gives, per subscriber, what
``Program.evaluate`` takes. celpy shares the converted event between the
subscribers' activations. cel-cpp converts the data of an activation into its own
values on the first evaluation against it, so cel-expr keeps one activation per
event holding only ``ce`` and compiles each program where ``subscriber`` and
``__subscriber__`` are calls of functions that return the subscriber being evaluated
(bound per evaluation, per thread); an expression that does not compile that way (e.g.
``subscriber`` as a macro's own variable) is compiled as written and evaluated with an
activation of its own per subscriber.

Most filters are true for a subscriber only when its name is among some values of the
event (``name_key``): the caller evaluates those values once per event
(``Engine.compile_values``) and only the subscribers named there.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from . import limits
from .binding import BINDING_VARIABLE, Token, scan, shape

MAX_EXPRESSION_BYTES = 4096
MAX_NESTING = 32
MAX_DEPTH = 32
MAX_LOGICAL = 64
MAX_UNARY_RUN = 8
# The CRD's admission rule says the same, so such a filter is refused when it is written.
MAX_COMPREHENSIONS = 8
MAX_DATA_DEPTH = 64
VARIABLES = ("ce", "subscriber", BINDING_VARIABLE)
ENGINES = ("celpy", "cel-expr")
_INT64 = (-(2**63), 2**63 - 1)


class CelError(Exception):
    """Carries a one-line message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split())[:500])

    @property
    def message(self) -> str:
        return str(self.args[0])


# How both engines name a place in the expression in a compile error (1-based).
_POSITION = re.compile(r"line (\d+), column (\d+): ")


def at(line: int | str, column: int | str) -> str:
    return f"line {line}, column {column}: "


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


_BUDGET = "iteration budget exceeded"  # how cel-cpp says it


def eval_error(message: str) -> CelEvalError:
    """The error for an engine's message: ``CelLimitError`` when it says a bound was hit."""
    if _BUDGET in message.lower():
        return CelLimitError(ITERATIONS_MESSAGE)
    return CelEvalError(message)


class Program(Protocol):
    source: str
    # The filter's name lookup (``name_key``), or ``None``; ``values``: its compiled
    # values (``Engine.compile_values``), when the caller made them.
    key: str | None
    values: Values | None

    def evaluate(self, activation: Any) -> bool:
        """``True``/``False``; ``CelEvalError`` for errors and non-bool results."""
        ...

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        """``evaluate`` against ``event`` as a function of a subscriber's binding: the
        same result as ``evaluate(event.bind(bound))``, set up once per event."""
        ...


class Values(Protocol):
    """An expression that reads only ``ce``, evaluated for the text it gives."""

    def strings(self, event: EventScope) -> frozenset[str] | None:
        """The value against ``event`` when it is a list of strings; ``None`` for
        anything else, an error included."""
        ...


class EventScope(Protocol):
    """One event (``ce``), converted for the engine once, for every subscriber."""

    def bind(self, bound: Any) -> Any:
        """What ``Program.evaluate`` takes to see this event with ``subscriber`` and
        ``__subscriber__`` both ``bound`` (a binding converted with ``Engine.value``)."""
        ...


class Engine(Protocol):
    name: str

    def compile(self, expression: str) -> Program: ...

    def compile_values(self, expression: str) -> Values:
        """``CelCompileError`` if ``expression`` does not compile."""
        ...

    def event(self, ce_value: Any) -> EventScope:
        """``ce_value`` (converted with ``value``) for binding to each subscriber."""
        ...

    def value(self, plain_value: Any) -> Any:
        """A plain JSON value (see ``plain``) in this engine's own representation."""
        ...


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
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT64[0] <= value <= _INT64[1] else float(value)
    if isinstance(value, float):
        return value
    if isinstance(value, (dict, Mapping)):
        return {plain(str(k), depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    return str(value)


_parse_lock = threading.Lock()
_parse_env: Any = None


def _parser() -> Any:
    global _parse_env
    if _parse_env is None:
        import celpy

        _parse_env = celpy.Environment()
    return _parse_env


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
            f"expression is {size} bytes, over the limit of {MAX_EXPRESSION_BYTES}"
        )
    if not expression.strip():
        raise CelCompileError("expression is empty")
    measured = shape(expression)
    if measured.nesting > MAX_NESTING:
        raise CelCompileError(
            f"brackets are nested {measured.nesting} deep, over the limit of {MAX_NESTING}"
        )
    if measured.logical_operators > MAX_LOGICAL:
        raise CelCompileError(
            f"expression has {measured.logical_operators} && and || operators, over the "
            f"limit of {MAX_LOGICAL}"
        )
    if measured.comprehensions > MAX_COMPREHENSIONS:
        raise CelCompileError(
            f"expression has {measured.comprehensions} comprehensions (all, exists, "
            f"exists_one, map, filter), over the limit of {MAX_COMPREHENSIONS}"
        )
    if measured.unary_run > MAX_UNARY_RUN:
        raise CelCompileError(
            f"{measured.unary_run} ! or - operators in a row, over the limit of "
            f"{MAX_UNARY_RUN}"
        )
    if measured.bad_escape:
        raise CelCompileError(measured.bad_escape)
    return measured.tokens


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
    line = getattr(exc, "line", None)
    column = getattr(exc, "column", None)
    cause = exc.__cause__ or exc.__context__
    what = "unexpected input"
    token = getattr(cause, "token", None)
    if token is not None:
        what = ("unexpected end of expression" if getattr(token, "type", "") == "$END"
                else f"unexpected {str(token)!r}")
    elif getattr(cause, "char", None):
        what = f"unexpected character {cause.char!r}"  # type: ignore[union-attr]
    where = at(line, column) if line is not None and column is not None else ""
    return f"{where}{what}"


def _children(node: Any) -> list[Any]:
    return [c for c in getattr(node, "children", []) if c is not None]


def tree_depth(tree: Any) -> int:
    """AST depth of a cel-python parse tree, computed without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        kids = _children(node)
        data = str(getattr(node, "data", ""))
        counts = (
            data in _ALWAYS
            or (data in _OPERATOR_LEVELS and len(kids) == 2)
            or (data == "expr" and len(kids) == 3)
        )
        depth += 1 if counts else 0
        deepest = max(deepest, depth)
        stack.extend((kid, depth) for kid in kids if hasattr(kid, "children"))
    return deepest


# ------------------------------------------------------------------ name lookup

# Levels of the parse tree that only wrap one child (parentheses included).
_WRAPPERS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                       "multiplication", "unary", "member", "primary", "paren_expr"})
_SUBSCRIBER = frozenset({"subscriber", BINDING_VARIABLE})


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
        kids = _children(part)
        data = str(part.data)
        if data == "relation" and len(kids) == 2 and str(getattr(kids[0], "data", "")) in (
                "relation_eq", "relation_in"):
            left, right = _children(kids[0])[0], kids[1]
            if str(kids[0].data) == "relation_in":
                if _is_name(left) and _free(right):
                    return span(right)
                continue
            other = _other_side(left, right)
            if other is not None:
                return f"[{span(other)}]"
        elif data == "member_dot_arg" and len(kids) == 3 and str(kids[1]) in (
                "exists", "exists_one") and _free(kids[0]):
            args = _children(kids[2])
            variable = _bare(args[0]) if len(args) == 2 else None
            if variable is None or str(variable.data) != "ident" or \
                    str(_children(variable)[0]) in _SUBSCRIBER:
                continue
            body = _bare(args[1])
            found = _children(body)
            if str(body.data) == "relation" and len(found) == 2 and \
                    str(getattr(found[0], "data", "")) == "relation_eq":
                other = _other_side(_children(found[0])[0], found[1])
                if other is not None:
                    return (f"({span(kids[0])}).map({_children(variable)[0]}, "
                            f"{span(other)})")
    return None


def _bare(node: Any) -> Any:
    while str(getattr(node, "data", "")) in _WRAPPERS and len(_children(node)) == 1 \
            and hasattr(_children(node)[0], "children"):
        node = _children(node)[0]
    return node


def _conjuncts(node: Any) -> list[Any]:
    node = _bare(node)
    kids = _children(node)
    if str(node.data) == "conditionaland" and len(kids) == 2:
        return [*_conjuncts(kids[0]), *_conjuncts(kids[1])]
    return [node]


def _is_name(node: Any) -> bool:
    """``subscriber.name``, ``subscriber["name"]`` (or ``__subscriber__``'s)."""
    node = _bare(node)
    kids = _children(node)
    if str(node.data) not in ("member_dot", "member_index") or len(kids) != 2:
        return False
    holder = _bare(kids[0])
    if str(holder.data) != "ident" or str(_children(holder)[0]) not in _SUBSCRIBER:
        return False
    if str(node.data) == "member_dot":
        return str(kids[1]) == "name"
    literal = _bare(kids[1])
    return str(literal.data) == "literal" and str(_children(literal)[0]) in ('"name"', "'name'")


def _other_side(left: Any, right: Any) -> Any:
    """Of ``left == right``, the side that is not the name when the other is free of
    the subscriber."""
    for name, other in ((left, right), (right, left)):
        if _is_name(name) and _free(other):
            return other
    return None


def _free(node: Any) -> bool:
    """Whether ``node`` never names the subscriber."""
    stack = [node]
    while stack:
        current = stack.pop()
        kids = _children(current)
        if str(getattr(current, "data", "")) in ("ident", "dot_ident") and kids and \
                str(kids[0]) in _SUBSCRIBER:
            return False
        stack.extend(k for k in kids if hasattr(k, "children"))
    return True


# ------------------------------------------------------------------------- celpy

# Identifiers CEL knows without declarations (type names used as values).
_TYPE_NAMES = frozenset({
    "bool", "bytes", "double", "int", "list", "map", "null_type", "string", "type", "uint",
    "dyn", "google",
})
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})


class CelPyProgram:
    def __init__(self, source: str, runner: Any, seconds: float = EVALUATION_SECONDS,
                 key: str | None = None) -> None:
        self.source = source
        self.key = key
        self.values: Values | None = None
        self._runner = runner
        self._seconds = seconds

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        evaluate, bind = self.evaluate, event.bind
        return lambda bound: evaluate(bind(bound))

    def evaluate(self, activation: Any) -> bool:
        from celpy import celtypes

        result = self.value(activation)
        if not isinstance(result, celtypes.BoolType):
            raise CelEvalError(f"result is {_celpy_type(result)}, not bool")
        return bool(result)

    def strings(self, event: EventScope) -> frozenset[str] | None:
        from celpy import celtypes

        try:
            result = self.value(event.bind(None))
        except CelEvalError:
            return None
        if isinstance(result, celtypes.ListType) and all(
                isinstance(item, celtypes.StringType) for item in result):
            return frozenset(str(item) for item in result)
        return None

    def value(self, activation: Any) -> Any:
        """The expression's value; ``CelEvalError`` (``CelLimitError`` at a bound)."""
        from celpy.evaluation import CELEvalError

        outer = getattr(_budget, "left", None)
        if outer is None:  # the outermost evaluation on this thread sets the bounds
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
        finally:
            if outer is None:
                _budget.left = None
        if isinstance(result, CELEvalError):
            raise CelEvalError(_celpy_error(result))
        return result


class _Stopped(Exception):
    """Raised inside celpy when an evaluation reaches a bound (not a ``CELEvalError``, so
    no short-circuit operator or macro swallows it)."""


# Iterations left and the deadline of the evaluation running on this thread.
_budget = threading.local()


def _step() -> None:
    left = _budget.left - 1
    if left < 0:
        raise _Stopped(ITERATIONS_MESSAGE)
    if time.monotonic() > _budget.deadline:
        raise _Stopped(TIME_MESSAGE.format(seconds=_budget.seconds))
    _budget.left = left


def _counted(body: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def step(value: Any) -> Any:
        _step()
        return body(value)

    return step


def _bounded_runner() -> type:
    """celpy's interpreter with every comprehension iteration counted (``_step``)."""
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
    name = type(value).__name__
    return {"IntType": "int", "UintType": "uint", "DoubleType": "double",
            "StringType": "string", "BytesType": "bytes", "ListType": "list",
            "MapType": "map", "NoneType": "null"}.get(name, name)


def _numeric_functions() -> dict[str, Any]:
    """Numeric comparisons across int, uint and double, as cel-cpp does them."""
    import operator

    from celpy import celtypes
    from celpy.evaluation import base_functions

    numbers = (celtypes.IntType, celtypes.UintType, celtypes.DoubleType)

    def mixed(a: Any, b: Any) -> bool:
        return (
            isinstance(a, numbers) and isinstance(b, numbers)
            and not isinstance(a, celtypes.BoolType) and not isinstance(b, celtypes.BoolType)
            and type(a) is not type(b)
        )

    def native(x: Any) -> int | float:
        return float(x) if isinstance(x, celtypes.DoubleType) else int(x)

    def wrap(name: str, op: Any) -> Any:
        fallback = base_functions[name]

        def compare(a: Any, b: Any) -> Any:
            if mixed(a, b):
                x, y = native(a), native(b)
                if (isinstance(x, float) and math.isnan(x)) or (
                    isinstance(y, float) and math.isnan(y)
                ):
                    return celtypes.BoolType(name == "_!=_")
                return celtypes.BoolType(op(x, y))
            return fallback(a, b)

        return compare

    return {
        "_==_": wrap("_==_", operator.eq), "_!=_": wrap("_!=_", operator.ne),
        "_<_": wrap("_<_", operator.lt), "_<=_": wrap("_<=_", operator.le),
        "_>_": wrap("_>_", operator.gt), "_>=_": wrap("_>=_", operator.ge),
    }


class CelPyEngine:
    """cel-python: interpreted, pure Python."""

    name = "celpy"

    def __init__(self, seconds: float = EVALUATION_SECONDS) -> None:
        from celpy.evaluation import base_functions

        self.seconds = seconds  # how long one evaluation may run

        self._functions = _numeric_functions()
        self._known_functions = frozenset(base_functions) | {"has", "dyn"} | _MACROS
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
        return CelPyProgram(expression, runner, self.seconds, name_key(tree, expression))

    def compile_values(self, expression: str) -> Values:
        program = self.compile(expression)
        assert isinstance(program, CelPyProgram)
        return program

    def _check_references(self, tree: Any) -> None:
        """Refuse undeclared variables and unknown functions at compile time, as the
        cel-cpp type checker does (cel-python would only fail when evaluating)."""
        bound: set[str] = set()
        names: list[tuple[str, str]] = []
        stack = [tree]
        while stack:
            node = stack.pop()
            kids = _children(node)
            data = str(getattr(node, "data", ""))
            tokens = [str(k) for k in kids if not hasattr(k, "children")]
            if data in ("ident", "dot_ident") and tokens:
                names.append(("variable", tokens[0]))
            elif data in ("ident_arg", "dot_ident_arg") and tokens:
                names.append(("function", tokens[0]))
            elif data == "member_dot_arg" and tokens:
                names.append(("function", tokens[0]))
                if tokens[0] in _MACROS:
                    bound.update(_macro_variable(kids))
            stack.extend(k for k in kids if hasattr(k, "children"))
        for kind, name in names:
            if kind == "variable" and name not in VARIABLES and name not in _TYPE_NAMES \
                    and name not in bound:
                raise CelCompileError(f"undeclared reference to '{name}'")
            if kind == "function" and name not in self._known_functions:
                raise CelCompileError(f"undeclared reference to function '{name}'")

    def value(self, plain_value: Any) -> Any:
        from celpy.adapter import json_to_cel

        return json_to_cel(plain_value)

    def event(self, ce_value: Any) -> EventScope:
        return CelPyEvent(ce_value)


class CelPyEvent:
    """The converted event, shared by every subscriber's activation (no copy)."""

    def __init__(self, ce_value: Any) -> None:
        self._ce = ce_value

    def bind(self, bound: Any) -> Any:
        if bound is None:  # for an expression that reads only ``ce``
            return {"ce": self._ce}
        return {"ce": self._ce, "subscriber": bound, BINDING_VARIABLE: bound}


def _macro_variable(kids: list[Any]) -> set[str]:
    """The iteration variable of ``x.exists(v, …)``: the first argument when it is a
    bare identifier."""
    exprlists = [k for k in kids if str(getattr(k, "data", "")) == "exprlist"]
    if not exprlists:
        return set()
    args = _children(exprlists[0])
    if not args:
        return set()
    node = args[0]
    while True:
        kids = [k for k in _children(node) if hasattr(k, "children")]
        if str(getattr(node, "data", "")) == "ident":
            tokens = [str(k) for k in _children(node) if not hasattr(k, "children")]
            return set(tokens[:1])
        if len(kids) != 1 or len(_children(node)) != 1:
            return set()
        node = kids[0]


# ---------------------------------------------------------------------- cel-expr


# The subscriber that ``subscriber()`` / ``__subscriber__()`` return: set around one
# evaluation, on the thread that evaluates (cel-cpp calls the function on it).
_current = threading.local()
_UNSET = object()
SUBSCRIBER_FUNCTIONS = ("subscriber", BINDING_VARIABLE)


def _current_subscriber() -> Any:
    bound = getattr(_current, "bound", _UNSET)
    if bound is _UNSET:
        raise RuntimeError("no subscriber is bound")
    return bound


def as_calls(expression: str, names: tuple[str, ...] = SUBSCRIBER_FUNCTIONS,
             scanned: tuple[Token, ...] = ()) -> str | None:
    """``expression`` with each reference to a variable in ``names`` made a call of the
    function of that name (``subscriber.name`` → ``subscriber().name``); literals,
    comments and fields (``x.subscriber``) are left alone. ``None`` when its text cannot
    be rebuilt from its tokens (``scanned``, when the caller has them), or it calls one of
    ``names`` itself (``subscriber()`` must stay an error)."""
    tokens = scanned or tuple(scan(expression))
    if "".join(t.text for t in tokens) != expression:
        return None
    significant = [t for t in tokens
                   if t.kind != "comment" and not (t.kind == "char" and t.text.isspace())]
    texts = {}
    for n, token in enumerate(significant):
        if token.kind != "ident" or token.text not in names \
                or (n and _is(significant[n - 1], ".")):
            continue
        if n + 1 < len(significant) and _is(significant[n + 1], "("):
            return None
        texts[id(token)] = token.text + "()"
    return "".join(texts.get(id(t), t.text) for t in tokens)


def _is(token: Token, char: str) -> bool:
    return token.kind == "char" and token.text == char


class CelExprProgram:
    """One compiled form: for an event's shared activation (``shared``: the subscriber
    through ``_current_subscriber``), else with an activation per subscriber."""

    def __init__(self, source: str, compiled: Any, cel: Any, shared: bool,
                 key: str | None) -> None:
        self.source = source
        self.key = key
        self.values: Values | None = None
        self._compiled = compiled
        self._cel = cel
        self._shared = shared

    @property
    def shares_the_event(self) -> bool:
        return self._shared

    def evaluate(self, activation: Any) -> bool:
        if isinstance(activation, CelExprBound):
            if self._shared:
                return self._result(self._run(activation.event.activation(), activation.bound))
            activation = activation.activation()
        return self._result(self._run(activation))

    def for_event(self, event: EventScope) -> Callable[[Any], bool]:
        if not isinstance(event, CelExprEvent) or not self._shared:
            evaluate, bind = self.evaluate, event.bind
            return lambda bound: evaluate(bind(bound))
        try:
            activation = event.activation()
        except CelEvalError as exc:
            message = exc.message

            def cannot(bound: Any) -> bool:
                raise CelEvalError(message)

            return cannot
        run, result = self._run, self._result
        return lambda bound: result(run(activation, bound))

    def _run(self, activation: Any, bound: Any = _UNSET) -> Any:
        previous = getattr(_current, "bound", _UNSET)
        _current.bound = bound
        try:
            return self._compiled.eval(activation)
        except Exception as exc:
            raise eval_error(_cel_expr_error(str(exc))) from None
        finally:
            _current.bound = previous

    def _result(self, result: Any) -> bool:
        kind = result.type()
        if kind == self._cel.Type.BOOL:
            return bool(result.value())
        if kind == self._cel.Type.ERROR:
            raise eval_error(_cel_expr_error(str(result.value())))
        raise CelEvalError(f"result is {kind.name().lower()}, not bool")


class CelExprValues:
    def __init__(self, compiled: Any, cel: Any) -> None:
        self._compiled = compiled
        self._string, self._list = cel.Type.STRING, cel.Type.LIST

    def strings(self, event: EventScope) -> frozenset[str] | None:
        try:
            assert isinstance(event, CelExprEvent)
            result = self._compiled.eval(event.activation())
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
    for code in ("INVALID_ARGUMENT: ", "NOT_FOUND: ", "UNKNOWN: ", "CANCELLED: "):
        message = message.replace(code, "")
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

        self._cel = cel
        subscriber = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
        self._env = cel.NewEnv(variables={
            "ce": cel.Type.DYN, "subscriber": subscriber, BINDING_VARIABLE: subscriber,
        })
        # The same, with the subscriber as functions: for one activation per event.
        self._shared_env = cel.NewEnv(variables={"ce": cel.Type.DYN}, functions=[
            cel.FunctionDecl(name, [cel.Overload(
                id=f"{name}_current", return_type=subscriber, parameters=[],
                impl=_current_subscriber)])
            for name in SUBSCRIBER_FUNCTIONS])
        self._lock = threading.Lock()

    def compile(self, expression: str) -> Program:
        """One form: the shared activation's when it compiles (the common case), else
        the plain one, which also gives a failing expression its error."""
        text = as_calls(expression, scanned=check_limits(expression))
        compiled = self._compile_in(self._shared_env, text) if text is not None else None
        shared = compiled is not None
        if compiled is None:
            try:
                compiled = self._compile_in(self._env, expression, quiet=False)
            except Exception as exc:
                raise CelCompileError(_cel_expr_error(str(exc))) from None
        returns = compiled.return_type()
        if returns not in (self._cel.Type.BOOL, self._cel.Type.DYN):
            raise CelCompileError(
                f"expression returns {returns.name().lower()}, but a filter must return bool"
            )
        tree = _checked_tree(expression)  # depth and cost, on the tree both engines share
        return CelExprProgram(expression, compiled, self._cel, shared,
                              name_key(tree, expression))

    def compile_values(self, expression: str) -> Values:
        compiled = self._compile_in(self._shared_env, expression)
        if compiled is None:
            raise CelCompileError(f"cannot compile {expression}")
        return CelExprValues(compiled, self._cel)

    def _compile_in(self, env: Any, text: str, quiet: bool = True) -> Any:
        """``text`` compiled in ``env``; ``None`` if it does not (``quiet``) or raises."""
        try:
            with self._lock:
                return env.compile(text)
        except Exception:
            if quiet:
                return None
            raise

    def event(self, ce_value: Any) -> EventScope:
        return CelExprEvent(self, ce_value)

    def value(self, plain_value: Any) -> Any:
        return plain_value

    def activation(self, values: Mapping[str, Any]) -> Any:
        try:
            return self._env.Activation(dict(values))
        except Exception as exc:
            raise CelEvalError(f"cannot bind variables: {exc}") from None


class CelExprEvent:
    """One event: its activation (``ce`` only, converted by cel-cpp once, on the first
    evaluation) is made when first needed and shared by every subscriber."""

    def __init__(self, engine: CelExprEngine, ce_value: Any) -> None:
        self.engine = engine
        self.ce = ce_value
        self._activation: Any = None
        self._error: CelEvalError | None = None

    def activation(self) -> Any:
        """``CelEvalError`` when cel-expr cannot take the event."""
        if self._activation is None and self._error is None:
            try:
                self._activation = self.engine._shared_env.Activation({"ce": self.ce})
            except Exception as exc:
                self._error = CelEvalError(f"cannot bind variables: {exc}")
        if self._error is not None:
            raise CelEvalError(self._error.message)
        return self._activation

    def bind(self, bound: Any) -> Any:
        return CelExprBound(self, bound)


class CelExprBound:
    """One subscriber bound to one event (small: no copy of either)."""

    __slots__ = ("bound", "event")

    def __init__(self, event: CelExprEvent, bound: Any) -> None:
        self.event = event
        self.bound = bound

    def activation(self) -> Any:
        """An activation of its own (for a program that cannot share the event's)."""
        return self.event.engine.activation(
            {"ce": self.event.ce, "subscriber": self.bound, BINDING_VARIABLE: self.bound})


# -------------------------------------------------------------------------- choice


def cel_expr_available() -> bool:
    try:
        import cel_expr_python.cel  # noqa: F401
    except ImportError:
        return False
    return True


def select(name: str) -> Engine:
    """``auto`` → cel-expr when importable, else celpy; ``ValueError`` if unknown or
    unavailable."""
    if name == "celpy":
        return CelPyEngine()
    if name == "cel-expr":
        if not cel_expr_available():
            raise ValueError("cel-expr-python is not installed")
        return CelExprEngine()
    if name == "auto":
        return CelExprEngine() if cel_expr_available() else CelPyEngine()
    raise ValueError(f"unknown CEL engine {name!r}: use auto, celpy or cel-expr")
