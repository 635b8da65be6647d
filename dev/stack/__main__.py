"""``python -m dev.stack`` (``make dev``): run the whole chain here and show who hears what.

Starts a Kubernetes API (yours when KUBECONFIG / ~/.kube/config answers, else an embedded
fake loaded with manifests/examples), the WeCom API (real when CORPWECHAT_CORP_ID,
CORPWECHAT_CORP_SECRET and CORPWECHAT_AGENT_ID are set, else a local sandbox), the dev
broker wired by the Triggers in manifests/, and the three functions through
functions-framework. Replays the Kubernetes Events of the four scenarios of the source
document and prints who received which message; then keeps running until Ctrl-C
(``--once`` exits after the replay).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from dev.fakes.wecom import Delivery, format_delivery

from . import manifests
from .stack import (
    BROKER,
    EVENTS_FILE,
    EXAMPLE_FILES,
    SANDBOX_EMAILS,
    SYSTEM_NAMESPACE,
    Stack,
    StackOptions,
    example_events,
)

NOTIFICATION_REQUESTED = "dev.katanomi.cloudevents.notification.requested.v1alpha1"
# K8s Event reason -> what the source document says about it.
SCENARIOS = {
    "ApprovalPending": "approval pending: for the approvers",
    "ApprovalDenied": "approval denied: for the requester",
    "Running": "approved and running: for the requester, first Running Event only",
    "Failed": "promotion failed: for the requester",
}


@dataclass
class Step:
    number: int
    event: dict[str, Any]
    error: str = ""
    received: list[tuple[str, str, str]] = field(default_factory=list)  # user, type, text

    @property
    def reason(self) -> str:
        return str(self.event.get("reason", ""))

    @property
    def title(self) -> str:
        message = self.event.get("message")
        text = SCENARIOS.get(self.reason, "")
        if self.reason == "Running" and message:
            text = "a later Running Event: nobody (first Running Event only)"
        head = f"{self.number}. {self.reason}"
        if message:
            head += f' ("{message}")'
        return f"{head} - {text}" if text else head


def _out(text: str = "") -> None:
    print(text, flush=True)


def _subscribers() -> dict[str, str]:
    """Subscriber name -> e-mail, from the example ClusterSubscriptions."""
    found: dict[str, str] = {}
    for path in EXAMPLE_FILES:
        for doc in manifests.load_yaml_file(path):
            if doc.get("kind") == "ClusterSubscription":
                subscriber = (doc.get("spec") or {}).get("subscriber") or {}
                if subscriber.get("name"):
                    found[str(subscriber["name"])] = str((subscriber.get("info") or {})
                                                         .get("mail", ""))
    return found


def _directory(name: str) -> dict[str, str]:
    """An example ConfigMap's values → its keys (a WeCom id or an address → username)."""
    names: dict[str, str] = {}
    for path in EXAMPLE_FILES:
        for doc in manifests.load_yaml_file(path):
            if doc.get("kind") == "ConfigMap" and doc["metadata"]["name"] == name:
                names.update({str(v): str(k) for k, v in (doc.get("data") or {}).items()})
    return names


def _user_ids() -> dict[str, str]:
    """CorpWeChat user id -> username, as the notifier resolves them in the examples."""
    names = _directory("corpwechat-users")
    for name, mail in _subscribers().items():
        if mail in SANDBOX_EMAILS:
            names.setdefault(SANDBOX_EMAILS[mail], name)
    return names


def _text_of(delivery: Delivery) -> str:
    text = delivery.title or delivery.content or ""
    return text.splitlines()[0] if text else ""


def send_to_enricher(stack: Stack) -> Callable[[dict[str, Any]], str]:
    """Post each Event to the enricher as the ApiServerSource does; "" or what went wrong."""

    def send(event: dict[str, Any]) -> str:
        response = stack.send(event)
        if response.status_code == 202:
            return ""
        return f"kubeevent-enricher-sink answered {response.status_code}: " \
               f"{response.text.strip()}"

    return send


