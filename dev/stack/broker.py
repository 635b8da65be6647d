"""A development broker that routes CloudEvents by the Trigger objects of ``manifests/``.

In a cluster, Knative's Broker does this, and the real-cluster suite (tests/cluster) and
``make dev DEV_ARGS="--kube cluster"`` run Knative's own (dev/cluster/eventing.py).
Without Go or root, ``make dev`` and the fast suites use ``DevBroker`` instead: an
imitation kept to what the manifests use, which refuses what they do not rather than
imitate it. It reads the same Trigger (and Broker) objects and behaves like Knative's
default broker (MT channel-based, on InMemoryChannel) as far as they go:

* ingress ``POST /<namespace>/<broker>`` takes a binary- or structured-mode CloudEvent
  (400 for a malformed one or a malformed path, 404 for an unknown broker, 400 when its
  ``knativebrokerttl`` is used up; it sets ``knativearrivaltime`` and the TTL, 255 at
  first). **Synchronous by default**: it answers only when every matching Trigger's
  delivery is over (retries, the reply's own trip through the broker, dead letters):
  202 when each succeeded or was dead-lettered, 500 otherwise. ``synchronous=False``
  answers 202 at once and delivers in the background (as a durable broker class does);
* each Trigger of that broker whose filters match gets the event in binary mode, as
  Knative's broker filter sends it: without ``knativebrokerttl``, with ``Kn-Namespace``
  (the Trigger's) and ``Prefer: reply``; ``knativearrivaltime`` has nanoseconds;
* ``filters`` of the ``exact`` and ``prefix`` dialects (the manifests' own) mean what
  they mean to Knative: several attributes in one map are ANDed, an empty value makes an
  entry constrain nothing, as does ``{}``; every other dialect (suffix, all, any, not,
  cesql) and the legacy ``filter.attributes`` are refused when loading, naming Knative's
  broker as where they run;
* a 2xx reply that carries a CloudEvent re-enters the broker (an empty 2xx is success);
  a 2xx with a body that is not a CloudEvent is a 502 and is retried, and then
  dead-lettered without error extensions; a malformed CloudEvent reply is passed to the
  ingress once, which refuses it, and the original is dead-lettered with
  ``knativeerrorcode`` 400 and the ingress as ``knativeerrordest`` (no retry); so is a
  reply the broker refuses;
* 5xx, 404, 408, 409, 429 and network errors are retried by the Trigger's DeliverySpec
  (``retry``; ``backoffPolicy: exponential`` and ``backoffDelay`` both set, else retries
  come at once; waits d, 2d, 4d …; ``linear``, which no manifest uses, is refused when
  loading), other statuses are not; a Broker's
  spec is the fallback, and a Broker without one gets Knative's defaults (retry 10,
  exponential, PT0.2S); then the event goes to the dead-letter sink with
  ``knativeerrordest``, ``knativeerrorcode`` (an integer; 500 for a network error) and
  ``knativeerrordata`` (the base64 of the body, or of "dispatch error: …"; always set,
  possibly empty). A failure body over 768 bytes crashes Knative's InMemoryChannel
  dispatcher (v0.49.2: its base64 overruns a 1,024-byte buffer): here the delivery is
  lost and the ingress answers 500, as there, with the reason said;
* a dead-letter sink without a local URL is kept by the broker itself
  (``dead_letters``), served at ``POST /dead-letter/<namespace>/<name>``.

``backoff_scale`` multiplies every backoff delay (tests use a small one).
``wait_idle()`` waits until no event is in flight; ``deliveries`` records every
delivery with its attempts and outcome.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urljoin

import requests
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException
from cloudevents.http import CloudEvent, from_http

from dev.support.loopback import LoopbackServer

RETRYABLE = frozenset({404, 408, 409, 429})
ERROR_DATA_LIMIT = 1024
DEAD_LETTER_PATH = "dead-letter"
_ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
_DURATION = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)

Attributes = Mapping[str, Any]
Predicate = Callable[[Attributes], bool]


class TriggerError(ValueError):
    """A Trigger or Broker object the dev broker cannot use (names the object)."""


# ----------------------------------------------------------------------------- model


def parse_duration(text: str) -> float:
    """An ISO 8601 duration (``PT0.5S``, ``PT1M``, ``P1DT2H``) in seconds."""
    value = str(text).strip()
    match = _DURATION.match(value)
    if not match or value == "P" or value.endswith("T"):
        raise TriggerError(f"not an ISO 8601 duration: {text!r}")
    parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
    return (parts.get("days", 0.0) * 86400 + parts.get("hours", 0.0) * 3600
            + parts.get("minutes", 0.0) * 60 + parts.get("seconds", 0.0))


@dataclass(frozen=True)
class Destination:
    """A Knative Destination: a ``ref`` (resolved through the subscriber map) or a ``uri``."""

    api_version: str = ""
    kind: str = ""
    name: str = ""
    namespace: str = ""
    uri: str = ""

    @classmethod
    def parse(cls, spec: Any, default_namespace: str, where: str) -> Destination:
        if not isinstance(spec, dict) or not (spec.get("ref") or spec.get("uri")):
            raise TriggerError(f"{where}: needs ref or uri")
        ref = spec.get("ref") or {}
        if ref and not (ref.get("name") and ref.get("kind") and ref.get("apiVersion")):
            raise TriggerError(f"{where}: ref needs apiVersion, kind and name")
        return cls(str(ref.get("apiVersion", "")), str(ref.get("kind", "")),
                   str(ref.get("name", "")),
                   str(ref.get("namespace") or default_namespace) if ref else "",
                   str(spec.get("uri") or ""))

    @property
    def key(self) -> str:
        """``namespace/name`` of the ref (how the subscriber map names it)."""
        return f"{self.namespace}/{self.name}" if self.name else ""

    def describe(self) -> str:
        if self.name:
            return f"{self.kind} {self.key}" + (f" {self.uri}" if self.uri else "")
        return self.uri


@dataclass(frozen=True)
class DeliverySpec:
    retry: int = 0
    backoff_policy: str | None = None  # None: no backoff, retries come at once
    backoff_delay: float = 0.0
    timeout: float | None = None
    dead_letter_sink: Destination | None = None

    @classmethod
    def parse(cls, spec: Any, namespace: str, where: str) -> DeliverySpec | None:
        if spec is None:
            return None
        if not isinstance(spec, dict):
            raise TriggerError(f"{where}: delivery must be an object")
        retry = spec.get("retry", 0)
        if not isinstance(retry, int) or isinstance(retry, bool) or retry < 0:
            raise TriggerError(f"{where}: delivery.retry must be a non-negative integer")
        policy = spec.get("backoffPolicy")
        if policy == "linear":
            raise _not_here(where, "delivery.backoffPolicy linear")
        if policy not in (None, "exponential"):
            raise TriggerError(f"{where}: delivery.backoffPolicy must be exponential")
        delay = parse_duration(spec["backoffDelay"]) if spec.get("backoffDelay") else 0.0
        timeout = parse_duration(spec["timeout"]) if spec.get("timeout") else None
        sink = spec.get("deadLetterSink")
        return cls(retry, policy, delay, timeout,
                   Destination.parse(sink, namespace, f"{where}: delivery.deadLetterSink")
                   if sink is not None else None)

    def backoff(self, retry_number: int) -> float:
        """Seconds before retry ``retry_number`` (1 = the first retry), as Knative waits:
        nothing unless both the policy and the delay are set; exponential d, 2d, 4d …."""
        if self.backoff_policy is None or not self.backoff_delay:
            return 0.0
        return self.backoff_delay * (2 ** (retry_number - 1))


# A Broker without ``spec.delivery`` gets these (Knative's config-br-defaults).
BROKER_DEFAULT_DELIVERY = DeliverySpec(retry=10, backoff_policy="exponential",
                                       backoff_delay=0.2)
# Core attributes a lookup always finds (empty when the event has none), as Knative's do.
OPTIONAL_CORE = frozenset({"subject", "dataschema", "datacontenttype", "time"})
MAX_TTL = 255
TTL, ARRIVAL = "knativebrokerttl", "knativearrivaltime"
# Knative v0.49.2's dispatcher: a failed delivery's body longer than this crashes it.
KNATIVE_ERROR_BODY_LIMIT = 768

# A filter says pass, fail, or nothing (``None``: it constrains nothing, as Knative's
# NoFilter: an entry with an empty value, an empty ``all``/``any``, ``{}``).
Verdict = bool | None
Filter = Callable[[Attributes], Verdict]


def _go_text(value: Any) -> str:
    """``fmt.Sprintf("%v", value)`` for the JSON values an attribute can hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _lookup(attributes: Attributes, name: str) -> str | None:
    if name in attributes and attributes[name] is not None:
        return _go_text(attributes[name])
    return "" if name in OPTIONAL_CORE else None


