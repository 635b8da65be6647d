"""A CEL text checked before anything compiles it: the limits on its text (size, bracket
nesting, ``&&``/``||`` operators, comprehensions, runs of ``!``/``-``, escapes), then
cel-python's parse tree, its depth (measured without recursion, so no recursion limit or
native stack is reached) and the worst cost of one evaluation (``limits``). A filter over
any of them is refused with ``CelCompileError``, its place named as written."""

from __future__ import annotations

import re
from typing import Any

from . import limits
from .binding import BindingError, Token, decode, scan
from .celtree import COMPREHENSIONS, PARSE_LOCK, parser, place, tree_depth

MAX_EXPRESSION_BYTES = 4096
MAX_NESTING = 32
MAX_DEPTH = 32
MAX_LOGICAL = 64
MAX_UNARY_RUN = 8
# The CRD's admission rule says the same, so such a filter is refused when it is written.
MAX_COMPREHENSIONS = 8


class CelError(Exception):
    """Carries a one-line ``message``."""

    def __init__(self, message: str) -> None:
        self.message = " ".join(str(message).split())[:500]
        super().__init__(self.message)


# How a compile error names a place in the expression in a compile error (1-based).
_POSITION = re.compile(r"line (\d+), column (\d+): ")


class CelCompileError(CelError):
    @property
    def position(self) -> tuple[int, int] | None:
        """(line, column) of the first place the message names, if it names one."""
        found = _POSITION.search(self.message)
        return (int(found[1]), int(found[2])) if found else None

    def placed(self, position: tuple[int, int] | None) -> str:
        """The message with that first place replaced by ``position`` (or left out)."""
        shown = place(*position) if position else ""
        return _POSITION.sub(lambda _: shown, self.message, count=1)


class CelEvalError(CelError):
    pass


class CelLimitError(CelEvalError):
    """The evaluation was stopped at a bound: neither a match nor a no."""



def check_limits(expression: str, scanned: tuple[Token, ...] | None = None
                 ) -> tuple[Token, ...]:
    """The limits on a text, before anything parses it; ``CelCompileError`` if refused.
    Returns the expression's tokens (``scanned``: them, when the caller has them)."""
    size = len(expression.encode("utf-8"))
    if size > MAX_EXPRESSION_BYTES:
        raise CelCompileError(
            f"expression is {size} bytes, over the limit of {MAX_EXPRESSION_BYTES}")
    if not expression.strip():
        raise CelCompileError("expression is empty")
    scanned = tuple(scan(expression)) if scanned is None else scanned
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
    return checked_tree(expression)


def checked_tree(expression: str) -> Any:
    """``parse`` after ``check_limits``: the tree, its depth and its cost checked."""
    from celpy.celparser import CELParseError

    try:
        with PARSE_LOCK:
            tree = parser().compile(expression)
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
    return place(getattr(exc, "line", None), getattr(exc, "column", None)) + what
