"""CEL evaluated by cel-expr-python (Google's cel-cpp with its type checker), behind one
small interface (``Engine``, ``Program``, ``Values``). A filter sees ``ce`` (the CloudEvent:
attributes, extensions, ``data``), ``subscriber`` (``spec.subscriber``, text leaves) and
``__subscriber__``, which ``$(subscriber.*)`` is rewritten to (``binding``).

Before cel-cpp sees an expression it passes the same checks as when it is read
(``celparse``). At run time a comprehension runs at most ``limits.ITERATIONS`` times per
evaluation (cel-cpp's budget). ``True`` matches; an error or a non-bool result raises
``CelEvalError`` (no match), a bound reached ``CelLimitError`` (no answer: shown on the
subscription).

One event, many subscribers: ``Engine.event`` converts the event once, and
``Program.for_event`` gives a function of a subscriber's binding. cel-cpp converts an
activation's data on its first evaluation, so one activation per event holds only ``ce``
and ``subscriber``/``__subscriber__`` are compiled as calls of functions returning the
subscriber being evaluated (per thread); what cannot be compiled so (``subscriber`` as a
macro's variable) gets an activation per subscriber.

One evaluator: cel-expr-python has wheels for every image the functions are built for
(Linux amd64 and arm64 with glibc 2.28 or later, CPython 3.11 to 3.13; func's buildpacks
and ``make dist``'s Python images are both). cel-python (celpy) stays for its parser,
whose tree the checks, the name lookup and ``kubeevent lint`` read.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

from . import limits
from .binding import BINDING_VARIABLE, SUBSCRIBER, Token, scan
from .celparse import MAX_DEPTH, CelCompileError, CelError, check_limits, checked_tree
from .celtree import place

MAX_DATA_DEPTH = 64
ENGINES = ("cel-expr",)
_INT64 = (-(2**63), 2**63 - 1)


class CelEvalError(CelError):
    pass


class CelLimitError(CelEvalError):
    """The evaluation was stopped at a bound: neither a match nor a no."""


ITERATIONS_MESSAGE = (f"evaluation stopped after {limits.ITERATIONS:,} comprehension "
                      f"iterations, the limit per evaluation")


class Program(Protocol):
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


NUL_STANDIN = "\ufffd"


def plain(value: Any, depth: int = 0) -> Any:
    """JSON data as cel-cpp reads it.

    Integers outside int64 become doubles (cel-cpp has no bigger ints); mapping keys
    become text; anything else that is not JSON (e.g. a datetime) becomes its text.
    ``ValueError`` beyond ``MAX_DATA_DEPTH`` levels.
    """
    if depth > MAX_DATA_DEPTH:
        raise ValueError(f"data is nested deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, str):
        # cel-cpp ends a string at NUL, so "alice\0mallory" would equal "alice": a NUL is
        # replaced, and the string can then equal no NUL-free one.
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

    def __init__(self, compiled: Any, engine: CelExprEngine, shared: bool) -> None:
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
        lambda m: place(m.group(1), m.group(2)) if m.group(1) != "-1" else "",
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
        checked_tree(expression)  # its depth and its cost, as when it was read
        return CelExprProgram(compiled, self, shared)

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


def cel_expr_available() -> bool:
    try:
        import cel_expr_python.cel  # noqa: F401
    except ImportError:  # not installed, or its native part does not load
        return False
    return True


def select(name: str) -> Engine:
    """The engine for ``CEL_ENGINE`` (``auto`` or ``cel-expr``); ``ValueError`` if unknown
    or not installed."""
    if name == "celpy":
        raise ValueError("the celpy engine is gone: cel-expr-python (cel-expr) evaluates "
                         "every filter; use auto or cel-expr")
    if name not in ("auto", "cel-expr"):
        raise ValueError(f"unknown CEL engine {name!r}: use auto or cel-expr")
    if not cel_expr_available():
        raise ValueError("cel-expr-python is not installed (or its native part does not "
                         "load on this platform)")
    return CelExprEngine()
