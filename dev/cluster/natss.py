"""A durable channel under Knative's broker: NATS JetStream, as local processes.

- ``NatsCluster``: three ``nats-server`` nodes (the version ``knative.dev/eventing-natss``
  pins) forming one JetStream cluster, so a stream is replicated and survives a node.
- ``JetStreamChannel``: Knative's ``eventing-natss`` channel controller and dispatcher,
  unmodified, with the module's CRD, RBAC and ConfigMaps applied unchanged but for the
  NATS URL; ``config-natjsm-channel`` is the channel template a Broker names to use it.
  What a cluster would add is played as for the InMemoryChannel (dev/cluster/eventing.py):
  the dispatcher Deployment's availability and EndpointSlice, a hosts entry and a relay for
  the dispatcher's Service and the channels' names.

The controller runs in a network of its own (its probes bind :8080); the dispatcher takes
:8080 in the test session's network, so Knative runs without the InMemoryChannel's
dispatcher there (``KnativeEventing(imc_dispatcher=False)``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from dev.support.procs import free_port

from . import install
from .controlplane import BIN, ClusterError, Process
from .eventing import NAMESPACE, KnativeEventing, service_host

DISPATCHER = "jetstream-ch-dispatcher"
DISPATCHER_ADDRESS = "127.96.1.6"
CHANNEL_TEMPLATE = "config-natjsm-channel"
BINARIES = ("nats-server", "natss_controller", "natss_dispatcher")
MAX_RECONNECTS = 100_000  # 200 ms apart: about five and a half hours without NATS


def channel_host(broker: str, namespace: str) -> str:
    """The ExternalName Service a Broker's JetStream channel gets (to the dispatcher)."""
    return service_host(f"{broker}-kne-trigger-kn-jsm-channel", namespace)


class NatsCluster:
    """Three JetStream nodes on loopback ports; ``kill(i)`` is ``kill -9`` of node i,
    ``start(i)`` brings it back with its store."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        self.dir = workdir
        self.size = size
        self.client = [free_port() for _ in range(size)]
        self.routes = [free_port() for _ in range(size)]
        self.monitor = [free_port() for _ in range(size)]
        self.nodes: list[Process | None] = [None] * size

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{port}" for port in self.client)

    def _argv(self, i: int) -> list[str]:
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
        return [str(BIN / "nats-server"), "-js", "-sd", str(self.dir / f"n{i}"),
                "-a", "127.0.0.1", "-p", str(self.client[i]),
                "-cluster", f"nats://127.0.0.1:{self.routes[i]}", "-cluster_name", "kn",
                "-routes", routes, "-n", f"n{i}", "-m", str(self.monitor[i])]

    def start(self, i: int | None = None, timeout: float = 30.0) -> NatsCluster:
        self.dir.mkdir(parents=True, exist_ok=True)
        for node in range(self.size) if i is None else [i]:
            process = Process(f"nats-n{node}", self._argv(node), self.dir / f"n{node}.log")
            process.start()
            self.nodes[node] = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.meta_leader():
                return self
            time.sleep(0.2)
        raise ClusterError("the JetStream cluster elected no meta leader in "
                           f"{timeout:.0f} s:\n{self.nodes[0].tail() if self.nodes[0] else ''}")

    def jsz(self, i: int, **params: str) -> dict[str, Any]:
        try:
            return dict(requests.get(f"http://127.0.0.1:{self.monitor[i]}/jsz",
                                     params=params, timeout=2).json())
        except (requests.RequestException, ValueError):
            return {}

    def _live(self) -> Iterator[int]:
        """The nodes running now."""
        return (i for i, node in enumerate(self.nodes) if node is not None and node.alive())

    def _streams(self) -> Iterator[dict[str, Any]]:
        """The streams each live node reports (the one stream, as each node sees it)."""
        for i in self._live():
            for account in self.jsz(i, streams="true").get("account_details") or []:
                yield from account.get("stream_detail") or []

    def meta_leader(self) -> str:
        leaders = ((self.jsz(i).get("meta_cluster") or {}).get("leader") for i in self._live())
        return str(next((leader for leader in leaders if leader), ""))

    def stream_sequence(self) -> int:
        """The last sequence number of the (one) stream: how many events it ever took."""
        stream = next(self._streams(), None)
        return int(((stream or {}).get("state") or {}).get("last_seq") or 0)

    def stream_leader(self) -> int | None:
        """The node that leads the (one) stream's replicas, if a stream exists."""
        leaders = ((stream.get("cluster") or {}).get("leader") for stream in self._streams())
        leader = next((leader for leader in leaders if leader), None)
        return int(str(leader).lstrip("n")) if leader else None

    def kill(self, i: int) -> None:
        node = self.nodes[i]
        if node is not None:
            node.stop(sig=signal.SIGKILL, timeout=10)
            self.nodes[i] = None

    def stop(self) -> None:
        for i in range(self.size):
            node = self.nodes[i]
            if node is not None:
                node.stop(timeout=10)
                self.nodes[i] = None


