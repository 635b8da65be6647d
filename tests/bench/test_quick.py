"""Every benchmark runs, in its quick mode, so one cannot stop working unseen (the numbers
are not judged here: speed is read from `python -m bench`, never asserted in a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.__main__ import BENCHMARKS
from dev.cluster import netns

ROOT = Path(__file__).resolve().parents[2]
FUNC = ROOT / ".cluster" / "bin" / "func"


def lines(output: str) -> dict[str, dict[str, object]]:
    found = {}
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            found[str(record["bench"])] = record
    return found


@pytest.mark.timeout(900)  # the chain runs three whole stacks one after another
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_runs_in_quick_mode(name: str) -> None:
    if name in ("coldstart", "chain") and not FUNC.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{FUNC} is missing: dev/cluster/build.sh builds it")
        pytest.skip("needs .cluster/bin (dev/cluster/build.sh): not built")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop(netns.MARKER, None)  # the chain benchmark makes its own namespaces
    done = subprocess.run([sys.executable, "-m", "bench", name, "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    record = lines(done.stdout).get(name)
    assert record is not None, done.stdout[-3000:]
    if name == "coldstart":
        # Every function answered its real first request, beside func's own hello-world.
        started = {(r["runtime"], r["function"]): r["first_success_ms"]
                   for r in record["results"]}  # type: ignore[union-attr]
        assert {f for _, f in started} >= {"hello-world", "kubeevent-enricher-sink",
                                           "subscription-filter", "corpwechat-notifier"}
        assert {r for r, _ in started} == {"func", "ff"}
        assert all(isinstance(ms, float) and ms > 0 for ms in started.values()), started
    elif name == "chain":
        brokers = [r["broker"] for r in record["results"]]  # type: ignore[union-attr]
        if record["knative"] or os.environ.get("CI") == "true":
            assert brokers == ["knative", "jetstream", "dev"], record
            (through_knative, on_jetstream, _) = record["results"]  # type: ignore[misc]
            assert on_jetstream["broker_cpu_ms_per_event"] > 0
            zero = through_knative["from_zero"]
            assert zero["message_ms"] > 0 and set(zero["ready_ms"]) == {
                "kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
                "email-notifier"}
        else:
            assert brokers == ["dev"] and record["without_knative"], record
        assert all(r["p50_ms"] > 0 and r["sustained_eps"] > 0
                   for r in record["results"]), record  # type: ignore[union-attr]
    elif name == "notifier":
        assert record["fanout"] and record["overhead"], record
    else:
        assert record["results"], record
