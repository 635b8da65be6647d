"""Fixtures for the real control plane. Without the binaries (no Go to build them) the
suite is skipped with the reason; under ``CI=true`` that is a failure instead."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator

import pytest

from dev.cluster.controlplane import ControlPlane, build_status
from dev.cluster.eventing import SERVICE_RANGE, KnativeEventing, why_not
from dev.cluster.install import install_crds, project_namespaces


@functools.cache
def _usable() -> tuple[bool, str]:
    return build_status()


def _unless(reason: str | None, what: str) -> None:
    """Skip with ``reason`` (under ``CI=true``: fail), unless it is None."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} cannot run: {reason}", pytrace=False)
    pytest.skip(f"{what} skipped: {reason}")


def require_cluster() -> None:
    usable, why = _usable()
    _unless(None if usable else why, "the real-cluster tests")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A fresh control plane for the module, with every CRD and the project namespaces."""
    require_cluster()
    with ControlPlane(tmp_path_factory.mktemp("cluster")) as running:
        install_crds(running)
        project_namespaces(running)
        yield running


def require_knative() -> None:
    """Knative's data plane needs its binaries and the session's private network
    namespace (root): without them skipped with the reason, under ``CI=true`` failed."""
    from tests.conftest import NAMESPACE_PROBLEM

    require_cluster()
    _unless(NAMESPACE_PROBLEM[0] or why_not(), "Knative's broker")


@pytest.fixture(scope="module")
def eventing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnativeEventing]:
    """A fresh control plane (loopback ClusterIPs) with every CRD and the project
    namespaces, and Knative Eventing's own broker, controllers and webhook on it."""
    require_knative()
    workdir = tmp_path_factory.mktemp("knative")
    with ControlPlane(workdir / "plane", service_range=SERVICE_RANGE) as plane:
        install_crds(plane)
        project_namespaces(plane)
        with KnativeEventing(plane, workdir / "eventing") as running:
            yield running
