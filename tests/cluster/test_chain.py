"""The seed's scenarios on a real kube-apiserver, with Events created by kubectl and
delivered by Knative's own ApiServerSource adapter, through Knative's own broker with the
Broker and Triggers of the manifests; each function logged in as its own ServiceAccount
with exactly the RBAC of manifests/base and manifests/delivery."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dev.cluster import install
from dev.cluster.adapter import ReceiveAdapter
from dev.cluster.chain import ClusterChain
from dev.cluster.chain import controller_event as event_about
from dev.cluster.eventing import KnativeEventing
from dev.support.factory import (
    apiserver_event,
    cluster_subscription,
    post,
    promotion_run,
)
from dev.support.seed import SEED_SUBSCRIPTIONS, TITLES
from dev.support.wire import event as plain_event
from tests.cluster.scenarios import SEED_SCENARIOS, reaches_exactly_its_people
from tests.support.cli import kubeevent


@pytest.fixture(scope="module")
def chain(eventing: KnativeEventing, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ClusterChain]:
    # A catch-up may run once a second here (an hour's window, a 1 s interval).
    running = ClusterChain(eventing.plane, tmp_path_factory.mktemp("chain"),
                           eventing=eventing, function_env={
        "kubeevent-enricher-sink": {"CATCHUP_MIN_INTERVAL_SECONDS": "1"},
        # each message alone however many a member gets: the tests count them
        "corpwechat-notifier": {"CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "0",
                                # Approve / Deny on the cards (corpwechat-callback)
                                "CORPWECHAT_APPROVAL_BUTTONS": "true"}})
    running.install()
    running.subscribe_examples()
    with running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_recordings(chain: ClusterChain) -> Iterator[None]:
    chain.reset()
    yield


def run_in(chain: ClusterChain, namespace: str = "devops", **kwargs: Any) -> dict[str, Any]:
    run = promotion_run(f"run-{uuid.uuid4().hex[:8]}", namespace, **kwargs)
    return chain.new_run(run)


def wait_ready(chain: ClusterChain, name: str, timeout: float = 30.0) -> dict[str, Any]:
    """The Ready condition subscription-filter wrote through ``/status`` (read back)."""
    deadline = time.monotonic() + timeout
    while True:
        obj = chain.get("clustersubscription", name)
        for condition in (obj.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return dict(condition)
        assert time.monotonic() < deadline, f"no Ready condition on {name}"
        time.sleep(0.1)


# ------------------------------------------------------------------ the four scenarios


@pytest.mark.parametrize(("reason", "message", "who"), SEED_SCENARIOS)
def test_each_seed_scenario_reaches_exactly_its_people(
        chain: ClusterChain, reason: str, message: str | None, who: set[str]) -> None:
    reaches_exactly_its_people(chain, reason, message, who)


def test_the_event_reaches_the_enricher_as_knatives_adapter_sends_it(chain: ClusterChain) -> None:
    run = run_in(chain)
    created = chain.happen(event_about(run, "ApprovalPending"))
    (enriched,) = [e for e in chain.broker.ingress
                   if ((e.data or {}).get("event") or {}).get("metadata", {}).get("uid")
                   == created["metadata"]["uid"]]
    assert enriched["type"] == \
        "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.approvalpending.v1alpha1"
    assert enriched["involvedobjectname"] == run["metadata"]["name"]
    assert enriched.data["object"]["status"]["triggeredBy"]["user"]["name"] == "alice", \
        "the object as the API server has it, status included"
    assert enriched.data["event"]["metadata"]["resourceVersion"] == \
        created["metadata"]["resourceVersion"]


# ------------------------------------------------------------------ RBAC, status, watch


def test_a_subscriber_without_get_on_the_run_gets_nothing(chain: ClusterChain) -> None:
    run = run_in(chain, approvers=("admin", "bob", "carol"))
    can = chain.plane.kubectl("auth", "can-i", "get",
                              f"artifactpromotionruns.artifacts.katanomi.dev/"
                              f"{run['metadata']['name']}", "-n", "devops", user="carol",
                              check=False)
    assert can.stdout.strip() == "no", "carol has no Role in devops"
    chain.happen(event_about(run, "ApprovalPending"))
    assert set(chain.received()) == {"admin", "bob"}


def test_status_is_written_through_the_subresource_and_shown_by_kubectl(
        chain: ClusterChain) -> None:
    for name in SEED_SUBSCRIPTIONS.values():
        condition = wait_ready(chain, name)
        assert (condition["status"], condition["reason"]) == ("True", "Ready")
    table = chain.plane.kubectl("get", "clustersubscriptions", "-o", "wide").stdout
    header, *rows = table.splitlines()
    assert header.split()[:4] == ["NAME", "SUBSCRIBER", "READY", "REASON"]
    alice = next(r.split() for r in rows if r.startswith(SEED_SUBSCRIPTIONS["alice"]))
    assert alice[1:4] == ["alice", "True", "Ready"]


def test_a_broken_subscription_says_why_in_its_status(chain: ClusterChain) -> None:
    broken = cluster_subscription("bob", name="bob-broken-filter")
    broken["spec"]["subscriptions"][0]["events"][0]["filter"]["cel"] = "ce.data.object.("
    chain.apply_yaml(json.dumps(broken), user="bob")
    condition = wait_ready(chain, "bob-broken-filter")
    assert condition["status"] == "False"
    assert "cel" in condition["message"].lower()
    table = chain.plane.kubectl("get", "clustersubscription", "bob-broken-filter",
                                "-o", "wide").stdout
    assert "False" in table.splitlines()[1].split()
    # Bob's own seed subscription is not affected by his broken one.
    run = run_in(chain, approvers=("bob",))
    chain.happen(event_about(run, "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"bob": 1}
    chain.plane.kubectl("delete", "clustersubscription", "bob-broken-filter", user="bob")


def test_a_filter_that_can_never_match_is_said_on_the_status_and_still_used(
        chain: ClusterChain) -> None:
    """The filter reads the kind's schema from the cluster's CRD (its own RBAC): a path
    the run does not have, a lost binding and a type in capitals are said in
    FiltersCanMatch with their place; Ready stays True (nothing legitimate is blocked),
    and mending the file turns the condition True."""
    name = "bob-slips"
    slips = cluster_subscription("bob", name=name)
    events = slips["spec"]["subscriptions"][0]["events"]
    events[0]["filter"]["cel"] = events[0]["filter"]["cel"].replace(
        "status.artifactPromotionSpec.approvalSpec", "status.approvalSpec")
    events[1]["filter"]["cel"] = 'ce.data.object.status.triggeredBy.user.name == ""'
    events[3]["type"] = events[3]["type"].replace(".failed.", ".Failed.")
    chain.apply_yaml(json.dumps(slips), user="bob")

    def condition() -> dict[str, Any] | None:
        for found in (chain.get("clustersubscription", name).get("status") or {}).get(
                "conditions") or []:
            if found.get("type") == "FiltersCanMatch":
                return dict(found)
        return None

    deadline = time.monotonic() + 30
    while (said := condition()) is None:
        assert time.monotonic() < deadline, "no FiltersCanMatch condition"
        time.sleep(0.2)
    assert (said["status"], said["reason"]) == ("False", "UnknownField"), said
    message = said["message"]
    assert "spec.subscriptions[0].events[0].filter.cel: line 1, column 1: " \
           "ce.data.object.status.approvalSpec: ArtifactPromotionRun's schema" in message
    assert "did you mean ce.data.object.status.artifactPromotionSpec.approvalSpec?" in message
    assert "spec.subscriptions[0].events[1].filter.cel: the filter compares with an empty " \
           "string" in message
    assert "spec.subscriptions[0].events[3].type: event type" in message \
        and "has capital letters" in message
    assert wait_ready(chain, name)["status"] == "True", "shown, not refused"

    chain.apply_yaml(json.dumps(cluster_subscription("bob", name=name)), user="bob")
    deadline = time.monotonic() + 30
    while (said := condition()) is None or said["status"] != "True":
        assert time.monotonic() < deadline, said
        time.sleep(0.2)
    assert said["reason"] == "NothingFound"
    chain.plane.kubectl("delete", "clustersubscription", name, user="bob")


def test_a_namespace_labelled_later_is_watched_from_then_on(chain: ClusterChain) -> None:
    """As Knative's reconciler does for a namespaceSelector, the cluster stack follows the
    label: the adapter is restarted with the namespaces selected now (make dev runs this
    check every few seconds)."""
    chain.plane.kubectl("create", "namespace", "labelled-later")
    chain.follow_in_background(every=0.5)
    try:
        chain.plane.kubectl("label", "namespace", "labelled-later",
                            f"{install.INNER_NAMESPACE_LABEL}=true")
        deadline = time.monotonic() + 60
        while "labelled-later" not in (chain.adapter.namespaces if chain.adapter else []):
            assert time.monotonic() < deadline, "the labelled namespace was never watched"
            time.sleep(0.2)
    finally:
        chain._stop_following.set()
        if chain._following is not None:
            chain._following.join(60)
        chain._stop_following.clear()
    run = chain.new_run(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "labelled-later"))
    created = chain.create(event_about(run, "ApprovalPending"))
    deadline = time.monotonic() + 30
    while not chain.enricher_saw("labelled-later", run["metadata"]["name"]):
        assert time.monotonic() < deadline, f"{created['metadata']['name']} never came"
        time.sleep(0.2)


def test_a_subscription_created_while_the_filter_runs_takes_effect(chain: ClusterChain) -> None:
    chain.plane.kubectl("create", "rolebinding", "erin-reads-runs", "-n", "staging",
                        "--role=run-reader", "--user=erin")
    chain.apply_yaml(json.dumps(cluster_subscription("erin", namespace="staging")),
                     user="erin")
    assert wait_ready(chain, "erin-artifactpromotionrun-subscription")["status"] == "True"
    run = run_in(chain, "staging", approvers=("erin",))
    chain.happen(event_about(run, "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"erin": 1}


def test_access_through_a_group_binding_counts(chain: ClusterChain) -> None:
    """erin may read the runs of devops only as a member of release-managers, which her
    own credentials say and the administrator's group directory repeats."""
    chain.plane.kubectl("create", "rolebinding", "release-managers-read-runs", "-n", "devops",
                        "--role=run-reader", "--group=release-managers")
    can = chain.plane.kubectl("auth", "can-i", "get",
                              "artifactpromotionruns.artifacts.katanomi.dev", "-n", "devops",
                              user="erin", check=False)
    assert can.stdout.strip() == "yes"
    user_only = chain.plane.kubectl("auth", "can-i", "get",
                                    "artifactpromotionruns.artifacts.katanomi.dev", "-n",
                                    "devops", "--as=erin", check=False)
    assert user_only.stdout.strip() == "no", "no grant to the user erin herself"
    chain.apply_yaml(json.dumps(cluster_subscription("erin", name="erin-devops")), user="erin")
    assert wait_ready(chain, "erin-devops")["status"] == "True"
    run = run_in(chain, approvers=("erin",))
    chain.happen(event_about(run, "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"erin": 1}


def test_a_forged_event_from_another_namespace_reaches_nobody(chain: ClusterChain) -> None:
    """erin may create Events in staging. The API server accepts one with eventTime that
    names alice's run in devops; Knative's adapter delivers it; the enricher refuses it."""
    chain.plane.kubectl("create", "role", "event-writer", "-n", "staging", "--verb=create",
                        "--resource=events")
    chain.plane.kubectl("create", "rolebinding", "erin-writes-events", "-n", "staging",
                        "--role=event-writer", "--user=erin")
    run = run_in(chain)
    forged = event_about(run, "ApprovalDenied", "SSO password expired: reset it at "
                                                "https://sso.example.invalid/reset")
    forged["metadata"]["namespace"] = "staging"
    forged.update({"eventTime": "2026-12-01T10:00:00.000000Z", "action": "Deny",
                   "reportingComponent": "artifactpromotionrun-controller",
                   "reportingInstance": "artifactpromotionrun-controller-0"})
    created = chain.create(forged, user="erin")
    assert created["involvedObject"]["namespace"] == "devops", "the API server took it"
    # The adapter sends one namespace's Events in order: once a later canary is through,
    # the forged Event has been answered.
    assert chain.adapter is not None
    chain.adapter.handshake(chain.enricher_saw, namespaces=["staging"])
    stack = chain.running()
    assert chain.broker.wait_idle(30)
    refused = [r for r in stack.enricher.log_records()
               if r.get("message") == "rejected" and r.get("status") == 403]
    assert any("untrusted Event" in r.get("reason", "") for r in refused)
    assert chain.received() == {}
    assert not [e for e in chain.broker.ingress
                if e.get("involvedobjectname") == run["metadata"]["name"]]


def test_the_chain_recovers_from_a_kube_apiserver_restart(chain: ClusterChain) -> None:
    """Last in the module: the API server goes away under every watch and pooled
    connection. The filter's watch recovers (a subscription created afterwards becomes
    Ready and matches), and so do the adapter, the enricher and the notifier."""
    chain.plane.restart_apiserver()
    adapter = chain.adapter
    assert isinstance(adapter, ReceiveAdapter) and adapter.alive()
    adapter.handshake(chain.enricher_saw)  # its watches are open again
    chain.apply_yaml(json.dumps(cluster_subscription("alice", name="alice-staging",
                                                     namespace="staging")), user="alice")
    assert wait_ready(chain, "alice-staging", timeout=90)["status"] == "True"
    run = run_in(chain, "staging", requester="alice", approvers=("admin",))
    chain.happen(event_about(run, "ApprovalDenied", "denied after the restart"))
    assert {u: len(m) for u, m in chain.received().items()} == {"alice": 1}


def test_a_filter_stopped_at_the_iteration_limit_says_so_on_the_subscription(
        chain: ClusterChain) -> None:
    """bob is approver number 10,501 of a run: the seed's filter cannot be answered within
    10,000 iterations; he is not told, and his subscription says so (the real server took
    the condition through /status and its schema). His next ordinary run is notified."""
    approvers = tuple("bob" if i == 10_500 else f"user-{i}" for i in range(10_600))
    crowded = run_in(chain, approvers=approvers)
    chain.happen(event_about(crowded, "ApprovalPending"))
    assert chain.received() == {}
    name = SEED_SUBSCRIPTIONS["bob"]
    deadline = time.monotonic() + 30
    while True:
        conditions = (chain.get("clustersubscription", name).get("status") or {}).get(
            "conditions") or []
        found = {c["type"]: c for c in conditions}
        if "FilterEvaluated" in found:
            break
        assert time.monotonic() < deadline, f"no FilterEvaluated condition on {name}"
        time.sleep(0.1)
    limit = found["FilterEvaluated"]
    assert (limit["status"], limit["reason"]) == ("False", "EvaluationLimit")
    assert "evaluation stopped after 10,000 comprehension iterations" in limit["message"]
    assert found["Ready"]["status"] == "True"
    chain.reset()
    chain.happen(event_about(run_in(chain, approvers=("bob",)), "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"bob": 1}


def test_a_delivery_is_recorded_and_a_restarted_notifier_does_not_send_it_again(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str]) -> None:
    """The records are made through each notifier's own RBAC on the real server, one per
    channel (bob subscribes with "corpwechat,email"): the history answers "what did bob
    get about devops/<run>?", and notifiers that lost their memory (restart, scale to
    zero) given the same notification again send nothing."""
    run = run_in(chain, approvers=("bob",))
    chain.happen(event_about(run, "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"bob": 1}
    name = run["metadata"]["name"]
    listed = chain.get("notificationdeliveries", "-n", "cpaas-system", "-l",
                       f"kubeevent.io/user=bob,kubeevent.io/namespace=devops,"
                       f"kubeevent.io/object={name}")
    by_channel = {r["spec"]["channel"]: r for r in listed["items"]}
    assert sorted(by_channel) == ["corpwechat", "email"] and len(listed["items"]) == 2
    for made in by_channel.values():
        assert (made["status"]["phase"], made["spec"]["event"]["reason"]) == (
            "Sent", "approvalpending")
    assert by_channel["email"]["status"]["target"] == "bob@example.com"
    record = by_channel["corpwechat"]
    assert {a: len(m) for a, m in chain.mailed().items()} == {"bob@example.com": 1}
    assert kubeevent(["history", "--user", "bob", "--since", "1h", "--json",
                         "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    told = json.loads(capsys.readouterr().out)["deliveries"]
    assert sorted((d["event"], d["object"], d["channel"], d["phase"]) for d in told
                  if d["object"] == f"devops/{name}") == [
        ("approvalpending", f"devops/{name}", "corpwechat", "Sent"),
        ("approvalpending", f"devops/{name}", "email", "Sent")]
    table = chain.plane.kubectl("get", "notificationdeliveries", "-n", "cpaas-system",
                                record["metadata"]["name"]).stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "USER", "NAMESPACE", "OBJECT", "EVENT", "PHASE"]
    assert table[1].split()[1:6] == ["bob", "devops", name, "approvalpending", "Sent"]

    stack = chain.running()
    assert stack.sandbox is not None
    (request,) = [e for e in chain.broker.ingress
                  if e["type"].endswith("notification.requested.v1alpha1")]
    for notifier in (stack.notifier, stack.email_notifier):
        notifier.stop()
        notifier.start(wait_ready=True)
    assert chain.broker.ingest("cpaas-system/cloudevents-katanomi-dev", request) == 202
    assert chain.broker.wait_idle(30) and stack.sandbox.wait_idle(10)
    assert {u: len(m) for u, m in chain.received().items()} == {"bob": 1}
    assert stack.sandbox.suppressed == [], "not even sent to WeCom's duplicate check"
    assert {a: len(m) for a, m in chain.mailed().items()} == {"bob@example.com": 1}


def test_a_subscriber_reads_their_own_history_with_their_own_credentials_and_nobody_elses(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str]) -> None:
    """The notifiers (their own ServiceAccounts' RBAC) keep each subscriber's latest
    outcomes on their ClusterSubscription's status; ``kubectl get`` shows LAST NOTIFIED
    and RESULT; bob, who may not read the records, reads his own history with his own
    kubeconfig (no --user, no --kubeconfig: $KUBECONFIG) and may not ask for alice's."""
    run = run_in(chain, approvers=("bob",))
    chain.happen(event_about(run, "ApprovalPending"))
    assert {u: len(m) for u, m in chain.received().items()} == {"bob": 1}
    deadline = time.monotonic() + 30
    while True:
        status = chain.get("clustersubscription", SEED_SUBSCRIPTIONS["bob"]).get("status", {})
        if len(status.get("notifications") or []) >= 2:
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    latest = status["notifications"][:2]
    assert sorted((n["channel"], n["event"], n["namespace"], n["result"]) for n in latest) \
        == [("corpwechat", "approvalpending", "devops", "Sent"),
            ("email", "approvalpending", "devops", "Sent")]
    assert run["metadata"]["name"] not in json.dumps(status), "no object's name"
    assert status["lastResult"] == "Sent" and status["lastNotified"]
    table = chain.plane.kubectl("get", "clustersubscription", SEED_SUBSCRIPTIONS["bob"],
                                user="bob").stdout.splitlines()
    assert table[0].split()[:6] == ["NAME", "SUBSCRIBER", "READY", "LAST", "NOTIFIED", "RESULT"]
    assert table[1].split()[1:2] + table[1].split()[4:5] == ["bob", "Sent"]

    denied = chain.plane.kubectl("get", "notificationdeliveries", "-n", "cpaas-system",
                                 user="bob", check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    mine = str(chain.plane.kubeconfig("bob"))
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = mine
    try:
        assert kubeevent(["history", "--since", "1h", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert (got["user"], got["source"]) == ("bob", "subscriptions")
        assert {(d["event"], d["object"], d["channel"], d["phase"])
                for d in got["deliveries"]} >= {
            ("approvalpending", "devops/…", "corpwechat", "Sent"),
            ("approvalpending", "devops/…", "email", "Sent")}
        assert kubeevent(["history", "--user", "alice", "--since", "1h"]) == 2
        assert "may read only their own history, not 'alice'" in capsys.readouterr().err
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous


def test_an_approval_is_followed_to_its_end(chain: ClusterChain,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """admin and bob get the pending card; bob approves (his decision written through
    ``/status``, as the platform writes it) and the Running Event follows: both cards now
    say approved by bob (updated in place through the notifier's own RBAC on the run),
    alice gets her running message, nobody gets anything twice, and the history says so."""
    run = run_in(chain, approvers=("admin", "bob"))
    chain.happen(event_about(run, "ApprovalPending"))
    got = chain.received()
    assert {u: [d.msgtype for d in m] for u, m in got.items()} == {
        "admin": ["template_card"], "bob": ["template_card"]}
    cards = {user: got[user][0] for user in ("admin", "bob")}
    name = run["metadata"]["name"]
    decision = {"status": {"phase": "Running", "approval": {"users": [
        {"kind": "User", "name": "bob", "input": {"approved": True}}]}}}
    chain.plane.kubectl("patch", "artifactpromotionruns.artifacts.katanomi.dev", name, "-n",
                        "devops", "--subresource=status", "--type=merge", "--patch-file",
                        "/dev/stdin", input=json.dumps(decision))
    chain.happen(event_about(run, "Running"))
    sandbox = chain.running().sandbox
    assert sandbox is not None
    for user, card in cards.items():
        now = sandbox.card_of(user, card.task_id or "")
        assert now is not None and now["main_title"]["title"].startswith(
            "已由 bob 批准 / Approved by bob at "), (user, now)
    assert len(sandbox.card_updates) == 2
    assert {u: len(m) for u, m in chain.received().items()} == {
        "admin": 1, "bob": 1, "alice": 1}
    assert kubeevent(["history", "--user", "admin", "--since", "1h", "--json",
                      "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    told = json.loads(capsys.readouterr().out)["deliveries"]
    (card,) = [d for d in told if d["object"] == f"devops/{name}"]
    assert card["follow_up"].startswith("card updated: 已由 bob 批准"), card


def test_bob_approves_from_his_card_and_admins_card_says_so(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole way: the notifier's button cards (its own RBAC), bob's click through
    WeCom's signed, encrypted callback to corpwechat-callback (its own ServiceAccount,
    manifests/callback), his decision written as bob, then the Running Event: admin's
    card says approved by bob, bob's history shows his click."""
    from dev.cluster.install import MANIFESTS
    from dev.fakes.wecom_callback import WeComCallbacks
    from dev.support.procs import FunctionProcess

    plane = chain.plane
    plane.kubectl("apply", "-k", str(MANIFESTS / "callback"))
    plane.kubectl("create", "role", "run-decider", "-n", "devops", "--verb=patch",
                  "--resource=artifactpromotionruns/status")
    plane.kubectl("create", "rolebinding", "run-deciders", "-n", "devops",
                  "--role=run-decider", "--user=admin", "--user=bob")
    keys = {"CORPWECHAT_CALLBACK_TOKEN": "chain-token", "CORPWECHAT_CORP_ID": "ww-chain",
            "CORPWECHAT_CALLBACK_AES_KEY": "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"}
    callback = FunctionProcess("corpwechat-callback", env={
        "KUBECONFIG": str(plane.service_account_kubeconfig("kubeevent-enricher",
                                                           "corpwechat-callback")),
        "SYSTEM_NAMESPACE": "cpaas-system", **keys}).start()
    try:
        run = run_in(chain, approvers=("admin", "bob"))
        chain.happen(event_about(run, "ApprovalPending"))
        got = chain.received()
        cards = {user: got[user][0] for user in ("admin", "bob")}
        assert all(c.card and c.card["card_type"] == "button_interaction"
                   for c in cards.values())
        wecom = WeComCallbacks(callback.url, token=keys["CORPWECHAT_CALLBACK_TOKEN"],
                               encoding_aes_key=keys["CORPWECHAT_CALLBACK_AES_KEY"],
                               corp_id=keys["CORPWECHAT_CORP_ID"])
        answer = wecom.click("bob", cards["bob"].task_id or "", "approve")
        assert wecom.replaced_button(answer.reply) == "已批准 Approved"
        name = run["metadata"]["name"]
        stored = chain.get("artifactpromotionruns.artifacts.katanomi.dev", name, "-n",
                           "devops")
        assert stored["status"]["approval"]["users"] == [
            {"kind": "User", "name": "bob", "input": {"approved": True}}]
        chain.plane.kubectl("patch", "artifactpromotionruns.artifacts.katanomi.dev", name,
                            "-n", "devops", "--subresource=status", "--type=merge",
                            "-p", json.dumps({"status": {"phase": "Running"}}))
        chain.happen(event_about(run, "Running"))
        sandbox = chain.running().sandbox
        assert sandbox is not None
        now = sandbox.card_of("admin", cards["admin"].task_id or "")
        assert now is not None and now["main_title"]["title"].startswith(
            "已由 bob 批准 / Approved by bob at "), now
        assert kubeevent(["history", "--user", "bob", "--since", "1h", "--json",
                          "--kubeconfig", str(plane.kubeconfig())]) == 0
        told = json.loads(capsys.readouterr().out)["deliveries"]
        (card,) = [d for d in told if d["object"] == f"devops/{name}"
                   and d["channel"] == "corpwechat"]
        assert "clicked approve at " in card["follow_up"] and \
            card["follow_up"].endswith(": 已批准 Approved"), card
    finally:
        callback.stop()


def test_an_event_the_source_never_saw_is_caught_up_once(chain: ClusterChain) -> None:
    """While Knative's adapter is down (as when a namespace's label changes), an Event
    is created: the restarted adapter does not send it. The catch-up ping does, through
    the enricher's own RBAC (Events listed by kind with a field selector, one run at a
    time by a Lease); a second ping tells nobody again, and one that names another
    broker exports nothing."""
    assert chain.adapter is not None
    chain.adapter.stop()
    try:
        run = run_in(chain, approvers=("bob",))
        missed = chain.create(event_about(run, "ApprovalPending"))  # said now: in the hour
    finally:
        chain.adapter.start()
        chain.adapter.handshake(chain.enricher_saw)
    stack = chain.running()
    assert stack.sandbox is not None
    assert not any(((e.data or {}).get("event") or {}).get("metadata", {}).get("uid")
                   == missed["metadata"]["uid"] for e in chain.broker.ingress)
    ping = plain_event({"type": "dev.knative.sources.ping",
                       "source": "/apis/v1/namespaces/kubeevent-enricher/pingsources/"
                                 "kubeevent-catch-up"}, {"catchUp": "events"})
    before = len(chain.broker.ingress)
    refused = post(stack.enricher.url, ping, params={"broker": "devops/elsewhere"})
    assert refused.status_code == 403 and len(chain.broker.ingress) == before
    for _ in range(2):
        time.sleep(1.1)  # past the interval since the last run
        response = post(stack.enricher.url, ping)
        assert response.status_code == 202, response.text
        assert chain.broker.wait_idle(60) and stack.sandbox.wait_idle(10)
        got = {u: [m for m in ms if run["metadata"]["name"] in (m.description or "")]
               for u, ms in chain.received().items()}
        assert {u: len(m) for u, m in got.items() if m} == {"bob": 1}
    runs = [r for r in stack.enricher.log_records() if r.get("message") == "catch-up done"]
    assert len(runs) >= 2 and all(r["failed"] == 0 for r in runs[-2:])


def test_explain_says_who_was_told_and_why_the_others_were_not(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str]) -> None:
    run = run_in(chain, approvers=("admin", "bob", "carol"))
    chain.happen(event_about(run, "ApprovalPending"))
    name = run["metadata"]["name"]
    assert kubeevent(["explain", f"devops/{name}", "--json",
                         "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    (event,) = json.loads(capsys.readouterr().out)["events"]
    assert event["reason"] == "ApprovalPending"
    people = {p["subscription"]: p for p in event["subscribers"]}
    admin, bob, carol, alice = (people[SEED_SUBSCRIPTIONS[u]]
                                for u in ("admin", "bob", "carol", "alice"))
    for told in (admin, bob):
        assert (told["notified"], told["why"]) == (True, "sent")
        assert [c["channel"] for c in told["channels"]] == \
            (["corpwechat"] if told is admin else ["corpwechat", "email"])
    assert carol["notified"] is False
    assert carol["why"].startswith("left out by the filter at "), carol
    assert f": Forbidden: User carol may not get ArtifactPromotionRun devops/{name} " \
           "(SubjectAccessReview at " in carol["why"], carol
    assert alice["notified"] is False
    assert alice["why"].startswith("cel: CEL returned false"), alice

    # carol may read the run now: what she was not told then still says why
    chain.plane.kubectl("create", "rolebinding", "carol-reads-runs-later", "-n", "devops",
                        "--role=run-reader", "--user=carol")
    try:
        assert kubeevent(["explain", f"devops/{name}", "--json",
                          "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
        (event,) = json.loads(capsys.readouterr().out)["events"]
        (carol,) = [p for p in event["subscribers"]
                    if p["subscription"] == SEED_SUBSCRIPTIONS["carol"]]
        assert carol["notified"] is False and "Forbidden: User carol" in carol["why"]
        assert kubeevent(["history", "--user", "carol", "--since", "1h", "--json",
                          "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
        rows = json.loads(capsys.readouterr().out)["deliveries"]
        assert sorted((r["channel"], r["phase"], r["reason"]) for r in rows
                      if r["object"] == f"devops/{name}") \
            == [("corpwechat", "Skipped", "Forbidden"), ("email", "Skipped", "Forbidden")]
    finally:
        chain.plane.kubectl("delete", "rolebinding", "carol-reads-runs-later", "-n", "devops")


def test_explain_says_when_the_source_does_not_watch_the_namespace(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str]) -> None:
    chain.plane.kubectl("create", "namespace", "unwatched")
    run = chain.new_run(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "unwatched"))
    chain.create(event_about(run, "ApprovalPending"))
    assert kubeevent(["explain", f"unwatched/{run['metadata']['name']}",
                      "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[1].strip().startswith(
        "namespace unwatched is not watched: ApiServerSource kubeevent-watcher/"
        "kubeevent-watcher selects namespaces with cpaas.io/inner-namespace (exists)"), shown


def test_test_send_reaches_the_subscriber_only_marked_as_a_test(
        chain: ClusterChain, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    stack = chain.running()
    assert stack.sandbox is not None
    for name in ("KUBECONFIG", "KUBEEVENT_SIGNING", "SYSTEM_NAMESPACE", "DELIVERY_RECORDS"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("CORPWECHAT_API_URL", stack.sandbox.api_url)
    assert kubeevent(["test-send", "--subscription", SEED_SUBSCRIPTIONS["bob"],
                         "--event-type", "approvaldenied", "--json",
                         "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["subscriber"], result["sent"]) == ("bob", 1)
    assert stack.sandbox.wait_idle(10)
    got = chain.received()
    assert set(got) == {"bob"}, "the subscriber only"
    (message,) = got["bob"]
    assert (message.title or "").startswith("[TEST] ")
    assert TITLES["ApprovalDenied"] in (message.title or "")
    assert chain.mailed() == {}, "one channel at a time"

    # WeCom out of reach: said in one line (which URL), not "a bug in kubeevent"; and no
    # record is left for the notifiers' sweep to send the test message again later
    before = chain.get("notificationdeliveries", "-n", "cpaas-system")["items"]
    monkeypatch.setenv("CORPWECHAT_API_URL", "http://127.0.0.1:9/cgi-bin")
    monkeypatch.setenv("CORPWECHAT_RETRY_ATTEMPTS", "1")
    assert kubeevent(["test-send", "--subscription", SEED_SUBSCRIPTIONS["bob"],
                      "--kubeconfig", str(chain.plane.kubeconfig())]) == 2
    err = capsys.readouterr().err
    assert "not sent (503)" in err and "CORPWECHAT_API_URL=http://127.0.0.1:9/cgi-bin" in err
    assert len(err.strip().splitlines()) == 1, err
    assert chain.get("notificationdeliveries", "-n", "cpaas-system")["items"] == before
    monkeypatch.setenv("CORPWECHAT_API_URL", stack.sandbox.api_url)

    # by email: the SMTP server from EMAIL_*, the address from the cluster's email-users
    mailpit = stack.mailpit
    assert mailpit is not None
    for name, value in (("EMAIL_SMTP_HOST", "127.0.0.1"),
                        ("EMAIL_SMTP_PORT", str(mailpit.smtp_port)), ("EMAIL_SMTP_TLS", "none"),
                        ("EMAIL_FROM", "Katanomi <noreply@example.com>")):
        monkeypatch.setenv(name, value)
    assert kubeevent(["test-send", "--subscription", SEED_SUBSCRIPTIONS["bob"],
                         "--channel", "email", "--event-type", "approvaldenied", "--json",
                         "--kubeconfig", str(chain.plane.kubeconfig())]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["channel"], result["sent"], result["users"]) == \
        ("email", 1, ["bob@example.com"])
    ((email,),) = chain.mailed().values()
    assert email["Subject"].startswith("[TEST] ") and TITLES["ApprovalDenied"] in email["Subject"]
    # admin's subscription (the seed's) names corpwechat only: said, nothing sent
    assert kubeevent(["test-send", "--subscription", SEED_SUBSCRIPTIONS["admin"],
                         "--channel", "email", "--kubeconfig", str(chain.plane.kubeconfig())]) == 2
    assert "does not name the channel email" in capsys.readouterr().err


def test_a_made_up_event_about_a_real_run_reaches_nobody_and_discloses_nothing(
        chain: ClusterChain) -> None:
    """Posted straight to the enricher, as any pod could: an ApprovalDenied the API server
    never had (a fresh uid, a phishing link) is refused; a real Event posted without
    ``?broker=`` comes back as 202 with no body, not as the run with a valid signature."""
    stack = chain.running()
    assert stack.sandbox is not None
    run = run_in(chain, approvers=("bob",))
    forged = event_about(run, "ApprovalDenied",
                         "SSO 过期请重新审批 re-approve: https://acp.evil.example/sso")
    forged["metadata"].update(name=f"{run['metadata']['name']}.forged", uid=str(uuid.uuid4()))
    before = len(chain.broker.ingress)
    answer = post(stack.enricher.url, apiserver_event(forged),
                  params={"broker": "cloudevents-katanomi-dev"})
    assert answer.status_code == 403 and answer.text.startswith("unconfirmed Event")
    real = chain.create(event_about(run, "Running"))
    reply = post(stack.enricher.url, apiserver_event(real))
    assert (reply.status_code, reply.content) == (202, b"")
    assert chain.broker.wait_idle(60) and stack.sandbox.wait_idle(10)
    assert not any(e["type"].endswith(".approvaldenied.v1alpha1")
                   for e in chain.broker.ingress[before:])
    assert all("acp.evil.example" not in (m.description or "") + (m.url or "")
               for ms in chain.received().values() for m in ms)
