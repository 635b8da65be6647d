"""Fixtures more than one suite uses."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from subscription_filter.celengine import Engine
from tests.subscription_filter.conftest import ENGINE_NAMES, make_engine

# Why the session could not move into a private network namespace (None: it did).
NAMESPACE_PROBLEM: list[str | None] = [None]


def pytest_configure(config: pytest.Config) -> None:
    """Move the whole test session (before any thread starts) into a private network and
    mount namespace: Knative's data plane binds fixed ports and resolves Service names
    through /etc/hosts (dev/cluster/netns.py). Nothing a test does needs more than
    loopback. Without root the Knative suites say why and are skipped (failed under CI)."""
    from dev.cluster import netns

    if os.environ.get("KUBEEVENT_SHARED_NETWORK") == "1":
        NAMESPACE_PROBLEM[0] = "KUBEEVENT_SHARED_NETWORK=1 keeps the session's network"
        return
    try:
        netns.isolate(Path(tempfile.mkdtemp(prefix="kubeevent-netns-")) / "hosts")
    except netns.NamespaceError as exc:
        NAMESPACE_PROBLEM[0] = str(exc)


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """The four shipped templates as ``envsubst | kubectl apply`` would create them (the
    notifiers' suites)."""
    from tests.corpwechat_notifier.support import installed_templates

    return {doc["metadata"]["name"]: doc for doc in installed_templates()}


@pytest.fixture(scope="session", params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each of the filter's CEL engines in turn."""
    return make_engine(request.param)
