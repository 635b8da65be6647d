"""Approving from the WeCom card, as yourself, on a real kube-apiserver: the stand-in
run's approval rules enforced at admission by a ValidatingAdmissionPolicy
(dev/cluster/approval-policy.yaml, Katanomi's webhook's rules), corpwechat-callback
running as its own ServiceAccount with the RBAC of manifests/callback, and WeCom's side
(dev/fakes/wecom_callback.py) signing, encrypting and retrying as documented."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.cluster.controlplane import ControlPlane
from dev.cluster.install import MANIFESTS
from dev.fakes.wecom_callback import WeComCallbacks
from dev.support.factory import promotion_run
from dev.support.procs import FunctionProcess
from shared.records import task_label

POLICY = Path(__file__).resolve().parents[2] / "dev" / "cluster" / "approval-policy.yaml"
TOKEN, CORP = "cb-token", "ww-approve-corp"
AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
NS, APR = "cpaas-system", "artifactpromotionruns.artifacts.katanomi.dev"
SA = "system:serviceaccount:kubeevent-enricher:corpwechat-callback"


def kubectl_json(plane: ControlPlane, *args: str, user: str = "admin") -> dict[str, Any]:
    return dict(json.loads(plane.kubectl(*args, "-o", "json", user=user).stdout))


@pytest.fixture(scope="module")
def stage(plane: ControlPlane) -> ControlPlane:
    plane.kubectl("apply", "-f", str(POLICY))
    plane.kubectl("create", "namespace", "kubeevent-enricher")
    plane.kubectl("create", "namespace", NS)
    plane.kubectl("apply", "-k", str(MANIFESTS / "callback"))
    plane.kubectl("create", "role", "run-approver", "-n", "devops", "--verb=get,patch",
                  "--resource=artifactpromotionruns,artifactpromotionruns/status")
    plane.kubectl("create", "rolebinding", "run-approvers", "-n", "devops",
                  "--role=run-approver", "--user=admin", "--user=bob", "--user=alice")
    for name, data in (("corpwechat-users", {"admin": "AdminWx", "bob": "bob.wx",
                                             "erin": "erin.wx", "alice": "alice.wx"}),
                       ("kubeevent-user-groups", {"bob": "dev,qa", "erin": "release-managers"})):
        plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS}, "data": data}))
    # The policy is compiled asynchronously: wait until it refuses a probe.
    probe = new_run(plane, "policy-probe")
    deadline = time.monotonic() + 30
    while decide_as(plane, "bob", probe, "admin").returncode == 0:
        assert time.monotonic() < deadline, "the approval policy never took effect"
        probe = new_run(plane, f"policy-probe-{int(time.monotonic() * 1000)}")
        time.sleep(0.3)
    return plane


def new_run(plane: ControlPlane, name: str, policy: str = "Any",
            approvers: tuple[str, ...] = ("admin", "bob")) -> str:
    run = promotion_run(name, "devops", requester="alice", approvers=approvers,
                        policy=policy)
    body = {k: v for k, v in run.items() if k != "status"}
    body["metadata"] = {"name": name, "namespace": "devops"}
    plane.kubectl("create", "-f", "-", input=json.dumps(body))
    status = run["status"]
    status.pop("approval", None)
    plane.kubectl("patch", APR, name, "-n", "devops", "--subresource=status", "--type=merge",
                  "-p", json.dumps({"status": status}))
    return name


def decide_as(plane: ControlPlane, user: str, run: str, for_user: str) -> Any:
    patch = {"status": {"approval": {"users": [
        {"kind": "User", "name": for_user, "input": {"approved": True}}]}}}
    return plane.kubectl("patch", APR, run, "-n", "devops", "--subresource=status",
                         "--type=merge", "-p", json.dumps(patch), user=user, check=False)


def decisions(plane: ControlPlane, run: str) -> list[dict[str, Any]]:
    obj = kubectl_json(plane, "get", APR, run, "-n", "devops")
    return list(((obj.get("status") or {}).get("approval") or {}).get("users") or [])


def card_for(plane: ControlPlane, user: str, run: str, task: str) -> None:
    """The delivery record the notifier keeps of ``user``'s card about ``run``."""
    name = f"nd-{task}"
    plane.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "kubeevent.io/v1alpha1", "kind": "NotificationDelivery",
        "metadata": {"name": name, "namespace": NS,
                     "labels": {"kubeevent.io/task": task_label(task)}},
        "spec": {"notification": f"n-{task}", "channel": "corpwechat",
                 "recipient": {"name": user, "kind": "User", "subscription": f"{user}-sub"},
                 "event": {"id": f"e-{task}", "type": "t", "reason": "approvalpending"},
                 "object": {"apiVersion": "artifacts.katanomi.dev/v1alpha1",
                            "kind": "ArtifactPromotionRun", "namespace": "devops",
                            "name": run},
                 "claimedAt": "2026-01-01T00:00:00Z", "attempt": 1}}))
    plane.kubectl("patch", "notificationdelivery", name, "-n", NS, "--subresource=status",
                  "--type=merge", "-p", json.dumps({"status": {
                      "phase": "Sent", "reason": "Sent", "card": {
                          "taskId": task, "state": "Open", "sentAt": "2026-01-01T00:00:00Z"}}}))


