"""Cold start: process start to first successful response, vs a hello-world function.

Each start spawns the function's process the way the tests do (functions-framework
under gunicorn, or func's service: ``new()`` under func-python), polls ``/health/liveness``
every 5 ms until it answers ("listening": imports and ``build()`` done), then POSTs
its real first request until one succeeds ("first success"): for the enricher that includes API
discovery, the object GET and the broker POST; for the filter, loading the
subscriptions (readiness); for the notifier, a delivered message. The hello-world
baseline gets a CloudEvent POST too, and so does a second baseline, hello-world
plus ``import kubernetes`` (the floor of any function on the official client).
Starts alternate baseline and subjects; the ratio is median over median. Target:
<= 1.5x a hello-world function on func-python: the one ``func create -l python -t
cloudevents`` (Knative's func CLI, dev/cluster/build.sh) makes when the benchmark starts,
served by func-python's CloudEvent middleware as func's scaffolding serves it.

``--profile`` adds where the start time goes: ``python -X importtime`` of each
function's entry module, summed per top-level package.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from bench.common import (
    BenchProcess,
    baseline,
    emit,
    log,
    median,
    ms,
    table,
)
from bench.world import World, sized_promotion_run
from dev.support.factory import apiserver_event, kube_event
from dev.support.wire import to_binary

NAME = "coldstart"
TARGET = 1.5
RUNTIMES = ("func", "ff")


@dataclass
class Subject:
    """One function to cold-start, and the request that proves it is serving."""

    name: str
    make: Callable[[str], BenchProcess]  # runtime -> process (not started)
    request: Callable[[], tuple[dict[str, str], bytes, dict[str, str]]]
    ok: tuple[int, ...] = (200, 202)
    check: Callable[[], bool] = field(default=lambda: True)  # side effect arrived?
    reset: Callable[[], None] = field(default=lambda: None)
    target: bool = True  # False for baselines: no target applies


@dataclass
class Start:
    listening: float  # seconds to the first answer to GET /health/liveness
    first_success: float  # seconds to the first successful answer to the real request
    rss_mb: float


def cold_start(subject: Subject, runtime: str, timeout: float = 60.0) -> Start:
    proc = subject.make(runtime)
    subject.reset()
    headers, body, params = subject.request()
    client = requests.Session()
    listening = None
    try:
        started = proc.spawn()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if proc.proc is not None and proc.proc.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{proc.output()[-2000:]}")
            try:
                if listening is None:
                    client.get(proc.url + "/health/liveness", timeout=(0.5, 20))
                    listening = time.perf_counter() - started
                response = client.post(proc.url, data=body, headers=headers, params=params,
                                       timeout=(0.5, 20))
            except requests.ConnectionError:
                time.sleep(0.005)
                continue
            now = time.perf_counter()
            if response.status_code in subject.ok and subject.check():
                return Start(listening or 0.0, now - started, proc.rss()["rss_mb"])
            time.sleep(0.005)
        raise RuntimeError(f"{proc.name} ({runtime}) gave no successful response in "
                           f"{timeout}s:\n{proc.output()[-2000:]}")
    finally:
        client.close()
        proc.stop()


def hello_subject() -> Subject:
    event = apiserver_event(kube_event("ApprovalPending"))
    headers, body = to_binary(event)
    return Subject("hello-world", lambda runtime: baseline("hello", runtime),
                   lambda: (dict(headers), body, {}), ok=(200,))


def kubernetes_floor_subject() -> Subject:
    """hello-world plus ``import kubernetes``: what any function on that client starts with."""
    event = apiserver_event(kube_event("ApprovalPending"))
    headers, body = to_binary(event)
    return Subject("hello + import kubernetes",
                   lambda runtime: baseline("hello_kubernetes", runtime),
                   lambda: (dict(headers), body, {}), ok=(200,), target=False)


def enricher_subject(world: World) -> Subject:
    obj = world.kube.add(sized_promotion_run("cold-promotion", "devops"))

    def request() -> tuple[dict[str, str], bytes, dict[str, str]]:
        event = world.kube.add(kube_event("ApprovalPending", obj=obj))
        headers, body = to_binary(apiserver_event(event))
        return dict(headers), body, {"broker": "cloudevents-katanomi-dev"}

    return Subject(
        "kubeevent-enricher-sink",
        lambda runtime: BenchProcess("kubeevent-enricher-sink", runtime=runtime,
                                     env=world.enricher_env()),
        request, ok=(202,), check=lambda: bool(world.broker.received),
        reset=world.broker.clear)


def other_subjects(world: World) -> list[Subject]:
    """The filter's and the notifier's, from their benchmark modules when they are ready."""
    found = []
    for module_name in ("bench.filter", "bench.notifier"):
        try:
            module = importlib.import_module(module_name)
            factory = getattr(module, "coldstart_subject", None)
            if factory is not None:
                found.append(factory(world))
        except Exception as exc:  # a function still being written: leave it out, say so
            log(f"  {module_name}: no cold-start subject ({type(exc).__name__}: {exc})")
    return found


def import_profile(directory: str, module: str = "main", top: int = 8) -> list[tuple[str, float]]:
    """Milliseconds of import time per top-level package for ``import <module>``."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                            cwd=directory, capture_output=True, text=True, timeout=60)
    per_package: dict[str, float] = defaultdict(float)
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            self_us = int(parts[0].split(":")[1])
        except ValueError:
            continue
        name = parts[2].strip().split(".")[0]
        per_package[name] += self_us / 1000.0
    ranked = sorted(per_package.items(), key=lambda kv: -kv[1])
    total = sum(per_package.values())
    return [("(total)", round(total, 1))] + [(k, round(v, 1)) for k, v in ranked[:top]]