def _attribute_map(value: Any, dialect: str, where: str) -> dict[str, str] | None:
    """The attributes of an exact/prefix/suffix entry; ``None`` when Knative would skip
    the entry (an empty map, or any empty value: it fails to build)."""
    if not isinstance(value, dict):
        raise TriggerError(f"{where}: {dialect} needs a map of attributes")
    for name in value:
        if not _ATTRIBUTE_NAME.match(str(name)):
            raise TriggerError(f"{where}: invalid attribute name {name!r}")
    if not value or any(v is None or _go_text(v) == "" for v in value.values()):
        return None
    return {str(k): _go_text(v) for k, v in value.items()}


# What the manifests' Triggers use. Every other dialect is Knative's broker's to evaluate
# (the real-cluster suite runs it): the dev broker refuses a Trigger that needs one rather
# than imitate it.
DIALECTS = ("exact", "prefix")


def _not_here(where: str, what: str) -> TriggerError:
    return TriggerError(f"{where}: the dev broker does only what the manifests use "
                        f"({', '.join(DIALECTS)} in spec.filters, exponential backoff); "
                        f"{what} is left to Knative's broker (tests/cluster, make dev "
                        f"DEV_ARGS=\"--kube cluster\")")


def compile_filter(spec: Any, where: str = "filter") -> Filter:
    """One expression of ``spec.filters``: an ``exact`` or a ``prefix`` map."""
    if not isinstance(spec, dict) or len(spec) > 1:
        raise TriggerError(f"{where}: each filter needs one dialect, got {spec!r}")
    if not spec:
        return lambda _: None
    (dialect, value), = spec.items()
    if dialect not in DIALECTS:
        raise _not_here(where, f"the {dialect!r} dialect")
    wanted = _attribute_map(value, dialect, where)
    if wanted is None:
        return lambda _: None

    def attribute_match(attributes: Attributes) -> Verdict:
        for name, expected in wanted.items():
            actual = _lookup(attributes, name)
            if actual is None:
                return False
            if dialect == "exact" and actual != expected:
                return False
            if dialect == "prefix" and not actual.startswith(expected):
                return False
        return True

    return attribute_match


