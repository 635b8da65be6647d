"""cel-python's parse tree of a CEL text, and the helpers every reader of it uses: the
cost estimate (``limits``), the parse-time checks (``celparse``), the name lookup
(``namelookup``) and the filters-that-cannot-match hints (``reach``). No evaluation here:
cel-cpp evaluates (``celengine``); cel-python's parser gives the tree those read."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

# The macros that iterate (a comprehension each).
COMPREHENSIONS = frozenset({"all", "exists", "exists_one", "map", "filter"})

PARSE_LOCK = threading.Lock()  # held around every use of the parser (lark's is not safe)


@functools.cache
def parser() -> Any:
    """cel-python's parser (hold ``PARSE_LOCK`` around its use)."""
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


LISTS = frozenset({"exprlist", "mapinits", "fieldinits"})  # what holds a literal's items
# Levels of the parse tree that only wrap one child (parentheses included).
WRAPPERS = frozenset({"expr", "conditionalor", "conditionaland", "relation", "addition",
                      "multiplication", "unary", "member", "primary", "paren_expr"})


def children(node: Any) -> list[Any]:
    """A parse-tree node's children (celpy's parser leaves no ``None`` placeholders)."""
    return getattr(node, "children", [])


def walk(tree: Any) -> Iterator[Any]:
    """Every node of a parse tree, without recursion."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(k for k in children(node) if hasattr(k, "children"))


def unwrapped(node: Any) -> Any:
    """``node`` without the levels that only wrap it."""
    while (kids := children(node)) and len(kids) == 1 and hasattr(kids[0], "children") \
            and getattr(node, "data", "") in WRAPPERS:
        node = kids[0]
    return node


def expressions(node: Any) -> list[Any]:
    """The expressions of an ``exprlist``, ``mapinits`` or ``fieldinits``."""
    return [k for k in children(node) if hasattr(k, "children")]


def identifier(node: Any) -> str | None:
    """The name when ``node`` is a bare identifier (a macro's variable)."""
    node = unwrapped(node)
    found = children(node)
    return str(found[0]) if str(getattr(node, "data", "")) == "ident" and found else None


def place(line: Any, column: Any) -> str:
    """How a compile error names a place (1-based): ``""`` when it is not known."""
    return f"line {line}, column {column}: " if line is not None and column is not None else ""


def place_of(node: Any) -> str:
    """``place`` of a node of the tree."""
    meta = getattr(node, "meta", None)
    return place(getattr(meta, "line", None), getattr(meta, "column", None))



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
