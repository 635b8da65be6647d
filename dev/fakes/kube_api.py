"""An in-process fake Kubernetes API server.

It speaks enough of the real wire protocol (discovery, CRUD, merge patches,
``/status`` subresources, watch streams, Status errors, SubjectAccessReview) that the
official ``kubernetes`` Python client -- typed APIs, ``DynamicClient`` and ``Watch`` --
works against it unmodified. Tests seed and inspect objects through the Python API,
inject faults, and assert on the request log.

Kubernetes' own behaviour (RBAC, schemas, admission, watch) is tested against a real
kube-apiserver (tests/cluster); this fake serves the faults a real one cannot be made to
show (injected 5xx, delays, hung-up streams, compaction on demand), scale runs, and the
dev stack's embedded API. It implements only what the functions and those tests use:
create, get, list (in pages), replace, merge patches, delete, watch; equality and
existence label selectors; the field selectors a real API server serves
(``metadata.name``/``namespace``, and an Event's ``involvedObject.kind`` and such). No
dry runs, apply patches, collection deletes, ``generateName``, set-based or numeric
selectors: the real control plane is the reference for those.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime as dt
import itertools
import json
import re
import select
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

import yaml

from dev.support.loopback import LoopbackServer, QuietHandler

__all__ = [
    "DEFAULT_TOKEN",
    "DEFAULT_USER",
    "FakeKubeAPI",
    "Fault",
    "KubeError",
    "RecordedRequest",
    "ResourceType",
    "merge_patch",
    "parse_label_selector",
]

DEFAULT_USER = "system:serviceaccount:default:default"
DEFAULT_TOKEN = "fake-token"
ALL_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")
_NAMESPACE_SUBRESOURCES = ("status",)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_FAULT_MESSAGES = {
    404: "the server could not find the requested resource",
    429: "the server has received too many requests and has asked us to try again later",
    500: "Internal error occurred: injected failure",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be "
    "processing the request",
}



# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class ResourceType:
    """One served resource: ``plural.group`` at ``version``."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    has_status: bool = False
    singular: str = ""
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    return_deleted_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``plural.group`` as used in error messages (``plural`` for the core group)."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, name: str | None = None, namespace: str | None = None) -> str:
        """The URL path of the collection, or of one object when ``name`` is given."""
        base = self.prefix
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name is not None else base


class KubeError(Exception):
    """An API error, rendered on the wire as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")
        self.details = details

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


@dataclass
class RecordedRequest:
    """One request as the server saw it. ``headers`` keys are lower-case."""

    method: str
    path: str
    query: dict[str, str]
    body: Any | None
    headers: dict[str, str]
    user: str
    verb: str | None = None
    status: int | None = None
    time: float = field(default_factory=time.time)


@dataclass
class Fault:
    """An injected failure; ``hits`` counts how often it fired."""

    method: str
    path_regex: str
    status: int | None
    times: int | None
    delay: float
    message: str | None
    hits: int = 0
    query: dict[str, str] | None = None

    def matches(self, method: str, path: str, query: dict[str, str] | None = None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method not in ("*", method):
            return False
        if self.query and any((query or {}).get(k) != v for k, v in self.query.items()):
            return False
        return re.search(self.path_regex, path) is not None


@dataclass(frozen=True)
class _ForbidRule:
    verb: str
    plural: str
    group: str | None
    subresource: str | None
    namespace: str | None
    name: str | None

    def matches(
        self, verb: str, rtype: ResourceType, sub: str | None, ns: str | None, name: str | None
    ) -> bool:
        return (
            self.verb in ("*", verb)
            and self.plural in ("*", rtype.plural)
            and (self.group is None or self.group == rtype.group)
            and (self.subresource == sub or self.subresource == "*")
            and (self.namespace is None or self.namespace == ns)
            and (self.name is None or self.name == name)
        )


@dataclass(frozen=True)
class _SarRule:
    user: str | None
    namespace: str | None
    resource: str | None
    name: str | None
    verb: str | None
    group: str | None

    def matches(self, spec: dict[str, Any]) -> bool:
        attrs = spec.get("resourceAttributes") or {}
        resource, group = self.resource, self.group
        if resource and "." in resource:
            resource, group = resource.split(".", 1)
        checks = (
            (self.user, spec.get("user")),
            (self.namespace, attrs.get("namespace")),
            (resource, attrs.get("resource")),
            (self.name, attrs.get("name")),
            (self.verb, attrs.get("verb")),
            (group, attrs.get("group", "")),
        )
        return all(want is None or want == got for want, got in checks)


@dataclass
class _Change:
    rv: int
    type: str
    key: tuple[str, str]
    obj: dict[str, Any]
    prev: dict[str, Any] | None


# --------------------------------------------------------------------------- helpers


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(value: Any) -> Any:
    """JSON-compatible deep copy (YAML timestamps become RFC 3339 strings)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _guess_plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and len(lower) > 1 and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def _split_api_version(api_version: str) -> tuple[str, str]:
    if "/" in api_version:
        group, version = api_version.split("/", 1)
        return group, version
    return "", api_version


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1", "yes")


def _without_meta_status(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _fold_string_data(obj: dict[str, Any]) -> None:
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = obj.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj["data"] = data


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):  # strategic-merge directives: ignored
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------- selectors

_Predicate = Callable[[dict[str, Any]], bool]


