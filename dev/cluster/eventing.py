"""Knative Eventing's own multi-tenant channel-based Broker, as local processes.

Unmodified binaries of ``knative.dev/eventing`` (the version ``dev/cluster/go/adapter``
pins, built by ``dev/cluster/build.sh``): broker ingress and filter, the InMemoryChannel
dispatcher and controller, the eventing controller, the MT broker controller, the webhook
and the PingSource adapter. Knative's own CRDs, ConfigMaps, ServiceAccounts and RBAC are
applied unchanged from the module; each process logs in as its own ServiceAccount (the
InMemoryChannel webhook lets only the eventing controller's change a channel's
subscribers); the admission webhooks are on.

What a cluster would add is played here, and only that:

- kube-proxy and cluster DNS: the run is in a private network namespace
  (``dev.cluster.netns``); Services have loopback ClusterIPs, ``/etc/hosts`` maps their
  names to them, and relays (``dev.cluster.relay``) listen there;
- the clusterrole-aggregation controller: one pass over the aggregated ClusterRoles;
- the kubelet: the processes themselves; the imc-dispatcher Deployment's status;
- Knative Serving, for the functions (``publish``): a Knative Service's status gets its
  cluster-local address, which the hosts file and a relay send to the local process.

Each controller binds ``:8080`` (not configurable), so each runs in a network namespace
of its own (``dev.cluster.isolated``). Every process is stopped by its own PID.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from . import install, netns
from .controlplane import BIN, ClusterError, ControlPlane, Process

NAMESPACE = "knative-eventing"
SERVICE_RANGE = "127.96.0.0/16"
SYSTEM = Path(__file__).resolve().parent / "knative" / "system.yaml"
INGRESS, FILTER, DISPATCHER = "127.96.1.1", "127.96.1.2", "127.96.1.3"
WEBHOOK, IMC_WEBHOOK = "127.96.1.4", "127.96.1.5"
# Ports the data plane binds in the private namespace (the dispatcher's are constants).
INGRESS_PORT, FILTER_PORT, DISPATCHER_PORT = 8081, 8082, 8080
# Addresses for what the harness publishes (functions, sinks): 127.96.3.1 and on.
PUBLISHED = ipaddress.ip_network("127.96.3.0/24")
PUBLISHED_MAX = 16
# How long a request to a Knative Service waits for its process to come up, as Knative
# Serving's activator holds requests while a revision scales from zero.
ACTIVATOR_HOLD = 60.0
COMMON_ENV = {"SYSTEM_NAMESPACE": NAMESPACE, "CONFIG_LOGGING_NAME": "config-logging",
              "CONFIG_OBSERVABILITY_NAME": "config-observability",
              "CLUSTER_DOMAIN": "cluster.local", "PROFILING_PORT": "0"}
UNUSED_IMAGE = "local-process/unused"
RECONCILER = "knative.dev.eventing.pkg.reconciler"
LEASES = (f"controller.{RECONCILER}.channel", f"controller.{RECONCILER}.subscription",
          f"mt-broker-controller.{RECONCILER}.broker",
          f"mt-broker-controller.{RECONCILER}.broker.trigger",
          f"inmemorychannel-webhook.{RECONCILER}.inmemorychannel.controller",
          f"inmemorychannel-dispatcher.{RECONCILER}.inmemorychannel.dispatcher")
WEBHOOK_CONFIGURATIONS = (
    "mutatingwebhookconfiguration/webhook.eventing.knative.dev",
    "validatingwebhookconfiguration/validation.webhook.eventing.knative.dev",
    "mutatingwebhookconfiguration/inmemorychannel.eventing.knative.dev",
    "validatingwebhookconfiguration/validation.inmemorychannel.eventing.knative.dev")
BINARIES = ("broker_ingress", "broker_filter", "imc_dispatcher", "imc_controller",
            "mtchannel_broker", "eventing_controller", "eventing_webhook", "mtping")


def service_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def channel_host(broker: str, namespace: str) -> str:
    """The ExternalName Service the InMemoryChannel of ``broker`` gets (to the dispatcher)."""
    return service_host(f"{broker}-kne-trigger-kn-channel", namespace)


def why_not() -> str | None:
    """Why Knative's data plane cannot run in this process, in one line; ``None`` if it
    can."""
    missing = [b for b in BINARIES if not (BIN / b).exists()]
    if missing:
        return f"missing {', '.join(missing)} in {BIN}: run dev/cluster/build.sh"
    if not netns.isolated():
        return ("not in a private network namespace (needs root: the test session moves "
                "itself into one at start)")
    return None


class KnativeEventing:
    """``start()`` brings Knative Eventing up on ``plane`` (which must use
    ``SERVICE_RANGE``); ``stop()`` ends every process it started."""

    def __init__(self, plane: ControlPlane, workdir: Path,
                 log: Callable[[str], None] | None = None, *,
                 imc_dispatcher: bool = True) -> None:
        self.plane = plane
        # False when another channel's dispatcher takes :8080 (dev/cluster/natss.py).
        self.imc_dispatcher = imc_dispatcher
        self.dir = workdir
        self.log = log or (lambda line: None)
        self.hosts = netns.Hosts()
        self.processes: list[Process] = []
        self._published: dict[str, tuple[str, int, Process]] = {}
        self._started = time.monotonic()

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 180.0) -> KnativeEventing:
        reason = why_not()
        if reason:
            raise ClusterError(f"Knative's data plane cannot run: {reason}")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        self._started = time.monotonic()
        try:
            source = install.knative_module("knative.dev/eventing")
            self.hosts.add(INGRESS, service_host("broker-ingress", NAMESPACE))
            self.hosts.add(FILTER, service_host("broker-filter", NAMESPACE))
            self.hosts.add(DISPATCHER, service_host("imc-dispatcher", NAMESPACE))
            self.hosts.add(WEBHOOK, service_host("eventing-webhook", NAMESPACE))
            self.hosts.add(IMC_WEBHOOK, service_host("inmemorychannel-webhook", NAMESPACE))
            self.start_relay("kube-proxy", [
                f"unix:{self.api_socket}=tcp:127.0.0.1:{self.plane.api_port}",
                f"tcp:{INGRESS}:80=tcp:127.0.0.1:{INGRESS_PORT}",
                f"unix:{self._socket_for(INGRESS)}=tcp:127.0.0.1:{INGRESS_PORT}",
                f"tcp:{FILTER}:80=tcp:127.0.0.1:{FILTER_PORT}",
                f"tcp:{DISPATCHER}:80=tcp:127.0.0.1:{DISPATCHER_PORT}",
                f"tcp:{WEBHOOK}:443=unix:{self.dir / 'eventing-webhook.sock'}",
                f"tcp:{IMC_WEBHOOK}:443=unix:{self.dir / 'imc-controller.sock'}"])
            self._apply_objects(source)
            self._start_processes()
            self._wait_ready(source, timeout)
        except BaseException:
            self.stop()
            raise
        self.log(f"Knative Eventing up in {time.monotonic() - self._started:.1f} s")
        return self

    def stop(self) -> None:
        """SIGTERM to every process, in reverse order of start (SIGKILL after 5 s)."""
        for process in reversed(self.processes):
            process.stop(timeout=5.0)
        self.processes.clear()

    def __enter__(self) -> KnativeEventing:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_socket(self) -> Path:
        return self.dir / "api.sock"

    def outside(self, address: str, target: str) -> None:
        """Let isolated processes reach ``address`` (HOST:PORT) here, at ``target``."""
        self.start_relay(f"out-{address}", [f"unix:{self._socket_for(address)}=tcp:{target}"])

    def _socket_for(self, address: str) -> Path:
        return self.dir / f"to-{address}.sock"

    @property
    def ingress_url(self) -> str:
        """The broker ingress, as a process in this namespace reaches it."""
        return f"http://127.0.0.1:{INGRESS_PORT}"

    def pids(self) -> dict[str, int | None]:
        return {p.name: p.pid for p in self.processes}

    def process(self, name: str) -> Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)

    def kill(self, name: str) -> None:
        """``kill -9`` of one of Knative's processes (a crashed pod)."""
        self.process(name).stop(sig=signal.SIGKILL, timeout=10)

    def start_again(self, name: str) -> None:
        """Start a killed process again as it was (the kubelet restarting the pod)."""
        self.process(name).start()

    def stop_all(self) -> None:
        """Every process stopped (SIGTERM, SIGKILL after 5 s; one frozen with SIGSTOP is
        killed), in reverse order of start, and kept to be started again: a cluster's
        nodes shut down."""
        for process in reversed(self.processes):
            process.stop(timeout=5.0)

    def start_all(self) -> None:
        """Start again what ``stop_all`` stopped, in the order it first started."""
        for process in self.processes:
            if not process.alive():
                process.start()

    def logs(self, name: str, lines: int = 60) -> str:
        for process in self.processes:
            if process.name == name:
                return process.tail(lines)
        return ""

    # ------------------------------------------------------------------ Serving's part

    def publish(self, name: str, namespace: str, port: int, *, ksvc: bool = True) -> str:
        """Make ``http://NAME.NS.svc.cluster.local`` (port 80) reach ``127.0.0.1:port``:
        a hosts entry and a relay, as cluster DNS and kube-proxy would. With ``ksvc``
        the Knative Service of that name gets the status Knative Serving would write
        (Ready, with that cluster-local address), and a request waits while its process
        is not up (the activator's part). Returns the URL."""
        host = service_host(name, namespace)
        known = self._published.get(host)
        address = known[0] if known else str(PUBLISHED[len(self._published) + 1])
        if known is None and len(self._published) >= PUBLISHED_MAX:
            raise ClusterError(f"more than {PUBLISHED_MAX} published Services")
        if known is None or known[1] != port:
            if known is not None:  # now somewhere else: what kube-proxy does on a change
                known[2].stop(timeout=5.0)
                self.processes.remove(known[2])
            self.hosts.add(address, host)
            # Also through a unix socket: how the PingSource adapter, in a network of its
            # own, reaches it.
            # A Knative Service's requests wait while it starts (the activator's part).
            hold = ["--hold", str(ACTIVATOR_HOLD)] if ksvc else []
            relay = self.start_relay(f"relay-{name}", [
                *hold, f"tcp:{address}:80=tcp:127.0.0.1:{port}",
                f"unix:{self._socket_for(address)}=tcp:127.0.0.1:{port}"])
            self._published[host] = (address, port, relay)
        url = f"http://{host}"
        if ksvc:
            # Serving also makes a v1 Service of the Knative Service's name (what a
            # PingSource or an ApiServerSource naming a v1 Service resolves).
            self.plane.kubectl("apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "ExternalName", "externalName": host,
                         "ports": [{"name": "http", "port": 80}]}}))
            stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            conditions = [{"type": kind, "status": "True", "lastTransitionTime": stamp}
                          for kind in ("Ready", "ConfigurationsReady", "RoutesReady")]
            self.plane.kubectl(
                "patch", "services.serving.knative.dev", name, "-n", namespace,
                "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
                    "observedGeneration": 1, "url": url, "address": {"url": url},
                    "conditions": conditions}}))
        return url

    def broker_channel(self, broker: str, namespace: str) -> None:
        """The name a Broker's channel gets, sent to the dispatcher (known before the
        Broker exists, so the ingress never meets an unresolvable channel)."""
        self.hosts.add(DISPATCHER, channel_host(broker, namespace))

    def wait_ready(self, kind: str, name: str, namespace: str, timeout: float = 60.0
                   ) -> dict[str, Any]:
        """Wait for a Knative object's Ready condition; its last state says why not."""
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            got = self.plane.kubectl("get", kind, name, "-n", namespace, "-o", "json",
                                     check=False)
            if got.returncode == 0:
                obj = json.loads(got.stdout)
                for condition in (obj.get("status") or {}).get("conditions") or []:
                    if condition.get("type") == "Ready" and condition.get("status") == "True":
                        return obj
            time.sleep(0.25)
        raise ClusterError(f"{kind} {namespace}/{name} not Ready after {timeout:.0f} s: "
                           f"{json.dumps((obj.get('status') or {}).get('conditions'))}")

    # ------------------------------------------------------------------ start-up

    def start_relay(self, name: str, pairs: list[str]) -> Process:
        """A relay (kube-proxy's part) for ``LISTEN=TARGET`` pairs, stopped with the rest."""
        log = self.dir / "logs" / f"{name}.log"
        log.unlink(missing_ok=True)
        process = Process(name, [sys.executable, "-m", "dev.cluster.relay", *pairs], log,
                           env=self._python_env())
        self._launch(process)
        self._until(lambda: "READY" in process.tail(5), 15, f"relay {name}", process)
        return process

    def _python_env(self) -> dict[str, str]:
        root = str(Path(__file__).resolve().parents[2])
        return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": root,
                "PYTHONUNBUFFERED": "1", netns.MARKER: "1",
                netns.HOSTS_VARIABLE: str(netns.Hosts.source())}

    def _launch(self, process: Process) -> None:
        process.start()
        self.processes.append(process)

    def _kubeconfig_of(self, account: str) -> str:
        return str(self.plane.service_account_kubeconfig(NAMESPACE, account, duration="48h"))

    def apply_files(self, *files: Path, server_side: bool = False) -> None:
        """``kubectl apply`` of manifests from Knative's modules, unchanged."""
        args = ["apply"]
        if server_side:  # Knative's CRDs are too big for client-side apply
            args += ["--server-side", "--force-conflicts"]
        for path in files:
            args += ["-f", str(path)]
        self.plane.kubectl(*args, timeout=180)

    def _apply_objects(self, source: Path) -> None:
        core = source / "config" / "core"
        imc = source / "config" / "channels" / "in-memory-channel"
        self.apply_files(core / "100-namespace.yaml")
        self.apply_files(*sorted((core / "resources").glob("*.yaml")),
                         imc / "resources" / "in-memory-channel.yaml", server_side=True)
        self.plane.crds_established()
        self.apply_files(*sorted((core / "configmaps").glob("*.yaml")),
                         imc / "configmaps" / "event-dispatcher.yaml", server_side=True)
        self.apply_files(SYSTEM)
        self.apply_files(core / "webhooks" / "secret.yaml", imc / "webhooks" / "secret.yaml")
        self.apply_files(*sorted(core.glob("200-*.yaml")), *sorted((core / "roles").glob("*.yaml")),
                         *sorted((source / "config" / "brokers" / "mt-channel-broker" / "roles")
                                 .glob("*.yaml")),
                         *sorted(imc.glob("200-*.yaml")), *sorted((imc / "roles").glob("*.yaml")))
        # Knative Serving's addressable-resolver role: how the eventing controllers may
        # read a Knative Service's address (Serving ships it; no Serving runs here).
        serving = install.knative_module("knative.dev/serving")
        self.apply_files(serving / "config" / "core" / "200-roles" /
                         "addressable-resolvers-clusterrole.yaml")
        aggregate_cluster_roles(self.plane)
        # The PingSource adapter's Deployment, upstream: the PingSource reconciler updates
        # its environment and reads its availability (the mtping process is the pod).
        self.apply_files(core / "deployments" / "pingsource-mt-adapter.yaml")
        self.mark_available("imc-dispatcher")
        self.mark_available("pingsource-mt-adapter")

    def mark_available(self, deployment: str) -> None:
        """What the kubelet and the Deployment controller would report for a process that
        runs here: the Deployment's Available condition, through /status."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.plane.kubectl(
            "-n", NAMESPACE, "patch", "deployment", deployment, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {
                "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                "availableReplicas": 1, "updatedReplicas": 1, "conditions": [{
                    "type": "Available", "status": "True",
                    "reason": "MinimumReplicasAvailable", "message": "local process",
                    "lastUpdateTime": now, "lastTransitionTime": now}]}}))

    def start_process(self, name: str, binary: str, account: str, extra: Mapping[str, str],
                      *, isolated: bool = False, webhook: bool = False,
                      outbound: tuple[str, ...] = (), etc: Path | None = None) -> None:
        """One of Knative's binaries as the pod ``name`` of ``account``: ``isolated`` in a
        network of its own (``outbound``: addresses it reaches outside), or in this one
        with ``etc`` laid over /etc."""
        env = {**COMMON_ENV, "HOME": str(self.dir), "POD_NAME": f"{name}-0",
               "KUBECONFIG": self._kubeconfig_of(account), **extra}
        argv = [str(BIN / binary)]
        if isolated:
            # Its own network: the API server through a unix socket at the address its
            # kubeconfig names, a webhook's port reachable through another.
            kubeconfig = Path(env["KUBECONFIG"])
            text = kubeconfig.read_text().replace(f"127.0.0.1:{self.plane.api_port}",
                                                  "127.0.0.1:6443")
            inside = self.dir / f"{name}.kubeconfig"
            inside.write_text(text)
            env["KUBECONFIG"] = str(inside)
            relays = ["--relay", f"tcp:127.0.0.1:6443=unix:{self.api_socket}"]
            if webhook:
                relays += ["--relay", f"unix:{self.dir / (name + '.sock')}=tcp:127.0.0.1:8443"]
            for address in outbound:  # HOST[:PORT] here -> the same address outside
                host, _, port = address.partition(":")
                relays += ["--relay", f"tcp:{host}:{port or 80}="
                                      f"unix:{self._socket_for(address)}"]
            argv = [sys.executable, "-m", "dev.cluster.isolated", *relays, "--", *argv]
            env.update({k: v for k, v in self._python_env().items() if k != "PATH"})
        elif etc is not None:  # this network; files laid over /etc
            argv = [sys.executable, "-m", "dev.cluster.isolated", "--same-network",
                    "--etc", str(etc), "--hosts", str(self.hosts.source()), "--", *argv]
            env.update({k: v for k, v in self._python_env().items() if k != "PATH"})
        env["PATH"] = os.environ.get("PATH", "")
        self._launch(Process(name, argv, self.dir / "logs" / f"{name}.log", env=env))

    def _start_processes(self) -> None:
        images = {key: UNUSED_IMAGE for key in (
            "APISERVER_RA_IMAGE", "AUTH_PROXY_IMAGE", "EVENT_TRANSFORM_JSONATA_IMAGE",
            "INTEGRATION_SOURCE_TIMER_IMAGE", "INTEGRATION_SOURCE_AWS_S3_IMAGE",
            "INTEGRATION_SOURCE_AWS_SQS_IMAGE", "INTEGRATION_SOURCE_AWS_DDB_STREAMS_IMAGE",
            "INTEGRATION_SINK_LOG_IMAGE", "INTEGRATION_SINK_AWS_S3_IMAGE",
            "INTEGRATION_SINK_AWS_SQS_IMAGE", "INTEGRATION_SINK_AWS_SNS_IMAGE")}
        self.start_process("broker-ingress", "broker_ingress", "mt-broker-ingress", {
            "CONTAINER_NAME": "ingress", "NAMESPACE": NAMESPACE,
            "METRICS_DOMAIN": "knative.dev/internal/eventing",
            "INGRESS_PORT": str(INGRESS_PORT), "INGRESS_PORT_HTTPS": "8444"})
        self.start_process("broker-filter", "broker_filter", "mt-broker-filter", {
            "CONTAINER_NAME": "filter", "NAMESPACE": NAMESPACE,
            "METRICS_DOMAIN": "knative.dev/internal/eventing",
            "FILTER_PORT": str(FILTER_PORT), "FILTER_PORT_HTTPS": "8445"})
        if self.imc_dispatcher:
            self.start_process("imc-dispatcher", "imc_dispatcher", "imc-dispatcher", {
                "CONTAINER_NAME": "dispatcher",
                "METRICS_DOMAIN": "knative.dev/inmemorychannel-dispatcher",
                "MAX_IDLE_CONNS": "1000", "MAX_IDLE_CONNS_PER_HOST": "1000"})
        self.start_process("eventing-controller", "eventing_controller", "eventing-controller", {
            "METRICS_DOMAIN": "knative.dev/eventing", **images}, isolated=True)
        self.start_process("mt-broker-controller", "mtchannel_broker", "eventing-controller", {
            "METRICS_DOMAIN": "knative.dev/eventing"}, isolated=True)
        self.start_process("imc-controller", "imc_controller", "imc-controller", {
            "WEBHOOK_NAME": "inmemorychannel-webhook", "WEBHOOK_PORT": "8443",
            "METRICS_DOMAIN": "knative.dev/inmemorychannel-controller",
            "DISPATCHER_IMAGE": UNUSED_IMAGE}, isolated=True, webhook=True)
        self.start_process("eventing-webhook", "eventing_webhook", "eventing-webhook", {
            "WEBHOOK_NAME": "eventing-webhook", "WEBHOOK_PORT": "8443",
            "SINK_BINDING_SELECTION_MODE": "exclusion",
            "METRICS_DOMAIN": "knative.dev/eventing"}, isolated=True, webhook=True)
        # The PingSource adapter (its Deployment's environment). Its probes bind :8080, as
        # the dispatcher's events do, so it has a network of its own too, from which the
        # broker ingress and every published Service are relayed out (they may be
        # published later: a relay connects when a connection comes).
        self.start_process("pingsource-mt-adapter", "mtping", "pingsource-mt-adapter", {
            "NAMESPACE": NAMESPACE, "K_OBSERVABILITY_CONFIG": "{}", "K_LOGGING_CONFIG": "",
            "K_LEADER_ELECTION_CONFIG": "", "K_NO_SHUTDOWN_AFTER": "",
            "K_SINK_TIMEOUT": "-1", "METRICS_DOMAIN": "knative.dev/eventing"},
            isolated=True, outbound=(INGRESS, *(str(PUBLISHED[i]) for i in
                                                range(1, PUBLISHED_MAX + 1))))

    def _wait_ready(self, source: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        listening = [("broker-ingress", INGRESS_PORT), ("broker-filter", FILTER_PORT)]
        if self.imc_dispatcher:
            listening.append(("imc-dispatcher", DISPATCHER_PORT))
        for name, port in listening:
            self._until(lambda p=port: _answers(f"http://127.0.0.1:{p}/"),
                        deadline - time.monotonic(), f"{name} listening", name)
        for lease in LEASES if self.imc_dispatcher else LEASES[:-1]:
            self._until(lambda lease=lease: self._lease_held(lease),
                        deadline - time.monotonic(), f"lease {lease}")
        core = source / "config" / "core" / "webhooks"
        imc = source / "config" / "channels" / "in-memory-channel" / "webhooks"
        # Empty configurations: each webhook fills in its rules and caBundle.
        self.apply_files(core / "defaulting.yaml", core / "resource-validation.yaml",
                         core / "config-validation.yaml", core / "sinkbindings.yaml",
                         imc / "defaulting.yaml", imc / "resource-validation.yaml")
        for configuration in WEBHOOK_CONFIGURATIONS:
            self._until(lambda c=configuration: bool(self.plane.kubectl(
                "get", c, "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}",
                check=False).stdout.strip()), deadline - time.monotonic(),
                f"caBundle of {configuration}")
        for kind, api in (("Broker", "eventing.knative.dev/v1"),
                          ("InMemoryChannel", "messaging.knative.dev/v1")):
            probe = json.dumps({"apiVersion": api, "kind": kind,
                                "metadata": {"name": "probe", "namespace": NAMESPACE}})
            self._until(lambda probe=probe: self.plane.kubectl(
                "create", "--dry-run=server", "-f", "-", input=probe,
                check=False).returncode == 0, deadline - time.monotonic(),
                f"admission of a {kind} by Knative's webhook")

    def _lease_held(self, lease: str) -> bool:
        got = self.plane.kubectl("-n", NAMESPACE, "get", "lease", f"{lease}.reconciler.00-of-01",
                                 "-o", "jsonpath={.spec.holderIdentity}", check=False)
        return got.returncode == 0 and bool(got.stdout.strip())

    def _until(self, check: Callable[[], bool], timeout: float, what: str,
               process: Process | str | None = None) -> None:
        deadline = time.monotonic() + max(timeout, 1.0)
        while time.monotonic() < deadline:
            if check():
                return
            dead = [p.name for p in self.processes if not p.alive()]
            if dead:
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}:\n"
                                   f"{self.logs(dead[0])}")
            time.sleep(0.2)
        name = process.name if isinstance(process, Process) else process
        tail = f":\n{self.logs(name)}" if name else ""
        raise ClusterError(f"timed out waiting for {what}{tail}")


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False


def aggregate_cluster_roles(plane: ControlPlane) -> None:
    """One pass of kube-controller-manager's clusterrole-aggregation controller: each
    ClusterRole with an ``aggregationRule`` gets the rules of the roles it selects."""
    roles = json.loads(plane.kubectl("get", "clusterroles", "-o", "json").stdout)["items"]

    def selected(role: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
        labels = role["metadata"].get("labels") or {}
        if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
            return False
        for expression in selector.get("matchExpressions") or []:
            value, operator = labels.get(expression["key"]), expression["operator"]
            values = expression.get("values") or []
            if ((operator == "In" and value not in values)
                    or (operator == "NotIn" and value in values)
                    or (operator == "Exists" and value is None)
                    or (operator == "DoesNotExist" and value is not None)):
                return False
        return True

    for aggregated in roles:
        rule = aggregated.get("aggregationRule")
        if not rule:
            continue
        rules: list[Any] = []
        for role in roles:
            if role is aggregated or role.get("aggregationRule"):
                continue
            if any(selected(role, s) for s in rule.get("clusterRoleSelectors") or []):
                rules += [r for r in role.get("rules") or [] if r not in rules]
        plane.kubectl("patch", "clusterrole", aggregated["metadata"]["name"], "--type=merge",
                      "-p", json.dumps({"rules": rules}))