@dataclass(frozen=True)
class Trigger:
    name: str
    namespace: str
    broker: str
    subscriber: Destination
    delivery: DeliverySpec | None
    predicate: Predicate = field(compare=False, repr=False)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Trigger:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        where = f"Trigger {namespace}/{meta.get('name')}"
        spec = obj.get("spec") or {}
        if not spec.get("broker"):
            raise TriggerError(f"{where}: spec.broker is required")
        if (spec.get("filter") or {}).get("attributes") is not None:
            raise _not_here(where, "the legacy filter.attributes")
        filters = spec.get("filters")
        if filters:
            if not isinstance(filters, list):
                raise TriggerError(f"{where}: spec.filters must be a list")
            compiled = [compile_filter(f, f"{where}: filters[{i}]") for i, f in enumerate(filters)]

            def predicate(attributes: Attributes) -> bool:
                return all(p(attributes) is not False for p in compiled)
        else:
            def predicate(attributes: Attributes) -> bool:
                return True
        return cls(str(meta.get("name")), namespace, str(spec["broker"]),
                   Destination.parse(spec.get("subscriber"), namespace, f"{where}: subscriber"),
                   DeliverySpec.parse(spec.get("delivery"), namespace, where), predicate)

    def matches(self, event: CloudEvent) -> bool:
        return self.predicate(event.get_attributes())