def replay(stack: Stack, verbose: bool,
           deliver: Callable[[dict[str, Any]], str] | None = None) -> list[Step]:
    """Replay the example Events through ``deliver`` (default: straight to the enricher).
    Without the dev broker (Knative's runs: ``deliver`` returns once the chain is done)
    the WeCom sandbox reports what was received."""
    deliver = deliver or send_to_enricher(stack)
    ids = _user_ids()
    addresses = _directory("email-users")
    steps: list[Step] = []
    for number, event in enumerate(example_events(), 1):
        step = Step(number, event)
        steps.append(step)
        delivered_before = len(stack.sandbox.delivered) if stack.sandbox else 0
        mail_before = {m["ID"] for m in stack.mailpit.messages()} if stack.mailpit else set()
        ingress_before = len(stack.broker.ingress) if stack.broker is not None else 0
        step.error = deliver(event)
        if stack.broker is not None and not stack.wait_idle(120):
            step.error = step.error or "the dev broker did not become idle in 120 s"
        if stack.sandbox is not None:
            stack.sandbox.wait_idle(10)
            for delivery in stack.sandbox.delivered[delivered_before:]:
                user = ids.get(delivery.userid, delivery.userid)
                step.received.append((user, delivery.msgtype, _text_of(delivery)))
                if verbose:
                    _out(format_delivery(delivery))
        elif stack.broker is not None:  # real WeCom: the requests the notifier accepted
            for request in stack.broker.ingress[ingress_before:]:
                if request["type"] != NOTIFICATION_REQUESTED:
                    continue
                outcome = [d for d in stack.broker.deliveries if d.event is request]
                accepted = bool(outcome) and outcome[0].outcome == "delivered"
                for recipient in (request.data or {}).get("recipients", []):
                    name = str((recipient.get("subscriber") or {}).get("name", ""))
                    step.received.append((name, "sent" if accepted else "NOT sent",
                                          "(real WeCom API)"))
        if stack.mailpit is not None:
            for mail in reversed(stack.mailpit.messages()):
                if mail["ID"] in mail_before:
                    continue
                for to in mail.get("To") or []:
                    user = addresses.get(to["Address"], to["Address"])
                    step.received.append((user, "email", str(mail.get("Subject", ""))))
        _print_step(step)
    return steps


def _print_step(step: Step) -> None:
    _out(step.title)
    if step.error:
        _out(f"   ERROR {step.error}")
    if not step.received:
        _out("   (nobody)")
    width = max((len(user) for user, _, _ in step.received), default=0)
    for user, msgtype, text in step.received:
        _out(f"   {user:<{width}} ← [{msgtype}] {text}")