def _split_requirements(selector: str) -> list[str]:
    return [p.strip() for p in selector.split(",") if p.strip()]


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*([-A-Za-z0-9_.]*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _label_requirement(req: str) -> Callable[[dict[str, str]], bool]:
    if m := _EQ_RE.match(req):
        key, op, value = m.groups()
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    if m := _EXISTS_RE.match(req):
        negate, key = m.group(1) == "!", m.group(2)
        return lambda labels: (key in labels) != negate
    raise KubeError(400, f"unable to parse requirement: {req!r}")


def parse_label_selector(selector: str | None) -> _Predicate:
    """A predicate on objects for a ``labelSelector`` query value."""
    if not selector:
        return lambda obj: True
    reqs = [_label_requirement(r) for r in _split_requirements(selector)]

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in reqs)

    return match


# The fields a real API server lets a list select on: metadata.name and
# metadata.namespace for every kind, and these for Events (core/v1's field set).
_EVENT_FIELDS = frozenset({
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
})


def parse_field_selector(selector: str | None, kind: str) -> _Predicate:
    """A predicate for a ``fieldSelector``: ``=``, ``==`` and ``!=`` on the fields the
    real API server supports for ``kind``; any other field is its 400."""
    if not selector:
        return lambda obj: True
    checks: list[tuple[list[str], bool, str]] = []
    for req in _split_requirements(selector):
        m = re.match(r"^([A-Za-z.]+)\s*(==|=|!=)\s*(.*)$", req)
        if not m:
            raise KubeError(400, f"invalid field selector: {req!r}")
        name, op, value = m.groups()
        if name not in ("metadata.name", "metadata.namespace") and not (
                kind == "Event" and name in _EVENT_FIELDS):
            raise KubeError(400, f'field label not supported: {name}')
        if name == "source":
            name = "source.component"
        checks.append((name.split("."), op == "!=", value))

    def value_at(obj: dict[str, Any], path: list[str]) -> str:
        node: Any = obj
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        return "" if node is None else str(node)

    return lambda obj: all((value_at(obj, path) == value) != negate
                           for path, negate, value in checks)