class JetStreamChannel:
    """The JetStream channel's controller and dispatcher on a running ``eventing``."""

    def __init__(self, eventing: KnativeEventing, nats: NatsCluster) -> None:
        self.eventing = eventing
        self.nats = nats
        self.plane = eventing.plane
        self.dispatcher: Process | None = None

    def start(self) -> JetStreamChannel:
        missing = [b for b in BINARIES if not (BIN / b).exists()]
        if missing:
            raise ClusterError(f"missing {', '.join(missing)} in {BIN}: run dev/cluster/build.sh")
        source = install.knative_module("knative.dev/eventing-natss", "natss")
        config = source / "config"
        jetstream = sorted((config / "jetstream").glob("*.yaml"))
        self.eventing.apply_files(*[p for p in jetstream if p.name.startswith("302-")],
                             server_side=True)
        self.plane.crds_established("natsjetstreamchannels.messaging.knative.dev")
        self.eventing.apply_files(*[p for p in jetstream if p.name.startswith(("200-", "201-"))])
        from .eventing import aggregate_cluster_roles

        aggregate_cluster_roles(self.plane)
        self.eventing.apply_files(config / "broker" / "config-br-default-channel-jsm.yaml")
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "config-nats", "namespace": NAMESPACE},
            "data": {"eventing-nats": self._nats_config()}}))
        hosts = self.eventing.hosts
        hosts.add(DISPATCHER_ADDRESS, service_host(DISPATCHER, NAMESPACE))
        self.eventing.start_relay("relay-jetstream-dispatcher",
                             [f"tcp:{DISPATCHER_ADDRESS}:80=tcp:127.0.0.1:8080"])
        # The controller's network reaches the NATS nodes through relays.
        nodes = [f"127.0.0.1:{port}" for port in self.nats.client]
        for node in nodes:
            self.eventing.outside(node, node)
        self.eventing.start_process("jetstream-ch-controller", "natss_controller",
                               "jetstream-ch-controller", {
                                   "METRICS_DOMAIN": "knative.dev/eventing",
                                   "DISPATCHER_IMAGE": "local-process/unused",
                                   "DISPATCHER_SERVICE_ACCOUNT": DISPATCHER},
                               isolated=True, outbound=tuple(nodes))
        # The dispatcher reads config-nats where its Deployment mounts it.
        mounted = self.eventing.dir / "jetstream-dispatcher-etc"
        (mounted / "upper" / "config-nats").mkdir(parents=True, exist_ok=True)
        (mounted / "upper" / "config-nats" / "eventing-nats").write_text(self._nats_config())
        self.eventing.start_process(DISPATCHER, "natss_dispatcher", DISPATCHER, {
            "METRICS_DOMAIN": "knative.dev/eventing",
            "CONFIG_LEADERELECTION_NAME": "config-leader-election",
            "CONTAINER_NAME": "dispatcher"}, etc=mounted)
        return self

    def _nats_config(self) -> str:
        # Not maxReconnects: -1 (nats.go's "forever"): eventing-natss's reconnect delay
        # counts attempts left as maxReconnects - attempts and exits the process when that
        # is negative (pkg/common/nats/conn.go), so -1 exits at the first reconnect.
        return (f"url: {self.nats.url}\nconnOpts:\n  retryOnFailedConnect: true\n"
                f"  maxReconnects: {MAX_RECONNECTS}\n  reconnectWaitMilliseconds: 200\n")

    def broker_channel(self, broker: str, namespace: str) -> None:
        self.eventing.hosts.add(DISPATCHER_ADDRESS, channel_host(broker, namespace))

    def settle(self, timeout: float = 60.0) -> None:
        """Once the controller has made the dispatcher's Deployment and Service (for the
        first channel), say what the kubelet and the endpoints controller would."""
        deadline = time.monotonic() + timeout
        while self.plane.kubectl("-n", NAMESPACE, "get", "deployment", DISPATCHER,
                                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise ClusterError("the JetStream controller made no dispatcher Deployment:\n"
                                   + self.eventing.logs("jetstream-ch-controller"))
            time.sleep(0.2)
        # The controller reads the dispatcher Service's EndpointSlices (never dialled);
        # the Deployment's status change then has it reconcile the channel again.
        self.plane.kubectl("apply", "-f", "-", input=json.dumps({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{DISPATCHER}-local", "namespace": NAMESPACE,
                         "labels": {"kubernetes.io/service-name": DISPATCHER}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.6"], "conditions": {"ready": True}}],
            "ports": [{"name": "http-dispatcher", "port": 8080, "protocol": "TCP"}]}))
        self.eventing.mark_available(DISPATCHER)
