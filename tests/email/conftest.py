"""Fixtures for the email-notifier tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.corpwechat_notifier.support import installed_templates


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """The four shipped templates as ``envsubst | kubectl apply`` would create them."""
    return {doc["metadata"]["name"]: doc for doc in installed_templates()}
