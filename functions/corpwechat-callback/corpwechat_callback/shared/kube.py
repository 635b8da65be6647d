"""Kubernetes access, the only layer that talks to the API server: one pooled client per
process, discovery cached, errors typed.

In-cluster configuration first, else ``KUBECONFIG`` / ``~/.kube/config``. Every call goes
through ``translate``, so a library exception never reaches a caller and never picks a
status; callers catch the type, as kopf's handlers do:

=====================  =====================================================  ==========
error                  when                                                   status
=====================  =====================================================  ==========
``NotFound``           404: no such object (``get`` answers ``None`` instead)  404
``Conflict``           409: it exists (create) or changed since it was read    409
``Gone``               410: a watch's or a list's resourceVersion is too old   410
``AccessDenied``       401/403: this function's own ServiceAccount lacks a     503
                       permission (logged by name; retried: an operator can
                       fix it)
``Unavailable``        5xx, a timeout, unreachable: the API server may recover 503
``RateLimited``        429: the API server is throttling                       429
``NoSuchKind``         the API server does not serve the kind                  422
``Unprocessable``      any other refusal                                       422
=====================  =====================================================  ==========
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ApiException as DynamicApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from . import logs
from .errors import FunctionError, PermanentError, RateLimited, TemporaryError, Unprocessable

# (connect, read) seconds for ordinary requests.
DEFAULT_TIMEOUT = (3.0, 10.0)
# How long a kind the API server does not serve is taken as still not served.
MISSING_KIND_SECONDS = 30.0


class NotFound(PermanentError):
    status = 404


class Conflict(Unprocessable):
    """409: the object exists already (create) or changed since it was read (replace)."""

    status = 409


class Gone(PermanentError):
    """410: the resourceVersion a watch or a continued list asked from is too old."""

    status = 410


class NoSuchKind(Unprocessable):
    """The API server does not serve the kind (its CRD is not installed)."""


class AccessDenied(TemporaryError):
    """The function's own ServiceAccount lacks a permission (retry after RBAC is fixed)."""


class Unavailable(TemporaryError):
    """The API server answered 5xx, timed out or could not be reached."""


def load_configuration() -> k8s.Configuration:
    configuration = k8s.Configuration()
    try:
        k8s_config.load_incluster_config(client_configuration=configuration)
    except k8s_config.ConfigException:
        try:
            # KUBECONFIG as it is now (the client library reads it once, at import).
            k8s_config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                        client_configuration=configuration)
        except (k8s_config.ConfigException, OSError) as exc:
            raise k8s_config.ConfigException(
                f"no Kubernetes configuration: not in a cluster and KUBECONFIG unusable ({exc})"
            ) from None
    configuration.retries = 1
    configuration.connection_pool_maxsize = 16
    # Both config loaders install a hook that re-assigns ``host`` before every request,
    # and assigning ``host`` re-reads the proxy settings from the whole environment
    # while the proxy still "comes from the environment" (a scan of every variable per
    # call; pods carry one set of service variables per Service). Pin the value it has
    # now: the environment does not change, and the connection pool already uses it.
    configuration.proxy = configuration.proxy
    if configuration.api_key:
        for value in configuration.api_key.values():
            logs.register_secret(str(value).removeprefix("Bearer ").strip())
    return configuration


