"""``kubeevent simulate`` on the seed's subscription, templates and katanomi-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpwechat_notifier.templates import BUILTIN
from dev.support.factory import apiserver_event, as_json, enriched_event
from tests.cli.conftest import Case, make_case
from tests.cli.support import (
    CONFIG_MAP,
    PENDING_TEMPLATE,
    PLATFORM_URL,
    SEED_CONFIG_PATCH,
    TEMPLATES,
    TYPE,
    by_name,
    run,
    subscription_for,
    write_json,
    write_yaml,
)

ADMIN = "admin-artifactpromotionrun-subscription"
ALICE = "alice-artifactpromotionrun-subscription"
PENDING_URL = f"{PLATFORM_URL}/console-devops/workspace/devops/artifactpromotionruns/my-promotion"


def simulate(case: Case, *extra: str | Path, subscriptions: Path | None = None,
             object_file: bool = True) -> list[str | Path]:
    args: list[str | Path] = ["simulate", "--event", case.event,
                              "--subscriptions", subscriptions or case.subscriptions,
                              "--templates", TEMPLATES, "--config", SEED_CONFIG_PATCH,
                              "--platform-url", PLATFORM_URL]
    if object_file:
        args += ["--object", case.object]
    return [*args, *extra]


@pytest.mark.parametrize("engine", ["auto", "cel-expr"])
def test_admin_receives_the_pending_message_and_the_requester_is_explained(
        pending: Case, engine: str) -> None:
    done = run(*simulate(pending, "--cel-engine", engine))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    admin = out[out.index(f"MATCH     {ADMIN}"):out.index(f"NO MATCH  {ALICE}")]
    assert "subscriber  admin (User, admin@example.com)" in admin
    assert f"corpwechat  to admin, template {PENDING_TEMPLATE}" in admin
    assert "msgtype      template_card" in admin
    assert "Artifact promotion awaiting your approval" in admin
    assert "Requested by: alice" in admin
    assert f"url          {PENDING_URL}" in admin
    alice = out[out.index(f"NO MATCH  {ALICE}"):]
    # alice asked for pending events too, but only as an approver: the CEL filter says no.
    assert "why         [cel] spec.subscriptions[0].events[0].filter.cel: CEL returned false: " \
        "ce.data.object.status.artifactPromotionSpec.approvalSpec.users.exists(item, " \
        'item.name == "$(subscriber.name)")' in alice
    assert "corpwechat  to" not in alice
    assert out.rstrip().endswith("1 of 2 subscriptions matched; notified: admin")


def test_json_gives_the_same_answer(pending: Case) -> None:
    done = run(*simulate(pending, "--json"))
    assert done.returncode == 0, done.stderr
    payload = done.json()
    assert payload["event"]["type"] == TYPE.format("approvalpending")
    assert payload["event"]["object"] == {"kind": "ArtifactPromotionRun",
                                          "apiVersion": "artifacts.katanomi.dev/v1alpha1",
                                          "namespace": "devops", "name": "my-promotion"}
    assert payload["mapping"] == str(SEED_CONFIG_PATCH)
    assert payload["template"] == {"name": PENDING_TEMPLATE, "used": True, "problem": None}
    subs = by_name(payload)
    admin, alice = subs[ADMIN], subs[ALICE]
    assert (admin["status"], admin["match"]) == ("MATCH", True)
    assert admin["matched_by"] == "spec.subscriptions[0].events[0]"
    assert admin["rbac"] == {"allowed": True, "reason": "allowed by --rbac allow"}
    [message] = admin["messages"]
    assert message["channel"] == "corpwechat" and message["to"] == "admin"
    assert message["template"] == PENDING_TEMPLATE
    assert message["msgtype"] == "template_card"
    assert message["title"] == "制品晋级待您审批 / Artifact promotion awaiting your approval"
    assert "请审批 Please review: devops/my-promotion" in message["content"]
    assert message["url"] == PENDING_URL
    assert (alice["status"], alice["match"]) == ("NO MATCH", False)
    assert alice["reason"]["check"] == "cel"
    assert alice["reason"]["where"] == "spec.subscriptions[0].events[0].filter.cel"
    assert "messages" not in alice
    assert [r["subscriber"]["name"] for r in payload["recipients"]] == ["admin"]
    assert payload["notification"]["type"] == \
        "dev.katanomi.cloudevents.notification.requested.v1alpha1"


def test_every_failed_check_is_named(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    subs = case.subscriptions
    write_yaml(subs / "requester.yaml",
               subscription_for("carol", reasons=("approvaldenied", "running", "failed")))
    write_yaml(subs / "prod.yaml", subscription_for("dave", namespace="prod"))
    write_yaml(subs / "owner.yaml", subscription_for("erin", owner="mallory"))
    write_yaml(subs / "stranger.yaml", subscription_for("ivan"))  # neither approver nor requester
    other_kind = subscription_for("frank")
    other_kind["spec"]["subscriptions"][0]["object"].update(kind="Pod", apiVersion="v1")
    warning_only = subscription_for("gina", name="gina-warnings")
    pending_rule = warning_only["spec"]["subscriptions"][0]["events"][0]
    pending_rule["filter"] = {"exact": {"eventtype": "Warning"}}
    broken = subscription_for("hank", name="hank-missing-field")
    broken["spec"]["subscriptions"][0]["events"][0]["filter"] = {
        "cel": "ce.data.object.status.noSuchField.users.size() > 0"}
    write_yaml(subs / "more.yaml", other_kind, warning_only, broken)
    payload = run(*simulate(case, "--json")).json()
    reasons = {name: item.get("reason") or {} for name, item in by_name(payload).items()}
    assert reasons["carol-artifactpromotionrun-subscription"]["check"] == "type"
    assert reasons["carol-artifactpromotionrun-subscription"]["message"] == (
        f"event type {TYPE.format('approvalpending')} is not subscribed (subscribed: "
        "artifactpromotionrun.approvaldenied, artifactpromotionrun.failed, "
        "artifactpromotionrun.running)")
    assert reasons["dave-artifactpromotionrun-subscription"]["check"] == "namespace"
    assert "the object is in namespace devops; this entry subscribes to namespace prod" in \
        reasons["dave-artifactpromotionrun-subscription"]["message"]
    assert reasons["erin-artifactpromotionrun-subscription"]["check"] == "owner"
    assert "'mallory'" in reasons["erin-artifactpromotionrun-subscription"]["message"]
    assert reasons["frank-artifactpromotionrun-subscription"]["check"] == "object"
    assert "subscribes to Pod in namespace devops" in \
        reasons["frank-artifactpromotionrun-subscription"]["message"]
    assert reasons["gina-warnings"] == {
        "check": "exact",
        "message": "exact filter eventtype: expected 'Warning', got 'Normal'",
        "where": "spec.subscriptions[0].events[0].filter.exact.eventtype"}
    assert reasons["ivan-artifactpromotionrun-subscription"]["check"] == "cel"
    assert reasons["hank-missing-field"]["check"] == "cel-error"
    assert "noSuchField" in reasons["hank-missing-field"]["message"]
    assert [r["subscription"] for r in payload["recipients"]] == [ADMIN]
    assert not any(item.get("note") for item in payload["subscriptions"])


def test_requester_hears_of_a_denial_and_the_approver_does_not(tmp_path: Path) -> None:
    case = make_case(tmp_path, "ApprovalDenied", message="the release window is closed")
    payload = run(*simulate(case, "--json")).json()
    subs = by_name(payload)
    assert subs[ALICE]["match"] is True
    [message] = subs[ALICE]["messages"]
    assert message["template"] == "kubeevent.artifactpromotionrun.approvaldenied"
    assert "事件原文 The Event says: “the release window is closed”" in message["description"]
    assert subs[ADMIN]["reason"]["check"] == "cel"
    assert "triggeredBy.user.name" in subs[ADMIN]["reason"]["message"]


def test_only_the_first_running_event_notifies(tmp_path: Path) -> None:
    case = make_case(tmp_path, "Running", message="step 2 of 3")
    subs = by_name(run(*simulate(case, "--json")).json())
    assert subs[ALICE]["reason"]["check"] == "cel"
    assert "!has(ce.data.event.message)" in subs[ALICE]["reason"]["message"]


@pytest.mark.parametrize("shape", ["enriched", "apiserversource"])
def test_cloudevents_are_accepted_as_the_event(pending: Case, tmp_path: Path,
                                               shape: str) -> None:
    if shape == "enriched":
        event = as_json(enriched_event("approvalpending", obj=pending.obj, event=pending.kevent))
    else:
        event = as_json(apiserver_event(pending.kevent))
    event_file = write_json(tmp_path / "ce.json", event)
    args = simulate(pending, "--json", object_file=shape != "enriched")
    args[args.index(pending.event)] = event_file
    payload = run(*args).json()
    assert [r["subscription"] for r in payload["recipients"]] == [ADMIN]
    expected = "from the enriched event" if shape == "enriched" else f"from {pending.object}"
    assert payload["event"]["object_from"] == expected


def test_rbac_deny_and_rules_file(pending: Case, tmp_path: Path) -> None:
    denied = by_name(run(*simulate(pending, "--json", "--rbac", "deny")).json())[ADMIN]
    assert denied["match"] is False
    assert denied["reason"]["check"] == "rbac"
    assert denied["reason"]["message"].startswith(
        "RBAC denied: admin may not get artifactpromotionruns.artifacts.katanomi.dev "
        "my-promotion in namespace devops")
    rules = write_yaml(tmp_path / "rbac.yaml", {
        "allow": [{"user": "admin", "namespace": "devops", "resource": "ArtifactPromotionRun"}],
        "deny": [{"user": "*", "namespace": "prod"}],
    })
    allowed = by_name(run(*simulate(pending, "--json", "--rbac", rules)).json())[ADMIN]
    assert allowed["match"] is True
    assert allowed["rbac"]["reason"].startswith("allowed by rule allow[0]")
    others = write_yaml(tmp_path / "others.yaml", {"allow": [{"user": ["bob", "carol"]}]})
    dropped = by_name(run(*simulate(pending, "--json", "--rbac", others)).json())[ADMIN]
    assert dropped["reason"]["check"] == "rbac"
    assert "no rule matched: default deny" in dropped["reason"]["message"]


def test_without_templates_the_builtin_message_is_shown(pending: Case) -> None:
    args = [a for a in simulate(pending, "--json") if a != TEMPLATES]
    args.remove("--templates")
    payload = run(*args).json()
    assert payload["template"]["used"] is False
    assert "not found (no --templates given)" in payload["template"]["problem"]
    [message] = by_name(payload)[ADMIN]["messages"]
    assert message["template"] == BUILTIN == "builtin"  # as the notifier logs it
    assert message["msgtype"] == "text"
    assert "ApprovalPending" in message["content"]
    assert "not found" in message["fallback_reason"]


def test_a_template_that_fails_to_render_falls_back(pending: Case, tmp_path: Path) -> None:
    failing = {
        "apiVersion": "core.katanomi.dev/v1alpha1", "kind": "NotificationTemplate",
        "metadata": {"name": PENDING_TEMPLATE, "namespace": "cpaas-system"},
        "spec": {"corpwechat": {"msgtype": "markdown", "title": "T",
                                "content": "{{ event.data.object.metadata.name.upper(1, 2) }}"}},
    }
    templates = write_yaml(tmp_path / "templates" / "t.yaml", failing)
    args = simulate(pending, "--json")
    args[args.index(TEMPLATES)] = templates.parent
    payload = run(*args).json()
    [message] = by_name(payload)[ADMIN]["messages"]
    assert message["template"] == BUILTIN == "builtin"  # as the notifier logs it
    assert PENDING_TEMPLATE in message["fallback_reason"]
    assert message["msgtype"] == "text"


def test_configmap_config_and_other_channels(pending: Case) -> None:
    write_yaml(pending.subscriptions / "alice.yaml",
               subscription_for("admin", name="admin-second", channels="wechat, corpwechat"))
    args = simulate(pending)
    args[args.index(SEED_CONFIG_PATCH)] = CONFIG_MAP
    # A cluster where another tool serves wechat: the filter is told both channels.
    done = run(*args, "--channels", "wechat,corpwechat")
    assert done.returncode == 0, done.stderr
    second = done.stdout[done.stdout.index("MATCH     admin-second"):]
    assert "wechat      not sent here: no wechat notifier in this project" in second
    assert (f"corpwechat  not sent here: admin already gets this notification through {ADMIN}"
            in second)
    assert "2 of 2 subscriptions matched; notified: admin" in done.stdout


def test_without_the_object_the_filters_see_null(pending: Case) -> None:
    payload = run(*simulate(pending, "--json", object_file=False)).json()
    assert payload["event"]["object_from"].startswith("none: give --object FILE")
    admin = by_name(payload)[ADMIN]
    assert admin["match"] is False
    assert admin["reason"]["check"] == "cel-error"


def test_each_channel_a_subscription_names_gets_its_own_message(pending: Case) -> None:
    """"corpwechat,email": the WeCom card and the email, each from its section of the
    template."""
    write_yaml(pending.subscriptions / "admin.yaml",
               subscription_for("admin", name=ADMIN, channels="corpwechat,email"))
    payload = run(*simulate(pending, "--json")).json()
    card, email = by_name(payload)[ADMIN]["messages"]
    assert (card["channel"], card["msgtype"]) == ("corpwechat", "template_card")
    assert (email["channel"], email["msgtype"], email["to"]) == ("email", "email", "admin")
    assert email["template"] == PENDING_TEMPLATE
    assert email["subject"].startswith(
        "制品晋级待您审批 / Artifact promotion awaiting your approval: devops/my-promotion")
    assert PENDING_URL in email["text"] and f'href="{PENDING_URL}"' in email["html"]
    text = run(*simulate(pending)).stdout
    assert "email       to admin, template " + PENDING_TEMPLATE in text
    assert "    subject      制品晋级待您审批" in text


def test_a_subscription_the_api_server_would_refuse_is_said_to_be_one(pending: Case) -> None:
    """``filters:`` for ``filter:``: simulated as written the filter is gone (everyone
    matches); the API server refuses the file. simulate says so."""
    admin = pending.subscriptions / "admin.yaml"
    admin.write_text(admin.read_text(encoding="utf-8").replace("      filter:", "      filters:",
                                                               1), encoding="utf-8")
    payload = run(*simulate(pending, "--json")).json()
    assert any('unknown field "spec.subscriptions[0].events[0].filters": the API server '
               "refuses this subscription" in w for w in payload["warnings"]), \
        payload["warnings"]


def test_the_example_run_file_is_an_object_file(pending: Case) -> None:
    """manifests/examples/devstack/artifactpromotionrun.yaml holds the run and its
    Namespace: the run is the object (it once had to be one document)."""
    from tests.cli.support import ROOT

    example = ROOT / "manifests" / "examples" / "devstack" / "artifactpromotionrun.yaml"
    args = simulate(pending, "--json", object_file=False)
    payload = run(*args, "--object", example).json()
    assert payload["event"]["object_from"] == f"from {example}"
    assert by_name(payload)[ADMIN]["match"] is True
