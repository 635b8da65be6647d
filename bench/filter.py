"""subscription-filter: reply latency with 100 / 1,000 / 10,000 subscriptions, per CEL engine.

Every subscription is the seed's four-event ClusterSubscription for a distinct
subscriber (``userNNNNN``), so every one is a candidate for the approval-pending
event and its CEL filter is evaluated. The object (about 20 KB of enriched
event) names three approvers, so three subscriptions match and the reply is a
200 notification request; the RBAC check is on (its answers are cached, as in
production). The function runs under functions-framework against the fake API
server. After the first list (readiness) the benchmark waits until the function
is idle (status writes done), sends warm-up requests, then measures sequential
requests. Targets with the fast engine at 10,000: p50 <= 150 ms, RSS <= 300 MB.

celpy at 10,000 subscriptions takes minutes (startup and per request); it runs
with ``--full`` only.
"""

from __future__ import annotations

import argparse
import copy
import time
import uuid
from typing import Any

import yaml
from cloudevents.conversion import to_binary

from bench.common import (
    BenchProcess,
    emit,
    log,
    ms,
    percentile,
    profile_path,
    run_load,
    show_profile,
    table,
)
from bench.world import World, sized_promotion_run
from tests.support.factory import enriched_event
from tests.support.seed import example

NAME = "filter"
FUNCTION = "subscription-filter"
ENGINES = ("cel-expr", "celpy")
SIZES = (100, 1_000, 10_000)
TARGET_P50_MS = 150.0
TARGET_RSS_MB = 300.0
APPROVERS = ("user00000", "user00001", "user00002")
API = ("core.katanomi.dev/v1alpha1", "ClusterSubscription")


def subscriber(i: int) -> str:
    return f"user{i:05d}"


def subscription(template: dict[str, Any], i: int) -> dict[str, Any]:
    """The seed's subscription, for subscriber ``userNNNNN``."""
    sub = copy.deepcopy(template)
    name = subscriber(i)
    sub["metadata"]["name"] = f"{name}-artifactpromotionrun-subscription"
    sub["metadata"]["annotations"]["katanomi.dev/owned.username"] = name
    sub["spec"]["subscriber"]["name"] = name
    sub["spec"]["subscriber"]["info"] = {"id": uuid.uuid5(uuid.NAMESPACE_DNS, name).hex,
                                         "mail": f"{name}@example.com"}
    return sub


def seed_template() -> dict[str, Any]:
    return yaml.safe_load(example("seed-clustersubscription-admin.yaml"))


def grow(world: World, size: int) -> None:
    """Make the fake API server hold subscriptions user00000 .. user<size-1>."""
    have = len(world.kube.objects(*API))
    template = seed_template()
    for i in range(have, size):
        world.kube.add(subscription(template, i))


def event_job(obj: dict[str, Any]) -> Any:
    def job(i: int) -> tuple[dict[str, str], bytes]:
        headers, body = to_binary(enriched_event("approvalpending", obj=obj))
        return dict(headers), body

    return job


def filter_env(world: World, engine: str) -> dict[str, str]:
    return {"KUBECONFIG": str(world.kubeconfig), "CEL_ENGINE": engine}


