"""An approval followed to its end on the dev stack (enricher, filter, notifiers, broker,
WeCom sandbox): the approvers' cards change when it is decided, once, and the history and
explain say so."""

from __future__ import annotations

import json

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import WeComSandbox
from dev.stack.stack import Stack
from dev.support.factory import APR_API_VERSION, APR_KIND
from tests.support.cli import kubeevent

from .conftest import received
from .test_chain import happen, new_run


def test_when_bob_approves_admins_and_bobs_cards_say_so_and_alice_hears(
        stack: Stack, kube: FakeKubeAPI, wecom: WeComSandbox,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    run = new_run(kube)
    name = run["metadata"]["name"]
    happen(stack, "ApprovalPending", run)
    cards = received(wecom)
    assert set(cards) == {"admin", "bob"}
    pending = {user: cards[user][0] for user in ("admin", "bob")}
    assert all(d.msgtype == "template_card" for d in pending.values())

    # bob decides (as the platform writes it), then the platform's Event follows
    decided = kube.get_object(APR_API_VERSION, APR_KIND, name, "devops")
    assert decided is not None
    decided["status"]["approval"] = {"users": [
        {"kind": "User", "name": "bob", "input": {"approved": True}}]}
    decided["status"]["phase"] = "Running"
    kube.update_object(decided)
    happen(stack, "Running", decided)

    for user, card in pending.items():
        now = wecom.card_of(user, card.task_id or "")
        assert now is not None
        assert now["main_title"]["title"].startswith("已由 bob 批准 / Approved by bob at "), now
    got = received(wecom)
    assert [d.msgtype for d in got["alice"]] == ["textcard"], "alice: her running message"
    assert [len(got[u]) for u in ("admin", "bob")] == [1, 1], "changed, not sent again"
    assert len(wecom.card_updates) == 2

    config = str(stack.kubeconfig)
    monkeypatch.setenv("KUBECONFIG", config)  # found as kubectl finds it
    assert kubeevent(["history", "--user", "bob", "--json"]) == 0
    told = json.loads(capsys.readouterr().out)["deliveries"]
    by_channel = {d["channel"]: d for d in told if d["object"] == f"devops/{name}"
                  and d["event"].lower() == "approvalpending"}
    assert by_channel["corpwechat"]["follow_up"].startswith(
        "card updated: 已由 bob 批准 / Approved by bob"), by_channel
    assert by_channel["email"]["follow_up"] == "", "an email is not changed"
    assert kubeevent(["explain", f"devops/{name}", "--kubeconfig", config]) == 0
    out = capsys.readouterr().out
    assert "corpwechat: card updated: 已由 bob 批准 / Approved by bob" in out
