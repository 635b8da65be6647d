"""The chain on a durable channel: Knative's broker with the project's Broker on a NATS
JetStream channel (``manifests/overlays/jetstream``), Knative's eventing-natss controller
and dispatcher, and a three-node JetStream cluster (dev/cluster/natss.py). The channel
answers once the stream has the event and delivers afterwards, at least once: the tests
wait for outcomes, and count each message at WeCom."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dev.cluster.chain import ClusterChain
from dev.cluster.chain import controller_event as event_about
from dev.cluster.controlplane import BIN, ControlPlane
from dev.cluster.eventing import SERVICE_RANGE, KnativeEventing
from dev.cluster.install import install_crds, project_namespaces
from dev.cluster.natss import BINARIES, JetStreamChannel, NatsCluster
from dev.fakes.wecom import Delivery
from dev.stack.stack import ENRICHER, NOTIFIER, SYSTEM_NAMESPACE
from dev.support import wire
from dev.support.factory import post, promotion_run
from tests.cluster.conftest import _unless, require_knative
from tests.cluster.scenarios import SEED_SCENARIOS, reaches_exactly_its_people

LIFTED = 1_000_000  # WeCom's per-member limits, lifted: one member gets the burst
LEASE = 20
SWEEP_TICK = wire.event({"type": "dev.knative.sources.ping",
                         "source": "/apis/v1/namespaces/kubeevent-enricher/pingsources/"
                                   "kubeevent-delivery-sweep"},
                        {"sweep": "notificationdeliveries"})
CATCH_UP_TICK = wire.event({"type": "dev.knative.sources.ping",
                            "source": "/apis/v1/namespaces/kubeevent-enricher/pingsources/"
                                      "kubeevent-catch-up"}, {"catchUp": "events"})


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    require_knative()
    missing = [b for b in BINARIES if not (BIN / b).exists()]
    _unless(f"missing {', '.join(missing)} (dev/cluster/build.sh)" if missing else None,
            "the JetStream channel")
    cluster = NatsCluster(tmp_path_factory.mktemp("nats")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def chain(nats: NatsCluster, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ClusterChain]:
    workdir = tmp_path_factory.mktemp("jetstream")
    with ControlPlane(workdir / "plane", service_range=SERVICE_RANGE) as plane:
        install_crds(plane)
        project_namespaces(plane)
        with KnativeEventing(plane, workdir / "eventing", imc_dispatcher=False) as eventing:
            channel = JetStreamChannel(eventing, nats).start()
            running = ClusterChain(plane, workdir / "chain", eventing=eventing,
                                   channel=channel, wecom_member_limits=(LIFTED, LIFTED),
                                   function_env={NOTIFIER: {
                                       "CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE": str(LIFTED),
                                       "CORPWECHAT_MEMBER_MESSAGES_PER_HOUR": str(LIFTED),
                                       # each message alone (its marker is checked)
                                       "CORPWECHAT_DIGEST_AFTER_PER_MINUTE": "0",
                                       # A claim holds others off 20 s (not 5 min), and
                                       # the sweep may run at every tick.
                                       "DELIVERY_LEASE_SECONDS": str(LEASE),
                                       "DELIVERY_SWEEP_INTERVAL_SECONDS": "1"},
                                       ENRICHER: {"CATCHUP_MIN_INTERVAL_SECONDS": "1"}})
            running.install()
            running.subscribe_examples()
            with running:
                yield running


@pytest.fixture(autouse=True)
def _fresh(chain: ClusterChain) -> Iterator[None]:
    chain.settle()
    chain.reset()
    yield


def test_the_broker_uses_a_replicated_jetstream_channel(chain: ClusterChain,
                                                        nats: NatsCluster) -> None:
    (channel,) = chain.get("natsjetstreamchannels", "-n", SYSTEM_NAMESPACE)["items"]
    assert channel["spec"]["stream"]["config"]["replicas"] == 3
    assert channel["spec"]["stream"]["config"]["storage"] == "File"
    assert nats.stream_leader() is not None, "the stream exists, with a leader"


@pytest.mark.parametrize(("reason", "message", "who"), SEED_SCENARIOS)
def test_each_seed_scenario_reaches_exactly_its_people_through_jetstream(
        chain: ClusterChain, reason: str, message: str | None, who: set[str]) -> None:
    reaches_exactly_its_people(chain, reason, message, who)


def burst(chain: ClusterChain, count: int, fault: Callable[[], None], at: int,
          over: float = 0.0) -> list[str]:
    """``count`` Failed Events (one message each, to the run's requester) created back to
    back (or evenly ``over`` that many seconds), ``fault()`` called before the ``at``-th;
    returns the markers of the messages."""
    from kubernetes import client, config

    run = chain.new_run(promotion_run(f"js-burst-{uuid.uuid4().hex[:6]}", "devops",
                                      requester="alice"))
    api = client.CoreV1Api(config.new_client_from_config(str(chain.plane.kubeconfig())))
    markers = [f"burst-{uuid.uuid4().hex[:6]}-{i}" for i in range(count)]
    started = time.monotonic()
    for i, marker in enumerate(markers):
        if i == at:
            fault()
        time.sleep(max(0.0, started + over * i / count - time.monotonic()))
        api.create_namespaced_event("devops", event_about(run, "Failed",
                                                          f"push failed {marker}"))
    return markers


def each_once(chain: ClusterChain, markers: list[str], *, sweep: bool = True,
              catch_up: bool = False) -> None:
    """Wait for every marker's message at WeCom, then say which are missing or twice.
    ``sweep``, ``catch_up``: tick the notifier's delivery sweep, the enricher's catch-up,
    every 5 s meanwhile, as their PingSources do every 5 minutes."""
    stack = chain.running()
    assert stack.sandbox is not None
    deadline = time.monotonic() + 240
    ticked = time.monotonic()
    # A tick waits its turn behind the redelivered requests (as a PingSource's does): it is
    # sent aside, and its answer is checked at the end.
    ticks: list[concurrent.futures.Future[int]] = []
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    def tick(url: str, event: Any) -> int:
        return post(url, event, timeout=180).status_code

    def counted() -> collections.Counter[str]:
        found: collections.Counter[str] = collections.Counter()
        for delivery in stack.sandbox.delivered:  # type: ignore[union-attr]
            for marker in re.findall(r"burst-[0-9a-f]{6}-\d+", delivery.description or ""):
                found[marker] += 1
        return found

    while len(counted()) < len(markers) and time.monotonic() < deadline:
        time.sleep(0.5)
        if (sweep or catch_up) and time.monotonic() - ticked > 5:
            ticked = time.monotonic()
            if sweep:
                ticks.append(pool.submit(tick, stack.notifier.url, SWEEP_TICK))
            if catch_up:
                ticks.append(pool.submit(tick, stack.enricher.url, CATCH_UP_TICK))
    chain.settle(120, quiet=3.0)
    pool.shutdown(wait=True)
    assert [t.result() for t in ticks] == [202] * len(ticks)
    found = counted()
    missing = [m for m in markers if m not in found]
    twice = {m: n for m, n in found.items() if n > 1}
    assert not missing, f"{len(missing)} messages lost, e.g. {missing[:3]}"
    assert not twice, f"sent more than once: {twice}"


def test_kill_9_of_the_stream_leader_during_a_burst_loses_nothing_and_sends_nothing_twice(
        chain: ClusterChain, nats: NatsCluster) -> None:
    """200 Events; after the first 50 the JetStream node leading the stream is killed
    with SIGKILL, and brought back once the burst is created."""
    leader = nats.stream_leader()
    assert leader is not None
    markers = burst(chain, 200, lambda: nats.kill(leader), at=50)
    nats.start(leader)
    each_once(chain, markers)


@pytest.mark.timeout(480)
def test_kill_9_of_the_jetstream_dispatcher_during_a_burst_loses_nothing_and_sends_nothing_twice(
        chain: ClusterChain) -> None:
    """200 Events; after the first 50 the channel's dispatcher is killed with SIGKILL and
    started again once the burst is created (the kubelet restarting the pod): what it had
    not delivered is delivered after it restarts, and nothing twice."""
    eventing = chain.eventing
    assert eventing is not None
    markers = burst(chain, 200, lambda: eventing.kill("jetstream-ch-dispatcher"), at=50)
    assert running(BIN / "natss_dispatcher") == [], "the killed pod left nothing behind"
    eventing.start_again("jetstream-ch-dispatcher")
    deadline = time.monotonic() + 30  # its launcher starts it
    while not running(BIN / "natss_dispatcher") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(running(BIN / "natss_dispatcher")) == 1
    each_once(chain, markers)


def running(binary: Path) -> list[int]:
    """The processes running ``binary`` (a process the harness lost would be a second
    consumer of the stream)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if Path(os.readlink(proc / "exe")) == binary.resolve():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_kill_9_of_the_notifier_mid_send_during_a_burst_loses_nothing_and_sends_nothing_twice(
        chain: ClusterChain) -> None:
    """200 Events; at the 50th message WeCom takes, the notifier is killed with SIGKILL
    before WeCom answers it (so that message is out and not recorded), with other
    requests cut off before and after their claims; it is started again (the kubelet).
    The broker redelivers what was cut off: each redelivery that meets a claim without an
    outcome hands the message to its record, and the sweep sends those once the lease has
    run out. The redeliveries are counted: the ledger absorbed them, WeCom counts each
    message once."""
    stack = chain.running()
    sandbox, notifier = stack.sandbox, stack.notifier
    assert sandbox is not None
    seen = collections.Counter[str]()
    killed = threading.Event()

    def kill_mid_send(delivery: Delivery) -> None:
        if "burst-" in (delivery.description or ""):
            seen["messages"] += 1
            if seen["messages"] == 50 and not killed.is_set():
                notifier.kill()  # WeCom has it; the notifier never hears so
                killed.set()

    sandbox.on_delivery = kill_mid_send
    try:
        markers = burst(chain, 200, lambda: None, at=0)
        assert killed.wait(120), "the notifier was not killed: fewer than 50 messages"
    finally:
        sandbox.on_delivery = None
    notifier.start()
    each_once(chain, markers)
    absorbed = [r for r in notifier.log_records() if r.get("message") == "handled"
                and (r.get("handed_over") or r.get("skipped"))]
    assert any(r.get("handed_over") for r in absorbed), \
        "the message WeCom took when the notifier died was redelivered to a claim"
    print(f"redeliveries absorbed by the delivery records: {len(absorbed)} "
          f"({sum(1 for r in absorbed if r.get('handed_over'))} handed to the sweep); "
          f"WeCom dropped {len(sandbox.suppressed)} as duplicates")


@pytest.mark.timeout(480)
def test_all_three_nats_nodes_down_for_a_minute_while_events_are_created_loses_nothing(
        chain: ClusterChain, nats: NatsCluster) -> None:
    """Every JetStream node killed; 200 Events created over the next minute, then the
    nodes come back with their stores. Meanwhile the channel takes nothing: the broker's
    ingress refuses, the enricher answers 503, and Knative's adapter drops what failed for
    ~3 s and holds the rest. What it dropped, the enricher's catch-up sends again (the
    Events are in the API server); nothing twice."""
    for node in range(nats.size):
        nats.kill(node)
    markers = burst(chain, 200, lambda: None, at=0, over=60.0)
    nats.start()
    dropped = [r for r in chain.running().enricher.log_records()
               if r.get("message") == "failed" and r.get("status") == 503]
    assert dropped, "the enricher met the outage (the broker refused it)"
    each_once(chain, markers, catch_up=True)
    caught_up = sum(r.get("emitted") or 0 for r in chain.running().enricher.log_records()
                    if r.get("message") == "catch-up done")
    assert caught_up, "what the adapter dropped came back through the catch-up"


@pytest.mark.timeout(480)
def test_the_whole_stack_stopped_with_events_queued_and_started_again_loses_nothing(
        chain: ClusterChain, nats: NatsCluster) -> None:
    """Knative's broker filter frozen (SIGSTOP): 200 Events are created and the channel
    stores each and delivers none. Then everything stops: the source, the functions,
    Knative's broker, controllers and webhook, the JetStream dispatcher and controller,
    the three NATS nodes (SIGTERM; the frozen filter is killed). Started again, the
    stream delivers what it held: each message once."""
    eventing = chain.eventing
    assert eventing is not None
    frozen = eventing.process("broker-filter")
    assert frozen.pid is not None
    stored = nats.stream_sequence()
    os.kill(frozen.pid, signal.SIGSTOP)
    markers = burst(chain, 200, lambda: None, at=0)
    deadline = time.monotonic() + 120
    while nats.stream_sequence() < stored + len(markers):
        assert time.monotonic() < deadline, "the channel did not store the 200 events"
        time.sleep(0.2)
    stack = chain.running()
    assert stack.sandbox is not None and stack.sandbox.delivered == [], "queued, not sent"
    chain.stop_all()
    nats.stop()
    nats.start()
    chain.start_all()
    each_once(chain, markers)