# ----------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: FakeKubeAPI) -> None:
        self.api = api
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-request (a function stopped during its watch) is
        expected; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class Encoded:
    """A reply already encoded as JSON."""

    data: bytes


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-kube-apiserver"
    server: _Server

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        try:
            self.server.api._serve(self)
        except OSError:  # the client went away (or the server is stopping)
            self.close_connection = True

    # Response helpers used by FakeKubeAPI._serve.
    def send_json(self, code: int, payload: Any) -> None:
        data = payload.data if isinstance(payload, Encoded) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)

    def send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def write_chunk(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


# ------------------------------------------------------------------------------- API


def _default_types() -> list[ResourceType]:
    r = ResourceType
    return [
        r("", "v1", "Namespace", "namespaces", False, True, short_names=("ns",)),
        r("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
        r("", "v1", "Secret", "secrets"),
        r("", "v1", "Service", "services", True, True, short_names=("svc",)),
        r("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
        r("", "v1", "Pod", "pods", True, True, short_names=("po",)),
        r("", "v1", "Event", "events", short_names=("ev",)),
        r("events.k8s.io", "v1", "Event", "events", short_names=("ev",)),
        r("coordination.k8s.io", "v1", "Lease", "leases"),
        r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
        r("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
        r(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            False,
            True,
            short_names=("crd", "crds"),
        ),
        r(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            False,
            verbs=("create",),
        ),
        r(
            "artifacts.katanomi.dev",
            "v1alpha1",
            "ArtifactPromotionRun",
            "artifactpromotionruns",
            True,
            True,
            return_deleted_object=True,
        ),
        r(
            "core.katanomi.dev",
            "v1alpha1",
            "ClusterSubscription",
            "clustersubscriptions",
            False,
            True,
            return_deleted_object=True,
        ),
        r(
            "core.katanomi.dev",
            "v1alpha1",
            "NotificationTemplate",
            "notificationtemplates",
            True,
            False,
            return_deleted_object=True,
        ),
    ]


_CLUSTER_KINDS = {
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


class FakeKubeAPI(LoopbackServer):
    """A fake Kubernetes API server on 127.0.0.1 (ephemeral port by default).

    Use as a context manager or call :meth:`start` / :meth:`stop`. All methods are
    thread-safe. Objects handed out are deep copies.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        user: str = DEFAULT_USER,
        token: str = DEFAULT_TOKEN,
        history_limit: int = 1000,
        watch_timeout: float = 1800.0,
        request_log_limit: int = 10_000,
        register_defaults: bool = True,
    ) -> None:
        self.host = host
        self._port = port
        self.user = user
        self.token = token
        self.token_users: dict[str, str] = {token: user}
        self.watch_timeout = watch_timeout
        self.history_limit = history_limit

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        self._types: dict[tuple[str, str, str], ResourceType] = {}  # (group, version, plural)
        self._by_kind: dict[tuple[str, str], ResourceType] = {}  # (apiVersion, kind)
        self._group_versions: dict[str, list[str]] = {}
        self._store: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._rv = 1
        self._pages: dict[str, list[dict[str, Any]]] = {}  # lists being paged, by token
        self._lists = itertools.count()
        self._history: deque[_Change] = deque()
        self._min_watch_rv = 1

        self._log: deque[RecordedRequest] = deque(maxlen=request_log_limit)
        self._faults: list[Fault] = []
        self._forbidden: list[_ForbidRule] = []
        self._reviews: list[dict[str, Any]] = []
        self._deny_rules: list[_SarRule] = []
        self._allow_rules: list[_SarRule] | None = None

        if register_defaults:
            for rtype in _default_types():
                self._register(rtype)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start serving in a daemon thread; returns ``self``."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"fake-kube-api:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: ends watches and delayed requests, closes open connections."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None


    def write_kubeconfig(
        self, path: str | Path, *, namespace: str = "default", context: str = "fake"
    ) -> Path:
        """Write a kubeconfig pointing at this server (bearer token, current-context set)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {"name": context, "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}
            ],
            "users": [{"name": context, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": context, "namespace": namespace},
                }
            ],
            "current-context": context,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def new_api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` configured for this server."""
        from kubernetes import client  # local import: only tests need it

        config = client.Configuration()
        config.host = self.url
        config.api_key = {"BearerToken": self.token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
        return client.ApiClient(config)

    # --------------------------------------------------------------- resource types

    def register(
        self,
        group: str,
        version: str,
        kind: str,
        plural: str,
        namespaced: bool = True,
        has_status: bool = False,
        *,
        singular: str = "",
        short_names: Iterable[str] = (),
        verbs: Iterable[str] = ALL_VERBS,
        return_deleted_object: bool = True,
    ) -> ResourceType:
        """Serve a new resource type (replaces one with the same group and plural)."""
        rtype = ResourceType(
            group,
            version,
            kind,
            plural,
            namespaced,
            has_status,
            singular,
            tuple(short_names),
            tuple(verbs),
            return_deleted_object,
        )
        self._register(rtype)
        return rtype

    def _register(self, rtype: ResourceType) -> None:
        with self._lock:
            for key, old in list(self._types.items()):
                if old.group == rtype.group and old.plural == rtype.plural:
                    del self._types[key]
                    self._by_kind.pop((old.api_version, old.kind), None)
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
            self._by_kind[(rtype.api_version, rtype.kind)] = rtype
            versions = self._group_versions.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
            self._store.setdefault((rtype.group, rtype.plural), {})

    def resource_types(self) -> list[ResourceType]:
        with self._lock:
            return list(self._types.values())

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        """The registered type for ``apiVersion`` + ``kind``; ``KeyError`` if unknown."""
        with self._lock:
            try:
                return self._by_kind[(api_version, kind)]
            except KeyError:
                raise KeyError(f"no resource registered for {api_version} {kind}") from None

    def _register_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = [v for v in spec.get("versions") or [] if v.get("served", True)]
        if not (spec.get("group") and names.get("kind") and names.get("plural") and versions):
            return
        chosen = next((v for v in versions if v.get("storage")), versions[0])
        self._register(
            ResourceType(
                spec["group"],
                chosen["name"],
                names["kind"],
                names["plural"],
                spec.get("scope", "Namespaced") == "Namespaced",
                "status" in (chosen.get("subresources") or {}),
                names.get("singular", ""),
                tuple(names.get("shortNames") or ()),
                ALL_VERBS,
                True,
            )
        )

    def _auto_register(self, obj: dict[str, Any]) -> ResourceType:
        group, version = _split_api_version(obj["apiVersion"])
        kind = obj["kind"]
        namespaced = bool((obj.get("metadata") or {}).get("namespace")) or not (
            kind in _CLUSTER_KINDS or kind.startswith("Cluster")
        )
        rtype = ResourceType(
            group,
            version,
            kind,
            _guess_plural(kind),
            namespaced,
            "status" in obj,
            return_deleted_object=True,
        )
        self._register(rtype)
        return rtype

    # ------------------------------------------------------------- object helpers

    def add(self, obj: dict[str, Any], *, register_unknown: bool = False) -> dict[str, Any]:
        """Seed an object (create, or replace when it exists); returns the stored copy.

        Unlike an API create, ``status`` is kept. Namespaced objects without a namespace
        go to ``default``. Unknown kinds raise ``KeyError`` unless ``register_unknown``.
        """
        obj = _plain(obj)
        if not obj.get("apiVersion") or not obj.get("kind"):
            raise ValueError("object needs apiVersion and kind")
        with self._lock:
            try:
                rtype = self.resource_type(obj["apiVersion"], obj["kind"])
            except KeyError:
                if not register_unknown:
                    raise
                rtype = self._auto_register(obj)
            meta = obj.setdefault("metadata", {})
            ns = (meta.get("namespace") or "default") if rtype.namespaced else None
            existing = self._get(rtype, ns, meta.get("name", ""))
            if existing is None:
                return self._create(rtype, ns, obj, via_api=False)
            candidate = copy.deepcopy(obj)
            candidate["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            return self._replace(rtype, existing, candidate, sub=None, keep_status=False)

    def get_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """The stored object or ``None`` (namespaced kinds default to ``default``)."""
        with self._lock:
            rtype = self.resource_type(api_version, kind)
            obj = self._get(rtype, self._ns(rtype, namespace), name)
            return copy.deepcopy(obj) if obj is not None else None

    def update_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Replace a stored object, status included, without a resourceVersion check.

        Counts as a write: new resourceVersion, generation bump on spec change, MODIFIED
        event. ``KeyError`` when it does not exist.
        """
        obj = _plain(obj)
        with self._lock:
            rtype = self.resource_type(obj["apiVersion"], obj["kind"])
            meta = obj.setdefault("metadata", {})
            existing = self._get(rtype, self._ns(rtype, meta.get("namespace")), meta.get("name"))
            if existing is None:
                raise KeyError(f"{rtype.qualified} {meta.get('name')!r} not found")
            meta["resourceVersion"] = existing["metadata"]["resourceVersion"]
            return self._replace(rtype, existing, obj, sub=None, keep_status=False)

    def delete_object(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """Remove an object at once; returns it, or ``None``."""
        with self._lock:
            rtype = self.resource_type(api_version, kind)
            obj = self._get(rtype, self._ns(rtype, namespace), name)
            if obj is None:
                return None
            return self._remove(rtype, obj)

    def objects(
        self, api_version: str, kind: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """All stored objects of a kind (optionally of one namespace), sorted."""
        with self._lock:
            rtype = self.resource_type(api_version, kind)
            items = self._items(rtype, namespace, lambda o: True)
            return copy.deepcopy(items)

    def load_yaml(
        self, source: str | Path, *, register_unknown: bool = True
    ) -> list[dict[str, Any]]:
        """Seed objects from YAML text, a file, or a directory (``*.yaml``/``*.yml``).

        Multi-document files and ``kind: List`` are understood; documents without
        apiVersion/kind and kustomize files are skipped. CustomResourceDefinitions are
        loaded first and make their kinds served. Returns the stored objects.
        """
        docs: list[dict[str, Any]] = []
        for text in self._yaml_sources(source):
            for doc in yaml.safe_load_all(text):
                docs.extend(self._flatten(doc))
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        docs.sort(key=lambda d: order.get(d["kind"], 2))
        return [self.add(doc, register_unknown=register_unknown) for doc in docs]

    @staticmethod
    def _yaml_sources(source: str | Path) -> Iterator[str]:
        if isinstance(source, str) and ("\n" in source or re.search(r":\s", source)):
            yield source
            return
        path = Path(source)
        if path.is_dir():
            for file in sorted(path.rglob("*")):
                if file.suffix in (".yaml", ".yml") and file.is_file():
                    yield file.read_text()
        else:
            yield path.read_text()

    @staticmethod
    def _flatten(doc: Any) -> list[dict[str, Any]]:
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            return []
        if str(doc["apiVersion"]).startswith("kustomize.config.k8s.io"):
            return []
        if doc["kind"] == "List" or (doc["kind"].endswith("List") and "items" in doc):
            out: list[dict[str, Any]] = []
            for item in doc.get("items") or []:
                out.extend(FakeKubeAPI._flatten(item))
            return out
        return [doc]

    @property
    def resource_version(self) -> str:
        """The current (latest) global resourceVersion."""
        with self._lock:
            return str(self._rv)

    def compact(self, resource_version: str | int | None = None) -> None:
        """Forget watch history up to ``resource_version`` (default: all of it).

        Watches asking to resume from an older version then get a 410 Expired ERROR event.
        """
        with self._lock:
            target = self._rv if resource_version is None else int(resource_version)
            while self._history and self._history[0].rv <= target:
                self._history.popleft()
            self._min_watch_rv = max(self._min_watch_rv, target)
            self._changed.notify_all()

    # ----------------------------------------------------------- SubjectAccessReview

    def deny(
        self,
        user: str | None = None,
        namespace: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        *,
        verb: str | None = None,
        group: str | None = None,
    ) -> None:
        """Deny reviews matching every given field (``resource`` may be ``plural.group``)."""
        with self._lock:
            self._deny_rules.append(_SarRule(user, namespace, resource, name, verb, group))

    def allow_only(
        self,
        user: str | None = None,
        namespace: str | None = None,
        resource: str | None = None,
        name: str | None = None,
        *,
        verb: str | None = None,
        group: str | None = None,
    ) -> None:
        """Allow only reviews matching some ``allow_only`` rule (calls accumulate)."""
        with self._lock:
            if self._allow_rules is None:
                self._allow_rules = []
            self._allow_rules.append(_SarRule(user, namespace, resource, name, verb, group))

    def reset_policy(self) -> None:
        """Back to allowing every review."""
        with self._lock:
            self._deny_rules.clear()
            self._allow_rules = None

    @property
    def reviews(self) -> list[dict[str, Any]]:
        """Every SubjectAccessReview body received, oldest first."""
        with self._lock:
            return copy.deepcopy(self._reviews)

    def clear_reviews(self) -> None:
        with self._lock:
            self._reviews.clear()

    def _decide(self, spec: dict[str, Any]) -> tuple[bool, str]:
        with self._lock:
            denies = list(self._deny_rules)
            allows = None if self._allow_rules is None else list(self._allow_rules)
        if any(rule.matches(spec) for rule in denies):
            return False, "denied by rule"
        if allows is not None and not any(rule.matches(spec) for rule in allows):
            return False, "no allow rule matched"
        return True, "allowed"

    # --------------------------------------------------------------- fault injection

    def fail(
        self,
        method: str,
        path_regex: str,
        status: int | None = 503,
        times: int | None = 1,
        delay: float = 0.0,
        *,
        message: str | None = None,
        query: dict[str, str] | None = None,
    ) -> Fault:
        """Make matching requests fail (``re.search`` on the path, without the query).

        ``method`` is an HTTP method or ``"*"``. The first ``times`` matches (``None``: all)
        wait ``delay`` seconds, then get a Status with ``status`` -- or, with
        ``status=None``, are served normally after the delay; ``status=200`` answers 200
        with an empty body (for a watch: the server closes it at once). ``query``: only
        requests with these query parameters (e.g. ``{"watch": "true"}``).
        """
        fault = Fault(method.upper(), path_regex, status, times, delay, message, query=query)
        with self._lock:
            self._faults.append(fault)
        return fault

    def forbid(
        self,
        verb: str,
        resource: str,
        *,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        """Answer matching API requests with 403 Forbidden, worded like RBAC.

        ``resource`` is ``plural``, ``plural.group`` or either with ``/status``; ``"*"``
        matches any verb or resource. A rule without ``/status`` does not cover it.
        """
        res, _, sub = resource.partition("/")
        plural, _, group = res.partition(".")
        rule = _ForbidRule(verb, plural, group or None, sub or None, namespace, name)
        with self._lock:
            self._forbidden.append(rule)

    def clear_faults(self) -> None:
        """Remove every :meth:`fail` and :meth:`forbid` rule."""
        with self._lock:
            self._faults.clear()
            self._forbidden.clear()

    # ------------------------------------------------------------------ request log

    def request_log(
        self,
        method: str | None = None,
        path: str | None = None,
        *,
        path_regex: str | None = None,
        verb: str | None = None,
    ) -> list[RecordedRequest]:
        """Recorded requests, oldest first, filtered by exact path or regex and verb."""
        with self._lock:
            entries = list(self._log)
        return [
            r
            for r in entries
            if (method is None or r.method == method.upper())
            and (path is None or r.path == path)
            and (path_regex is None or re.search(path_regex, r.path))
            and (verb is None or r.verb == verb)
        ]

    def clear_request_log(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ store core

    @staticmethod
    def _ns(rtype: ResourceType, namespace: str | None) -> str | None:
        return (namespace or "default") if rtype.namespaced else None

    def _get(self, rtype: ResourceType, ns: str | None, name: str | None) -> dict[str, Any] | None:
        return self._store[(rtype.group, rtype.plural)].get((ns or "", name or ""))

    def _items(self, rtype: ResourceType, ns: str | None, pred: _Predicate) -> list[dict[str, Any]]:
        bucket = self._store[(rtype.group, rtype.plural)]
        return [
            obj
            for (obj_ns, _), obj in sorted(bucket.items())
            if (ns is None or obj_ns == ns) and pred(obj)
        ]

    def _commit(
        self,
        rtype: ResourceType,
        event: str,
        obj: dict[str, Any],
        prev: dict[str, Any] | None,
    ) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (meta.get("namespace", "") or "", meta["name"])
        bucket = self._store[(rtype.group, rtype.plural)]
        if event == "DELETED":
            bucket.pop(key, None)
        else:
            bucket[key] = obj
        if len(self._history) >= self.history_limit:
            self._min_watch_rv = self._history.popleft().rv
        self._history.append(
            _Change(self._rv, event, (rtype.group, rtype.plural), copy.deepcopy(obj), prev)
        )
        self._changed.notify_all()
        if rtype.group == "apiextensions.k8s.io" and rtype.kind == "CustomResourceDefinition":
            if event != "DELETED":
                self._register_crd(obj)
        return copy.deepcopy(obj)

    def _create(
        self,
        rtype: ResourceType,
        ns: str | None,
        body: dict[str, Any],
        *,
        via_api: bool,
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        self._check_identity(rtype, obj)
        meta = obj["metadata"]
        if rtype.namespaced:
            if meta.get("namespace") and ns is not None and meta["namespace"] != ns:
                raise KubeError(
                    400,
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request",
                )
            meta["namespace"] = ns or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        name = meta.get("name") or ""
        self._validate_name(rtype, name)
        if self._get(rtype, meta.get("namespace"), name) is not None:
            raise KubeError(
                409,
                f'{rtype.qualified} "{name}" already exists',
                "AlreadyExists",
                {"name": name, "group": rtype.group, "kind": rtype.plural},
            )
        if via_api:
            for key in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(key, None)
            if rtype.has_status:
                obj.pop("status", None)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        if rtype.kind == "Secret" and rtype.group == "":
            _fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        if rtype.kind == "Namespace" and rtype.group == "":
            obj.setdefault("status", {"phase": "Active"})
        return self._commit(rtype, "ADDED", obj, None)

    @staticmethod
    def _check_identity(rtype: ResourceType, obj: dict[str, Any]) -> None:
        if obj.get("kind") and obj["kind"] != rtype.kind:
            raise KubeError(400, f"the kind {obj['kind']!r} does not match {rtype.kind!r}")
        if obj.get("apiVersion") and obj["apiVersion"] != rtype.api_version:
            raise KubeError(
                400,
                f"the API version {obj['apiVersion']!r} does not match {rtype.api_version!r}",
            )
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        if not isinstance(obj.get("metadata", {}), dict):
            raise KubeError(400, "metadata must be an object")
        obj.setdefault("metadata", {})

    @staticmethod
    def _validate_name(rtype: ResourceType, name: str) -> None:
        problem = None
        if not name:
            problem = ("FieldValueRequired", "Required value: name is required")
        elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            problem = (
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.', and must start and end "
                "with an alphanumeric character",
            )
        if problem:
            raise KubeError(
                422,
                f'{rtype.kind} "{name}" is invalid: metadata.name: {problem[1]}',
                "Invalid",
                {
                    "name": name,
                    "group": rtype.group,
                    "kind": rtype.kind,
                    "causes": [
                        {"reason": problem[0], "message": problem[1], "field": "metadata.name"}
                    ],
                },
            )

    def _replace(
        self,
        rtype: ResourceType,
        existing: dict[str, Any],
        candidate: dict[str, Any],
        *,
        sub: str | None,
        keep_status: bool,
    ) -> dict[str, Any]:
        """Write ``candidate`` over ``existing`` applying server-side rules."""
        old_meta = existing["metadata"]
        cand_rv = (candidate.get("metadata") or {}).get("resourceVersion")
        if cand_rv and cand_rv != old_meta["resourceVersion"]:
            raise self._conflict(rtype, old_meta["name"])
        if sub == "status":
            new = copy.deepcopy(existing)
            if candidate.get("status") is None:
                new.pop("status", None)
            else:
                new["status"] = copy.deepcopy(candidate["status"])
        else:
            new = copy.deepcopy(candidate)
            if keep_status:
                if "status" in existing:
                    new["status"] = copy.deepcopy(existing["status"])
                else:
                    new.pop("status", None)
            meta = new.setdefault("metadata", {})
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            if rtype.kind == "Secret" and rtype.group == "":
                _fold_string_data(new)
            if _without_meta_status(new) != _without_meta_status(existing):
                meta["generation"] = int(old_meta.get("generation") or 0) + 1
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        if new == existing:  # a no-op write is not stored and not announced
            return copy.deepcopy(existing)
        return self._commit(rtype, "MODIFIED", new, copy.deepcopy(existing))

    def _remove(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        prev = copy.deepcopy(
            self._get(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        )
        return self._commit(rtype, "DELETED", copy.deepcopy(obj), prev)

    @staticmethod
    def _conflict(rtype: ResourceType, name: str) -> KubeError:
        return KubeError(
            409,
            f'Operation cannot be fulfilled on {rtype.qualified} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            "Conflict",
            {"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    @staticmethod
    def _not_found(rtype: ResourceType, name: str) -> KubeError:
        return KubeError(
            404,
            f'{rtype.qualified} "{name}" not found',
            "NotFound",
            {"name": name, "group": rtype.group, "kind": rtype.plural},
        )

    # --------------------------------------------------------------- HTTP dispatch

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        method = handler.command.upper()
        headers = {k.lower(): v for k, v in handler.headers.items()}
        raw = handler._read_body()
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        with self._lock:
            user = self.token_users.get(token, "system:anonymous")
        body = self._decode_body(raw, headers)
        record = RecordedRequest(method, path, query, body, headers, user)
        with self._lock:
            self._log.append(record)
            fault = next((f for f in self._faults if f.matches(method, path, query)), None)
            if fault is not None:
                fault.hits += 1

        def reply(code: int, payload: Any) -> None:
            record.status = code
            handler.send_json(code, payload)

        try:
            if fault is not None:
                if fault.delay:
                    self._stopping.wait(fault.delay)
                if fault.status == 200:  # an empty answer: a watch the server ends at once
                    record.status = 200
                    handler.send_text(200, "")
                    return
                if fault.status is not None:
                    message = fault.message or _FAULT_MESSAGES.get(
                        fault.status, f"injected failure ({fault.status})"
                    )
                    raise KubeError(fault.status, message)
            self._route(handler, method, path, query, raw, headers, record, reply)
        except KubeError as err:
            reply(err.code, err.to_status())
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            raise
        except Exception as err:  # a fake's bug should still answer like a server
            reply(500, KubeError(500, f"fake API server error: {err!r}").to_status())

    @staticmethod
    def _decode_body(raw: bytes, headers: dict[str, str]) -> Any | None:
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            if "yaml" in headers.get("content-type", ""):
                try:
                    return yaml.safe_load(raw)
                except yaml.YAMLError:
                    return None
            return None

    def _route(
        self,
        handler: _Handler,
        method: str,
        path: str,
        query: dict[str, str],
        raw: bytes,
        headers: dict[str, str],
        record: RecordedRequest,
        reply: Callable[[int, Any], None],
    ) -> None:
        parts = [p for p in path.split("/") if p]
        if method == "GET":
            if path in ("/healthz", "/livez", "/readyz"):
                record.status = 200
                handler.send_text(200, "ok")
                return
            if path == "/version":
                reply(200, self._version())
                return
            doc = self._discovery(parts)
            if doc is not None:
                reply(200, doc)
                return
        if not parts or parts[0] not in ("api", "apis"):
            raise KubeError(404, "the server could not find the requested resource", details={})
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        else:
            if len(parts) < 3:
                raise KubeError(404, "the server could not find the requested resource", details={})
            group, version, rest = parts[1], parts[2], parts[3:]
        watch_path = bool(rest) and rest[0] == "watch"
        if watch_path:
            rest = rest[1:]
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in _NAMESPACE_SUBRESOURCES:
            ns, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise KubeError(404, "the server could not find the requested resource", details={})
        with self._lock:
            rtype = self._types.get((group, version, rest[0]))
        if rtype is None or (ns is not None and not rtype.namespaced):
            raise KubeError(404, "the server could not find the requested resource", details={})
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and not (sub == "status" and rtype.has_status):
            raise KubeError(404, "the server could not find the requested resource", details={})
        watching = watch_path or _truthy(query.get("watch"))
        verb = {
            ("GET", False): "watch" if watching else "list",
            ("GET", True): "watch" if watching else "get",
            ("POST", False): "create",
            ("PUT", True): "update",
            ("PATCH", True): "patch",
            ("DELETE", True): "delete",
        }.get((method, name is not None))
        record.verb = verb
        if verb is None or verb not in rtype.verbs or (sub and verb not in STATUS_VERBS):
            raise KubeError(405, "the server does not allow this method on the requested resource")
        if rtype.namespaced and ns is None and verb not in ("list", "watch"):
            raise KubeError(404, "the server could not find the requested resource", details={})
        self._authorize(record.user, verb, rtype, sub, ns, name)

        if verb == "watch":
            self._watch(handler, record, rtype, ns, query, name)
            return
        if rtype.group == "authorization.k8s.io" and rtype.plural == "subjectaccessreviews":
            reply(201, self._review(self._json_body(raw)))
            return
        with self._lock:
            code, payload = self._dispatch(rtype, verb, ns, name, sub, query, raw, headers)
        reply(code, payload)

    def _dispatch(
        self,
        rtype: ResourceType,
        verb: str,
        ns: str | None,
        name: str | None,
        sub: str | None,
        query: dict[str, str],
        raw: bytes,
        headers: dict[str, str],
    ) -> tuple[int, dict[str, Any]]:
        """Run one non-watch verb; the caller holds the lock."""
        if verb == "get":
            return 200, copy.deepcopy(self._existing(rtype, ns, name))
        if verb == "list":
            return 200, self._list(rtype, ns, query)
        if verb == "create":
            body = self._json_object(raw)
            return 201, self._create(rtype, ns, body, via_api=True)
        if verb == "update":
            body = self._json_object(raw)
            existing = self._existing(rtype, ns, name)
            self._check_identity(rtype, body)
            self._check_name(body, name or "", ns)
            return 200, self._replace(
                rtype, existing, body, sub=sub, keep_status=rtype.has_status
            )
        if verb == "patch":
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            return self._patch(rtype, ns, name or "", sub, ctype, raw)
        return 200, self._delete(rtype, ns, name or "", raw)

    def _authorize(
        self,
        user: str,
        verb: str,
        rtype: ResourceType,
        sub: str | None,
        ns: str | None,
        name: str | None,
    ) -> None:
        with self._lock:
            rules = list(self._forbidden)
        if not any(rule.matches(verb, rtype, sub, ns, name) for rule in rules):
            return
        resource = f"{rtype.plural}/{sub}" if sub else rtype.plural
        subject = f'{rtype.qualified} "{name}"' if name else rtype.qualified
        scope = f'in the namespace "{ns}"' if ns else "at the cluster scope"
        message = (
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{rtype.group}" {scope}'
        )
        details: dict[str, Any] = {"group": rtype.group, "kind": rtype.plural}
        if name:
            details["name"] = name
        raise KubeError(403, message, "Forbidden", details)

    @staticmethod
    def _json_body(raw: bytes) -> Any:
        try:
            return json.loads(raw or b"null")
        except ValueError as err:
            raise KubeError(400, f"the request body is not valid JSON: {err}") from None

    def _json_object(self, raw: bytes) -> dict[str, Any]:
        body = self._json_body(raw)
        if not isinstance(body, dict):
            raise KubeError(400, "the request body must be a JSON object")
        return body

    def _existing(self, rtype: ResourceType, ns: str | None, name: str | None) -> dict[str, Any]:
        obj = self._get(rtype, ns, name)
        if obj is None:
            raise self._not_found(rtype, name or "")
        return obj

    @staticmethod
    def _check_name(body: dict[str, Any], name: str, ns: str | None) -> None:
        meta = body["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise KubeError(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})",
            )
        if ns is not None and meta.get("namespace") and meta["namespace"] != ns:
            raise KubeError(
                400,
                "the namespace of the provided object does not match the namespace sent on "
                "the request",
            )

    @staticmethod
    def _selectors(query: dict[str, str], kind: str = "") -> _Predicate:
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), kind)
        return lambda obj: labels(obj) and fields(obj)

    def _list(self, rtype: ResourceType, ns: str | None, query: dict[str, str]) -> dict[str, Any]:
        # As an API server does, later pages come from the list the first page was cut
        # from (its resourceVersion); so a list of 100,000 in pages of 500 stays linear.
        token, _, offset = (query.get("continue") or "").partition(":")
        items = self._pages.get(token) if offset.isdigit() else None
        if query.get("continue") and items is None:
            raise KubeError(410, "the provided continue parameter is too old", "Expired")
        if items is None:
            items = self._items(rtype, ns, self._selectors(query, rtype.kind))
        start = int(offset or 0)
        limit = int(query.get("limit") or 0)
        end = start + limit if limit > 0 else len(items)
        doc = self._list_doc(rtype, items[start:end])
        if end < len(items):
            token = token or f"{doc['metadata']['resourceVersion']}-{next(self._lists)}"
            self._pages[token] = items
            while len(self._pages) > 16:
                self._pages.pop(next(iter(self._pages)))
            doc["metadata"]["continue"] = f"{token}:{end}"
            doc["metadata"]["remainingItemCount"] = len(items) - end
        # Encoded while the lock is held: the page as it is now, without copying it first.
        return Encoded(json.dumps(doc).encode())  # type: ignore[return-value]

    def _list_doc(self, rtype: ResourceType, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    def _patch(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        sub: str | None,
        ctype: str,
        raw: bytes,
    ) -> tuple[int, dict[str, Any]]:
        existing = self._existing(rtype, ns, name)
        body = self._json_body(raw)
        if ctype not in ("application/merge-patch+json",
                         "application/strategic-merge-patch+json"):
            raise KubeError(
                415,
                f"the body of the request was in an unknown format - accepted media types "
                f"include: application/merge-patch+json (got {ctype or 'none'})",
                "UnsupportedMediaType",
            )
        if not isinstance(body, dict):
            raise KubeError(400, "a merge patch must be a JSON object")
        patched = merge_patch(existing, body)
        if not isinstance(patched, dict):
            raise KubeError(422, "the patch did not produce an object")
        self._check_identity(rtype, patched)
        self._check_name(patched, name, ns)
        return 200, self._replace(
            rtype, existing, patched, sub=sub, keep_status=rtype.has_status
        )

    def _delete(
        self,
        rtype: ResourceType,
        ns: str | None,
        name: str,
        raw: bytes,
    ) -> dict[str, Any]:
        existing = self._existing(rtype, ns, name)
        options = self._json_body(raw) if raw else None
        pre: dict[str, Any] = {}
        if isinstance(options, dict):
            pre = options.get("preconditions") or {}
        meta = existing["metadata"]
        for field_name, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field_name) and pre[field_name] != meta.get(field_name):
                raise KubeError(
                    409,
                    f"Precondition failed: {label} in precondition: {pre[field_name]}, "
                    f"{label} in object meta: {meta.get(field_name)}",
                    "Conflict",
                    {"name": name, "group": rtype.group, "kind": rtype.plural},
                )
        # Finalizers are not modelled: deletion is immediate.
        deleted = self._remove(rtype, existing)
        if rtype.return_deleted_object:
            return deleted
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": rtype.group,
                "kind": rtype.plural,
                "uid": meta.get("uid"),
            },
        }

    def _review(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise KubeError(400, "the request body must be a JSON object")
        spec = body.get("spec") or {}
        if not spec.get("user") and not spec.get("groups"):
            raise KubeError(
                422,
                'SubjectAccessReview.authorization.k8s.io "" is invalid: spec.user,spec.groups:'
                ' Invalid value: "": at least one of user or group must be specified',
                "Invalid",
                {"group": "authorization.k8s.io", "kind": "SubjectAccessReview"},
            )
        with self._lock:
            self._reviews.append(copy.deepcopy(body))
        allowed, reason = self._decide(spec)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        meta = dict(body.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        return {
            "kind": "SubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": meta,
            "spec": copy.deepcopy(spec),
            "status": status,
        }

    # ------------------------------------------------------------------- discovery

    @staticmethod
    def _version() -> dict[str, Any]:
        return {
            "major": "1",
            "minor": "30",
            "gitVersion": "v1.30.0-fake",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _group_doc(self, group: str) -> dict[str, Any]:
        versions = [
            {"groupVersion": f"{group}/{v}", "version": v} for v in self._group_versions[group]
        ]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": versions,
            "preferredVersion": dict(versions[0]),
        }

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for rtype in sorted(self._types.values(), key=lambda t: t.plural):
            if rtype.group != group or rtype.version != version:
                continue
            entry: dict[str, Any] = {
                "name": rtype.plural,
                "singularName": rtype.singular or rtype.kind.lower(),
                "namespaced": rtype.namespaced,
                "kind": rtype.kind,
                "verbs": list(rtype.verbs),
            }
            if rtype.short_names:
                entry["shortNames"] = list(rtype.short_names)
            resources.append(entry)
            if rtype.has_status:
                resources.append(
                    {
                        "name": f"{rtype.plural}/status",
                        "singularName": "",
                        "namespaced": rtype.namespaced,
                        "kind": rtype.kind,
                        "verbs": list(STATUS_VERBS),
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        with self._lock:
            if parts == ["api"]:
                return {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                    ],
                }
            if parts == ["api", "v1"]:
                return self._resource_list("", "v1")
            if parts == ["apis"]:
                groups = [self._group_doc(g) for g in sorted(self._group_versions) if g]
                for doc in groups:
                    del doc["kind"], doc["apiVersion"]
                return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
            if len(parts) == 2 and parts[0] == "apis" and parts[1] in self._group_versions:
                return self._group_doc(parts[1])
            if (
                len(parts) == 3
                and parts[0] == "apis"
                and parts[2] in self._group_versions.get(parts[1], [])
            ):
                return self._resource_list(parts[1], parts[2])
        return None

    # ----------------------------------------------------------------------- watch

    def _watch(
        self,
        handler: _Handler,
        record: RecordedRequest,
        rtype: ResourceType,
        ns: str | None,
        query: dict[str, str],
        name: str | None,
    ) -> None:
        labels = self._selectors(query, rtype.kind)

        def pred(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return (ns is None or meta.get("namespace") == ns) and labels(obj) \
                and (name is None or meta.get("name") == name)

        rv_param = query.get("resourceVersion") or ""
        if rv_param and not rv_param.isdigit():
            raise KubeError(400, f'resourceVersion: Invalid value: "{rv_param}"')
        try:
            timeout = float(query.get("timeoutSeconds") or self.watch_timeout)
        except ValueError:
            raise KubeError(400, "timeoutSeconds must be a number") from None
        bookmarks = _truthy(query.get("allowWatchBookmarks"))
        initial = _truthy(query.get("sendInitialEvents")) or rv_param in ("", "0")
        deadline = time.monotonic() + timeout
        key = (rtype.group, rtype.plural)

        with self._lock:
            cursor = self._rv
            pending: list[dict[str, Any]] = []
            expired = None
            if initial:
                pending = [
                    {"type": "ADDED", "object": copy.deepcopy(o)}
                    for o in self._items(rtype, None, pred)
                ]
                if bookmarks and _truthy(query.get("sendInitialEvents")):
                    pending.append(self._bookmark(rtype, cursor, initial_end=True))
            elif int(rv_param) < self._min_watch_rv:
                expired = self._expired(int(rv_param))
            else:
                cursor = int(rv_param)

        record.status = 200
        handler.start_stream()
        handler.close_connection = True
        for event in pending:
            handler.write_chunk(event)
        if expired is not None:
            handler.write_chunk(expired)
            handler.end_stream()
            return
        while not self._stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._changed:
                if self._rv <= cursor and not self._stopping.is_set():
                    self._changed.wait(min(remaining, 0.5))
                if cursor < self._min_watch_rv:
                    events = [self._expired(cursor)]
                    done = True
                else:
                    changes = [c for c in self._history if c.rv > cursor and c.key == key]
                    cursor = self._rv
                    events = [e for c in changes if (e := self._event_for(c, pred))]
                    done = False
            for event in events:
                handler.write_chunk(event)
            if done:
                handler.end_stream()
                return
            if not events and handler.client_gone():
                return
        if bookmarks and not self._stopping.is_set():
            handler.write_chunk(self._bookmark(rtype, cursor))
        handler.end_stream()

    @staticmethod
    def _event_for(change: _Change, pred: _Predicate) -> dict[str, Any] | None:
        now = pred(change.obj)
        before = change.prev is not None and pred(change.prev)
        if change.type == "MODIFIED":
            kind = {(True, True): "MODIFIED", (True, False): "ADDED", (False, True): "DELETED"}.get(
                (now, before)
            )
        else:
            kind = change.type if now else None
        if kind is None:
            return None
        return {"type": kind, "object": copy.deepcopy(change.obj)}

    @staticmethod
    def _bookmark(rtype: ResourceType, rv: int, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": rtype.kind, "apiVersion": rtype.api_version, "metadata": meta},
        }

    def _expired(self, rv: int) -> dict[str, Any]:
        err = KubeError(410, f"too old resource version: {rv} ({self._min_watch_rv})", "Expired")
        return {"type": "ERROR", "object": err.to_status()}
