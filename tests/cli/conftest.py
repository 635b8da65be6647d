"""Fixtures for the kubeevent CLI tests: seed subscriptions and events on disk."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from dev.support.factory import kube_event, promotion_run
from tests.cli.support import SEED_ADMIN, subscription_for, write_json, write_yaml


@dataclass
class Case:
    """An ArtifactPromotionRun (requester alice, approvers admin and bob), its Event,
    and a subscriptions folder with the seed's admin and alice's copy of it."""

    event: Path
    object: Path
    subscriptions: Path
    obj: dict
    kevent: dict


def make_case(base: Path, reason: str = "ApprovalPending", message: str | None = None) -> Case:
    obj = promotion_run(requester="alice", approvers=("admin", "bob"))
    kevent = kube_event(reason, obj=obj, message=message)
    subs = base / "subscriptions"
    subs.mkdir(parents=True, exist_ok=True)
    shutil.copy(SEED_ADMIN, subs / "admin.yaml")
    write_yaml(subs / "alice.yaml", subscription_for("alice"))
    return Case(event=write_yaml(base / "event.yaml", kevent),
                object=write_json(base / "object.json", obj),
                subscriptions=subs, obj=obj, kevent=kevent)


@pytest.fixture
def pending(tmp_path: Path) -> Case:
    return make_case(tmp_path)
