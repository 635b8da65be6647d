"""(Over 400 lines on purpose: one server's API, its transport, token cache and errcode
table together, so every call shares one retry and one classification.)

A WeCom (CorpWeChat) server API client: gettoken, message/send (a template card one
member at a time, with our task id), message/update_template_card,
user/get_userid_by_email, and a group chat robot's webhook/send.

One pooled ``requests.Session`` with (connect, read) timeouts. The environment's proxies
(``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) and CA bundle
(``REQUESTS_CA_BUNDLE``, else ``CURL_CA_BUNDLE``) are read once, when the client is made:
the session does not trust the environment itself, which would scan every variable for
proxies and look for ``~/.netrc`` on every call. The access token is cached
per app behind a lock and refreshed before it expires; a token the API refuses (40014,
42001, 41001) is dropped, fetched once more and the call retried once -- never a loop.

Errors are decided on ``errcode`` (WeCom answers HTTP 200 with ``{"errcode", "errmsg"}``):

=================================================  =========================================
errcode / failure                                   outcome
=================================================  =========================================
-1, 45033, timeout, connection error, HTTP 5xx      retried (bounded backoff), then 503
45009                                               429 (rate limited, Retry-After 60)
40014, 42001, 41001                                 token dropped, fetched once, retried once
40001, 40013, 60020, 301002, 40056, 48002, 81013,   422 with errcode and errmsg in the reason
any other errcode, HTTP 4xx                         (never retried: dead-lettered)
invaliduser / unlicenseduser in an ok answer        warning, not retried
=================================================  =========================================

A read timeout on message/send may mean "delivered, answer lost": the retry is safe
because every message is sent with ``enable_duplicate_check`` (WeCom drops the same
content to the same member within ``duplicate_check_interval``).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3

from .credentials import Credentials
from .render import Message, card_section, recalled_once_decided, summary, wire_section
from .shared import logs, metrics, tracing
from .shared.delivery import Receipt
from .shared.errors import RateLimited, TemporaryError, Unprocessable
from .shared.retry import backoff
from .shared.sessions import PooledSession

GETTOKEN = "gettoken"
# WeCom calls by endpoint and errcode (or "network": no answer, "invalid": no errcode,
# "http_429", "http_4xx", "http_5xx": an HTTP refusal).
WECOM_CALLS = metrics.counter("kubeevent_wecom_api_calls",
                              "WeCom API calls, by endpoint and errcode", ("api", "errcode"))
TOKEN_REFRESHES = metrics.counter("kubeevent_wecom_token_refreshes",
                                  "access_token fetched from WeCom")
MESSAGE_SEND = "message/send"
UPDATE_CARD = "message/update_template_card"
RECALL = "message/recall"
USERID_BY_EMAIL = "user/get_userid_by_email"
# A group chat's robot: POST webhook/send?key=<webhook key>, no access token.
ROBOT_SEND = "webhook/send"
UNKNOWN_ROBOT = 93000
MAX_USERS = 1000  # touser entries per message/send
MAX_ANSWER_BYTES = 1024 * 1024  # WeCom's answers are a few hundred bytes

TOKEN_ERRORS = frozenset({40014, 42001, 41001})
RETRYABLE = frozenset({-1, 45033})
RATE_LIMITED = 45009
# A robot over its 20 a minute: 45009 as the API's frequency limit, and 130101 as reported
# for robots (a third-party report): both wait for the next minute, neither is refused.
ROBOT_RATE_LIMITED = frozenset({RATE_LIMITED, 130101})
ALL_UNREACHABLE = 81013
CONFIG_ERRORS = frozenset({40001, 40013, 60020, 301002, 40056, 48002, 81013})
# user/get_userid_by_email: "no such member" (or not visible to this app): fall through.
EMAIL_NOT_FOUND = frozenset({46004, 60105, 40058, 60111, 60011, 48002})
_HINTS = {
    40001: "check the corp secret (CORPWECHAT_CORP_SECRET or the Secret's corpSecret)",
    40013: "check the corp id (CORPWECHAT_CORP_ID or the Secret's corpId)",
    60020: "add this egress IP to the app's trusted IPs in the WeCom admin console",
    301002: "the secret belongs to another app than the agent id",
    40056: "check the agent id (CORPWECHAT_AGENT_ID or the Secret's agentId)",
    48002: "the app may not use this API",
    81013: "none of the recipients is a member the app can reach",
    93000: "the robot's webhook key is not valid (check the Secret corpwechat-robots)",
}


class WeComError:
    """Mixin: the WeCom errcode behind a typed error (``None`` for transport failures)."""

    errcode: int | None = None
    errmsg: str = ""


class WeComUnavailable(TemporaryError, WeComError):
    """WeCom busy or unreachable after the bounded retries (503)."""


class WeComRateLimited(RateLimited, WeComError):
    """45009: over the API frequency limit (429)."""


class WeComRejected(Unprocessable, WeComError):
    """A configuration or permission error, or a request WeCom refuses (422)."""


def _with_code(error: Any, errcode: int | None, errmsg: str) -> Any:
    error.errcode = errcode
    error.errmsg = errmsg
    return error


def classify(errcode: int, errmsg: str, endpoint: str) -> Exception:
    """The typed error for an errcode the client does not handle itself."""
    detail = f"errcode {errcode}: {errmsg}".strip()
    if errcode == RATE_LIMITED:
        return _with_code(WeComRateLimited(f"WeCom {endpoint} rate limited ({detail})",
                                           retry_after=60), errcode, errmsg)
    if errcode in RETRYABLE:
        return _with_code(WeComUnavailable(f"WeCom {endpoint} busy ({detail})"), errcode, errmsg)
    hint = _HINTS.get(errcode)
    reason = f"WeCom {endpoint} refused: {detail}" + (f" ({hint})" if hint else "")
    return _with_code(WeComRejected(reason), errcode, errmsg)


class _Transient(Exception):
    """A transport failure worth retrying; ``str()`` says what, never the URL; ``label``
    is what the calls metric counts it as: ``network``, ``http_5xx`` or ``invalid``."""

    def __init__(self, message: str, label: str = "network") -> None:
        super().__init__(message)
        self.label = label


@dataclass
class SendReport:
    """What message/send answered for every batch of one message."""

    calls: int = 0
    users: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    unlicensed: list[str] = field(default_factory=list)
    msgids: list[str] = field(default_factory=list)
    receipts: dict[str, Receipt] = field(default_factory=dict)  # by member
    # Batches WeCom refused because none of their members is reachable (81013).
    unreachable: list[WeComRejected] = field(default_factory=list)

    @property
    def delivered(self) -> list[str]:
        missed = {u.lower() for u in self.invalid + self.unlicensed}
        return [u for u in self.users if u.lower() not in missed]


@dataclass
class _Token:
    value: str
    refresh_at: float


def task_id(key: str, target: str) -> str:
    """A card's task id: unique per app for ever (WeCom refuses one used before), the same
    for the same notification and member (a resend is then the same card)."""
    digest = hashlib.sha256(f"{key}\x1f{target}".encode("utf-8", "surrogatepass"))
    return "ke-" + digest.hexdigest()[:40]


def _split(value: Any) -> list[str]:
    return [p for p in str(value or "").split("|") if p]


def batches(users: Sequence[str], size: int = MAX_USERS) -> list[list[str]]:
    return [list(users[i:i + size]) for i in range(0, len(users), size)]


# A department or tag as a send target: ``party:<id>`` / ``tag:<id>`` (no user id has a
# colon). WeCom takes at most 100 of each per call.
PARTY, TAG = "party:", "tag:"
MAX_GROUPS = 100


def target_batches(targets: Sequence[str]) -> list[tuple[list[str], dict[str, str]]]:
    """(the targets of one call, its ``touser``/``toparty``/``totag`` fields)."""
    users = [t for t in targets if not t.startswith((PARTY, TAG))]
    parties = [t for t in targets if t.startswith(PARTY)]
    tags = [t for t in targets if t.startswith(TAG)]
    calls = [(batch, {"touser": "|".join(batch)}) for batch in batches(users)]
    group_calls = max(len(batches(parties, MAX_GROUPS)), len(batches(tags, MAX_GROUPS)))
    for i in range(group_calls):
        these_parties = parties[i * MAX_GROUPS:(i + 1) * MAX_GROUPS]
        these_tags = tags[i * MAX_GROUPS:(i + 1) * MAX_GROUPS]
        fields = {}
        if these_parties:
            fields["toparty"] = "|".join(p.removeprefix(PARTY) for p in these_parties)
        if these_tags:
            fields["totag"] = "|".join(t.removeprefix(TAG) for t in these_tags)
        calls.append((these_parties + these_tags, fields))
    return calls


class WeComClient:
    def __init__(self, api_url: str, *, timeout: tuple[float, float] = (3.0, 10.0),
                 attempts: int = 3, backoff: float = 0.2,
                 duplicate_check_interval: int = 1800, pool_size: int = 16,
                 deadline: float | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        # One call, connect to last byte, at most this long (default: connect + read).
        self.deadline = deadline if deadline is not None else sum(timeout)
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.duplicate_check_interval = duplicate_check_interval
        self.sleep = sleep
        self.clock = clock
        # The environment does not change while the process runs: read it once (module doc).
        self.http = PooledSession(pool_size)
        self._tokens: dict[str, _Token] = {}
        self._app_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ transport

    def _request(self, method: str, endpoint: str, params: dict[str, Any],
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.api_url}/{endpoint}"
        kwargs: dict[str, Any] = {"params": params, "timeout": self.timeout}
        if body is not None:
            kwargs["data"] = json.dumps(body, ensure_ascii=False).encode("utf-8")
            kwargs["headers"] = {"Content-Type": "application/json; charset=utf-8"}
        deadline = time.monotonic() + self.deadline
        try:
            with tracing.span(f"WeCom {endpoint}"):
                answer = self._exchange(method, url, endpoint, deadline, kwargs)
        except _Transient as exc:
            WECOM_CALLS.labels(endpoint, exc.label).inc()
            raise
        except (WeComRateLimited, WeComRejected) as exc:
            WECOM_CALLS.labels(endpoint, "http_429" if isinstance(exc, WeComRateLimited)
                               else "http_4xx").inc()
            raise
        code = answer["errcode"]
        WECOM_CALLS.labels(endpoint, str(code) if -1 <= code < 10**7 else "other").inc()
        return answer

    def _exchange(self, method: str, url: str, endpoint: str, deadline: float,
                  kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.http.request(method, url, stream=True, **kwargs)
            try:
                content = self._read_within(response, deadline)
            finally:
                response.close()
        except requests.Timeout as exc:
            raise _Transient(f"timed out ({type(exc).__name__})") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _Transient(f"unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status == 429:
            raise _with_code(WeComRateLimited(f"WeCom {endpoint} answered HTTP 429",
                                              retry_after=60), None, "")
        if status >= 500:
            raise _Transient(f"answered HTTP {status}", "http_5xx")
        if status != 200:
            raise _with_code(WeComRejected(
                f"WeCom {endpoint} answered HTTP {status} (check CORPWECHAT_API_URL)"), None, "")
        try:
            answer = json.loads(content)
        except ValueError:
            raise _Transient("answered something that is not JSON", "invalid") from None
        if not isinstance(answer, dict):
            raise _Transient("answered JSON that is not an object", "invalid")
        errcode = answer.get("errcode")
        # Only a JSON integer is an errcode: a missing one, "0", false or 1e999 is not a
        # success (bool is an int in Python, so it is ruled out by name).
        if isinstance(errcode, bool) or not isinstance(errcode, int):
            raise _Transient("answered without a numeric errcode", "invalid")
        return answer

    def _read_within(self, response: requests.Response, deadline: float) -> bytes:
        """The answer's body, as it arrives, given up on at ``deadline``: the read timeout
        is per read, so an answer dripped a byte at a time would hold the call for ever."""
        body = bytearray()
        while True:
            if time.monotonic() > deadline:
                raise _Transient(f"took longer than {self.deadline:g} s in all")
            chunk = response.raw.read1(65536, decode_content=True)
            if not chunk:
                return bytes(body)
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _Transient(f"answered more than {MAX_ANSWER_BYTES} bytes", "invalid")

    def _pause(self, failures: int) -> None:
        if self.backoff > 0:
            self.sleep(backoff(failures, self.backoff))

    # ------------------------------------------------------------------ access token

    def _app_lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._app_locks.setdefault(key, threading.Lock())

    def token(self, credentials: Credentials) -> str:
        """The cached access token of the app, fetched when missing or about to expire."""
        key = credentials.app_key
        with self._app_lock(key):
            cached = self._tokens.get(key)
            if cached is not None and self.clock() < cached.refresh_at:
                return cached.value
            value, expires_in = self._gettoken(credentials)
            TOKEN_REFRESHES.inc()
            margin = min(300.0, expires_in * 0.1)
            self._tokens[key] = _Token(value, self.clock() + expires_in - margin)
            return value

    def drop_token(self, credentials: Credentials, value: str) -> None:
        """Forget ``value`` unless another caller already replaced it."""
        key = credentials.app_key
        with self._app_lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.value == value:
                del self._tokens[key]

    def _retried(self, method: str, endpoint: str, params: dict[str, Any],
                 body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The answer of ``endpoint``; after a transport failure or a busy errcode (-1,
        45033) it is asked again, backing off, at most ``attempts`` times in all, then
        ``WeComUnavailable`` (503). Any other answer is the caller's to judge. A timed-out
        message/send may have been delivered: the duplicate check drops the repeat."""
        failures = 0
        while True:
            errcode, errmsg = None, ""
            try:
                answer = self._request(method, endpoint, params, body)
            except _Transient as exc:
                error = f"WeCom {endpoint} {exc}"
            else:
                errcode = answer["errcode"]
                if errcode not in RETRYABLE:
                    return answer
                errmsg = str(answer.get("errmsg") or "")
                error = str(classify(errcode, errmsg, endpoint))
            failures += 1
            if failures >= self.attempts:
                raise _with_code(WeComUnavailable(f"{error} after {failures} attempts"),
                                 errcode, errmsg)
            logs.warning("WeCom call failed; retrying", endpoint=endpoint, error=error,
                         errcode=errcode, attempt=failures)
            self._pause(failures)

    def _gettoken(self, credentials: Credentials) -> tuple[str, float]:
        params = {"corpid": credentials.corp_id, "corpsecret": credentials.corp_secret}
        answer = self._retried("GET", GETTOKEN, params)
        if answer["errcode"] != 0:
            raise classify(answer["errcode"], str(answer.get("errmsg") or ""), GETTOKEN)
        value = answer.get("access_token")
        if not isinstance(value, str) or not value:
            raise _with_code(WeComUnavailable("WeCom gettoken answered no access_token"),
                             None, "")
        logs.register_secret(value)
        expires_in = answer.get("expires_in", 7200)
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) \
                or not math.isfinite(expires_in):
            expires_in = 7200  # WeCom documents 7200; an unusable value is not trusted
        # expires_in: 0 is a token that is already stale: used once, fetched again
        return value, max(0.0, float(expires_in))

    # ------------------------------------------------------------------ calls

    def call(self, credentials: Credentials, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``endpoint`` with the app's token; the ok answer, else a typed
        error. A refused token is dropped and fetched again, once."""
        for renewed in (False, True):
            token = self.token(credentials)
            answer = self._retried("POST", endpoint, {"access_token": token}, body)
            errcode = answer["errcode"]
            if errcode == 0:
                return answer
            errmsg = str(answer.get("errmsg") or "")
            if errcode not in TOKEN_ERRORS:
                raise classify(errcode, errmsg, endpoint)
            self.drop_token(credentials, token)
            logs.info("WeCom refused the access token; fetching a new one",
                      endpoint=endpoint, errcode=errcode, again=renewed or None)
        raise _with_code(WeComUnavailable(
            f"WeCom {endpoint} refused a fresh access token (errcode {errcode})"),
            errcode, errmsg)

    def send(self, credentials: Credentials, message: Message, users: Sequence[str], *,
             on_sent: Callable[..., None] | None = None, key: str = "") -> SendReport:
        """Send ``message`` to ``users`` in batches of at most 1000 (one call per batch);
        ``party:<id>`` and ``tag:<id>`` among them go as ``toparty``/``totag``. A
        template card goes to one member per call, with the task id of (``key``, the
        member), so each member's card can be changed on its own later.

        ``on_sent(batch, receipt)`` runs after each accepted batch, before the next one,
        so a failure later on leaves a record of what already went out. A batch of which
        no member is reachable (81013) is noted in ``report.unreachable`` and the next
        batch still goes; any other error ends the send.
        """
        report = SendReport()
        card = message.msgtype == "template_card"
        # A card, and a message to be taken back once decided, go to one member per call:
        # each can be changed or recalled without touching anyone else's.
        alone = card or recalled_once_decided(message)
        title, url = summary(message)
        calls = ([call for t in users for call in target_batches([t])] if alone
                 else target_batches(users))
        for batch, addressed in calls:
            task = task_id(key, batch[0]) if card else ""
            body = {
                **addressed,
                "msgtype": message.msgtype,
                "agentid": credentials.agent_id,
                message.msgtype: card_section(message, task) if card else wire_section(message),
                "safe": 0,
                "enable_duplicate_check": 1,
                "duplicate_check_interval": self.duplicate_check_interval,
            }
            try:
                answer = self.call(credentials, MESSAGE_SEND, body)
            except WeComRejected as exc:
                if exc.errcode != ALL_UNREACHABLE:
                    raise
                report.calls += 1
                if alone and not batch[0].startswith((PARTY, TAG)):
                    # A call for one member: that member is not one WeCom knows (as
                    # invaliduser in a batch), the others' cards still go.
                    logs.warning("WeCom does not know this member (not retried)",
                                 invaliduser=batch, errcode=exc.errcode)
                    report.invalid.extend(batch)
                    continue
                # Only this batch's members are unreachable: go on with the next batch.
                logs.warning("WeCom reached none of a batch's members", users=batch,
                             errcode=exc.errcode)
                report.unreachable.append(exc)
                continue
            report.calls += 1
            report.users.extend(batch)
            report.msgids.append(str(answer.get("msgid") or ""))
            invalid, unlicensed = _split(answer.get("invaliduser")), \
                _split(answer.get("unlicenseduser"))
            invalid += [PARTY + p for p in _split(answer.get("invalidparty"))]
            invalid += [TAG + t for t in _split(answer.get("invalidtag"))]
            if invalid or unlicensed:
                logs.warning("WeCom did not deliver to some members (not retried)",
                             invaliduser=invalid or None, unlicenseduser=unlicensed or None)
            report.invalid.extend(invalid)
            report.unlicensed.extend(unlicensed)
            code = answer.get("response_code")
            receipt = Receipt(str(answer.get("msgid") or ""),
                              code if isinstance(code, str) else "", task, title, url,
                              recall=recalled_once_decided(message))
            for member in batch:
                report.receipts[member] = receipt
            if on_sent is not None:
                on_sent(batch, receipt)
        return report

    def recall(self, credentials: Credentials, msgid: str) -> None:
        """Take back an app message sent within 24 hours (doc 94867); WeCom's refusal is
        a ``WeComRejected``."""
        self.call(credentials, RECALL, {"msgid": msgid})

    def update_card(self, credentials: Credentials, response_code: str,
                    users: Sequence[str], card: dict[str, Any]) -> None:
        """Replace the card ``response_code`` came with, for ``users`` (doc 94945). The
        code works once, for 72 hours; WeCom's refusal is a ``WeComRejected``."""
        self.call(credentials, UPDATE_CARD, {
            "userids": list(users), "agentid": credentials.agent_id,
            "response_code": response_code, "template_card": card})

    def robot_send(self, key: str, message: Message) -> None:
        """Post ``message`` (text or markdown) into a group chat through its robot. No
        duplicate check exists for robots: a timed-out post is asked again (``attempts``)
        and may, rarely, show twice in the chat. 45009 (the robot's 20 a minute) is a
        ``WeComRateLimited``, an unknown key (93000) or a refused message a
        ``WeComRejected``."""
        body = {"msgtype": message.msgtype, message.msgtype: wire_section(message)}
        answer = self._retried("POST", ROBOT_SEND, {"key": key}, body)
        errcode, errmsg = answer["errcode"], str(answer.get("errmsg") or "")
        if errcode in ROBOT_RATE_LIMITED:
            raise _with_code(WeComRateLimited(
                f"WeCom {ROBOT_SEND} rate limited (errcode {errcode}: {errmsg})".strip(),
                retry_after=60), errcode, errmsg)
        if errcode != 0:
            raise classify(errcode, errmsg, ROBOT_SEND)

    def userid_by_email(self, credentials: Credentials, mail: str) -> str | None:
        """The member's user id for an enterprise mail address, or ``None`` if unknown."""
        try:
            answer = self.call(credentials, USERID_BY_EMAIL, {"email": mail, "email_type": 1})
        except WeComRejected as exc:
            if exc.errcode in EMAIL_NOT_FOUND:
                if exc.errcode in (48002, 60011):
                    logs.warning("WeCom does not let this app look up members by mail",
                                 errcode=exc.errcode)
                return None
            raise
        userid = answer.get("userid")
        return userid.strip() if isinstance(userid, str) and userid.strip() else None

    def close(self) -> None:
        self.http.close()