def start_callback(plane: ControlPlane, **env: str) -> FunctionProcess:
    kubeconfig = plane.service_account_kubeconfig("kubeevent-enricher", "corpwechat-callback")
    return FunctionProcess("corpwechat-callback", runtime="ff", env={
        "KUBECONFIG": str(kubeconfig), "SYSTEM_NAMESPACE": NS,
        "CORPWECHAT_CALLBACK_TOKEN": TOKEN, "CORPWECHAT_CALLBACK_AES_KEY": AES_KEY,
        "CORPWECHAT_CORP_ID": CORP, **env}).start()


@pytest.fixture(scope="module")
def callback(stage: ControlPlane) -> Iterator[WeComCallbacks]:
    proc = start_callback(stage)
    try:
        yield WeComCallbacks(proc.url, token=TOKEN, encoding_aes_key=AES_KEY, corp_id=CORP)
    finally:
        proc.stop()


def impersonated_writes(plane: ControlPlane, run: str, user: str) -> list[dict[str, Any]]:
    found = []
    for line in (plane.dir / "audit.log").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        ref = entry.get("objectRef") or {}
        if entry.get("stage") == "ResponseComplete" and entry.get("verb") == "patch" \
                and ref.get("name") == run and ref.get("subresource") == "status" \
                and (entry.get("impersonatedUser") or {}).get("username") == user:
            found.append(entry)
    return found


def test_bob_approves_from_his_card_as_bob_once_however_often_wecom_calls(
        stage: ControlPlane, callback: WeComCallbacks) -> None:
    run = new_run(stage, "approve-me")
    card_for(stage, "bob", run, "ke-bob-approve-me")
    query, body = callback.envelope(callback.click_event(
        "bob.wx", "ke-bob-approve-me", "approve", corp_id=CORP))
    answers = [callback.post(query, body) for _ in range(3)]  # WeCom calling again
    assert [callback.replaced_button(a.reply) for a in answers] == ["已批准 Approved"] * 3
    assert [(d["name"], d["input"]) for d in decisions(stage, run)] == \
        [("bob", {"approved": True})]
    writes = impersonated_writes(stage, run, "bob")
    assert len(writes) == 1, "written once, as bob"
    assert writes[0]["user"]["username"] == SA
    assert writes[0]["impersonatedUser"]["groups"][:2] == ["dev", "qa"], "from the directory"
    assert writes[0]["responseStatus"]["code"] == 200


