"""Fixtures for the email-notifier tests."""

from __future__ import annotations

import os

import pytest

from dev.support.mailpit import why_not


@pytest.fixture(scope="module", autouse=True)
def _mailpit_built(request: pytest.FixtureRequest) -> None:
    """Mailpit (built by dev/cluster/build.sh) for the modules that start it: missing in
    CI is a failure, elsewhere a skip."""
    if not request.module.__name__.endswith(("test_http", "test_mailpit")):
        return
    problem = why_not()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
