"""kubeevent-enricher-sink: events per second end to end, as a ratio to a no-op function.

End to end: a binary-mode ApiServerSource event POSTed with ``?broker=``, the Event
read back and the involved object read from the fake API server, the enriched event POSTed to a
recording broker ingress, 202 back. The no-op baseline runs on the same runtime
and server and gets the same request. Rounds alternate no-op and enricher; the
ratio is the median of the per-round ratios. Target: >= 0.7x.
"""

from __future__ import annotations

import argparse
from typing import Any

from bench.common import (
    BenchProcess,
    baseline,
    emit,
    log,
    median,
    ms,
    percentile,
    profile_path,
    run_load,
    running,
    show_profile,
    table,
)
from bench.world import World, size_of, sized_promotion_run
from dev.support.factory import apiserver_event, kube_event
from dev.support.wire import to_binary

NAME = "enricher"
TARGET = 0.7
PARAMS = {"broker": "cloudevents-katanomi-dev"}


def request(world: World, obj: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    """An Event the API server has (the enricher reads it back) about ``obj``."""
    event = world.kube.add(kube_event("ApprovalPending", obj=obj))
    headers, body = to_binary(apiserver_event(event))
    return dict(headers), body


def measure(runtime: str, world: World, obj: dict[str, Any], *, rounds: int, count: int,
            concurrency: int, profile: bool) -> dict[str, Any]:
    broker = world.broker
    subject = BenchProcess("kubeevent-enricher-sink", runtime=runtime, env=world.enricher_env(),
                           profile=profile_path(f"enricher-{runtime}", profile))
    noop = baseline("noop", runtime)
    headers, body = request(world, obj)

    def job(i: int) -> tuple[dict[str, str], bytes]:
        return headers, body

    with running(subject, noop):
        subject.start(wait_ready=True)
        noop.start()
        for proc in (noop, subject):  # warm-up: connections, discovery, imports
            warm = run_load(proc.url, job, 50, concurrency=concurrency, params=PARAMS)
            if not warm.ok(202):
                raise RuntimeError(f"{proc.name} warm-up answered {dict(warm.statuses)}:\n"
                                   f"{proc.output()[-2000:]}")
        broker.clear()
        ratios, subject_rates, noop_rates, subject_lat, noop_lat = [], [], [], [], []
        cpu: dict[str, list[float]] = {"noop": [], "enricher": [], "harness_noop": [],
                                       "harness_enricher": []}
        for n in range(rounds):
            base = run_load(noop.url, job, count, concurrency=concurrency, params=PARAMS,
                            proc=noop)
            sub = run_load(subject.url, job, count, concurrency=concurrency, params=PARAMS,
                           proc=subject)
            if not (base.ok(202) and sub.ok(202)):
                raise RuntimeError(f"round {n}: no-op {dict(base.statuses)}, "
                                   f"enricher {dict(sub.statuses)}")
            delivered = len(broker.received)
            broker.clear()
            if delivered != count:
                raise RuntimeError(f"round {n}: broker got {delivered} of {count} events")
            ratios.append(sub.rate / base.rate)
            subject_rates.append(sub.rate)
            noop_rates.append(base.rate)
            cpu["noop"].append(base.function_cpu_ms)
            cpu["enricher"].append(sub.function_cpu_ms)
            cpu["harness_noop"].append(base.harness_cpu_ms)
            cpu["harness_enricher"].append(sub.harness_cpu_ms)
            subject_lat += sub.latencies
            noop_lat += base.latencies
            log(f"  {runtime} round {n + 1}/{rounds}: no-op {base.rate:.0f}/s, "
                f"enricher {sub.rate:.0f}/s, ratio {sub.rate / base.rate:.2f}")
        rss = subject.rss()
    for line in show_profile(subject.profile):
        print("   ", line)
    ratio = median(ratios)
    return {
        "runtime": runtime,
        "noop_eps": round(median(noop_rates), 1),
        "enricher_eps": round(median(subject_rates), 1),
        "ratio": round(ratio, 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "noop_p50_ms": ms(percentile(noop_lat, 50)),
        "enricher_p50_ms": ms(percentile(subject_lat, 50)),
        "enricher_p95_ms": ms(percentile(subject_lat, 95)),
        "enricher_rss_mb": rss["rss_mb"],
        # CPU ms per event: the function's process, and this process (load + fakes)
        "noop_cpu_ms": round(median(cpu["noop"]), 3),
        "enricher_cpu_ms": round(median(cpu["enricher"]), 3),
        "harness_cpu_ms_noop": round(median(cpu["harness_noop"]), 3),
        "harness_cpu_ms_enricher": round(median(cpu["harness_enricher"]), 3),
        "met": ratio >= TARGET,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    rounds, count = (3, 150) if args.quick else (5, 400)
    concurrency = 4
    results = []
    with World() as world:
        obj = world.kube.add(sized_promotion_run("my-promotion", "devops"))
        for runtime in ("ff", "func"):
            log(f"enricher on {runtime}: {rounds} rounds x {count} events, "
                f"{concurrency} concurrent, object {size_of(obj)} bytes")
            results.append(measure(runtime, world, obj, rounds=rounds, count=count,
                                   concurrency=concurrency, profile=args.profile))
    table(f"kubeevent-enricher-sink: events/s end to end vs a no-op (target >= {TARGET}x)",
          ["runtime", "no-op ev/s", "enricher ev/s", "ratio", "min..max", "p50 ms",
           "p95 ms", "CPU ms/ev fn (no-op)", "harness", "RSS MB", "met"],
          [[r["runtime"], r["noop_eps"], r["enricher_eps"], r["ratio"],
            f"{r['ratio_min']:.2f}..{r['ratio_max']:.2f}", r["enricher_p50_ms"],
            r["enricher_p95_ms"], f"{r['enricher_cpu_ms']:.2f} ({r['noop_cpu_ms']:.2f})",
            f"{r['harness_cpu_ms_enricher']:.2f} ({r['harness_cpu_ms_noop']:.2f})",
            r["enricher_rss_mb"], r["met"]] for r in results])
    return emit(NAME, {"target_ratio": TARGET, "rounds": rounds, "events_per_round": count,
                       "object_bytes": size_of(obj),
                       "concurrency": concurrency, "results": results})
