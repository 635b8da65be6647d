"""W3C trace context (shared/tracing.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dev.support.wire import event as plain_event
from shared import tracing
from shared.events import Event, new_event

ROOT = Path(__file__).resolve().parents[2]
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def event(**attributes: str) -> Event:
    return plain_event({"type": "t", "source": "s", "id": "1", **attributes}, {})


def test_the_extension_wins_over_the_header_and_bad_values_start_a_new_trace() -> None:
    header = "00-11111111111111111111111111111111-2222222222222222-01"
    found = tracing.incoming(event(traceparent=PARENT, tracestate="k=v"),
                             {"Traceparent": header})
    assert found == tracing.Trace("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7",
                                  "01", "k=v")
    assert tracing.incoming(event(), {"traceparent": header}).trace_id == "1" * 32
    for bad in ("nonsense", "01-" + PARENT[3:], "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"):
        assert tracing.parse(bad) is None, bad


def test_what_a_request_emits_continues_its_trace_with_a_span_of_its_own() -> None:
    parent = tracing.parse(PARENT)
    with tracing.request("test", parent, "handle") as trace:
        emitted = new_event(type="t", source="s", id="2", data={})
    assert trace.trace_id == parent.trace_id and trace.span_id != parent.span_id
    assert emitted["traceparent"] == f"00-{parent.trace_id}-{trace.span_id}-01"
    assert tracing.current() is None
    with tracing.request("test", None, "handle") as fresh:
        assert len(fresh.trace_id) == 32 and fresh.trace_id != parent.trace_id
    outside = new_event(type="t", source="s", id="3", data={})
    assert "traceparent" not in outside.attributes


def test_without_an_endpoint_the_sdk_is_never_imported() -> None:
    script = (
        "import sys\n"
        "from shared import tracing\n"
        "with tracing.request('x', None, 'y'):\n"
        "    with tracing.span('z'):\n"
        "        pass\n"
        "print('opentelemetry.sdk' in sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True, cwd=ROOT).stdout.strip()
    assert out == "False"