def test_what_may_not_be_decided_is_refused_on_the_card_and_nothing_written(
        stage: ControlPlane, callback: WeComCallbacks) -> None:
    run = new_run(stage, "refusals")
    card_for(stage, "bob", run, "ke-bob-refusals")
    card_for(stage, "erin", run, "ke-erin-refusals")
    card_for(stage, "admin", run, "ke-admin-refusals")
    said = {}
    said["erin copies bob's"] = callback.click("erin.wx", "ke-bob-refusals", "approve")
    said["erin's own"] = callback.click("erin.wx", "ke-erin-refusals", "approve")
    said["a stranger"] = callback.click("nobody.wx", "ke-bob-refusals", "approve")
    assert {k: callback.replaced_button(v.reply) for k, v in said.items()} == {
        "erin copies bob's": "未执行 Not done: this card was sent to someone else",
        "erin's own": "未执行 Not done: you are not an approver of this run",
        "a stranger": "未执行 Not done: you are not in the platform's directory"}
    assert decisions(stage, run) == []
    assert callback.replaced_button(callback.click(
        "AdminWx", "ke-admin-refusals", "deny").reply) == "已拒绝 Denied"
    assert callback.replaced_button(callback.click(
        "bob.wx", "ke-bob-refusals", "approve").reply) == \
        "未执行 Not done: already denied by admin"
    assert [(d["name"], d["input"]) for d in decisions(stage, run)] == [("admin", {})]


def test_the_api_server_is_the_judge_what_the_card_did_not_stop_it_refuses(
        stage: ControlPlane) -> None:
    """Katanomi's rules at admission: bob may not decide for admin, alice (the requester,
    who may patch) may not approve her own run, nothing changes after a decision."""
    run = new_run(stage, "judge", approvers=("admin", "bob", "alice"))
    refused = decide_as(stage, "bob", run, "admin")
    assert refused.returncode != 0 and '"bob" can not approve for user "admin"' \
        in refused.stderr
    refused = decide_as(stage, "alice", run, "alice")
    assert "requester may not approve their own run" in refused.stderr
    assert decide_as(stage, "bob", run, "bob").returncode == 0
    changed = stage.kubectl("patch", APR, run, "-n", "devops", "--subresource=status",
                            "--type=merge", "-p", json.dumps({"status": {"approval": {
                                "users": [{"kind": "User", "name": "bob", "input": {}}]}}}),
                            user="bob", check=False)
    assert "cannot be changed once it is made" in changed.stderr


def test_in_order_the_next_approver_only(stage: ControlPlane,
                                        callback: WeComCallbacks) -> None:
    run = new_run(stage, "ordered", policy="InOrder", approvers=("admin", "bob"))
    card_for(stage, "bob", run, "ke-bob-ordered")
    assert callback.replaced_button(callback.click(
        "bob.wx", "ke-bob-ordered", "approve").reply) == \
        "未执行 Not done: not your turn: admin decides first"
    assert decisions(stage, run) == []


def test_on_behalf_the_function_writes_itself_as_operator(stage: ControlPlane) -> None:
    """The alternative grant: CALLBACK_WRITE_AS=operator with the operator ClusterRole;
    Katanomi's rule lets whoever may update the run decide for others, recorded."""
    stage.kubectl("create", "clusterrolebinding", "corpwechat-callback-operator",
                  "--clusterrole=corpwechat-callback-operator",
                  "--serviceaccount=kubeevent-enricher:corpwechat-callback")
    proc = start_callback(stage, CALLBACK_WRITE_AS="operator", CALLBACK_OPERATOR_NAME=SA)
    try:
        wecom = WeComCallbacks(proc.url, token=TOKEN, encoding_aes_key=AES_KEY,
                               corp_id=CORP)
        run = new_run(stage, "on-behalf")
        card_for(stage, "bob", run, "ke-bob-on-behalf")
        assert wecom.replaced_button(wecom.click(
            "bob.wx", "ke-bob-on-behalf", "approve").reply) == "已批准 Approved"
        (decision,) = decisions(stage, run)
        assert (decision["name"], decision["operator"]["name"]) == ("bob", SA)
        assert impersonated_writes(stage, run, "bob") == []
    finally:
        proc.stop()
        stage.kubectl("delete", "clusterrolebinding", "corpwechat-callback-operator")
