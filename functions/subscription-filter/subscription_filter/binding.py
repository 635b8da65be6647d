"""``$(subscriber.<field>)`` in a CEL filter is bound as data, never pasted as text.

A scanner that knows CEL's string literals and comments rewrites each placeholder into a
reference to a bound variable: ``"$(subscriber.name)"`` and a bare ``$(subscriber.name)``
→ ``(__subscriber__["name"])``, ``"team-$(subscriber.name)"`` → ``("team-" +
__subscriber__["name"])``; bytes literals and comments are left alone. Only the field
path (``[A-Za-z0-9_-]`` segments) reaches the expression, so nothing a subscriber's data
holds can change what it means. A path that names no text field of ``spec.subscriber``
is a compile error: a typo shows in the status instead of never matching.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

BINDING_VARIABLE = "__subscriber__"
SUBSCRIBER = ("subscriber", BINDING_VARIABLE)  # the names of the subscriber's binding
PLACEHOLDER = re.compile(r"\$\(subscriber((?:\.[A-Za-z0-9_-]+)+)\)")
MAX_BINDING_DEPTH = 16
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}
_HEX = re.compile(r"[0-9A-Fa-f]+")


class BindingError(ValueError):
    """A placeholder or literal that cannot be bound (reported as a compile error)."""


class Token(NamedTuple):
    """``kind`` is ``literal``, ``comment``, ``placeholder``, ``ident`` or ``char``; a
    literal's ``prefix`` (``r``, ``b``, ``rb`` …), ``body`` (between its quotes) and
    whether it is ``closed``."""

    kind: str
    text: str
    prefix: str = ""
    body: str = ""
    closed: bool = True


def scan(expression: str) -> Iterator[Token]:
    """Split ``expression`` into literals, comments, bare placeholders, identifiers and
    single characters (enough of CEL's lexer to know what is inside a literal)."""
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if expression.startswith("//", i):
            end = expression.find("\n", i)
            end = n if end < 0 else end
            yield Token("comment", expression[i:end])
            i = end
            continue
        prefix, start = "", i
        ident = _IDENT.match(expression, i)
        if ident is not None:
            word, after = ident.group(0), ident.end()
            if word.lower() in ("r", "b", "rb", "br") and after < n and expression[after] in "\"'":
                prefix, i = word, after
            else:
                yield Token("ident", word)
                i = after
                continue
        ch = expression[i]
        if ch in "\"'":
            literal = _literal(expression, start, i, prefix)
            yield literal
            i = start + len(literal.text)
            continue
        if ch == "$":
            placeholder = PLACEHOLDER.match(expression, i)
            if placeholder is not None:
                yield Token("placeholder", placeholder.group(0))
                i = placeholder.end()
                continue
        yield Token("char", ch)
        i += 1


def _literal(expression: str, start: int, i: int, prefix: str) -> Token:
    """The literal whose prefix is at ``start`` and quote at ``i``."""
    quote = expression[i] * 3 if expression.startswith(expression[i] * 3, i) else expression[i]
    raw = "r" in prefix.lower()
    k = body_start = i + len(quote)
    while k < len(expression):
        if expression.startswith(quote, k):
            end = k + len(quote)
            return Token("literal", expression[start:end], prefix, expression[body_start:k])
        if len(quote) == 1 and expression[k] in "\r\n":
            break
        k += 2 if (not raw and expression[k] == "\\") else 1
    # Unterminated: hand the rest over unchanged; the engine reports the syntax error.
    return Token("literal", expression[start:], prefix, expression[body_start:], False)




def reference(path: str) -> str:
    """CEL reading the bound field ``path``: ``info.mail`` → ``__subscriber__["info"]["mail"]``."""
    return BINDING_VARIABLE + "".join(f'["{segment}"]' for segment in path.split("."))


class Rewritten(NamedTuple):
    """``expression`` as compiled, the field paths its placeholders named and the
    expression's ``tokens`` (``scan``), which its readers share instead of scanning it
    again."""

    expression: str
    fields: tuple[str, ...]
    tokens: tuple[Token, ...]


def rewrite(expression: str) -> Rewritten:
    """Replace every placeholder with a reference to the bound subscriber (see the module
    doc)."""
    fields: list[str] = []

    def use(path: str) -> str:
        if path not in fields:
            fields.append(path)
        return reference(path)

    texts: list[str] = []
    tokens: list[Token] = []
    for token, compiled in _pieces(expression, use):
        texts.append(compiled)
        if compiled == token.text:
            tokens.append(token)
        else:  # bracketed: its tokens are its own, whatever is around it
            tokens.extend(scan(compiled))
    return Rewritten("".join(texts), tuple(fields), tuple(tokens))


def bind(source: str, binding: Mapping[str, Any]) -> Rewritten:
    """``source`` rewritten for subscribers with ``binding``; ``BindingError`` when a
    placeholder names no text field of it."""
    rewritten = rewrite(source)
    for path in rewritten.fields:
        resolve(binding, path)
    return rewritten


def _pieces(expression: str, use: Callable[[str], str]) -> Iterator[tuple[Token, str]]:
    """Each token of ``expression`` and its text as compiled."""
    for token in scan(expression):
        if token.kind == "literal":
            yield token, _rewrite_literal(token, use)
        elif token.kind == "placeholder":  # ``$(subscriber.<path>)``
            yield token, f"({use(token.text[len('$(subscriber.'):-1])})"
        else:
            yield token, token.text


def source_position(source: str, line: int, column: int) -> tuple[int, int]:
    """A 1-based (line, column) in ``rewrite(source).expression`` → the same place in
    ``source`` as written. A place inside a rewritten literal or placeholder is the start
    of that literal or placeholder; a place past the end is the end of ``source``."""
    try:
        pieces = list(_pieces(source, reference))
    except BindingError:  # such a source never reaches the compiler
        return line, column
    compiled_lines = "".join(rewritten for _, rewritten in pieces).split("\n")
    if not 1 <= line <= len(compiled_lines):
        return line, column
    target = sum(len(text) + 1 for text in compiled_lines[:line - 1]) + max(column - 1, 0)
    compiled_at = written_at = 0
    offset = len(source)
    for token, rewritten in pieces:
        written = token.text
        if compiled_at <= target < compiled_at + len(rewritten):
            offset = written_at + (target - compiled_at if written == rewritten else 0)
            break
        compiled_at += len(rewritten)
        written_at += len(written)
    before = source[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


def _rewrite_literal(token: Token, use: Callable[[str], str]) -> str:
    raw = "r" in token.prefix.lower()
    if "b" in token.prefix.lower() or not token.closed:
        return token.text
    pieces = list(_split_body(token.body, raw))
    if not any(kind == "field" for kind, _ in pieces):
        return token.text
    # A text piece is never empty, nor is its value (each escape stands for a character).
    parts = [use(value) if kind == "field" else encode(value if raw else decode(value))
             for kind, value in pieces]
    return "(" + " + ".join(parts) + ")"


def _split_body(body: str, raw: bool) -> Iterator[tuple[str, str]]:
    """(``text``, source) and (``field``, path) pieces; escapes are never split."""
    start = k = 0
    while k < len(body):
        if not raw and body[k] == "\\":
            k += 2
            continue
        if body[k] == "$":
            match = PLACEHOLDER.match(body, k)
            if match is not None:
                if k > start:
                    yield "text", body[start:k]
                yield "field", match.group(1)[1:]
                k = start = match.end()
                continue
        k += 1
    if start < len(body):
        yield "text", body[start:]


def decode(source: str) -> str:
    """The value of a non-raw CEL string literal's body."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            raise BindingError("string literal ends with a lone backslash")
        esc = source[i + 1]
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xXuU":
            width = {"x": 2, "X": 2, "u": 4, "U": 8}[esc]
            digits = source[i + 2:i + 2 + width]
            if len(digits) != width or not _HEX.fullmatch(digits):
                raise BindingError(f"invalid escape \\{esc}{digits} in a string literal")
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise BindingError(f"invalid code point \\{esc}{digits} in a string literal")
            out.append(chr(code))
            i += 2 + width
        elif esc in "0123":
            digits = source[i + 1:i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise BindingError(f"invalid octal escape \\{digits} in a string literal")
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            raise BindingError(f"invalid escape \\{esc} in a string literal")
    return "".join(out)


def encode(text: str) -> str:
    """A double-quoted CEL string literal whose value is ``text`` (JSON's escapes are
    CEL's too)."""
    return json.dumps(text, ensure_ascii=False)


def subscriber_binding(subscriber: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.subscriber`` as bound to CEL: scalar leaves become text, nulls are dropped."""

    def convert(value: Any, depth: int) -> Any:
        if depth > MAX_BINDING_DEPTH:
            raise BindingError(f"spec.subscriber is nested deeper than {MAX_BINDING_DEPTH} levels")
        if isinstance(value, str):
            return value
        if isinstance(value, (dict, Mapping)):
            return {str(k): convert(v, depth + 1) for k, v in value.items() if v is not None}
        if isinstance(value, (list, tuple)):
            return [convert(v, depth + 1) for v in value if v is not None]
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    result = convert(subscriber, 0)
    return result if isinstance(result, dict) else {}


def resolve(binding: Mapping[str, Any], path: str) -> str:
    """The text a placeholder stands for; ``BindingError`` if it names no text field."""
    value: Any = binding
    for segment in path.split("."):
        if not isinstance(value, Mapping) or segment not in value:
            raise BindingError(f"$(subscriber.{path}): spec.subscriber.{path} is not set")
        value = value[segment]
    if not isinstance(value, str):
        raise BindingError(f"$(subscriber.{path}): spec.subscriber.{path} is not a text field")
    return value