def is_kind(obj: Any, api_group: str, kind: str) -> bool:
    return (isinstance(obj, dict) and obj.get("kind") == kind
            and str(obj.get("apiVersion", "")).startswith(api_group + "/"))


Brokers = dict[str, DeliverySpec]


def load(objects: Iterable[Mapping[str, Any]]) -> tuple[list[Trigger], Brokers]:
    """The Triggers and the Brokers (``namespace/name`` → its DeliverySpec) among ``objects``."""
    triggers: list[Trigger] = []
    brokers: dict[str, DeliverySpec | None] = {}
    for obj in objects:
        if is_kind(obj, "eventing.knative.dev", "Trigger"):
            triggers.append(Trigger.from_object(obj))
        elif is_kind(obj, "eventing.knative.dev", "Broker"):
            meta = obj.get("metadata") or {}
            namespace = str(meta.get("namespace") or "default")
            brokers[f"{namespace}/{meta.get('name')}"] = DeliverySpec.parse(
                (obj.get("spec") or {}).get("delivery"), namespace,
                f"Broker {namespace}/{meta.get('name')}")
    for trigger in triggers:
        brokers.setdefault(f"{trigger.namespace}/{trigger.broker}", None)
    # A Broker's missing delivery is defaulted by Knative's webhook.
    return triggers, {k: v if v is not None else BROKER_DEFAULT_DELIVERY
                      for k, v in brokers.items()}


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Attempt:
    status: int | None  # HTTP status, None when no response came
    error: str = ""  # network error, or why the broker turned a 2xx into a 502
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    # Knative's broker-filter reports the subscriber's answer to the channel; for a 2xx
    # it could not read as a CloudEvent it reports nothing (a bare 502): no extensions.
    error_info: bool = True

    @property
    def succeeded(self) -> bool:
        return self.status is not None and 200 <= self.status < 300 and not self.error

    @property
    def retryable(self) -> bool:
        """Knative retries 5xx, 404, 408, 409, 429 and requests without a response."""
        if self.status is None:
            return True
        return self.status >= 500 or self.status in RETRYABLE


@dataclass
class Delivery:
    """One event sent to one Trigger's subscriber, with every attempt."""

    trigger: str  # namespace/name
    event: CloudEvent
    url: str
    attempts: list[Attempt] = field(default_factory=list)
    outcome: str = "pending"  # delivered | replied | dead-lettered | lost | dropped
    reply: CloudEvent | None = None
    reason: str = ""

    @property
    def statuses(self) -> list[int | None]:
        return [a.status for a in self.attempts]


def _event_summary(event: CloudEvent) -> str:
    return f"{event['type']} id={event['id']}"


def _dead_letter_event(event: CloudEvent, destination: str, attempt: Attempt | None) -> CloudEvent:
    """The event as the dead-letter sink gets it: ``knativeerrordest``,
    ``knativeerrorcode`` (the status, 500 for a network error) and ``knativeerrordata``
    (the base64 of the body, the encoded text cut at 1024 characters) always, unless the
    failure carried no error info."""
    attributes = dict(event.get_attributes())
    if attempt is None or attempt.error_info:
        body = attempt.body if attempt is not None else b""
        code = attempt.status if attempt is not None and attempt.status is not None else 500
        if attempt is not None and attempt.status is None:
            body = f"dispatch error: {attempt.error}".encode()
        attributes["knativeerrordest"] = destination
        attributes["knativeerrorcode"] = str(code)  # an integer, as a header carries it
        attributes["knativeerrordata"] = base64.b64encode(body).decode("ascii")[
            :ERROR_DATA_LIMIT]
    return CloudEvent(attributes, event.data)


