"""Shared helpers for the subscription-filter tests."""

from __future__ import annotations

from typing import Any

import pytest

from subscription_filter.binding import BINDING_VARIABLE, resolve, rewrite, subscriber_binding
from subscription_filter.celengine import (
    CelCompileError,
    CelEvalError,
    Engine,
    cel_expr_available,
    plain,
    select,
)

ENGINE_NAMES = ["celpy", "cel-expr"]


def make_engine(name: str) -> Engine:
    if name == "cel-expr" and not cel_expr_available():
        pytest.skip("cel-expr-python is not installed")
    return select(name)


@pytest.fixture(scope="session", params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest) -> Engine:
    return make_engine(request.param)


def outcome(engine: Engine, source: str, ce: dict[str, Any],
            subscriber: dict[str, Any] | None = None) -> str:
    """``"true"``, ``"false"``, ``"compile-error"`` or ``"eval-error"``."""
    binding = subscriber_binding(subscriber or {"name": "nobody"})
    try:
        rewritten = rewrite(source)
        for path in rewritten.fields:
            resolve(binding, path)
        program = engine.compile(rewritten.expression)
    except (CelCompileError, ValueError):
        return "compile-error"
    bound = engine.value(binding)
    try:
        activation = engine.activation(
            {"ce": engine.value(plain(ce)), "subscriber": bound, BINDING_VARIABLE: bound})
        return "true" if program.evaluate(activation) else "false"
    except CelEvalError:
        return "eval-error"