def run(args: argparse.Namespace) -> dict[str, Any]:
    repeats = 2 if args.quick else 5
    results: list[dict[str, Any]] = []
    profiles: dict[str, list[tuple[str, float]]] = {}
    with World() as world:
        hello = hello_subject()
        subjects = [kubernetes_floor_subject(), enricher_subject(world), *other_subjects(world)]
        for runtime in RUNTIMES:
            base: list[Start] = []
            starts: dict[str, list[Start]] = {s.name: [] for s in subjects}
            for n in range(repeats):
                base.append(cold_start(hello, runtime))
                for subject in subjects:
                    starts[subject.name].append(cold_start(subject, runtime))
                log(f"  {runtime} start {n + 1}/{repeats}: hello "
                    f"{ms(base[-1].first_success):.0f} ms; " + ", ".join(
                        f"{k} {ms(v[-1].first_success):.0f} ms" for k, v in starts.items()))
            hello_ms = ms(median([s.first_success for s in base]))
            results.append({"runtime": runtime, "function": "hello-world",
                            "listening_ms": ms(median([s.listening for s in base])),
                            "first_success_ms": hello_ms, "ratio": 1.0,
                            "rss_mb": median([s.rss_mb for s in base]), "met": None})
            targets = {s.name: s.target for s in subjects}
            for name, values in starts.items():
                success = ms(median([s.first_success for s in values]))
                ratio = round(success / hello_ms, 2)
                results.append({
                    "runtime": runtime, "function": name,
                    "listening_ms": ms(median([s.listening for s in values])),
                    "first_success_ms": success, "ratio": ratio,
                    "rss_mb": median([s.rss_mb for s in values]),
                    "met": ratio <= TARGET if runtime == "func" and targets[name]
                    else None,
                })
        if args.profile:
            for subject in [hello, *subjects]:
                proc = subject.make("ff")
                profiles[subject.name] = import_profile(str(proc.dir))
    table(f"Cold start: process start to first successful response (median of {repeats}; "
          f"target <= {TARGET}x a hello-world on func-python)",
          ["runtime", "function", "listening ms", "first success ms", "x hello", "RSS MB",
           "met"],
          [[r["runtime"], r["function"], r["listening_ms"], r["first_success_ms"],
            r["ratio"], r["rss_mb"], "-" if r["met"] is None else r["met"]] for r in results])
    for name, rows in profiles.items():
        table(f"import time of {name}'s main.py, ms per top-level package (-X importtime)",
              ["package", "ms"], rows)
    return emit(NAME, {"target_ratio": TARGET, "repeats": repeats, "results": results,
                       "import_ms": profiles})