# ----------------------------------------------------------------------------- broker


class DevBroker(LoopbackServer):
    """The dev broker: a real HTTP server on ``host`` (an ephemeral port by default).

    ``objects``: Trigger and Broker objects (e.g. the rendered manifests; other kinds are
    ignored). ``subscribers``: ``namespace/name`` of a ref (or a ``uri``) → local base URL.
    ``log``: called with one readable line per routing decision.
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]],
                 subscribers: Mapping[str, str] | None = None, *,
                 backoff_scale: float = 1.0, timeout: float | None = None,
                 synchronous: bool = True, workers: int = 16, host: str = "127.0.0.1",
                 port: int = 0, log: Callable[[str], None] | None = None) -> None:
        self.triggers, self.brokers = load(list(objects))
        self.subscribers = {k: v.rstrip("/") for k, v in (subscribers or {}).items()}
        self.backoff_scale = backoff_scale
        # Per attempt when the DeliverySpec sets none (Knative: none at all).
        self.timeout = timeout
        self.synchronous = synchronous
        self.host = host
        self._port = port
        self._log = log
        self._workers = workers
        self._lock = threading.Condition()
        self._inflight = 0
        self._ingress: list[CloudEvent] = []
        self._rejected: list[tuple[int, str]] = []
        self._deliveries: list[Delivery] = []
        self._dead_letters: list[CloudEvent] = []
        self._pool: ThreadPoolExecutor | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._stopping = threading.Event()
        for trigger in self.triggers:  # fail at start, not at the first event
            self.resolve(trigger.subscriber, f"Trigger {trigger.namespace}/{trigger.name}")

    # ----------------------------------------------------------- lifecycle

    def start(self) -> DevBroker:
        if self._server is not None:
            return self
        broker = self

        class Handler(_Handler):
            owner = broker

        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="dev-broker")
        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="dev-broker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, pool = self._server, self._pool
        self._server = self._pool = None
        self._stopping.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


    def ingress_url(self, namespace: str, name: str) -> str:
        return f"{self.url}/{namespace}/{name}"

    # ----------------------------------------------------------- inspection

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no event is in flight (retries and replies included)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    @property
    def ingress(self) -> list[CloudEvent]:
        """Every event the broker accepted (first entries and replies), in order."""
        with self._lock:
            return list(self._ingress)

    @property
    def rejected(self) -> list[tuple[int, str]]:
        """(status, reason) of every ingress request refused."""
        with self._lock:
            return list(self._rejected)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def deliveries_to(self, trigger: str) -> list[Delivery]:
        """Deliveries of the Trigger named ``trigger`` (``name`` or ``namespace/name``)."""
        return [d for d in self.deliveries
                if d.trigger == trigger or d.trigger.split("/", 1)[1] == trigger]

    @property
    def dead_letters(self) -> list[CloudEvent]:
        """Events the built-in dead-letter store kept."""
        with self._lock:
            return list(self._dead_letters)

    def reset(self) -> None:
        """Forget recorded events (call between tests, when idle)."""
        with self._lock:
            self._ingress.clear()
            self._rejected.clear()
            self._deliveries.clear()
            self._dead_letters.clear()

    # ----------------------------------------------------------- routing

    def resolve(self, destination: Destination, where: str = "") -> str:
        """The local URL of a destination (a ``uri`` beside a ``ref`` resolved against its
        URL as RFC 3986 says); a dead-letter ref without one → built-in store."""
        if destination.key and destination.key in self.subscribers:
            base = self.subscribers[destination.key]
            return urljoin(base, destination.uri) if destination.uri else base
        if not destination.key and destination.uri:
            return self.subscribers.get(destination.uri, destination.uri)
        raise TriggerError(f"{where}: no local URL for {destination.describe()} "
                           f"(known: {', '.join(sorted(self.subscribers)) or 'none'})")

    def _dead_letter_url(self, destination: Destination) -> str:
        try:
            return self.resolve(destination)
        except TriggerError:
            return f"{self.url}/{DEAD_LETTER_PATH}/{destination.namespace}/{destination.name}"

    def _note(self, line: str) -> None:
        if self._log is not None:
            self._log(line)

    def _end(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0:
                self._lock.notify_all()

    def ingest(self, broker: str, event: CloudEvent) -> int:
        """Take ``event`` on ``namespace/name`` and fan it out: synchronously (the status
        says how every Trigger's delivery ended: 202, or 500 when one was lost) or in the
        background (202 at once). 404 for an unknown broker, 400 when its TTL is used up."""
        if broker not in self.brokers:
            return 404
        if self._pool is None:
            return 503
        ttl = event.get(TTL)
        try:
            left = MAX_TTL if ttl is None else int(ttl)
        except (TypeError, ValueError):
            left = MAX_TTL
        if left <= 0:
            self._reject(400, f"{TTL} of {_event_summary(event)} is used up")
            return 400
        # Extension values as text: binary mode carries every attribute as a header.
        event = CloudEvent({**event.get_attributes(),
                            TTL: str(left - 1 if ttl is not None else left),
                            ARRIVAL: _arrival_time()},
                           event.data)
        matching = [t for t in self.triggers
                    if f"{t.namespace}/{t.broker}" == broker and t.matches(event)]
        with self._lock:
            self._ingress.append(event)
            self._inflight += len(matching)
        self._note(f"broker {broker} <- {_event_summary(event)}: "
                   f"{', '.join(t.name for t in matching) or 'no Trigger matches'}")
        deliveries = []
        for trigger in matching:
            delivery = Delivery(f"{trigger.namespace}/{trigger.name}", event,
                                self.resolve(trigger.subscriber))
            with self._lock:
                self._deliveries.append(delivery)
            deliveries.append((trigger, delivery))
        if not self.synchronous:
            for trigger, delivery in deliveries:
                self._pool.submit(self._deliver, broker, trigger, delivery)
            return 202
        # As the InMemoryChannel's dispatcher: every subscription at once, then one answer.
        threads = [threading.Thread(target=self._deliver, args=(broker, t, d), daemon=True,
                                    name=f"dev-broker {d.trigger}") for t, d in deliveries]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        lost = [d for _, d in deliveries if d.outcome not in ("delivered", "replied",
                                                                "dead-lettered")]
        return 500 if lost else 202

    def _spec_for(self, broker: str, trigger: Trigger) -> DeliverySpec:
        return trigger.delivery or self.brokers.get(broker) or DeliverySpec()

    def _deliver(self, broker: str, trigger: Trigger, delivery: Delivery) -> None:
        try:
            spec = self._spec_for(broker, trigger)
            attempt = self._send_with_retries(delivery.url, delivery.event, spec, delivery,
                                              trigger.namespace)
            if attempt is None:
                return
            if not attempt.succeeded:
                self._dead_letter(spec, delivery, attempt)
                return
            try:
                reply = self._reply(attempt)
            except ValueError as exc:
                # Knative passes a malformed reply on to the ingress once; the ingress
                # refuses it (400) and the original is dead-lettered, named after it.
                refused = Attempt(400, str(exc), str(exc).encode())
                self._dead_letter(spec, delivery, refused,
                                  self.ingress_url(*broker.split("/", 1)))
                return
            if reply is None:
                self._finish(delivery, "delivered")
                return
            delivery.reply = reply
            # The filter gives the reply the event's TTL; the channel posts it to the
            # broker's ingress with the same retries, and dead-letters the original
            # event (to the ingress) when it is refused.
            reply = CloudEvent({**reply.get_attributes(), TTL: delivery.event.get(TTL)},
                               reply.data)
            forwarded = self._forward(broker, reply, spec)
            if forwarded.succeeded:
                self._finish(delivery, "replied")
            else:
                self._dead_letter(spec, delivery, forwarded, self.ingress_url(
                    *broker.split("/", 1)))
        except Exception as exc:  # a bug in the dev broker must not hang wait_idle
            self._finish(delivery, "lost", f"dev broker error: {type(exc).__name__}: {exc}")
        finally:
            self._end()

    def _forward(self, broker: str, reply: CloudEvent, spec: DeliverySpec) -> Attempt:
        retries = 0
        while True:
            status = self.ingest(broker, reply)
            attempt = Attempt(status, "" if 200 <= status < 300 else f"ingress {status}",
                              b"" if 200 <= status < 300 else f"ingress {status}".encode())
            if attempt.succeeded or not attempt.retryable or retries >= spec.retry:
                return attempt
            retries += 1
            if self._stopping.wait(spec.backoff(retries) * self.backoff_scale):
                return attempt

    def _send_with_retries(self, url: str, event: CloudEvent, spec: DeliverySpec,
                           delivery: Delivery | None,
                           namespace: str | None = None) -> Attempt | None:
        retries = 0
        while True:
            attempt = self._send(url, event, spec, namespace)
            if delivery is not None:
                with self._lock:
                    delivery.attempts.append(attempt)
            if not attempt.retryable or retries >= spec.retry:
                return attempt
            retries += 1
            if self._stopping.wait(spec.backoff(retries) * self.backoff_scale):
                if delivery is not None:
                    self._finish(delivery, "lost", "the dev broker stopped")
                return None

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def _send(self, url: str, event: CloudEvent, spec: DeliverySpec,
              namespace: str | None = None) -> Attempt:
        """POST ``event``; to a Trigger's subscriber (``namespace``: the Trigger's) as
        Knative's broker filter does: without the broker's TTL, with ``Kn-Namespace`` and
        ``Prefer: reply``."""
        if namespace is not None:
            event = CloudEvent({k: v for k, v in event.get_attributes().items() if k != TTL},
                               event.data)
        headers, body = to_binary(event)
        headers = dict(headers)
        if namespace is not None:
            headers.update({"Kn-Namespace": namespace, "Prefer": "reply"})
        timeout = spec.timeout if spec.timeout is not None else self.timeout
        try:
            response = self._session().post(url, data=body, headers=headers,
                                            timeout=(3.0, timeout) if timeout else None)
        except requests.RequestException as exc:
            return Attempt(None, f"{type(exc).__name__}: {exc}")
        got = {k.lower(): v for k, v in response.headers.items()}
        status, content = response.status_code, response.content
        if 200 <= status < 300 and (content or _looks_like_event(got)):
            # Knative's broker-filter answers the channel 502 (no body): retried.
            if not _looks_like_event(got):
                return Attempt(502, "a 2xx body that is not a CloudEvent", b"", got,
                               error_info=False)
        return Attempt(status, "", content, got)

    @staticmethod
    def _reply(attempt: Attempt) -> CloudEvent | None:
        if not _looks_like_event(attempt.headers):
            return None
        return parse_ingress(attempt.headers, attempt.body)

    def _dead_letter(self, spec: DeliverySpec, delivery: Delivery, attempt: Attempt,
                     destination: str | None = None) -> None:
        why = attempt.error or f"status {attempt.status}"
        if spec.dead_letter_sink is None:
            self._finish(delivery, "lost", f"{why}; no dead-letter sink")
            return
        if attempt.error_info and len(attempt.body) > KNATIVE_ERROR_BODY_LIMIT:
            # Knative's InMemoryChannel dispatcher base64-encodes the body into a
            # 1,024-byte buffer and panics past 768 bytes: no dead letter, the event is
            # gone and the ingress answers 500. Shown as that, and said.
            self._finish(delivery, "lost", f"{why}; a failure body of {len(attempt.body)} "
                         f"bytes (over {KNATIVE_ERROR_BODY_LIMIT}) crashes Knative's "
                         f"InMemoryChannel dispatcher")
            return
        url = self._dead_letter_url(spec.dead_letter_sink)
        event = _dead_letter_event(delivery.event, destination or delivery.url, attempt)
        result = self._send_with_retries(url, event, spec, None)
        if result is not None and result.succeeded:
            self._finish(delivery, "dead-lettered", why)
        else:
            self._finish(delivery, "lost", f"{why}; dead-letter sink failed too")

    def _finish(self, delivery: Delivery, outcome: str, reason: str = "") -> None:
        with self._lock:
            delivery.outcome = outcome
            delivery.reason = reason
        statuses = ",".join("-" if s is None else str(s) for s in delivery.statuses)
        self._note(f"  {delivery.trigger} -> {delivery.url} [{statuses}] {outcome}"
                   + (f" ({reason})" if reason else ""))

    def _store_dead_letter(self, event: CloudEvent) -> None:
        with self._lock:
            self._dead_letters.append(event)
        self._note(f"dead-letter store <- {_event_summary(event)} "
                   f"(code {event.get('knativeerrorcode', '-')})")

    def _reject(self, status: int, reason: str) -> None:
        with self._lock:
            self._rejected.append((status, reason))
        self._note(f"broker ingress refused ({status}): {reason}")


def _arrival_time() -> str:
    """Now, as Go's ``time.RFC3339Nano`` writes it (Knative's ``knativearrivaltime``)."""
    nanos = time.time_ns()
    seconds, fraction = divmod(nanos, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{text}.{digits}Z" if digits else f"{text}Z"


def _looks_like_event(headers: Mapping[str, str]) -> bool:
    return "ce-specversion" in headers or \
        headers.get("content-type", "").startswith("application/cloudevents")


def parse_ingress(headers: Mapping[str, str], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP request, or ``ValueError`` with a one-line reason."""
    try:
        event = from_http({k.lower(): v for k, v in headers.items()}, body or None)
    except (GenericException, TypeError, ValueError) as exc:
        raise ValueError(f"not a CloudEvent: {' '.join(str(exc).split())[:200]}") from None
    for name in ("id", "source", "type", "specversion"):
        if not event.get(name):
            raise ValueError(f"not a CloudEvent: attribute {name!r} is empty")
    return event


