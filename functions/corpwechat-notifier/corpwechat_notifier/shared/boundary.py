"""The HTTP boundary: the one place an outcome or an error becomes a status.

Both runtime adapters (parliament's ``main(context)`` and functions-framework's
``handle(request)``) hand the raw request to ``dispatch``; nothing else in a
function touches HTTP.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloudevents.http import CloudEvent

from . import logs, metrics, tracing
from .errors import FunctionError, PayloadTooLarge, TemporaryError, one_line, status_for
from .events import MAX_BODY_BYTES, Outcome, binary_http, parse_event


class Function(Protocol):
    """A function's pure core as the boundary sees it (``name``: its function name, the
    ``function`` label of its metrics)."""

    name: str

    def handle(self, event: CloudEvent, params: Mapping[str, str]) -> Outcome: ...

    def ready(self) -> bool: ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def as_tuple(self) -> tuple[bytes, int, dict[str, str]]:
        return self.body, self.status, self.headers


def _text(status: int, reason: str, extra: Mapping[str, str] | None = None) -> Response:
    """A plain-text answer. Whatever a dependency put into the reason (WeCom echoes a
    refused corp secret in its errmsg) is redacted: Knative copies a failed delivery's body
    into the dead-lettered event."""
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    headers.update(extra or {})
    reason = one_line(logs.redact_text(reason)) if reason else ""
    body = (reason + "\n").encode("utf-8", "replace") if reason else b""
    return Response(status, body, headers)


def _health(function: Function, path: str) -> Response:
    if path.rstrip("/").endswith("/health/liveness"):
        return _text(200, "OK")
    ready = function.ready()
    return _text(200 if ready else 503, "OK" if ready else "not ready")


def dispatch(function: Function, request: Request) -> Response:
    if request.method in ("GET", "HEAD"):
        if request.path.rstrip("/") == "/metrics":
            body, content_type = metrics.exposition()
            return Response(200, body, {"Content-Type": content_type})
        return _health(function, request.path)
    started = time.perf_counter()
    response = _dispatch_event(function, request)
    name = getattr(function, "name", "") or "function"
    if response.status != 405:
        metrics.REQUESTS.labels(name, str(response.status)).inc()
        metrics.DURATION.labels(name).observe(time.perf_counter() - started)
    return response


def _dispatch_event(function: Function, request: Request) -> Response:
    if request.method != "POST":
        reason = f"method {request.method} not allowed; POST a CloudEvent"
        return _text(405, reason, {"Allow": "POST"})
    event: CloudEvent | None = None
    context: dict[str, Any] = {}
    try:
        event = parse_event(request.headers, request.body)
        context = {"id": event["id"], "type": event["type"]}
        if not function.ready():
            raise TemporaryError("not ready yet: still loading its initial state")
        name = getattr(function, "name", "") or "function"
        with tracing.request(name, tracing.incoming(event, request.headers),
                             f"{name} {event['type']}") as trace:
            context["trace_id"] = trace.trace_id  # for the lines logged after it
            outcome = function.handle(event, request.params)
    except FunctionError as exc:
        status = status_for(exc)
        severity = "ERROR" if status >= 500 else "WARNING"
        logs.log(severity, "rejected" if status < 500 else "failed", status=status,
                 reason=exc.reason, **context)
        extra: dict[str, str] = {}
        if isinstance(exc, TemporaryError) and exc.retry_after:
            extra["Retry-After"] = str(exc.retry_after)
        return _text(status, exc.reason, extra)
    except Exception as exc:  # a bug: 500, details in the log only
        logs.error("internal error", status=500, error=f"{type(exc).__name__}: {exc}",
                   exception=traceback.format_exc(), **context)
        return _text(500, "internal error")
    logs.info("handled", status=outcome.status, reason=outcome.reason or None,
              reply_type=outcome.event["type"] if outcome.event is not None else None,
              **context, **outcome.fields)
    if outcome.event is not None:
        headers, body = binary_http(outcome.event)
        return Response(200, body, headers)
    return _text(outcome.status, "" if outcome.status == 202 else outcome.reason)


def read_body(request: Any, limit: int = MAX_BODY_BYTES, *, already_read: bool = False) -> bytes:
    """The body of a Flask/werkzeug request, refused (413) past ``limit`` before it is
    read: a declared length over it is refused at once, and a chunked body is read only to
    one byte past it (a 300 MB body is never held). ``already_read``: the server has read
    it (parliament does, within waitress's limit): take that."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes is over the {limit}-byte limit")
    body = request.get_data() if already_read else request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"body is over the {limit}-byte limit")
    return bytes(body)


def _serve(function: Function, request: Any, *, already_read: bool = False) -> Response:
    """What both adapters do with a Flask/werkzeug request."""
    try:
        body = read_body(request, already_read=already_read)
    except PayloadTooLarge as exc:
        logs.warning("rejected", status=exc.status, reason=exc.reason)
        return _text(exc.status, exc.reason)
    return dispatch(
        function,
        Request(request.method, request.path, dict(request.headers), body, dict(request.args)),
    )


def _limit_waitress(limit: int = 2 * MAX_BODY_BYTES) -> None:
    """``python -m parliament .`` serves with waitress and its defaults, which buffer a body
    of up to 1 GB before the function sees it. Its limit is set here, before the server is
    made, so waitress itself answers 413 (and stops reading) past twice ours; in between,
    the function's own one-line 413 answers."""
    try:
        from waitress.adjustments import Adjustments
    except ImportError:  # another server: the bounded read below still holds
        return
    Adjustments.max_request_body_size = limit


def _serve_metrics_under_parliament() -> None:
    """parliament routes only ``/`` and its health paths to the function, so ``GET
    /metrics`` would be its 404. ``parliament.server.create`` makes its Flask app after
    importing func.py, looking ``Flask`` up in its module then: the app it makes here also
    serves ``/metrics``."""
    try:
        from parliament import server
    except ImportError:  # another server: /metrics reaches dispatch
        return
    if getattr(server.Flask, "serves_metrics", False):
        return
    base = server.Flask

    class WithMetrics(base):  # type: ignore[misc, valid-type]
        serves_metrics = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)

            def exposition() -> tuple[bytes, int, dict[str, str]]:
                body, content_type = metrics.exposition()
                return body, 200, {"Content-Type": content_type}

            self.add_url_rule("/metrics", "metrics", exposition, methods=["GET"])

    server.Flask = WithMetrics


def parliament_main(function: Function) -> Any:
    """``main(context)`` for ``python -m parliament .`` (func.py)."""
    _limit_waitress()
    _serve_metrics_under_parliament()

    def main(context: Any) -> tuple[bytes, int, dict[str, str]]:
        return _serve(function, context.request, already_read=True).as_tuple()

    return main


def functions_framework_target(function: Function) -> Any:
    """``handle(request)`` for ``functions-framework --target handle`` (main.py)."""

    def handle(request: Any) -> Any:
        response = _serve(function, request)
        if response.status == PayloadTooLarge.status:
            # functions-framework reads the whole request before it answers unless the
            # answer is streamed: stream the refusal, so the rest is never read, and close
            # the connection, which the unread rest makes unusable (gunicorn takes this
            # hop-by-hop header; waitress, under parliament, would refuse it).
            import flask

            return flask.Response(iter([response.body]), response.status,
                                  {**response.headers, "Connection": "close"})
        return response.as_tuple()

    return handle