class Kube:
    """A pooled API client plus a lazily built, cached dynamic client."""

    def __init__(self, configuration: k8s.Configuration | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.configuration = configuration or load_configuration()
        self.api = k8s.ApiClient(self.configuration)
        self.timeout = timeout
        self._dynamic: DynamicClient | None = None
        self._resources: dict[tuple[str, str], Resource] = {}
        self._missing: dict[tuple[str, str], float] = {}  # kind → when it was not served
        self._lock = threading.Lock()
        self._discovery_lock = threading.Lock()
        self._discovery_cache = os.path.join(
            tempfile.mkdtemp(prefix="kubeevent-discovery-"), "discovery.json"
        )

    @property
    def dynamic(self) -> DynamicClient:
        with self._lock:
            if self._dynamic is None:
                with translate("discover the API"):
                    self._dynamic = DynamicClient(self.api, cache_file=self._discovery_cache)
            return self._dynamic

    def resource(self, api_version: str, kind: str) -> Resource:
        """The API resource serving ``kind``, looked up in discovery once per process; a
        kind the server does not serve is looked up again at most every
        ``MISSING_KIND_SECONDS`` (each miss makes the client fetch all of discovery again).
        Lookups are one at a time: the client's discovery cache is not safe to read while
        a miss rebuilds it."""
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is not None:
            return found
        with self._discovery_lock:
            found = self._resources.get(key)
            if found is not None:
                return found
            missed = self._missing.get(key)
            if missed is None or time.monotonic() - missed >= MISSING_KIND_SECONDS:
                try:
                    with translate(f"discover {kind} {api_version}"):
                        found = self.dynamic.resources.get(api_version=api_version, kind=kind)
                except ResourceNotFoundError:
                    self._missing[key] = time.monotonic()
                else:
                    self._missing.pop(key, None)
                    self._resources[key] = found
                    return found
        raise NoSuchKind(f"the API server has no kind {kind} in {api_version}")

    def get(self, api_version: str, kind: str, name: str,
            namespace: str | None = None) -> dict[str, Any] | None:
        """The object as a plain dict, or ``None`` when it does not exist."""
        resource = self.resource(api_version, kind)
        what = describe("get", resource, name, namespace)
        try:
            with translate(what):
                kwargs: dict[str, Any] = {"name": name, "_request_timeout": self.timeout}
                if resource.namespaced:
                    kwargs["namespace"] = namespace
                # The raw body, parsed once: the dynamic client's own result wraps every
                # field in a ResourceField and ``to_dict()`` unwraps them again (a
                # recursive walk each way per call, growing with the object's size).
                response = resource.get(serialize=False, **kwargs)
        except NotFound:
            return None
        return json_body(response, what)

    def write(self, verb: str, body: dict[str, Any]) -> dict[str, Any]:
        """``create`` or ``replace`` (guarded by the body's resourceVersion) ``body``; the
        object as stored. ``Conflict`` when it exists (create) or changed (replace)."""
        resource = self.resource(str(body.get("apiVersion")), str(body.get("kind")))
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") if resource.namespaced else None
        what = describe(verb, resource, str(meta.get("name") or ""), namespace)
        call = resource.create if verb == "create" else resource.replace
        with translate(what):
            kwargs: dict[str, Any] = {"body": body, "_request_timeout": self.timeout}
            if namespace:
                kwargs["namespace"] = namespace
            response = call(serialize=False, **kwargs)
        return json_body(response, what)

    def list_page(self, api_version: str, kind: str, *, namespace: str | None = None,
                  label_selector: str = "", field_selector: str = "", limit: int = 500,
                  token: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a list: (the objects as plain dicts, the continue token or
        ``None`` when it was the last page)."""
        resource = self.resource(api_version, kind)
        what = describe("list", resource, None, namespace)
        kwargs: dict[str, Any] = {"limit": limit, "_request_timeout": self.timeout}
        if resource.namespaced and namespace:
            kwargs["namespace"] = namespace
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        if token:
            kwargs["_continue"] = token
        with translate(what):
            response = resource.get(serialize=False, **kwargs)
        body = json_body(response, what)
        items = body.get("items")
        if not isinstance(items, list):
            raise TemporaryError(f"{what}: the API server answered with no list")
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        return [i for i in items if isinstance(i, dict)], (meta.get("continue") or None)

    def pages(self, api_version: str, kind: str, *, namespace: str | None = None,
              label_selector: str = "", field_selector: str = "", limit: int = 500
              ) -> Iterator[list[dict[str, Any]]]:
        """Every page of a list, in order (stop iterating to stop listing)."""
        token: str | None = None
        while True:
            page, token = self.list_page(api_version, kind, namespace=namespace,
                                         label_selector=label_selector,
                                         field_selector=field_selector, limit=limit,
                                         token=token)
            yield page
            if token is None:
                return

    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def patch_as(self, user: str, groups: tuple[str, ...], path: str, body: dict[str, Any]
                 ) -> tuple[int, dict[str, Any]]:
        """A merge patch of ``path`` (``/apis/...``) made *as* ``user`` in ``groups``
        (Kubernetes impersonation: the API server's RBAC and admission judge it as theirs;
        this client needs ``impersonate`` on those users and groups; ``user`` empty: as
        this client itself). Returns the status
        and the JSON answer (a ``Status`` when refused); an unreachable server is a
        ``TemporaryError``."""
        headers = urllib3.HTTPHeaderDict()
        headers.add("Content-Type", "application/merge-patch+json")
        headers.add("Accept", "application/json")
        if user:
            headers.add("Impersonate-User", user)
            for group in groups:  # one header line each, as the API server reads them
                headers.add("Impersonate-Group", group)
        # The client's own credentials (a client certificate is in its connection pool).
        for setting in self.configuration.auth_settings().values():
            if setting.get("in") == "header" and setting.get("value"):
                headers.add(str(setting["key"]), str(setting["value"]))
        url = self.configuration.host.rstrip("/") + path
        try:
            response = self.api.rest_client.pool_manager.request(
                "PATCH", url, body=json.dumps(body).encode("utf-8"), headers=headers,
                timeout=urllib3.Timeout(connect=self.timeout[0], read=self.timeout[1]),
                retries=False)
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"patch {path} as {user}: API server unreachable "
                              f"({type(exc).__name__})") from None
        try:
            answer = json.loads(response.data or b"{}")
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}

    def merge_status(self, api_version: str, kind: str, name: str, patch: dict[str, Any],
                     namespace: str | None = None) -> bool | None:
        """``patch`` of the object's ``/status`` as an answer: ``True`` written, ``False`` a
        conflict (it changed since it was read: read again), ``None`` it is gone."""
        try:
            self.patch(api_version, kind, name, namespace, patch, status=True)
        except Conflict:
            return False
        except NotFound:
            return None
        return True

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None,
              patch: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        """Merge ``patch`` into a custom object (``status``: its ``/status``), guarded by
        the resourceVersion the patch carries, if any; the object as stored. ``Conflict``
        when it changed since it was read, ``NotFound`` when it is gone."""
        resource = self.resource(api_version, kind)
        custom = self.custom()
        args: tuple[Any, ...] = (resource.group, resource.api_version)
        if resource.namespaced:
            call = custom.patch_namespaced_custom_object_status if status \
                else custom.patch_namespaced_custom_object
            args += (namespace,)
        else:
            call = custom.patch_cluster_custom_object_status if status \
                else custom.patch_cluster_custom_object
        with translate(describe("patch", resource, name + ("/status" if status else ""),
                                namespace)):
            return call(*args, resource.name, name, patch,
                        _content_type="application/merge-patch+json",
                        _request_timeout=self.timeout)

    def delete(self, api_version: str, kind: str, name: str,
               namespace: str | None = None) -> bool:
        """Delete the object: ``False`` when it was gone already."""
        resource = self.resource(api_version, kind)
        kwargs: dict[str, Any] = {"name": name, "_request_timeout": self.timeout}
        if resource.namespaced:
            kwargs["namespace"] = namespace
        try:
            with translate(describe("delete", resource, name, namespace)):
                resource.delete(serialize=False, **kwargs)
        except NotFound:
            return False
        return True

    def list_all(self, api_version: str, kind: str, *, namespace: str | None = None,
                 label_selector: str = "", field_selector: str = "", limit: int = 500
                 ) -> list[dict[str, Any]]:
        """Every object of the list, read in pages."""
        return [item for page in self.pages(api_version, kind, namespace=namespace,
                                            label_selector=label_selector,
                                            field_selector=field_selector, limit=limit)
                for item in page]

    def config_map(self, name: str, namespace: str) -> dict[str, str] | None:
        """A ConfigMap's ``data`` (``{}`` when it has none), ``None`` when it does not
        exist."""
        found = self.get("v1", "ConfigMap", name, namespace)
        if found is None:
            return None
        data = found.get("data")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def close(self) -> None:
        self.api.close()
        shutil.rmtree(os.path.dirname(self._discovery_cache), ignore_errors=True)


def json_body(response: Any, what: str) -> dict[str, Any]:
    """The JSON object of a raw (``serialize=False``) dynamic-client response."""
    try:
        body = json.loads(response.data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TemporaryError(f"{what}: the API server answered with no JSON object")
    return body


def describe(verb: str, resource: Resource, name: str | None = None,
             namespace: str | None = None) -> str:
    plural = resource.name if not resource.group else f"{resource.name}.{resource.group}"
    where = f" in namespace {namespace}" if namespace and resource.namespaced else ""
    target = f" {name}" if name else ""
    return f"{verb} {plural}{target}{where}"


def _status_message(exc: ApiException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            return str(json.loads(body).get("message") or exc.reason)
        except ValueError:
            pass
    return str(exc.reason or exc)


@contextmanager
def translate(what: str) -> Iterator[None]:
    """Turn client library failures during ``what`` into typed errors."""
    try:
        yield
    except FunctionError:
        raise
    except (ApiException, DynamicApiException) as exc:
        status = int(getattr(exc, "status", 0) or 0)
        message = _status_message(exc)
        if status == 404:
            raise NotFound(f"{what}: not found") from None
        if status == 409:
            raise Conflict(f"{what}: conflict: {message}") from None
        if status in (401, 403):
            logs.error("missing permission", permission=what, status=status, detail=message)
            raise AccessDenied(f"{what}: forbidden by the API server (missing RBAC permission)") \
                from None
        if status == 410:
            raise Gone(f"{what}: expired: {message}") from None
        if status == 429:
            raise RateLimited(f"{what}: API server is throttling") from None
        if status >= 500 or status == 0:
            raise Unavailable(f"{what}: API server error {status}: {message}") from None
        raise Unprocessable(f"{what}: API server refused with {status}: {message}") from None
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as exc:
        raise Unavailable(f"{what}: API server unreachable ({type(exc).__name__})") from None
