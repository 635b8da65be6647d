"""Knative's own ApiServerSource receive adapter as a local process.

It is configured the way Knative's ApiServerSource reconciler configures it for the
seed's source (``mode: Resource``, core/v1 Events, one reflector per namespace), logs in
as the source's ServiceAccount, and sends to ``K_SINK``. The adapter swallows its
initial LIST, so anything that exists, or is created, before its watch is open is never
sent; ``handshake`` creates canary Events until one of them has come through.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from .controlplane import BIN, ClusterError, ControlPlane, Process

SOURCE_NAME = "kubeevent-watcher"
SOURCE_NAMESPACE = "kubeevent-watcher"
_canaries = itertools.count(1)


def source_config(namespaces: Sequence[str]) -> str:
    """``K_SOURCE_CONFIG`` as the reconciler writes it for the seed's ApiServerSource."""
    return json.dumps({
        "namespaces": sorted(namespaces),
        "allNamespaces": False,
        "resources": [{"gvr": {"Group": "", "Version": "v1", "Resource": "events"}}],
        "mode": "Resource",
    })


class ReceiveAdapter:
    def __init__(self, plane: ControlPlane, *, sink: str, namespaces: Sequence[str],
                 kubeconfig: Path, log: Path, bin_dir: Path = BIN) -> None:
        self.plane = plane
        self.sink = sink
        self.namespaces = list(namespaces)
        env = {
            "KUBECONFIG": str(kubeconfig),
            "K_SINK": sink,
            "NAME": SOURCE_NAME,
            "NAMESPACE": SOURCE_NAMESPACE,
            "SYSTEM_NAMESPACE": "knative-eventing",
            "K_SOURCE_CONFIG": source_config(self.namespaces),
            "K_OBSERVABILITY_CONFIG": "{}",
            "K_LOGGING_CONFIG": json.dumps({"zap-logger-config": json.dumps({
                "level": "info", "encoding": "json", "outputPaths": ["stdout"],
                "errorOutputPaths": ["stderr"],
                "encoderConfig": {"timeKey": "ts", "levelKey": "level", "messageKey": "msg"},
            })}),
            "K_SINK_TIMEOUT": "30",
            # pprof on a free port; the probe server's :8080 cannot be configured.
            "PROFILING_PORT": "0",
        }
        self._process = Process("apiserver_receive_adapter",
                                 [str(bin_dir / "apiserver_receive_adapter")], log, env)

    def start(self) -> ReceiveAdapter:
        self._process.start()
        return self

    def stop(self) -> None:
        self._process.stop()

    def alive(self) -> bool:
        return self._process.alive()

    def log_text(self) -> str:
        return self._process.tail(200)

    def handshake(self, arrived: Callable[[str, str], bool], timeout: float = 60.0,
                  namespaces: Sequence[str] | None = None) -> None:
        """Create a canary Event in each watched namespace (or in ``namespaces``) every half
        second until ``arrived(namespace, name)`` says one came through the adapter."""
        for namespace in namespaces or self.namespaces:
            deadline = time.monotonic() + timeout
            created: list[str] = []
            while not any(arrived(namespace, name) for name in created):
                if not self.alive():
                    raise ClusterError(f"the receive adapter exited:\n{self.log_text()}")
                if time.monotonic() > deadline:
                    raise ClusterError(f"no canary Event in {namespace} came through the "
                                       f"adapter in {timeout:.0f} s:\n{self.log_text()}")
                name = f"canary-{next(_canaries)}"
                self.plane.kubectl("create", "-f", "-", input=json.dumps(canary(namespace, name)))
                created.append(name)
                time.sleep(0.5)


CANARY_REASON = "Canary"


def canary(namespace: str, name: str) -> dict[str, object]:
    """A core/v1 Event about a ConfigMap that does not exist: it costs the chain nothing
    but an enricher answer, which is how it is recognised."""
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "ConfigMap", "name": name,
                           "namespace": namespace},
        "reason": CANARY_REASON, "message": "adapter handshake", "type": "Normal",
        "source": {"component": "kubeevent-cluster-tests"},
    }
