"""The whole chain on the real control plane.

Installed with kubectl exactly as an operator would (``install.install``: our CRDs,
Knative's CRDs, the plain Knative overlay), the three functions run as processes, each
logged in as its own ServiceAccount, so the RBAC in ``manifests/base`` is the only RBAC
they have. Knative's own receive adapter watches the project namespaces as the seed's
ApiServerSource and sends to the enricher with the seed's ``?broker=``; the dev broker
routes by the Trigger manifests, or, given ``eventing``, Knative's own broker does, with
the Broker, Triggers and DeliverySpecs of the manifests as Knative admitted them; WeCom is
the sandbox. Events are created with kubectl.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dev.fakes.wecom import Delivery
from dev.stack.stack import (
    BROKER,
    EMAIL_NOTIFIER,
    ENRICHER,
    FILTER,
    FUNCTION_NAMESPACE,
    NOTIFIER,
    SANDBOX_SECRET,
    SYSTEM_NAMESPACE,
    Stack,
    StackOptions,
)
from dev.support.factory import SIGNING_KEY
from dev.support.sink import RecordingSink

from . import install, netns
from .adapter import SOURCE_NAMESPACE, ReceiveAdapter
from .controlplane import ADMIN, USERS, ClusterError, ControlPlane, ensure_built
from .eventing import SERVICE_RANGE, KnativeEventing, service_host, why_not
from .natss import JetStreamChannel

WATCHER_SERVICE_ACCOUNT = "kubeevent-watcher-sa"
DEAD_LETTER = "kubeevent-dead-letter"
TRIGGERS = ("subscription-filter", "corpwechat-notifier", "email-notifier")
GROUPS_CONFIGMAP = "kubeevent-user-groups"
APR = "artifactpromotionruns.artifacts.katanomi.dev"
# Who may read the runs of the project namespaces (admin is in system:masters).
READERS = {"devops": ("alice", "bob"), "staging": ("alice", "bob")}


def grant_test_access(plane: ControlPlane, readers: Mapping[str, Sequence[str]] = READERS) -> None:
    """What the people of the tests may do, through real Roles and bindings: read the runs
    of their namespaces, and write ClusterSubscriptions (the admission policy keeps each
    person to their own)."""
    for namespace, users in readers.items():
        plane.kubectl("create", "role", "run-reader", "-n", namespace, "--verb=get,list,watch",
                      f"--resource={APR}")
        plane.kubectl("create", "rolebinding", "run-readers", "-n", namespace,
                      "--role=run-reader", *[f"--user={u}" for u in users])
    # The people by name, not system:authenticated: the functions' ServiceAccounts must
    # manage with the RBAC of the manifests alone.
    plane.kubectl("create", "clusterrolebinding", "kubeevent-subscribers",
                  "--clusterrole=kubeevent-subscriber", *[f"--user={u.name}" for u in USERS])


TAP = "kubeevent-test-tap"


def controller_event(run: Mapping[str, Any], reason: str, message: str | None = None
                     ) -> dict[str, Any]:
    """A core/v1 Event about ``run`` as its controller records it (a generated name in
    the run's namespace, the run's uid), to be created in the API server."""
    from dev.support.factory import kube_event

    event = kube_event(reason, obj=dict(run), message=message)
    meta = run["metadata"]
    event["metadata"] = {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]}
    event["firstTimestamp"] = event["lastTimestamp"] = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # said now
    event["involvedObject"]["uid"] = meta["uid"]
    return event


class KnativeBrokerView:
    """What the tests read of Knative's broker, the way one watches a broker in a cluster:
    a Trigger without filters (``kubeevent-test-tap``, the tests' own, not the project's)
    whose subscriber records every event the broker takes. Knative's ingress answers its
    sender only after every Trigger's delivery has ended, so a sender that has its answer
    has seen the whole fan-out."""

    def __init__(self, eventing: KnativeEventing, tap: RecordingSink) -> None:
        self.eventing = eventing
        self.tap = tap

    @property
    def ingress(self) -> list[Any]:
        return self.tap.events()

    def wait_idle(self, timeout: float = 30.0, quiet: float = 0.5) -> bool:
        """True once the tap has taken nothing new for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        seen, since = len(self.tap.received), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = len(self.tap.received)
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return True
        return False

    def ingest(self, broker: str, event: Any) -> int:
        """POST ``event`` (binary mode) to Knative's ingress for ``namespace/name``."""
        import requests

        from dev.support.wire import to_binary

        headers, body = to_binary(event)
        return requests.post(f"{self.eventing.ingress_url}/{broker}", data=body,
                             headers=headers, timeout=120).status_code

    def reset(self) -> None:
        self.tap.clear()


