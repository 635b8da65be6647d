"""``kubeevent explain`` and ``kubeevent history`` on the dev stack's API server after a
seed scenario: every subscriber named, with the right reason."""

from __future__ import annotations

import json
import uuid

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.stack.stack import Stack
from dev.support.factory import kube_event, promotion_run
from dev.support.seed import SEED_SUBSCRIPTIONS
from tests.support.cli import kubeevent

from .conftest import settle


def test_explain_and_history_after_an_approval(stack: Stack, kube: FakeKubeAPI,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = kube.add(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "devops"))
    event = kube.add(kube_event("ApprovalPending", obj=run))  # kept, as a cluster keeps it
    assert stack.send(event).status_code == 202
    settle(stack)
    name = run["metadata"]["name"]
    config = str(stack.kubeconfig)
    assert kubeevent(["explain", f"devops/{name}", "--json", "--kubeconfig", config]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["events"]) == 1, payload
    people = {p["subscription"]: p for p in payload["events"][0]["subscribers"]}
    for user in ("admin", "bob"):
        told = people[SEED_SUBSCRIPTIONS[user]]
        assert (told["notified"], told["why"]) == (True, "sent"), user
    for user in ("alice", "carol"):
        silent = people[SEED_SUBSCRIPTIONS[user]]
        assert silent["notified"] is False
        assert silent["why"].startswith("cel: CEL returned false"), silent
    owned = people["dave-owned-by-carol"]
    assert owned["why"].startswith("owner: "), owned
    assert kubeevent(["history", "--user", "bob", "--json", "--kubeconfig", config]) == 0
    told = json.loads(capsys.readouterr().out)["deliveries"]
    assert ("approvalpending", f"devops/{name}", "Sent") in {
        (d["event"], d["object"], d["phase"]) for d in told}


ERASE = "Approval\x1b[2K\r  admin            notified      sent"
LINK = "\x1b]8;;https://evil.example/\x07click\x1b]8;;\x07 \u202eevil"


def test_what_an_event_says_is_printed_not_obeyed(stack: Stack, kube: FakeKubeAPI,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An ESC sequence in a reason once erased a line and printed a forged "admin
    notified sent"; an OSC 8 hyperlink went through. Every command prints them inert."""
    run = kube.add(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "devops"))
    event = kube_event("Approval", obj=run, message=LINK)
    event["reason"] = ERASE
    kube.add(event)
    name = run["metadata"]["name"]
    config = str(stack.kubeconfig)
    for argv in (["explain", f"devops/{name}"], ["explain", f"devops/{name}", "--json"],
                 ["history", "--user", "bob"]):
        kubeevent([*argv, "--kubeconfig", config])
        out = capsys.readouterr()
        for printed in (out.out, out.err):
            assert "\x1b" not in printed and "\x07" not in printed and "\r" not in printed
            assert "\u202e" not in printed
        if argv[0] == "explain":
            assert "\\x1b[2K" in out.out or "\\u001b[2K" in out.out, out.out
