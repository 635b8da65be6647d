"""The whole chain on one machine: Kubernetes API, WeCom, the dev broker, three functions.

``Stack`` is what ``python -m dev.stack`` runs and what the end-to-end tests start
once per module. The functions run through functions-framework as separate processes
(``dev.support.procs.FunctionProcess``) with the environment of their ``func.yaml``
plus the local endpoints; the dev broker routes by the Trigger objects rendered from
``manifests/``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from dev.fakes.kube_api import FakeKubeAPI
from dev.fakes.wecom import WeComSandbox
from dev.support.mailpit import Mailpit
from dev.support.mailpit import why_not as mailpit_missing
from dev.support.procs import FUNCTIONS, FunctionProcess

from . import manifests
from .broker import DevBroker

ENRICHER = "kubeevent-enricher-sink"
FILTER = "subscription-filter"
NOTIFIER = "corpwechat-notifier"
EMAIL_NOTIFIER = "email-notifier"
FUNCTION_NAMES = (ENRICHER, FILTER, NOTIFIER, EMAIL_NOTIFIER)
MAIL_FROM = "Katanomi <noreply@kubeevent.local>"
FUNCTION_NAMESPACE = "kubeevent-enricher"
SYSTEM_NAMESPACE = "cpaas-system"
BROKER = "cloudevents-katanomi-dev"
BROKER_PARAM = {"broker": BROKER}  # the seed's ApiServerSource sink uri
CREDENTIAL_VARIABLES = ("CORPWECHAT_CORP_ID", "CORPWECHAT_CORP_SECRET", "CORPWECHAT_AGENT_ID")
DEFAULT_PLATFORM_URL = "http://localhost"

# The example objects the embedded API server starts with (manifests/examples).
EXAMPLE_FILES = (
    manifests.EXAMPLES / "seed-clustersubscription-admin.yaml",
    manifests.DEVSTACK_EXAMPLES / "artifactpromotionrun.yaml",
    manifests.DEVSTACK_EXAMPLES / "clustersubscriptions.yaml",
    manifests.DEVSTACK_EXAMPLES / "corpwechat-users.yaml",
    manifests.DEVSTACK_EXAMPLES / "email-users.yaml",
)
SANDBOX_SECRET = manifests.DEVSTACK_EXAMPLES / "corpwechat-server-secret.yaml"
EVENTS_FILE = manifests.DEVSTACK_EXAMPLES / "events.yaml"
# Kinds of the rendered manifests the embedded API server gets (configuration the
# functions read); the rest (Services, RBAC, Triggers) is for the cluster, not for them.
CONFIG_KINDS = frozenset({"CustomResourceDefinition", "ConfigMap", "NotificationTemplate"})
# E-mail addresses the WeCom sandbox knows (the notifier's second way to find a user id).
SANDBOX_EMAILS = {"bob@example.com": "bob"}


def func_yaml_env(name: str, *, templated: bool = False) -> dict[str, str]:
    """``run.envs`` of ``functions/<name>/func.yaml`` (what a deployment sets). Values that
    func resolves at deploy time (``{{ secret:… }}``) only with ``templated``: locally the
    stack sets them itself."""
    data = yaml.safe_load((FUNCTIONS / name / "func.yaml").read_text(encoding="utf-8"))
    envs = ((data or {}).get("run") or {}).get("envs") or []
    found = {str(e["name"]): str(e.get("value", "")) for e in envs if e.get("name")}
    return {k: v for k, v in found.items() if templated or not v.startswith("{{")}


def example_events() -> list[dict[str, Any]]:
    """The Kubernetes Events of ``manifests/examples/devstack/events.yaml``, in order."""
    docs = manifests.load_yaml_file(EVENTS_FILE)
    events: list[dict[str, Any]] = []
    for doc in docs:
        events.extend(doc.get("items") or [] if doc.get("kind") == "List" else [doc])
    return events


def apiserver_event(kube_event: Mapping[str, Any], action: str = "add") -> CloudEvent:
    """``kube_event`` wrapped as the ApiServerSource (mode Resource) sends it."""
    meta = kube_event.get("metadata") or {}
    return CloudEvent({
        "specversion": "1.0",
        "type": f"dev.knative.apiserver.resource.{action}",
        "source": "https://kubernetes.default.svc",
        "id": str(uuid.uuid4()),
        "subject": f"/api/v1/namespaces/{meta.get('namespace')}/events/{meta.get('name')}",
        "datacontenttype": "application/json",
    }, dict(kube_event))


def wecom_secret_credentials() -> tuple[str, str, int]:
    """corp id, secret and agent id of the dev Secret (its stringData is base64 text)."""
    import base64

    doc = manifests.load_yaml_file(SANDBOX_SECRET)[0]
    data = doc["stringData"]

    def plain(key: str) -> str:
        return base64.b64decode(data[key]).decode("utf-8")

    return plain("corpId"), plain("corpSecret"), int(plain("agentId"))


def reachable_kubeconfig(timeout: float = 2.0) -> str | None:
    """The kubeconfig in use when its API server answers ``/version``, else ``None``."""
    path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    if not all(Path(p).exists() for p in path.split(os.pathsep) if p):
        return None
    try:
        from kubernetes import client, config

        api = config.new_client_from_config(config_file=path)
        try:
            client.VersionApi(api).get_code(_request_timeout=timeout)
        finally:
            api.close()
    except Exception:  # unreachable, bad config, no credentials: use the fake
        return None
    return path


@dataclass
class StackOptions:
    """How to run the stack. ``kube``/``wecom``: ``auto`` picks the real one when usable."""

    kube: str = "auto"  # auto | fake | kubeconfig
    # A Kubernetes API the caller runs (the cluster harness): used as it is, never probed;
    # it holds the sandbox's CorpWeChat Secret, which the notifier reads as deployed.
    kubeconfig: Path | None = None
    wecom: str = "auto"  # auto | sandbox | real
    overlay: str = manifests.DEFAULT_OVERLAY
    platform_url: str = DEFAULT_PLATFORM_URL
    backoff_scale: float = 1.0
    delivery_timeout: float = 30.0
    # Knative's default broker answers its producer after every delivery; False: at once.
    synchronous_broker: bool = True
    workdir: Path | None = None
    function_env: dict[str, dict[str, str]] = field(default_factory=dict)
    extra_objects: list[dict[str, Any]] = field(default_factory=list)
    load_examples: bool = True
    start_timeout: float = 90.0
    # A broker ingress the caller runs (Knative's own, dev/cluster/eventing.py): used
    # instead of the dev broker, which is then not started.
    broker_ingress: str | None = None
    # The sandbox's per-member limits (WeCom's: 30 a minute, 1000 an hour); a benchmark
    # of the pipeline lifts them, with the notifier's CORPWECHAT_MEMBER_MESSAGES_*.
    wecom_member_limits: tuple[int, int] = (30, 1000)


class Stack:
    """Start with ``start()`` (or ``with Stack(...)``); ``stop()`` ends every part."""

    def __init__(self, options: StackOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.options = options or StackOptions()
        self.log = log
        self.workdir = self.options.workdir or (manifests.ROOT / ".dev")
        self.kube_api: FakeKubeAPI | None = None
        self.kubeconfig: Path | None = None
        self.sandbox: WeComSandbox | None = None
        self.mailpit: Mailpit | None = None
        self.broker: DevBroker | None = None
        self.functions: dict[str, FunctionProcess] = {}
        self.rendered: list[dict[str, Any]] = []
        self.broker_log: Path = self.workdir / "broker.log"
        self._broker_log_lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Stack:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rendered = manifests.render(self.options.overlay)
        try:
            self._start_kube()
            self._start_wecom()
            self._start_mail()
            self.functions = {name: FunctionProcess(name) for name in FUNCTION_NAMES}
            self._start_broker()
            self._start_functions()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in self.functions.values():
            proc.stop()
        if self.broker is not None:
            self.broker.stop()
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.mailpit is not None:
            self.mailpit.stop()
        if self.kube_api is not None:
            self.kube_api.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ parts

    def _start_kube(self) -> None:
        if self.options.kubeconfig is not None:
            self.kubeconfig = self.options.kubeconfig
            return
        mode = self.options.kube
        if mode in ("auto", "kubeconfig"):
            found = reachable_kubeconfig()
            if found:
                self.kubeconfig = Path(found.split(os.pathsep)[0])
                return
            if mode == "kubeconfig":
                raise RuntimeError("no reachable Kubernetes API in KUBECONFIG / ~/.kube/config")
        self.kube_api = FakeKubeAPI().start()
        self.kubeconfig = self.kube_api.write_kubeconfig(self.workdir / "kubeconfig")
        self.kube_api.load_yaml(self._fake_objects_yaml())
        for obj in self.options.extra_objects:
            self.kube_api.add(obj, register_unknown=True)

    def _fake_objects_yaml(self) -> str:
        """The configuration objects of the manifests, plus the example objects."""
        docs = [d for d in self.rendered if d.get("kind") in CONFIG_KINDS]
        text = yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True)
        text = manifests.envsubst(text, {"PLATFORM_URL": self.options.platform_url})
        if self.options.load_examples:
            for path in EXAMPLE_FILES:
                text += "\n---\n" + path.read_text(encoding="utf-8")
        if self.options.wecom != "real" and not self.real_wecom:
            text += "\n---\n" + SANDBOX_SECRET.read_text(encoding="utf-8")
        return text

    @property
    def real_wecom(self) -> bool:
        if self.options.wecom == "sandbox":
            return False
        present = all(os.environ.get(v) for v in CREDENTIAL_VARIABLES)
        if self.options.wecom == "real" and not present:
            raise RuntimeError(f"--wecom real needs {', '.join(CREDENTIAL_VARIABLES)}")
        return present

    def _start_wecom(self) -> None:
        if self.real_wecom:
            return
        corp_id, secret, agent_id = wecom_secret_credentials()
        self.sandbox = WeComSandbox(corp_id=corp_id, corp_secret=secret, agent_id=agent_id,
                                    member_limits=self.options.wecom_member_limits,
                                    emails=SANDBOX_EMAILS).start()

    def _start_mail(self) -> None:
        """A real SMTP server (Mailpit) for email-notifier; without its binary the
        notifier has no server and refuses email recipients (422), as it would deployed."""
        if mailpit_missing() is None:
            self.mailpit = Mailpit(self.workdir / "mailpit").start()

    def _start_broker(self) -> None:
        if self.options.broker_ingress is not None:
            return
        subscribers = {f"{FUNCTION_NAMESPACE}/{name}": proc.url
                       for name, proc in self.functions.items()}
        self.broker_log.write_text("")
        self.broker = DevBroker(self.rendered, subscribers,
                                backoff_scale=self.options.backoff_scale,
                                timeout=self.options.delivery_timeout,
                                synchronous=self.options.synchronous_broker,
                                log=self._broker_line).start()

    def _broker_line(self, line: str) -> None:
        with self._broker_log_lock, self.broker_log.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        if self.log is not None:
            self.log(line)

    def function_env(self, name: str) -> dict[str, str]:
        """The environment ``name`` runs with: its func.yaml, then the local endpoints."""
        assert self.kubeconfig is not None
        ingress = self.options.broker_ingress
        if ingress is None:
            assert self.broker is not None
            ingress = self.broker.url
        env = func_yaml_env(name)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["SYSTEM_NAMESPACE"] = SYSTEM_NAMESPACE
        if name == ENRICHER:
            env["BROKER_INGRESS_URL"] = ingress
            env["DEFAULT_BROKER_NAMESPACE"] = SYSTEM_NAMESPACE
        if name == FILTER:
            env["K_SINK"] = f"{ingress}/{SYSTEM_NAMESPACE}/{BROKER}"
        if name == NOTIFIER:
            env["PLATFORM_URL"] = self.options.platform_url
            if self.sandbox is not None:
                env["CORPWECHAT_API_URL"] = self.sandbox.api_url
                if self.kube_api is not None or self.options.kubeconfig is not None:
                    # the sandbox's Secret is in the API server, as the seed creates it
                    values = ("", "", "")
                else:  # a real cluster's Secret holds real credentials: never use them here
                    corp_id, secret, agent_id = wecom_secret_credentials()
                    values = (corp_id, secret, str(agent_id))
                env.update(zip(CREDENTIAL_VARIABLES, values, strict=True))
        if name == EMAIL_NOTIFIER:
            env["PLATFORM_URL"] = self.options.platform_url
            if self.mailpit is not None:
                env.update({"EMAIL_SMTP_HOST": "127.0.0.1",
                            "EMAIL_SMTP_PORT": str(self.mailpit.smtp_port),
                            "EMAIL_SMTP_TLS": "none", "EMAIL_FROM": MAIL_FROM})
        env.update(self.options.function_env.get(name, {}))
        return env

    def _start_functions(self) -> None:
        errors: list[BaseException] = []

        def start(proc: FunctionProcess) -> None:
            try:
                proc.env = self.function_env(proc.name)
                proc.start(timeout=self.options.start_timeout, wait_ready=True)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(p,)) for p in self.functions.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # short joins: Ctrl-C is handled between them
                thread.join(0.2)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ use

    @property
    def enricher(self) -> FunctionProcess:
        return self.functions[ENRICHER]

    @property
    def filter(self) -> FunctionProcess:
        return self.functions[FILTER]

    @property
    def notifier(self) -> FunctionProcess:
        return self.functions[NOTIFIER]

    @property
    def email_notifier(self) -> FunctionProcess:
        return self.functions[EMAIL_NOTIFIER]

    def send(self, kube_event: Mapping[str, Any], action: str = "add") -> requests.Response:
        """POST ``kube_event`` to the enricher as the seed's ApiServerSource does. The
        enricher acts only on Events the API server has: in the embedded API the Event is
        created first (as a controller would); a cluster of yours is never written to, so
        there the enricher refuses an example Event it does not have, and says so."""
        meta = kube_event.get("metadata") or {}
        if self.kube_api is not None and self.kube_api.get_object(
                str(kube_event.get("apiVersion") or "v1"), "Event", str(meta.get("name")),
                meta.get("namespace")) is None:
            self.kube_api.add(dict(kube_event))
        headers, body = to_binary(apiserver_event(kube_event, action))
        return requests.post(self.enricher.url, data=body, headers=dict(headers),
                             params=BROKER_PARAM, timeout=30)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        assert self.broker is not None
        return self.broker.wait_idle(timeout)

    def describe(self) -> list[str]:
        """Readable lines: where each part listens and logs."""
        lines = []
        if self.kube_api is not None:
            lines.append(f"Kubernetes API  {self.kube_api.url}  (embedded fake; "
                         f"KUBECONFIG={self.kubeconfig})")
        else:
            lines.append(f"Kubernetes API  from {self.kubeconfig} (your cluster)")
        if self.sandbox is not None:
            lines.append(f"WeCom API       {self.sandbox.api_url}  (local sandbox)")
        else:
            lines.append("WeCom API       https://qyapi.weixin.qq.com (real: CORPWECHAT_* set)")
        if self.mailpit is not None:
            lines.append(f"mail (Mailpit)  read at http://127.0.0.1:{self.mailpit.http_port}  "
                         f"(SMTP 127.0.0.1:{self.mailpit.smtp_port})")
        else:
            lines.append(f"mail            not started: {mailpit_missing()}")
        if self.broker is not None:
            lines.append(f"dev broker      {self.broker.ingress_url(SYSTEM_NAMESPACE, BROKER)}  "
                         f"(log {self.broker_log})")
            for trigger in self.broker.triggers:
                lines.append(f"  Trigger {trigger.name}: -> "
                             f"{self.broker.resolve(trigger.subscriber)}")
        for name, proc in self.functions.items():
            lines.append(f"{name:<26}{proc.url}  (log {proc.log_path})")
        return lines

    def objects(self, kinds: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(kinds)
        return [d for d in self.rendered if d.get("kind") in wanted]