class ClusterChain:
    """``start()`` installs and runs everything on ``plane``; ``stop()`` ends what it ran
    (the control plane belongs to the caller)."""

    def __init__(self, plane: ControlPlane, workdir: Path, *,
                 function_env: Mapping[str, Mapping[str, str]] | None = None,
                 backoff_scale: float = 0.01, log: Callable[[str], None] | None = None,
                 eventing: KnativeEventing | None = None,
                 wecom_member_limits: tuple[int, int] = (30, 1000),
                 channel: JetStreamChannel | None = None) -> None:
        self.plane = plane
        # The Broker on a JetStream channel (the jetstream overlay), else the default one.
        self.channel = channel
        self.wecom_member_limits = wecom_member_limits
        # Knative's own broker, controllers and webhook (else the dev broker).
        self.eventing = eventing
        self.dead_letters: RecordingSink | None = None
        self.view: KnativeBrokerView | None = None
        self.workdir = workdir
        self.function_env = function_env or {}
        self.backoff_scale = backoff_scale
        self.log = log
        self.stack: Stack | None = None
        self.adapter: ReceiveAdapter | None = None
        self._adapter_lock = threading.Lock()
        self._following: threading.Thread | None = None
        self._stop_following = threading.Event()

    def install(self) -> None:
        if self.eventing is not None:  # the Broker's channel resolves from its creation on
            self.eventing.broker_channel(BROKER, SYSTEM_NAMESPACE)
        if self.channel is not None:
            self.channel.broker_channel(BROKER, SYSTEM_NAMESPACE)
        install.install(self.plane, "jetstream" if self.channel is not None else "knative")
        self.plane.kubectl("apply", "-f", str(SANDBOX_SECRET))
        # The key the functions sign with, as an operator creates it (README); the local
        # processes get the same key from the tests' environment.
        self.plane.kubectl("create", "secret", "generic", "kubeevent-signing-key", "-n",
                           FUNCTION_NAMESPACE, f"--from-literal=key={SIGNING_KEY}")
        people = [ADMIN, *self.plane.users]
        self._configmap("corpwechat-users", {name: name for name in people})
        self._configmap("email-users", {name: f"{name}@example.com" for name in people})
        # What the authenticator says of each person, as an administrator writes it down.
        self._configmap(GROUPS_CONFIGMAP, {ADMIN: "system:masters", **{
            name: ",".join(user.groups) for name, user in self.plane.users.items()}})
        grant_test_access(self.plane)

    def _configmap(self, name: str, data: Mapping[str, str]) -> None:
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": SYSTEM_NAMESPACE}, "data": dict(data)}))

    def start(self) -> ClusterChain:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            env: dict[str, dict[str, str]] = {}
            for name in (ENRICHER, FILTER, NOTIFIER, EMAIL_NOTIFIER):
                kubeconfig = self.plane.service_account_kubeconfig(FUNCTION_NAMESPACE, name)
                env[name] = {"KUBECONFIG": str(kubeconfig), **self.function_env.get(name, {})}
            options = StackOptions(kubeconfig=self.plane.kubeconfig(), wecom="sandbox",
                                   backoff_scale=self.backoff_scale, delivery_timeout=10.0,
                                   workdir=self.workdir, function_env=env,
                                   load_examples=False,
                                   broker_ingress=self.eventing.ingress_url
                                   if self.eventing is not None else None,
                                   wecom_member_limits=self.wecom_member_limits)
            self.stack = Stack(options, log=self.log).start()
            if self.eventing is not None:
                self._serve_through_knative(self.eventing, self.stack)
            # Through Knative, the adapter sends where the seed's ApiServerSource resolves:
            # the enricher's Knative Service address.
            enricher = (f"http://{service_host(ENRICHER, FUNCTION_NAMESPACE)}"
                        if self.eventing is not None else self.stack.enricher.url)
            self._sink = f"{enricher}/?broker={BROKER}"
            self.adapter = self._adapter(install.PROJECT_NAMESPACES).start()
            self.adapter.handshake(self.enricher_saw)
        except BaseException:
            self.stop()
            raise
        return self

    def _serve_through_knative(self, eventing: KnativeEventing, stack: Stack) -> None:
        """Knative Serving's part for the functions (their Knative Services Ready at their
        cluster-local addresses) and the dead-letter Service's endpoint; then Knative makes
        the Broker and the Triggers of the manifests Ready."""
        for name, proc in stack.functions.items():
            eventing.publish(name, FUNCTION_NAMESPACE, proc.port)
        self.dead_letters = RecordingSink().start()
        eventing.publish(DEAD_LETTER, FUNCTION_NAMESPACE,
                         int(self.dead_letters.url.rsplit(":", 1)[1]), ksvc=False)
        tap = RecordingSink().start()
        self.view = KnativeBrokerView(eventing, tap)
        eventing.publish(TAP, FUNCTION_NAMESPACE, int(tap.url.rsplit(":", 1)[1]), ksvc=False)
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": TAP, "namespace": FUNCTION_NAMESPACE},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": TAP, "namespace": SYSTEM_NAMESPACE},
            "spec": {"broker": BROKER, "subscriber": {"ref": {
                "apiVersion": "v1", "kind": "Service", "name": TAP,
                "namespace": FUNCTION_NAMESPACE}}}}))
        if self.channel is not None:
            self.channel.settle()
        eventing.wait_ready("broker", BROKER, SYSTEM_NAMESPACE)
        for trigger in (*TRIGGERS, TAP):
            eventing.wait_ready("trigger", trigger, SYSTEM_NAMESPACE)

    def publish(self, name: str, port: int) -> None:
        """Send the Knative Service ``name`` to another local port (a stand-in)."""
        assert self.eventing is not None
        self.eventing.publish(name, FUNCTION_NAMESPACE, port)

    def _adapter(self, namespaces: Sequence[str]) -> ReceiveAdapter:
        return ReceiveAdapter(
            self.plane, sink=self._sink, namespaces=namespaces,
            kubeconfig=self.plane.service_account_kubeconfig(SOURCE_NAMESPACE,
                                                             WATCHER_SERVICE_ACCOUNT),
            log=self.workdir / "adapter.log")

    def selected_namespaces(self) -> list[str]:
        """The namespaces the seed's ApiServerSource selects now (its label)."""
        out = self.plane.kubectl("get", "namespaces", "-l", install.INNER_NAMESPACE_LABEL,
                                 "-o", "jsonpath={.items[*].metadata.name}").stdout
        return sorted(out.split())

    def follow_namespaces(self) -> list[str]:
        """What Knative's ApiServerSource reconciler does when a namespace gains or loses
        the source's label: the adapter is deployed again with the namespaces its selector
        picks now (and, as in Knative, what happens during the restart is not sent: the
        enricher's catch-up finds it). Returns the namespaces added."""
        with self._adapter_lock:
            if self.adapter is None or not self.adapter.alive():
                return []
            selected = self.selected_namespaces()
            if selected == sorted(self.adapter.namespaces):
                return []
            added = [n for n in selected if n not in self.adapter.namespaces]
            self.adapter.stop()
            self.adapter = self._adapter(selected).start()
            self.adapter.handshake(self.enricher_saw, namespaces=added or selected[:1])
        if self.log is not None:
            self.log(f"the source's namespaces changed: now watching {', '.join(selected)} "
                     f"(the receive adapter restarted with them, as Knative's reconciler "
                     f"does)")
        return added

    def follow_in_background(self, every: float = 3.0) -> None:
        """Keep the watched namespaces those labelled now, checked every ``every`` s."""
        def loop() -> None:
            while not self._stop_following.wait(every):
                try:
                    self.follow_namespaces()
                except Exception as exc:  # say it, and try again at the next check
                    if self.log is not None:
                        self.log(f"could not follow the source's namespaces: {exc}")

        self._following = threading.Thread(target=loop, name="namespace-follower",
                                           daemon=True)
        self._following.start()

    def stop(self) -> None:
        self._stop_following.set()
        if self._following is not None:
            self._following.join(30)
        if self.adapter is not None:
            self.adapter.stop()
        if self.stack is not None:
            self.stack.stop()
        if self.dead_letters is not None:
            self.dead_letters.stop()
        if self.view is not None:
            self.view.tap.stop()

    def stop_all(self) -> None:
        """The source, the functions and Knative's processes stopped (SIGTERM), as when
        the cluster's nodes shut down; the API server and WeCom stay."""
        assert self.eventing is not None and self.adapter is not None
        self.adapter.stop()
        for proc in self.running().functions.values():
            proc.stop()
        self.eventing.stop_all()

    def start_all(self) -> None:
        """Everything ``stop_all`` stopped, started again in order."""
        assert self.eventing is not None and self.adapter is not None
        self.eventing.start_all()
        for proc in self.running().functions.values():
            # The channel redelivers what it held the moment a function listens: its first
            # health answer waits behind them.
            proc.start(timeout=120)
        self.adapter.start()
        self.adapter.handshake(self.enricher_saw)

    def __enter__(self) -> ClusterChain:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    def running(self) -> Stack:
        assert self.stack is not None, "the chain is not running"
        return self.stack

    @property
    def broker(self) -> Any:
        """What went into the broker (``ingress``), ``wait_idle``, ``ingest``, ``reset``:
        Knative's broker through the tap Trigger, else the dev broker."""
        if self.view is not None:
            return self.view
        assert self.running().broker is not None
        return self.running().broker

    def enricher_saw(self, namespace: str, name: str) -> bool:
        """Did the enricher answer a request about the object ``namespace/name``?"""
        for record in self.running().enricher.log_records():
            obj = record.get("object")
            if isinstance(obj, dict) and obj.get("name") == name \
                    and obj.get("namespace") == namespace:
                return True
        return False

    def create(self, obj: Mapping[str, Any], *, user: str = "admin") -> dict[str, Any]:
        """``kubectl create`` as ``user``; the object as the API server stored it."""
        out = self.plane.kubectl("create", "-o", "json", "-f", "-", user=user,
                                 input=json.dumps(obj)).stdout
        return dict(json.loads(out))

    def apply_yaml(self, text: str, *, user: str = "admin") -> str:
        return self.plane.kubectl("apply", "-f", "-", user=user, input=text).stdout

    def subscribe_examples(self) -> None:
        """admin's subscription (the seed's, verbatim) and the dev stack's example ones,
        each created by its own subscriber (the ownership policy is in force)."""
        from dev.stack.manifests import DEVSTACK_EXAMPLES, EXAMPLES, load_yaml_file

        for path in (EXAMPLES / "seed-clustersubscription-admin.yaml",
                     DEVSTACK_EXAMPLES / "clustersubscriptions.yaml"):
            for doc in load_yaml_file(path):
                self.apply_yaml(json.dumps(doc), user=doc["spec"]["subscriber"]["name"])

    def new_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        """Create an ArtifactPromotionRun and write its status through ``/status``, as
        Katanomi's controller does."""
        body = {k: v for k, v in run.items() if k != "status"}
        body["metadata"] = {k: v for k, v in run["metadata"].items() if k == "name"
                            or k == "namespace" or k == "labels"}
        created = self.create(body)
        meta = created["metadata"]
        out = self.plane.kubectl("patch", APR, meta["name"], "-n", meta["namespace"],
                                 "--subresource=status", "--type=merge", "-o", "json",
                                 "--patch-file", "/dev/stdin",
                                 input=json.dumps({"status": run.get("status") or {}})).stdout
        return dict(json.loads(out))

    def happen(self, event: Mapping[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Create a Kubernetes Event with kubectl and wait until the chain has finished
        with it: the enricher posted it to the broker and every delivery has ended."""
        created = self.create(event)
        stack = self.running()
        assert stack.sandbox is not None
        deadline = time.monotonic() + timeout
        if self.eventing is not None:
            # Knative's broker answers the enricher once every Trigger's delivery has ended
            # (or been dead-lettered): its answer about this Event is the end of the chain.
            uid = created["metadata"]["uid"]
            while not any(r.get("event_uid") == uid and r.get("message") == "handled"
                          for r in stack.enricher.log_records()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the enricher never answered Event "
                                         f"{created['metadata']['name']}; adapter log:\n"
                                         f"{self.adapter_log()}")
                time.sleep(0.05)
            if self.channel is not None:
                # A durable channel answers once it has stored the event; delivery
                # follows: wait for the outcome, not the answer.
                assert self.view is not None
                while not any(((e.data or {}).get("event") or {}).get("metadata", {})
                              .get("uid") == uid for e in self.view.ingress):
                    if time.monotonic() > deadline:
                        raise AssertionError("the broker never delivered the enriched "
                                             f"event of {created['metadata']['name']}")
                    time.sleep(0.05)
                self.settle(timeout)
            assert stack.sandbox.wait_idle(10), "WeCom did not answer everything"
            return created
        uid = created["metadata"]["uid"]
        assert stack.broker is not None
        while not any(((e.data or {}).get("event") or {}).get("metadata", {}).get("uid") == uid
                      for e in stack.broker.ingress):
            if time.monotonic() > deadline:
                raise AssertionError(f"Event {created['metadata']['name']} never reached the "
                                     f"broker; adapter log:\n{self.adapter_log()}")
            time.sleep(0.05)
        assert stack.broker.wait_idle(timeout), "the dev broker did not become idle"
        assert stack.sandbox.wait_idle(10), "WeCom did not answer everything"
        return created

    def settle(self, timeout: float = 60.0, quiet: float = 1.0) -> None:
        """Wait until neither the broker (its tap) nor WeCom has taken anything for
        ``quiet`` seconds: on a durable channel, delivery goes on after the answer."""
        stack = self.running()
        assert stack.sandbox is not None
        deadline = time.monotonic() + timeout
        seen = (-1, -1)
        since = time.monotonic()
        while time.monotonic() < deadline:
            now = (len(self.view.tap.received) if self.view is not None else 0,
                   len(stack.sandbox.delivered))
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.05)
        raise AssertionError(f"the chain did not settle in {timeout:.0f} s")

    def received(self) -> dict[str, list[Delivery]]:
        """WeCom user id → the messages the sandbox delivered to it."""
        sandbox = self.running().sandbox
        assert sandbox is not None
        by_user: dict[str, list[Delivery]] = {}
        for delivery in sandbox.delivered:
            by_user.setdefault(delivery.userid, []).append(delivery)
        return by_user

    def mailed(self) -> dict[str, list[dict[str, Any]]]:
        """Address → the emails Mailpit received for it (summaries)."""
        mailpit = self.running().mailpit
        assert mailpit is not None, "the chain runs no SMTP server"
        return mailpit.by_recipient()

    def reset(self) -> None:
        stack = self.running()
        assert stack.sandbox is not None
        if stack.broker is not None:
            stack.broker.wait_idle(30)
        stack.sandbox.wait_idle(10)
        if stack.broker is not None:
            stack.broker.reset()
        stack.sandbox.reset()
        if stack.mailpit is not None:
            stack.mailpit.clear()
        if self.dead_letters is not None:
            self.dead_letters.clear()
        if self.view is not None:
            self.view.wait_idle(30)
            self.view.reset()

    def adapter_log(self) -> str:
        return self.adapter.log_text() if self.adapter is not None else ""

    def get(self, *args: str, user: str = "admin") -> dict[str, Any]:
        return dict(json.loads(self.plane.kubectl("get", *args, "-o", "json", user=user).stdout))


class DevCluster:
    """``make dev`` on the real control plane: builds ``.cluster/bin`` if needed, starts
    the control plane and Knative Eventing's own broker (as root, in a private network
    namespace; else the dev broker, saying why), installs the plain Knative overlay,
    creates the example run and subscriptions (each person's as that person), and runs the
    chain with Knative's adapter. ``deliver`` creates an example Event with kubectl."""

    def __init__(self, workdir: Path, log: Callable[[str], None] | None = None) -> None:
        self.workdir = workdir
        self.log = log
        self.plane: ControlPlane | None = None
        self.eventing: KnativeEventing | None = None
        self.chain: ClusterChain | None = None
        self.without_knative = ""  # why the dev broker stands in, if it does
        self._run_uid = ""

    def start(self) -> DevCluster:
        from dev.stack.manifests import DEVSTACK_EXAMPLES, load_yaml_file

        ensure_built()
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            netns.isolate(self.workdir / "hosts")
        except netns.NamespaceError as exc:
            self.without_knative = str(exc)
        self.without_knative = self.without_knative or why_not() or ""
        try:
            if self.without_knative:
                self.plane = ControlPlane(self.workdir / "control-plane").start()
            else:
                self.plane = ControlPlane(self.workdir / "control-plane",
                                          service_range=SERVICE_RANGE).start()
                install.install_crds(self.plane)
                self.eventing = KnativeEventing(self.plane, self.workdir / "eventing",
                                                log=self.log).start()
            self.chain = ClusterChain(self.plane, self.workdir, log=self.log,
                                      eventing=self.eventing)
            self.chain.install()
            self.chain.subscribe_examples()
            for doc in load_yaml_file(DEVSTACK_EXAMPLES / "artifactpromotionrun.yaml"):
                if doc["kind"] == "ArtifactPromotionRun":
                    self._run_uid = self.chain.new_run(doc)["metadata"]["uid"]
            self.chain.start()
            # A namespace labelled later is watched too (its Events reach the chain).
            self.chain.follow_in_background()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def stack(self) -> Stack:
        assert self.chain is not None
        return self.chain.running()

    def deliver(self, event: Mapping[str, Any]) -> str:
        """Create ``event`` (an example Event) with kubectl; "" or what went wrong."""
        assert self.chain is not None
        body = dict(event)
        meta = event.get("metadata") or {}
        body["metadata"] = {"generateName": f"{str(meta.get('name', 'event')).split('.')[0]}.",
                            "namespace": meta.get("namespace")}
        body["involvedObject"] = {**(event.get("involvedObject") or {}), "uid": self._run_uid}
        try:
            self.chain.happen(body)
        except (AssertionError, ClusterError) as exc:
            return str(exc).splitlines()[0]
        return ""

    def describe(self) -> list[str]:
        assert self.plane is not None and self.chain is not None
        lines = self.plane.describe()
        lines.append(f"receive adapter (Knative's) log {self.workdir / 'adapter.log'}")
        if self.eventing is None:
            lines.append(f"dev broker instead of Knative's: {self.without_knative}")
            return lines + self.stack.describe()[1:]
        lines.append(f"Knative's broker {self.eventing.ingress_url}/{SYSTEM_NAMESPACE}/{BROKER}"
                     f"  (Knative Eventing's own processes, logs in "
                     f"{self.eventing.dir / 'logs'})")
        for name in (*TRIGGERS, TAP):
            trigger = self.chain.get("trigger", name, "-n", SYSTEM_NAMESPACE)
            lines.append(f"  Trigger {name}: -> "
                         f"{(trigger.get('status') or {}).get('subscriberUri')}")
        lines += self.stack.describe()[1:]
        lines.append(f"all of it in a private network namespace: to reach it, run commands "
                     f"with nsenter -t {os.getpid()} -n -m")
        return lines

    def stop(self) -> None:
        if self.chain is not None:
            self.chain.stop()
        if self.eventing is not None:
            self.eventing.stop()
        if self.plane is not None:
            self.plane.stop()