def summary(steps: Sequence[Step], email: bool = False) -> list[str]:
    """'Who received what' lines: ``user  reason, reason`` (lowercase reasons), on WeCom
    or (``email``) by email."""
    got: dict[str, list[str]] = {name: [] for name in _subscribers()}
    for step in steps:
        for user, kind, _ in step.received:
            if (kind == "email") == email:
                got.setdefault(user, []).append(step.reason.lower())
    width = max((len(u) for u in got), default=0)
    return [f"  {user:<{width}}  {', '.join(reasons) if reasons else '(nothing)'}"
            for user, reasons in sorted(got.items())]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--once", action="store_true",
                        help="exit after the replay instead of running until Ctrl-C")
    parser.add_argument("--kube", choices=("auto", "fake", "kubeconfig", "cluster"),
                        default="auto",
                        help="Kubernetes API: auto = yours when reachable, else the fake; "
                             "cluster = a real kube-apiserver built from Go modules, with "
                             "Knative's own ApiServerSource adapter (needs Go)")
    parser.add_argument("--wecom", choices=("auto", "sandbox", "real"), default="auto",
                        help="WeCom API: auto = real when CORPWECHAT_* are set")
    parser.add_argument("--platform-url", default="http://localhost",
                        help="PLATFORM_URL for the templates' links")
    parser.add_argument("--broker", choices=("sync", "async"), default="sync",
                        help="sync = as Knative's default broker (its ingress answers after "
                             "every delivery); async = answers at once, as a durable broker "
                             "class (Kafka) does")
    parser.add_argument("--no-replay", action="store_true", help="start, do not replay")
    parser.add_argument("--workdir", type=Path, default=manifests.ROOT / ".dev",
                        help="where the kubeconfig and the broker log go (default .dev/)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print each message in full and every routing decision")
    args = parser.parse_args(argv)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # Explicitly: a shell starting us in the background ignores SIGINT otherwise.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    log = (lambda line: _out(f"[broker] {line}")) if args.verbose else None
    dev = None  # the real control plane (--kube cluster)
    stack: Stack | None = None
    deliver = None
    code = 0
    try:
        try:
            if args.kube == "cluster":
                _out("kubeevent-enricher dev stack on a real kube-apiserver: building and "
                     "starting the control plane, Knative Eventing's own broker (the dev "
                     "broker without root), Knative's receive adapter, WeCom and three "
                     "functions ...")
                from dev.cluster.chain import DevCluster
                from dev.cluster.controlplane import ClusterError

                try:
                    dev = DevCluster(args.workdir / "cluster", log=log).start()
                except ClusterError as exc:
                    raise RuntimeError(str(exc)) from None
                stack, deliver = dev.stack, dev.deliver
            else:
                _out("kubeevent-enricher dev stack: starting the Kubernetes API, WeCom, the "
                     "dev broker and three functions ...")
                options = StackOptions(kube=args.kube, wecom=args.wecom,
                                       platform_url=args.platform_url, workdir=args.workdir,
                                       synchronous_broker=args.broker == "sync")
                stack = Stack(options, log=log).start()
        except (RuntimeError, OSError) as exc:
            _out(f"could not start: {exc}")
            return 1
        for line in dev.describe() if dev is not None else stack.describe():
            _out("  " + line)
        if stack.kube_api is None and dev is None:
            _out("  note: using your cluster; the example run devops/my-promotion and the "
                 "subscriptions must exist there (kubectl apply -f manifests/examples/devstack/)")
        if stack.sandbox is None:
            _out("  note: CORPWECHAT_* are set: messages go to real CorpWeChat users")
        if not args.no_replay:
            _out()
            _out(f"Replaying {EVENTS_FILE.relative_to(manifests.ROOT)} (ArtifactPromotionRun "
                 "devops/my-promotion: requested by alice, approvers admin and bob; "
                 "carol is subscribed too):")
            steps = replay(stack, args.verbose, deliver)
            _out()
            _out("Who received what:")
            for line in summary(steps):
                _out(line)
            if stack.mailpit is not None:
                _out()
                _out("Who received what by email:")
                for line in summary(steps, email=True):
                    _out(line)
            if any(step.error for step in steps):
                code = 1
        if args.once:
            return code
        if stack.sandbox is not None:
            stack.sandbox.on_delivery = lambda d: _out(format_delivery(d))
        _out()
        if dev is not None and dev.plane is not None:
            _out(f"Running. Create more Events with kubectl: KUBECONFIG={dev.plane.kubeconfig()} "
                 f"{dev.plane.bin / 'kubectl'} create -f <event.yaml>")
        _out("Send Kubernetes Events as the ApiServerSource does, e.g.")
        _out(f"  curl -i '{stack.enricher.url}/?broker={BROKER}' -H 'ce-specversion: 1.0' "
             "-H 'ce-id: 1' -H 'ce-source: dev' -H 'ce-type: dev.knative.apiserver.resource.add' "
             "-H 'content-type: application/json' -d @<event.json>")
        if stack.kube_api is not None:
            _out(f"  KUBECONFIG={stack.kubeconfig} kubectl get clustersubscriptions")
            _out("Ask the CLI about it (the test message goes to this stack's WeCom sandbox):")
            _out(f"  KUBECONFIG={stack.kubeconfig} kubeevent history --user alice")
            if stack.sandbox is not None:
                _out(f"  KUBECONFIG={stack.kubeconfig} CORPWECHAT_API_URL="
                     f"{stack.sandbox.api_url} kubeevent test-send --subscription "
                     "admin-artifactpromotionrun-subscription")
        _out(f"Broker ingress: {stack.broker.ingress_url(SYSTEM_NAMESPACE, BROKER)}"
             if stack.broker else "")
        _out("Ctrl-C stops everything.")
        idle = threading.Event()
        while not idle.wait(0.5):  # wake up now and then: signals are handled between waits
            pass
    except KeyboardInterrupt:
        _out("\nstopping ...")
    finally:
        if dev is not None:
            dev.stop()
        elif stack is not None:
            stack.stop()
        _out("stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
