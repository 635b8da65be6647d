"""The HTTP boundary: the one place an outcome or an error becomes a status.

Both runtime adapters (``new()`` for func's func-python middleware, an ASGI instance,
and functions-framework's ``handle(request)``) hand the raw request to ``dispatch``;
nothing else in a function touches HTTP.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

from . import logs, metrics, tracing
from .errors import FunctionError, PayloadTooLarge, TemporaryError, one_line, status_for
from .events import MAX_BODY_BYTES, Event, Outcome, binary_http, parse_event


class Function(Protocol):
    """A function's pure core as the boundary sees it (``name``: its function name, the
    ``function`` label of its metrics)."""

    name: str

    def handle(self, event: Event, params: Mapping[str, str]) -> Outcome: ...

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


class HttpFunction(Protocol):
    """A function that answers plain HTTP (a caller outside the cluster, e.g. WeCom's
    callbacks) instead of CloudEvents: every request but ``/metrics`` and the health paths
    goes to ``handle_http``."""

    name: str

    def handle_http(self, request: Request) -> Response: ...

    def ready(self) -> bool: ...


def _is_health(path: str) -> bool:
    return path.rstrip("/").endswith(("/health/liveness", "/health/readiness"))


def dispatch(function: Function | HttpFunction, request: Request) -> Response:
    http = getattr(function, "handle_http", None)
    if request.method in ("GET", "HEAD") and request.path.rstrip("/") == "/metrics":
        body, content_type = metrics.exposition()
        return Response(200, body, {"Content-Type": content_type})
    if request.method in ("GET", "HEAD") and (http is None or _is_health(request.path)):
        return _health(function, request.path)  # type: ignore[arg-type]
    started = time.perf_counter()
    response = _dispatch_http(http, request) if http is not None \
        else _dispatch_event(function, request)  # type: ignore[arg-type]
    name = getattr(function, "name", "") or "function"
    if response.status != 405:
        metrics.REQUESTS.labels(name, str(response.status)).inc()
        metrics.DURATION.labels(name).observe(time.perf_counter() - started)
    return response


def _dispatch_event(function: Function, request: Request) -> Response:
    if request.method != "POST":
        reason = f"method {request.method} not allowed; POST a CloudEvent"
        return _text(405, reason, {"Allow": "POST"})
    event: Event | None = None
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


def _dispatch_http(handle: Callable[[Request], Response], request: Request) -> Response:
    """A plain-HTTP function's request: the error type decides the status, as for events."""
    try:
        return handle(request)
    except FunctionError as exc:
        status = status_for(exc)
        logs.log("ERROR" if status >= 500 else "WARNING",
                 "rejected" if status < 500 else "failed", status=status, reason=exc.reason,
                 method=request.method)
        return _text(status, exc.reason)
    except Exception as exc:  # a bug: 500, details in the log only
        logs.error("internal error", status=500, error=f"{type(exc).__name__}: {exc}",
                   exception=traceback.format_exc())
        return _text(500, "internal error")


def read_body(request: Any, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body of a Flask/werkzeug request, refused (413) past ``limit`` before it is
    read: a declared length over it is refused at once, and a chunked body is read only to
    one byte past it (a 300 MB body is never held)."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body of {length} bytes is over the {limit}-byte limit")
    body = request.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"body is over the {limit}-byte limit")
    return bytes(body)


def _serve(function: Function, request: Any) -> Response:
    """What the functions-framework adapter does with a Flask/werkzeug request."""
    try:
        body = read_body(request)
    except PayloadTooLarge as exc:
        logs.warning("rejected", status=exc.status, reason=exc.reason)
        return _text(exc.status, exc.reason)
    return dispatch(
        function,
        Request(request.method, request.path, dict(request.headers), body, dict(request.args)),
    )


class AsgiFunction:
    """What ``new()`` returns for func (since 1.18: func's scaffolding serves the function's
    ``new()`` with the func-python middleware on port 8080). func-python calls
    ``start(cfg)`` with the environment at start (the configuration is read then, once),
    ``alive()``/``ready()`` for the health paths, and ``handle(scope, receive, send)`` for
    every other request, whose raw body it hands over (``invoke: http`` in func.yaml): the
    CloudEvent is read here, as under functions-framework, so a signature covers the bytes
    that were sent. The core is blocking (the kubernetes client, requests), so it runs on
    a worker thread, not on the event loop."""

    def __init__(self, build: Callable[[Mapping[str, str]], Function]) -> None:
        self.build = build
        self.function: Function | None = None

    def start(self, cfg: Mapping[str, str]) -> None:
        """Build the core from ``cfg``. A configuration it cannot run with ends the process
        with the reason (naming the variable): func-python's server would otherwise go on
        without its lifespan and answer "not ready" forever, saying nothing."""
        if self.function is not None:
            return
        try:
            self.function = self.build(dict(cfg))
        except Exception as exc:
            reason = one_line(logs.redact_text(f"{type(exc).__name__}: {exc}"))
            logs.error("cannot start", error=reason)
            sys.stderr.write(f"cannot start: {reason}\n")
            sys.stderr.flush()
            os._exit(1)

    def stop(self) -> None:
        stop = getattr(self.function, "stop", None)
        if callable(stop):
            stop()

    def alive(self) -> bool:
        return True

    def ready(self) -> tuple[bool, str]:
        ready = self.function is not None and self.function.ready()
        return ready, "OK" if ready else "not ready"

    async def handle(self, scope: Mapping[str, Any], receive: Callable[[], Awaitable[Any]],
                     send: Callable[[Any], Awaitable[None]]) -> None:
        if self.function is None:  # a server that skipped the lifespan start
            self.start(os.environ)
        headers = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        body, too_large, more = b"", False, True
        while more and not too_large:  # past the limit: answer now, the rest is never read
            message = await receive()
            body += message.get("body", b"")
            too_large = len(body) > MAX_BODY_BYTES
            more = bool(message.get("more_body"))
        if too_large:
            logs.warning("rejected", status=PayloadTooLarge.status, reason="body too large")
            response = _text(PayloadTooLarge.status,
                             f"body is over the {MAX_BODY_BYTES}-byte limit",
                             {"Connection": "close"})
        else:
            query = scope.get("query_string") or b""
            request = Request(str(scope.get("method") or "GET"), str(scope.get("path") or "/"),
                              headers, body, dict(parse_qsl(query.decode("latin-1"))))
            assert self.function is not None
            response = await asyncio.to_thread(dispatch, self.function, request)
        await send({"type": "http.response.start", "status": response.status,
                    "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                for k, v in response.headers.items()]})
        await send({"type": "http.response.body", "body": response.body})


def functions_framework_target(function: Function) -> Any:
    """``handle(request)`` for ``functions-framework --target handle`` (main.py)."""

    def handle(request: Any) -> Any:
        response = _serve(function, request)
        if response.status == PayloadTooLarge.status:
            # functions-framework reads the whole request before it answers unless the
            # answer is streamed: stream the refusal, so the rest is never read, and close
            # the connection, which the unread rest makes unusable (gunicorn takes this
            # hop-by-hop header).
            import flask

            return flask.Response(iter([response.body]), response.status,
                                  {**response.headers, "Connection": "close"})
        return response.as_tuple()

    return handle
