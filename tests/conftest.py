"""Fixtures more than one suite uses."""

from __future__ import annotations

import pytest

from subscription_filter.celengine import Engine
from tests.subscription_filter.conftest import ENGINE_NAMES, make_engine


@pytest.fixture(scope="session", params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each of the filter's CEL engines in turn."""
    return make_engine(request.param)