def measure(world: World, engine: str, size: int, obj: dict[str, Any], *, count: int,
            budget: float, profile: bool) -> dict[str, Any]:
    proc = BenchProcess(FUNCTION, env=filter_env(world, engine),
                        profile=profile_path(f"filter-{engine}-{size}", profile))
    job = event_job(obj)
    started = time.perf_counter()
    try:
        proc.start(timeout=900, wait_ready=True)
        ready_s = time.perf_counter() - started
        idle_s = proc.wait_idle()
        warm = run_load(proc.url, job, 1 if size >= SIZES[-1] else 2, concurrency=1,
                        timeout=600)
        if not warm.ok(200):
            raise RuntimeError(f"warm-up answered {dict(warm.statuses)}:\n"
                               f"{proc.output()[-2000:]}")
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        deadline = time.perf_counter() + budget
        while len(latencies) < count and (len(latencies) < 3 or time.perf_counter() < deadline):
            one = run_load(proc.url, job, 1, concurrency=1, timeout=600)
            latencies += one.latencies
            for status, n in one.statuses.items():
                statuses[status] = statuses.get(status, 0) + n
        rss = proc.rss()
    finally:
        proc.stop()
    for line in show_profile(proc.profile):
        print("   ", line)
    p50 = ms(percentile(latencies, 50))
    result = {
        "engine": engine, "subscriptions": size, "requests": len(latencies),
        "statuses": statuses, "p50_ms": p50, "p95_ms": ms(percentile(latencies, 95)),
        "ready_s": round(ready_s, 1), "settle_s": round(idle_s, 1), **rss,
    }
    if size == SIZES[-1] and engine == ENGINES[0]:
        result["met_p50"] = p50 <= TARGET_P50_MS
        result["met_rss"] = rss["rss_mb"] <= TARGET_RSS_MB
    log(f"  {engine} x {size}: p50 {p50} ms, p95 {result['p95_ms']} ms, RSS {rss['rss_mb']} MB"
        f" (ready after {result['ready_s']} s, idle after {result['settle_s']} s more)")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    count, budget = (5, 5.0) if args.quick else (20, 15.0)
    plan = [(engine, size) for engine in ENGINES for size in SIZES
            if args.full or not (engine == "celpy" and size == SIZES[-1])]
    if args.quick:
        plan = [(e, s) for e, s in plan if s != SIZES[1]]
    results = []
    with World() as world:
        obj = sized_promotion_run("my-promotion", "devops", approvers=APPROVERS)
        world.kube.add(obj)
        event_bytes = len(to_binary(enriched_event("approvalpending", obj=obj))[1])
        log(f"filter: enriched event {event_bytes} bytes of data, plan {plan}")
        for engine, size in sorted(plan, key=lambda p: p[1]):
            grow(world, size)
            results.append(measure(world, engine, size, obj, count=count, budget=budget,
                                   profile=args.profile))
    table(f"subscription-filter: reply latency, sequential, after warm-up (target with "
          f"cel-expr at 10,000: p50 <= {TARGET_P50_MS:.0f} ms, RSS <= {TARGET_RSS_MB:.0f} MB)",
          ["engine", "subscriptions", "n", "p50 ms", "p95 ms", "RSS MB", "peak RSS MB",
           "ready s", "met"],
          [[r["engine"], r["subscriptions"], r["requests"], r["p50_ms"], r["p95_ms"],
            r["rss_mb"], r["peak_rss_mb"], r["ready_s"],
            ("p50 " + ("yes" if r["met_p50"] else "NO") + ", RSS "
             + ("yes" if r["met_rss"] else "NO")) if "met_p50" in r else "-"]
           for r in results])
    return emit(NAME, {"event_data_bytes": event_bytes, "approvers": len(APPROVERS),
                       "rbac_check": True, "target_p50_ms": TARGET_P50_MS,
                       "target_rss_mb": TARGET_RSS_MB, "results": results})


def coldstart_subject(world: World) -> Any:
    """The seed's subscription for ``admin`` and an approval-pending event naming admin."""
    from bench.coldstart import Subject

    world.kube.add(seed_template())
    obj = sized_promotion_run("cold-filter", "devops", approvers=("admin",))
    world.kube.add(obj)

    def request() -> tuple[dict[str, str], bytes, dict[str, str]]:
        headers, body = to_binary(enriched_event("approvalpending", obj=obj))
        return dict(headers), body, {}

    return Subject(FUNCTION, lambda runtime: BenchProcess(
        FUNCTION, runtime=runtime, env={"KUBECONFIG": str(world.kubeconfig)}), request, ok=(200,))
