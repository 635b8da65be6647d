"""Shared helpers for the subscription-filter tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.support import factory
from subscription_filter.app import SubscriptionFilter, build
from subscription_filter.binding import resolve, rewrite, subscriber_binding
from subscription_filter.celengine import (
    CelCompileError,
    CelEvalError,
    CelExprEngine,
    Engine,
    cel_expr_available,
    plain,
    select,
)
from subscription_filter.shared.kube import Kube

ENGINE_NAMES = ["cel-expr"]


def make_engine(name: str) -> Engine:
    if name == "cel-expr" and not cel_expr_available():
        pytest.skip("cel-expr-python is not installed")
    return select(name)


@pytest.fixture(scope="session")
def cel_expr() -> CelExprEngine:
    """The cel-expr engine alone, for its own forms of a filter."""
    engine = make_engine("cel-expr")
    assert isinstance(engine, CelExprEngine)
    return engine


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
    try:
        run = program.for_event(engine.event(engine.value(plain(ce))))
        return "true" if run(engine.value(binding)) else "false"
    except CelEvalError:
        return "eval-error"


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        fake.add(factory.seed_subscription())
        fake.add(factory.cluster_subscription("bob"))
        fake.add(factory.cluster_subscription("alice"))
        yield fake


@pytest.fixture
def make(api: FakeKubeAPI) -> Iterator[Callable[..., SubscriptionFilter]]:
    started: list[SubscriptionFilter] = []

    def make(**env: str) -> SubscriptionFilter:
        function = build({**factory.SIGNING_ENV, **env},
                         kube=Kube(api.new_api_client().configuration))
        function.startup_wait = 0.2
        started.append(function)
        return function

    yield make
    for function in started:
        function.stop()
