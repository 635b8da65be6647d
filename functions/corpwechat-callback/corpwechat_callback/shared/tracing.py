"""W3C trace context across the chain, and spans when an OTLP endpoint is configured.

Each request continues the trace it came with: the CloudEvents distributed-tracing
extension (``traceparent``/``tracestate`` on the event; ``ce-traceparent`` in binary
mode), else the HTTP ``traceparent`` header Knative's broker sets, else a new trace.
The function works under a span of its own (the same trace id, a new span id): every
event it emits carries that as its ``traceparent``, and every log line of the request its
``trace_id``.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set the spans are real OpenTelemetry spans, exported
over OTLP/HTTP by the SDK (its other ``OTEL_*`` variables apply): the request's own span,
and the ones a function opens with ``span()`` (an object GET, a broker POST, a match, a
SubjectAccessReview, a render, a WeCom call). Unset, nothing of the SDK is imported and
``span()`` costs a function call.
"""

from __future__ import annotations

import contextvars
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .events import Event

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
_PARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True)
class Trace:
    trace_id: str
    span_id: str
    flags: str = "01"
    state: str = ""

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def child(self) -> Trace:
        return replace(self, span_id=secrets.token_hex(8))


def parse(traceparent: Any, tracestate: Any = "") -> Trace | None:
    """A valid version-00 ``traceparent`` (all-zero ids are invalid), else ``None``."""
    if not isinstance(traceparent, str):
        return None
    found = _PARENT.match(traceparent.strip().lower())
    if found is None or found[1] == _ZERO_TRACE or found[2] == _ZERO_SPAN:
        return None
    state = tracestate.strip()[:512] if isinstance(tracestate, str) else ""
    return Trace(found[1], found[2], found[3], state)


def incoming(event: Event, headers: Mapping[str, str]) -> Trace | None:
    """The trace ``event`` belongs to: its extension, else the HTTP header."""
    attributes = event.attributes
    found = parse(attributes.get(TRACEPARENT), attributes.get(TRACESTATE, ""))
    if found is None:
        lowered = {k.lower(): v for k, v in headers.items()}
        found = parse(lowered.get(TRACEPARENT), lowered.get(TRACESTATE, ""))
    return found


_current: contextvars.ContextVar[Trace | None] = contextvars.ContextVar(
    "kubeevent_trace", default=None)


def current() -> Trace | None:
    """The span of the request being handled (``None`` outside a request)."""
    return _current.get()


def stamp(event: Event) -> None:
    """Give an event this request emits the request's trace context."""
    trace = _current.get()
    if trace is None:
        return
    event[TRACEPARENT] = trace.traceparent
    if trace.state:
        event[TRACESTATE] = trace.state


# ----------------------------------------------------------------------- the SDK


_tracer: Any = None
_tried = False


def _sdk_tracer(service: str) -> Any:
    """The SDK's tracer when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else ``None``."""
    global _tracer, _tried
    if _tried:
        return _tracer
    _tried = True
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
            or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return None
    from opentelemetry import trace as otel
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    otel.set_tracer_provider(provider)
    _tracer = otel.get_tracer("kubeevent-enricher")
    return _tracer


@contextmanager
def request(service: str, parent: Trace | None, name: str) -> Iterator[Trace]:
    """The request's own span under ``parent`` (a new trace when ``None``): current for
    ``stamp``, ``span`` and the log lines while the request is handled."""
    tracer = _sdk_tracer(service)
    if tracer is None:
        trace = parent.child() if parent is not None else Trace(secrets.token_hex(16),
                                                                secrets.token_hex(8))
        token = _current.set(trace)
        try:
            yield trace
        finally:
            _current.reset(token)
        return
    from opentelemetry import trace as otel
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    context = None
    if parent is not None:
        remote = SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                             trace_flags=TraceFlags(int(parent.flags, 16)))
        context = otel.set_span_in_context(NonRecordingSpan(remote))
    with tracer.start_as_current_span(name, context=context, kind=SpanKind.SERVER) as span:
        made = span.get_span_context()
        trace = Trace(f"{made.trace_id:032x}", f"{made.span_id:016x}",
                      f"{int(made.trace_flags):02x}", parent.state if parent else "")
        token = _current.set(trace)
        try:
            yield trace
        finally:
            _current.reset(token)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A span inside the request's (exported only with the SDK configured)."""
    if _tracer is None:
        yield
        return
    with _tracer.start_as_current_span(name) as made:
        for key, value in attributes.items():
            if value is not None:
                made.set_attribute(key, value if isinstance(value, (str, int, float, bool))
                                   else str(value))
        yield
