"""The whole chain: a Kubernetes Event created in the API server → the message at WeCom.

On the real control plane of dev/cluster, with Knative's receive adapter, the three
functions (each as its own ServiceAccount) and the WeCom sandbox, through Knative
Eventing's own broker on its InMemoryChannel (dev/cluster/eventing.py), on a NATS
JetStream channel (three nodes, dev/cluster/natss.py) and through the dev broker, in the
same run:

- latency: one Event at a time (a Failed Event about a run, so its requester gets one
  message), from the create call to the message at the sandbox; p50/p95 (WeCom's
  per-member limits, which the notifier keeps, are lifted: one member gets them all);
- sustained: a burst of Events created back to back; Events per second until the last
  message;
- from zero (Knative's broker only, where requests to a function wait while it starts,
  as Knative Serving's activator holds them): the three functions stopped, one Event
  created and the functions started at that moment; the time to the message and each
  function's start (process start to ready).

Knative's data plane needs a private network namespace (root); without it only the dev
broker is measured, and the output says why.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import (
    children,
    cpu_seconds,
    emit,
    log,
    median,
    ms,
    percentile,
    rss_mb,
    table,
)
from dev.cluster import netns
from dev.cluster.chain import ClusterChain, controller_event
from dev.cluster.controlplane import ControlPlane
from dev.cluster.eventing import SERVICE_RANGE, KnativeEventing, why_not
from dev.cluster.install import install_crds, project_namespaces
from dev.cluster.natss import JetStreamChannel, NatsCluster
from dev.support.factory import cluster_subscription, promotion_run

_why_not_knative: list[str] = []


def prepare() -> None:
    """Before anything starts a thread: move into a private network namespace if we can."""
    if _why_not_knative:
        return
    try:
        netns.isolate(Path(tempfile.mkdtemp(prefix="kubeevent-bench-")) / "hosts")
    except netns.NamespaceError as exc:
        _why_not_knative.append(str(exc))
        return
    _why_not_knative.append(why_not() or "")


class Arrivals:
    """When the sandbox delivered a message whose text carries a marker."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.changed = threading.Condition()

    def record(self, delivery: Any) -> None:
        text = f"{delivery.description or ''}{delivery.content or ''}"
        now = time.monotonic()
        with self.changed:
            for marker in re.findall(r"bench-[A-Za-z0-9-]+", text):
                self.at.setdefault(marker, now)
            self.changed.notify_all()

    def wait(self, markers: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(m in self.at for m in markers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
        return True


def measure(broker: str, workdir: Path, *, events: int, burst: int) -> dict[str, Any]:
    from kubernetes import client, config

    knative = broker in ("knative", "jetstream")
    plane = ControlPlane(workdir / "plane",
                         **({"service_range": SERVICE_RANGE} if knative else {})).start()
    eventing: KnativeEventing | None = None
    chain: ClusterChain | None = None
    nats: NatsCluster | None = None
    channel: JetStreamChannel | None = None
    try:
        install_crds(plane)
        project_namespaces(plane)
        if knative:
            eventing = KnativeEventing(plane, workdir / "eventing",
                                       imc_dispatcher=broker == "knative").start()
        if broker == "jetstream":
            assert eventing is not None
            nats = NatsCluster(workdir / "nats").start()
            channel = JetStreamChannel(eventing, nats).start()
        # One member gets every message here: WeCom's per-member limits (which the
        # notifier keeps, deferring the rest) are lifted in the sandbox and the notifier.
        lifted = 1_000_000
        chain = ClusterChain(plane, workdir / "chain", eventing=eventing, channel=channel,
                             wecom_member_limits=(lifted, lifted), function_env={
                                 "corpwechat-notifier": {
                                     "CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": str(lifted),
                                     "CORPWECHAT_MEMBER_MESSAGES_PER_HOUR": str(lifted),
                                     "CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "0"}})
        chain.install()
        chain.apply_yaml(json.dumps(cluster_subscription("alice")), user="alice")
        chain.start()
        stack = chain.running()
        assert stack.sandbox is not None
        arrivals = Arrivals()
        stack.sandbox.on_delivery = arrivals.record
        run = chain.new_run(promotion_run(f"bench-{uuid.uuid4().hex[:6]}", "devops",
                                          requester="alice"))
        api = client.CoreV1Api(config.new_client_from_config(str(plane.kubeconfig())))

        def create(marker: str) -> None:
            api.create_namespaced_event("devops", controller_event(run, "Failed",
                                                                   f"push failed {marker}"))

        cpu_before = broker_cpu(eventing, broker) if eventing is not None else 0.0
        latencies = []
        for i in range(events + 2):  # the first two warm the path up
            marker = f"bench-{broker}-{i}"
            started = time.monotonic()
            create(marker)
            if not arrivals.wait([marker], 60):
                got = [(d.userid, d.description or d.content) for d in stack.sandbox.delivered]
                raise RuntimeError(f"no message for {marker} through the {broker} broker; "
                                   f"WeCom got {got[-3:]}")
            if i >= 2:
                latencies.append(arrivals.at[marker] - started)
        markers = [f"bench-{broker}-burst-{i}" for i in range(burst)]
        started = time.monotonic()
        for marker in markers:
            create(marker)
        if not arrivals.wait(markers, 300):
            raise RuntimeError(f"the burst did not arrive through the {broker} broker")
        took = max(arrivals.at[m] for m in markers) - started
        result: dict[str, Any] = {
            "broker": broker, "events": len(latencies),
            "p50_ms": ms(median(latencies)), "p95_ms": ms(percentile(latencies, 95)),
            "burst": burst, "sustained_eps": round(burst / took, 1)}
        if eventing is not None:
            used = broker_cpu(eventing, broker) - cpu_before
            result["broker_cpu_ms_per_event"] = ms(used / (events + 2 + burst))
            result["channel_peak_mb"] = channel_memory(eventing, nats)
        if broker == "knative":
            result["from_zero"] = from_zero(stack, create, arrivals, broker)
        return result
    finally:
        if chain is not None:
            chain.stop()
        if eventing is not None:
            eventing.stop()
        if nats is not None:
            nats.stop()
        plane.stop()


def broker_cpu(eventing: KnativeEventing, broker: str) -> float:
    """CPU seconds the broker's data plane has used: ingress, filter and the channel's
    dispatcher (for JetStream not the NATS nodes, which a cluster shares)."""
    names = ["broker-ingress", "broker-filter",
             "imc-dispatcher" if broker == "knative" else "jetstream-ch-dispatcher"]
    total = 0.0
    for name in names:
        pid = eventing.process(name).pid
        if pid is not None:  # with what it runs (a launcher's child is the binary)
            total += sum(cpu_seconds(p) for p in (pid, *children(pid)))
    return total


def channel_memory(eventing: KnativeEventing, nats: NatsCluster | None) -> float:
    """Peak resident memory (MB) of what the channel adds: its dispatcher and controller,
    and for JetStream the three NATS nodes (the binaries, not the harness's launchers)."""
    names = (("jetstream-ch-dispatcher", "jetstream-ch-controller") if nats is not None
             else ("imc-dispatcher", "imc-controller"))
    pids = [eventing.process(name).pid for name in names]
    if nats is not None:
        pids += [node.pid for node in nats.nodes if node is not None]
    total = 0.0
    for pid in pids:
        if pid is None:
            continue
        for each in (pid, *children(pid)):
            try:
                launcher = Path(f"/proc/{each}/exe").resolve().name.startswith("python")
            except OSError:
                continue
            if not launcher:
                total += rss_mb(each, "VmHWM")
    return round(total, 1)


def from_zero(stack: Any, create: Any, arrivals: Arrivals, broker: str) -> dict[str, Any]:
    """Functions stopped; the Event created and the three started at that moment."""
    for proc in stack.functions.values():
        proc.stop()
    marker = f"bench-{broker}-zero"
    ready: dict[str, float] = {}
    started = time.monotonic()

    def start(proc: Any) -> None:
        proc.start(timeout=120, wait_ready=True)
        ready[proc.name] = time.monotonic() - started

    threads = [threading.Thread(target=start, args=(p,)) for p in stack.functions.values()]
    create(marker)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not arrivals.wait([marker], 120):
        raise RuntimeError("no message from zero")
    return {"message_ms": ms(arrivals.at[marker] - started),
            "ready_ms": {name: ms(seconds) for name, seconds in sorted(ready.items())}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    prepare()
    events, burst = (20, 20) if args.quick else (300, 200)
    reason = _why_not_knative[0] if _why_not_knative else "not prepared"
    brokers = ["knative", "jetstream", "dev"] if not reason else ["dev"]
    if reason:
        log(f"chain: Knative's broker cannot run here ({reason}); the dev broker only")
    results = []
    for broker in brokers:
        log(f"chain through the {broker} broker: {events} Events one by one, a burst of "
            f"{burst}")
        with tempfile.TemporaryDirectory(prefix=f"bench-chain-{broker}-") as tmp:
            results.append(measure(broker, Path(tmp), events=events, burst=burst))
    table("Chain: Event created → message at the WeCom sandbox (one recipient per Event)",
          ["broker", "Events", "p50 ms", "p95 ms", "burst", "Events/s",
           "broker CPU ms/Event", "channel peak MB"],
          [[r["broker"], r["events"], r["p50_ms"], r["p95_ms"], r["burst"],
            r["sustained_eps"], r.get("broker_cpu_ms_per_event", "-"),
            r.get("channel_peak_mb", "-")] for r in results])
    for result in results:
        zero = result.get("from_zero")
        if zero:
            starts = ", ".join(f"{name} ready at {value} ms"
                               for name, value in zero["ready_ms"].items())
            print(f"From zero through the {result['broker']} broker: the message "
                  f"{zero['message_ms']} ms after the Event ({starts})")
    return emit("chain", {"events": events, "burst": burst, "knative": not reason,
                          "without_knative": reason or None, "results": results})