class _Handler(BaseHTTPRequestHandler):
    # answer at once: headers and body go out in separate writes
    disable_nagle_algorithm = True
    owner: DevBroker
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(self, status: int, text: str = "") -> None:
        body = (text + "\n").encode() if text else b""
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/health", "/healthz"):
            self._answer(200, "OK")
        elif self.path.rstrip("/") == "/triggers":
            payload = json.dumps([{"name": t.name, "namespace": t.namespace,
                                   "broker": t.broker,
                                   "subscriber": self.owner.resolve(t.subscriber)}
                                  for t in self.owner.triggers], indent=2)
            self._answer(200, payload)
        else:
            self._answer(404, "not found")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = [p for p in self.path.split("/") if p]  # the query too, as Knative does
        headers = {k: v for k, v in self.headers.items()}
        broker = self.owner
        if len(parts) == 3 and parts[0] == DEAD_LETTER_PATH:
            try:
                event = parse_ingress(headers, body)
            except ValueError as exc:
                self._answer(400, str(exc))
                return
            broker._store_dead_letter(event)
            self._answer(202)
            return
        if len(parts) != 2:
            broker._reject(400, f"malformed path {self.path}")
            self._answer(400, "POST /<namespace>/<broker>")
            return
        name = f"{parts[0]}/{parts[1]}"
        if name not in broker.brokers:
            broker._reject(404, f"unknown broker {name}")
            self._answer(404, f"unknown broker {name}")
            return
        try:
            event = parse_ingress(headers, body)
        except ValueError as exc:
            broker._reject(400, str(exc))
            self._answer(400, str(exc))
            return
        status = broker.ingest(name, event)
        self._answer(status)

    def do_PUT(self) -> None:
        self._answer(405, "POST a CloudEvent")
