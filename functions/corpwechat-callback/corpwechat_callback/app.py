"""The callback function: WeCom's requests in, a decision written as the person who
clicked, the clicker's card answered.

WeCom calls it directly (the only function reachable from outside the cluster). A request
that is not signed with the app's Token, not encrypted with its EncodingAESKey for this
corp, or signed too long ago is refused (403) before anything is read or written. A click
is acted on once: WeCom retries a callback it got no answer to within 5 seconds, so each
click is kept in its delivery record (``status.card.clicks``), and a repeat gets the same
answer without a second write.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from . import core
from .config import Config
from .crypto import Refused, encrypt, signature
from .shared import logs, metrics
from .shared.approvals import approval_of
from .shared.boundary import Request, Response
from .shared.errors import Forbidden as ForbiddenError
from .shared.kube import Kube
from .shared.records import GROUP, PLURAL, TASK_LABEL, VERSION, task_label
from .shared.times import now_text

CLICKS = metrics.counter("kubeevent_card_clicks",
                         "Approve/deny clicks on cards, by outcome: approved, denied, refused, "
                         "repeated", ("outcome",))
HISTORY = 20  # clicks kept per card


class CallbackFunction:
    name = "corpwechat-callback"

    def __init__(self, config: Config, kube: Kube, clock: Any = time.time) -> None:
        self.config = config
        self.kube = kube
        self.clock = clock

    def ready(self) -> bool:
        return True

    # ------------------------------------------------------------------ HTTP

    def handle_http(self, request: Request) -> Response:
        try:
            signed = core.Signed.from_query(request.params)
            core.check_time(signed, self.clock(), self.config.max_age_seconds)
            if request.method == "GET":
                echostr = str(request.params.get("echostr") or "")
                if not echostr:
                    raise Refused("echostr is required to verify the URL")
                return _plain(200, core.echo(self.config.keys, signed, echostr))
            if request.method != "POST":
                return _plain(405, f"method {request.method} not allowed")
            message = core.opened(self.config.keys, signed, request.body)
        except Refused as exc:
            logs.warning("callback refused", reason=str(exc), method=request.method)
            raise ForbiddenError(f"callback refused: {exc}") from None
        click = core.click_of(message)
        if click is None:
            return _plain(200, "")  # another event: acknowledged, nothing to do
        outcome = self.act(click)
        return self.reply(click, outcome)

    def reply(self, click: core.Click, outcome: str) -> Response:
        """The clicker's card answered: its buttons replaced by the outcome (WeCom's
        passive reply ``update_button``), encrypted and signed as WeCom expects."""
        now = str(int(self.clock()))
        inner = (f"<xml><ToUserName><![CDATA[{click.user_id}]]></ToUserName>"
                 f"<FromUserName><![CDATA[{self.config.keys.corp_id}]]></FromUserName>"
                 f"<CreateTime>{now}</CreateTime>"
                 f"<MsgType><![CDATA[update_button]]></MsgType>"
                 f"<Button><ReplaceName><![CDATA[{_cdata(outcome)[:64]}]]></ReplaceName>"
                 f"</Button></xml>")
        encrypted = encrypt(self.config.keys, inner)
        nonce = hashlib.sha256(f"{click.task_id}{now}".encode()).hexdigest()[:16]
        sig = signature(self.config.keys.token, now, nonce, encrypted)
        body = (f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt>"
                f"<MsgSignature><![CDATA[{sig}]]></MsgSignature>"
                f"<TimeStamp>{now}</TimeStamp><Nonce><![CDATA[{nonce}]]></Nonce></xml>")
        return Response(200, body.encode("utf-8"),
                        {"Content-Type": "application/xml; charset=utf-8"})

    # ------------------------------------------------------------------ a click

    def act(self, click: core.Click) -> str:
        """The outcome shown on the clicker's card, the decision written at most once."""
        record = self.record_of(click.task_id)
        if record is None:
            CLICKS.labels("refused").inc()
            return "未执行 Not done: this card is no longer followed"
        card = (record.get("status") or {}).get("card") or {}
        for earlier in card.get("clicks") or []:
            if isinstance(earlier, Mapping) and earlier.get("user") == click.user_id \
                    and earlier.get("created") == click.create_time:
                CLICKS.labels("repeated").inc()
                return str(earlier.get("outcome") or "")
        outcome = self.decide(click, record)
        self.remember(record, click, outcome)
        return outcome

    def decide(self, click: core.Click, record: Mapping[str, Any]) -> str:
        spec = record.get("spec") or {}
        users = self.directory()
        user = users.get(click.user_id)
        if user is None:
            CLICKS.labels("refused").inc()
            logs.warning("click refused: not in the directory", userid=click.user_id)
            return "未执行 Not done: you are not in the platform's directory"
        if (spec.get("recipient") or {}).get("name") != user:
            CLICKS.labels("refused").inc()
            return "未执行 Not done: this card was sent to someone else"
        ref = spec.get("object") or {}
        paths = self.config.paths.get(str(ref.get("kind") or ""))
        if paths is None:
            CLICKS.labels("refused").inc()
            return "未执行 Not done: this card is about no approval"
        obj = self.kube.get(str(ref.get("apiVersion")), str(ref.get("kind")),
                            str(ref.get("name")), ref.get("namespace") or None)
        if obj is None:
            CLICKS.labels("refused").inc()
            return "未执行 Not done: the run is gone"
        verdict = core.decide(approval_of(obj, paths), user)
        if not verdict.write:
            CLICKS.labels("refused").inc()
            return f"未执行 Not done: {verdict.reason}"
        return self.write(obj, ref, paths.decisions, user, click.approved)

    def write(self, obj: Mapping[str, Any], ref: Mapping[str, Any], decisions_path: str,
              user: str, approved: bool) -> str:
        """The decision at ``decisions_path``, written as ``user`` (impersonated, with
        the groups the admin's directory gives them) or, with ``CALLBACK_WRITE_AS=operator``,
        by this function on their behalf with itself recorded as ``operator``."""
        current: Any = obj
        for key in decisions_path.split("."):
            current = current.get(key) if isinstance(current, Mapping) else None
        operator = self.config.operator_name if self.config.write_as == "operator" else ""
        listed = core.decisions_with(current, user, approved, operator)
        patch: dict[str, Any] = {}
        cursor = patch
        keys = decisions_path.split(".")
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = listed
        meta = obj.get("metadata") or {}
        patch["metadata"] = {"resourceVersion": str(meta.get("resourceVersion") or "")}
        group, _, version = str(ref.get("apiVersion")).rpartition("/")
        plural = self.kube.resource(str(ref.get("apiVersion")), str(ref.get("kind"))).name
        scope = f"/namespaces/{ref.get('namespace')}" if ref.get("namespace") else ""
        path = (f"/apis/{group}/{version}" if group else f"/api/{version}") + \
            f"{scope}/{plural}/{ref.get('name')}" + \
            ("/status" if keys[0] == "status" else "")
        # As the clicker with their directory groups, or (operator) as this function.
        status, answer = (self.kube.patch_as("", (), path, patch) if operator else
                          self.kube.patch_as(user, tuple(self.groups().get(user, ())), path,
                                             patch))
        if status < 300:
            CLICKS.labels("approved" if approved else "denied").inc()
            logs.info("decision written", user=user, approved=approved,
                      operator=operator or None,
                      object=f"{ref.get('namespace')}/{ref.get('name')}")
            return "已批准 Approved" if approved else "已拒绝 Denied"
        CLICKS.labels("refused").inc()
        said = " ".join(str(answer.get("message") or f"HTTP {status}").split())
        logs.warning("decision refused by the API server", user=user, status=status,
                     reason=said[:300])
        if status == 409:
            return "未执行 Not done: the run changed meanwhile; try again"
        return f"未执行 Not done: {said[:120]}"

    # ------------------------------------------------------------------ lookups

    def record_of(self, task_id: str) -> dict[str, Any] | None:
        items, _ = self.kube.list_page(f"{GROUP}/{VERSION}", "NotificationDelivery",
                                       namespace=self.config.system_namespace,
                                       label_selector=f"{TASK_LABEL}={task_label(task_id)}",
                                       limit=10)
        return next((i for i in items if ((i.get("status") or {}).get("card") or {})
                     .get("taskId") == task_id), None)

    def directory(self) -> dict[str, str]:
        """WeCom id → Kubernetes user name, from the admin's ``corpwechat-users``
        (a WeCom id two people map to names nobody: refused)."""
        data = self._config_map(self.config.users_configmap)
        inverse: dict[str, str | None] = {}
        for name, userid in data.items():
            for one in str(userid).split("|"):
                one = one.strip()
                if one:
                    inverse[one] = None if one in inverse and inverse[one] != name else name
        return {k: v for k, v in inverse.items() if v}

    def groups(self) -> dict[str, list[str]]:
        data = self._config_map(self.config.groups_configmap)
        return {name: [g.strip() for g in str(value).split(",") if g.strip()]
                for name, value in data.items()}

    def _config_map(self, name: str) -> dict[str, str]:
        return self.kube.config_map(name, self.config.system_namespace) or {}

    def remember(self, record: Mapping[str, Any], click: core.Click, outcome: str) -> None:
        card = (record.get("status") or {}).get("card") or {}
        clicks = [c for c in card.get("clicks") or [] if isinstance(c, Mapping)]
        clicks.append({"at": now_text(), "user": click.user_id, "key": click.key,
                       "created": click.create_time, "outcome": outcome[:256]})
        name = str((record.get("metadata") or {}).get("name"))
        try:
            self.kube.custom().patch_namespaced_custom_object_status(
                GROUP, VERSION, self.config.system_namespace, PLURAL, name,
                {"status": {"card": {"clicks": clicks[-HISTORY:]}}},
                _request_timeout=self.kube.timeout)
        except Exception as exc:  # the decision stands; the record says less
            logs.warning("could not record a click", record=name,
                         error=getattr(exc, "reason", None) or type(exc).__name__)


def _plain(status: int, text: str) -> Response:
    return Response(status, text.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})


def _cdata(text: str) -> str:
    return text.replace("]]>", "]]]]><![CDATA[>")


def build(environ: Mapping[str, str] | None = None) -> CallbackFunction:
    config = Config.from_env(environ)
    logs.register_secret(config.keys.token)
    return CallbackFunction(config, Kube())

