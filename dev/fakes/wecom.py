"""WeCom (企业微信 / CorpWeChat) server API sandbox.

A real HTTP server on loopback that answers the WeCom calls the notifier makes the way
the documented WeCom server API does:

* ``GET  /cgi-bin/gettoken?corpid=&corpsecret=``
* ``POST /cgi-bin/message/send?access_token=`` (``text``, ``markdown``, ``textcard``,
  ``template_card`` of types ``text_notice`` and ``button_interaction``: doc 90236)
* ``POST /cgi-bin/message/update_template_card?access_token=`` (doc 94945): a card sent
  with an ``action_menu`` (or buttons) answers a ``response_code``; it updates the card
  once, within 72 hours, for members the card went to; ``template_card`` replaces the
  whole card, ``button.replace_name`` only a button card's buttons
* ``POST /cgi-bin/message/recall?access_token=`` (doc 94867): an app message sent within
  24 hours, by ``msgid``
* ``POST /cgi-bin/user/get_userid_by_email?access_token=``
* ``POST /cgi-bin/webhook/send?key=`` (a group chat's robot, doc 91770)

WeCom's documents name no errcode for a ``response_code`` that is unknown, used or
expired, a ``task_id`` used before, or a recall that is too late or of an unknown message:
the sandbox answers those with 40058 (invalid parameter) and says which in ``errmsg``; a
client must treat any refusal of an update as "this card cannot be changed any more".

Errors are answered like WeCom answers them: HTTP 200 with ``{"errcode": N, "errmsg": ...}``
where ``errmsg`` carries the hint / ``from ip`` / ``more info at`` suffix. Clients must decide
on ``errcode`` only; tests may check ``errmsg.startswith(<base text>)``.

Used by the notifier's tests, the end-to-end tests and the local dev stack::

    with WeComSandbox(users={"alice", "bob"}, emails={"alice@example.com": "alice"}) as wecom:
        os.environ["CORPWECHAT_API_URL"] = wecom.api_url
        ...
        assert [d.userid for d in wecom.delivered] == ["alice"]

Fault injection (``inject``) scripts what the next calls of an endpoint get: a WeCom errcode,
a hang (``"timeout"``), a hang after the message was delivered
(``"timeout_after_delivery"``), a dropped connection (``"disconnect"``) or an HTTP error
status (``"http500"``, any ``"http4xx"``/``"http5xx"``).

Run it alone (prints each delivered message; stops on SIGINT/SIGTERM)::

    python -m dev.fakes.wecom --port 8089 --users alice,bob --email alice@example.com=alice
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import secrets
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import FrameType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from dev.support.loopback import LoopbackServer, QuietHandler

GETTOKEN = "gettoken"
MESSAGE_SEND = "message/send"
USERID_BY_EMAIL = "user/get_userid_by_email"
# A group chat's robot (doc 91770): POST webhook/send?key=…, no access token.
ROBOT_SEND = "webhook/send"
UPDATE_CARD = "message/update_template_card"
RECALL = "message/recall"
ENDPOINTS: tuple[str, ...] = (GETTOKEN, MESSAGE_SEND, USERID_BY_EMAIL, ROBOT_SEND,
                              UPDATE_CARD, RECALL)
API_PREFIX = "/cgi-bin/"

# Documented limits of message/send.
CONTENT_LIMIT = 2048  # bytes (UTF-8): text.content, markdown.content
TITLE_LIMIT = 128  # bytes: textcard.title
DESCRIPTION_LIMIT = 512  # bytes: textcard.description
URL_LIMIT = 2048  # bytes: textcard.url
BTNTXT_LIMIT = 4  # characters: textcard.btntxt
MAX_USERS = 1000  # touser entries
MAX_PARTIES = 100  # toparty entries
MAX_TAGS = 100  # totag entries
DEFAULT_DUPLICATE_INTERVAL = 1800  # seconds
MAX_DUPLICATE_INTERVAL = 4 * 3600  # seconds
MSGTYPES: tuple[str, ...] = ("text", "markdown", "textcard", "template_card")
CARD_TYPES: tuple[str, ...] = ("text_notice", "button_interaction")
RESPONSE_CODE_TTL = 72 * 3600  # seconds a response_code may be used (once)
RECALL_WINDOW = 24 * 3600  # seconds within which an app message may be recalled
# task_id: digits, letters and "_-@", at most 128 bytes, never twice in one app.
_TASK_ID = re.compile(r"^[A-Za-z0-9_@-]{1,128}$")
# A robot: at most this many messages a minute (then errcode 45009), content up to these
# many UTF-8 bytes (then errcode 40058, "<type>.content exceed max length N").
ROBOT_PER_MINUTE = 20
ROBOT_LIMITS: dict[str, int] = {"text": 2048, "markdown": 4096}

# errcode -> the English errmsg the API answers with (before the hint suffix).
ERRMSG: dict[int, str] = {
    -1: "system busy",
    0: "ok",
    40001: "invalid credential",
    40008: "invalid message type",
    40013: "invalid corpid",
    40014: "invalid access_token",
    40032: "invalid userid list size",
    40039: "invalid url size",
    40056: "invalid agentid",
    40058: "invalid parameter",
    41001: "access_token missing",
    41002: "corpid missing",
    41004: "corpsecret missing",
    41010: "missing url",
    41011: "missing agentid",
    41016: "missing title",
    41033: "missing description",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44004: "empty content",
    45002: "content size out of limit",
    45009: "api freq out of limit",
    45033: "api concurrent out of limit",
    46004: "user no exist",
    60020: "not allow to access from your ip",
    60105: "invalid email",
    93000: "invalid webhook url",
    81013: "user & party & tag all invalid",
    82002: "invalid partyid list size",
    82003: "invalid tagid list size",
    301002: "not allow to operate another agent with this accesstoken.",
}
MORE_INFO = "https://open.work.weixin.qq.com/devtool/query?e="

# A fault is a WeCom errcode, or one of these (or "http<status>", e.g. "http502").
FAULT_KINDS: tuple[str, ...] = ("timeout", "timeout_after_delivery", "disconnect", "http500")
Fault = int | str
Oversize = Literal["reject", "truncate"]

_HTTP_FAULT = re.compile(r"^http([45]\d\d)$")
# Documented userid alphabet: letters, digits, "-", "_", "." (and "@" for mail-like ids).
_USERID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


@dataclass(frozen=True)
class Delivery:
    """One message as one member received it (one entry per member and message).

    ``content`` is set for text/markdown; ``title``/``description``/``url``/``btntxt`` for
    textcard (``btntxt`` only when given). ``time`` is the sandbox clock (see ``now()``).
    """

    userid: str
    msgtype: str
    agentid: int
    msgid: str
    time: float
    content: str | None = None
    title: str | None = None
    description: str | None = None
    url: str | None = None
    btntxt: str | None = None
    # template_card: the card as sent (title: main_title.title, description:
    # sub_title_text, url: card_action.url are filled from it too).
    card: Mapping[str, Any] | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class CardUpdate:
    """One member's card changed by ``update_template_card``: the whole card
    (``card``) or a button card's buttons (``replace_name``)."""

    userid: str
    msgid: str
    task_id: str
    time: float
    card: Mapping[str, Any] | None = None
    replace_name: str | None = None


@dataclass
class _Card:
    """A sent card that can be updated: its response_code's state."""

    agent: int
    msgid: str
    task_id: str
    users: list[str]
    issued: float
    used: bool = False


@dataclass
class _Sent:
    """An app message, for recall."""

    agent: int
    time: float
    recalled: bool = False


@dataclass(frozen=True)
class Call:
    """One HTTP request the sandbox answered, recorded verbatim (secrets included).

    ``endpoint`` is one of ``ENDPOINTS`` (or the raw path for unknown paths); ``body`` is the
    parsed JSON body (or the raw text when it was not JSON, or ``None``); ``errcode`` is the
    answered errcode (``None`` for non-JSON answers); ``fault`` the injected fault, if any.
    """

    endpoint: str
    method: str
    query: dict[str, str]
    body: Any
    client_ip: str
    time: float
    http_status: int
    errcode: int | None
    fault: Fault | None
    response: dict[str, Any] | None


@dataclass
class _Token:
    value: str
    agent_id: int
    expires_at: float
    revoked: bool = False


@dataclass
class _FaultSpec:
    fault: Fault
    remaining: int


@dataclass
class _Plan:
    """How the HTTP layer answers: optionally hang, then send or drop the connection."""

    status: int = 200
    payload: dict[str, Any] | None = None
    raw: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    hang: bool = False
    disconnect: bool = False


class _WeComError(Exception):
    def __init__(self, errcode: int, note: str = "", **extra: Any) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.note = note
        self.extra = extra


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (the unit of WeCom's size limits)."""
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")


class WeComSandbox(LoopbackServer):
    """A WeCom API double served over real HTTP on ``host`` (loopback by default).

    ``users``: the member directory (user ids, matched case-insensitively); ``None`` means an
    open directory where every well-formed user id is a licensed member. ``unlicensed``:
    members in the app's visible range without an API licence (reported in
    ``unlicenseduser``, not delivered). ``emails`` / ``personal_emails``: address -> user id for
    ``email_type`` 1 / 2. ``parties`` / ``tags``: id -> member user ids for ``toparty`` /
    ``totag``. ``agents``: extra ``agent_id -> secret`` apps besides
    ``agent_id``/``corp_secret``. ``ip_allowlist``: when set, calls to the endpoints in
    ``ip_restricted`` from other addresses get errcode 60020. ``oversize``: ``"reject"``
    answers 45002 for content over a limit, ``"truncate"`` cuts text content and textcard
    title/description/btntxt to their limits (markdown over its limit is still rejected).
    ``member_limits``: (per minute, per hour) messages of one app one member gets; WeCom
    answers ok for the rest and drops them (``dropped``).
    ``hang_seconds``: how long a ``"timeout"`` fault holds the answer. ``clock``: time source
    (``advance()`` shifts it). ``on_delivery``: called (outside the lock) for each delivery.
    All public methods are thread-safe.
    """

    def __init__(
        self,
        corp_id: str = "ww-test",
        corp_secret: str = "s3cret",
        agent_id: int = 1000002,
        users: Iterable[str] | None = None,
        emails: Mapping[str, str] | None = None,
        token_ttl: int = 7200,
        *,
        unlicensed: Iterable[str] = (),
        personal_emails: Mapping[str, str] | None = None,
        parties: Mapping[str, Iterable[str]] | None = None,
        tags: Mapping[str, Iterable[str]] | None = None,
        agents: Mapping[int, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ip_allowlist: Iterable[str] | None = None,
        ip_restricted: Iterable[str] = (MESSAGE_SEND, USERID_BY_EMAIL),
        oversize: Oversize = "reject",
        hang_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_delivery: Callable[[Delivery], None] | None = None,
        member_limits: tuple[int, int] = (30, 1000),
        robots: Mapping[str, str] | None = None,
    ) -> None:
        if oversize not in ("reject", "truncate"):
            raise ValueError(f"oversize must be 'reject' or 'truncate', not {oversize!r}")
        self.corp_id = corp_id
        self.corp_secret = corp_secret
        self.agent_id = int(agent_id)
        self.token_ttl = int(token_ttl)
        self.host = host
        self.oversize: Oversize = oversize
        self.hang_seconds = float(hang_seconds)
        self.ip_allowlist: set[str] | None = None if ip_allowlist is None else set(ip_allowlist)
        self.ip_restricted: frozenset[str] = frozenset(ip_restricted)
        self.on_delivery = on_delivery
        self._clock = clock
        self._requested_port = port
        self._agents: dict[int, str] = {self.agent_id: corp_secret}
        self._agents.update({int(k): v for k, v in (agents or {}).items()})
        self._open_directory = users is None
        self._licensed: dict[str, str] = {u.lower(): u for u in (users or ())}
        self._unlicensed: dict[str, str] = {u.lower(): u for u in unlicensed}
        for key in self._unlicensed:
            self._licensed.pop(key, None)
        self._emails = {k.lower(): v for k, v in (emails or {}).items()}
        self._personal_emails = {k.lower(): v for k, v in (personal_emails or {}).items()}
        self._parties = {str(k): list(v) for k, v in (parties or {}).items()}
        self._tags = {str(k): list(v) for k, v in (tags or {}).items()}

        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._hangs: set[threading.Event] = set()
        self._offset = 0.0
        self._tokens: dict[str, _Token] = {}
        self._faults: dict[str, deque[_FaultSpec]] = {e: deque() for e in ENDPOINTS}
        self._delivered: list[Delivery] = []
        self._suppressed: list[Delivery] = []
        self._dropped: list[Delivery] = []
        self._member_sends: dict[tuple[str, int], list[float]] = {}
        self.member_limits = member_limits
        self._robots: dict[str, str] = dict(robots or {})  # webhook key -> group chat
        self._robot_sends: dict[str, list[float]] = {}
        self._calls: list[Call] = []
        self._history: dict[tuple[str, str], float] = {}
        self._cards: dict[str, _Card] = {}  # response_code -> the card it updates
        self._task_ids: set[tuple[int, str]] = set()
        self._sent: dict[str, _Sent] = {}  # msgid -> the app message
        self._updates: list[CardUpdate] = []
        self._recalled: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> WeComSandbox:
        """Start serving (idempotent); returns ``self``."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self.host, self._requested_port), _Handler)
            server.sandbox = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"wecom-sandbox:{server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); hanging answers are released first."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server, self._thread = None, None
        if server is None:
            return
        self.release_hangs()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()


    @property
    def api_url(self) -> str:
        """What ``CORPWECHAT_API_URL`` should be: ``url + "/cgi-bin"``."""
        return self.url + API_PREFIX.rstrip("/")

    # ------------------------------------------------------------------ clock and tokens

    def now(self) -> float:
        """The sandbox clock: ``clock()`` plus everything ``advance()`` added."""
        with self._lock:
            return self._clock() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the sandbox clock forward (token expiry, duplicate-check windows)."""
        with self._lock:
            self._offset += seconds

    def issue_token(self, agent_id: int | None = None) -> str:
        """A valid access token for ``agent_id`` without an HTTP call (not counted)."""
        with self._lock:
            agent = self.agent_id if agent_id is None else int(agent_id)
            if agent not in self._agents:
                raise ValueError(f"unknown agent {agent}")
            return self._token_for(agent, self.now()).value

    def expire_tokens(self) -> None:
        """Make every issued token expired now: its next use answers 42001."""
        with self._lock:
            now = self.now()
            for token in self._tokens.values():
                token.expires_at = min(token.expires_at, now)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token early: its next use answers 40014."""
        with self._lock:
            for token in self._tokens.values():
                token.revoked = True

    # ------------------------------------------------------------------ faults

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Script the next ``times`` calls of ``endpoint`` (queued after earlier faults).

        ``fault``: a WeCom errcode (answered as ``{"errcode": N, "errmsg": ...}`` with HTTP
        200, nothing delivered; 42001 / 40014 also expire / revoke the token presented);
        ``"timeout"``: hold the answer ``hang_seconds`` then answer -1, nothing delivered;
        ``"timeout_after_delivery"``: serve normally (deliver), then hold the answer;
        ``"disconnect"``: drop the connection without an answer, nothing delivered;
        ``"http500"`` (or any ``"http4xx"``/``"http5xx"``): that HTTP status with an HTML body.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        if isinstance(fault, bool) or not isinstance(fault, int | str):
            raise ValueError(f"invalid fault {fault!r}")
        if isinstance(fault, str) and fault not in FAULT_KINDS and not _HTTP_FAULT.match(fault):
            raise ValueError(f"unknown fault {fault!r}; expected an errcode or {FAULT_KINDS}")
        if isinstance(fault, int) and fault == 0:
            raise ValueError("errcode 0 is not a fault")
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._faults[endpoint].append(_FaultSpec(fault, times))

    def clear_faults(self) -> None:
        with self._lock:
            for queue in self._faults.values():
                queue.clear()

    def pending_faults(self, endpoint: str) -> int:
        """How many calls of ``endpoint`` are still scripted to fail."""
        with self._lock:
            return sum(spec.remaining for spec in self._faults[endpoint])

    def release_hangs(self) -> None:
        """Let every answer held by a timeout fault go now."""
        with self._lock:
            hangs = list(self._hangs)
        for event in hangs:
            event.set()

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being served; ``False`` if still busy after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    # ------------------------------------------------------------------ recordings

    @property
    def delivered(self) -> list[Delivery]:
        """Every delivery so far, oldest first (a copy)."""
        with self._lock:
            return list(self._delivered)

    @property
    def dropped(self) -> list[Delivery]:
        """Deliveries over a member's limit: answered ok, never delivered."""
        with self._lock:
            return list(self._dropped)

    @property
    def suppressed(self) -> list[Delivery]:
        """Deliveries the duplicate check swallowed (the API still answered ok)."""
        with self._lock:
            return list(self._suppressed)

    @property
    def calls(self) -> list[Call]:
        """Every request answered so far, oldest first (a copy)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, endpoint: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.endpoint == endpoint]

    def delivered_to(self, userid: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self._delivered if d.userid.lower() == userid.lower()]

    @property
    def card_updates(self) -> list[CardUpdate]:
        """Every card changed by ``update_template_card``, oldest first (a copy)."""
        with self._lock:
            return list(self._updates)

    @property
    def recalled(self) -> list[str]:
        """The msgids recalled, oldest first."""
        with self._lock:
            return list(self._recalled)

    def card_of(self, userid: str, task_id: str) -> Mapping[str, Any] | None:
        """The card ``userid`` sees now for ``task_id``: as sent, or as last updated
        (``None``: never sent, or recalled)."""
        with self._lock:
            sent = next((d for d in reversed(self._delivered)
                         if d.task_id == task_id and d.userid.lower() == userid.lower()), None)
            if sent is None or sent.msgid in self._recalled:
                return None
            card = dict(sent.card or {})
            for update in self._updates:
                if update.task_id == task_id and update.userid.lower() == userid.lower():
                    if update.card is not None:
                        card = dict(update.card)
                    else:
                        card["replaced_button"] = update.replace_name
            return card

    def response_code_of(self, msgid: str) -> str | None:
        """The response_code the send of ``msgid`` answered (tests: to age or use it)."""
        with self._lock:
            return next((code for code, card in self._cards.items() if card.msgid == msgid),
                        None)

    @property
    def gettoken_count(self) -> int:
        """gettoken calls answered (faulted ones included)."""
        return len(self.calls_to(GETTOKEN))

    @property
    def send_count(self) -> int:
        """message/send calls answered (faulted ones included)."""
        return len(self.calls_to(MESSAGE_SEND))

    def reset(self, *, tokens: bool = False) -> None:
        """Forget deliveries, calls, faults and duplicate-check history (and tokens if asked)."""
        with self._lock:
            self._delivered.clear()
            self._suppressed.clear()
            self._dropped.clear()
            self._member_sends.clear()
            self._robot_sends.clear()
            self._calls.clear()
            self._history.clear()
            self._cards.clear()
            self._task_ids.clear()
            self._sent.clear()
            self._updates.clear()
            self._recalled.clear()
            for queue in self._faults.values():
                queue.clear()
            if tokens:
                self._tokens.clear()

    # ------------------------------------------------------------------ request handling

    def _enter(self) -> None:
        with self._lock:
            self._inflight += 1

    def _leave(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def _hang(self) -> None:
        event = threading.Event()
        with self._lock:
            self._hangs.add(event)
            seconds = self.hang_seconds
            stopped = self._server is None
        try:
            if not stopped:
                event.wait(seconds)
        finally:
            with self._lock:
                self._hangs.discard(event)

    def _dispatch(
        self, method: str, target: str, raw_body: bytes, client_ip: str
    ) -> tuple[_Plan, list[Delivery]]:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path
        endpoint = path[len(API_PREFIX) :] if path.startswith(API_PREFIX) else ""
        body = _parse_body(raw_body)
        deliveries: list[Delivery] = []
        with self._lock:
            now = self.now()
            if endpoint not in ENDPOINTS:
                plan = _Plan(status=404, raw=b"404 page not found", content_type="text/plain")
                self._record(path, method, query, body, client_ip, now, plan, None)
                return plan, deliveries
            fault = self._next_fault(endpoint)
            plan = _Plan()
            if isinstance(fault, int):
                self._fault_token_side_effect(fault, query, now)
                plan.payload = self._error(fault, client_ip)
            elif fault == "timeout":
                plan.payload = self._error(-1, client_ip)
                plan.hang = True
            elif fault == "disconnect":
                plan.disconnect = True
            elif isinstance(fault, str) and (m := _HTTP_FAULT.match(fault)):
                plan.status = int(m.group(1))
                plan.content_type = "text/html"
                plan.raw = f"<html><body><h1>{plan.status}</h1></body></html>".encode()
            else:
                plan.payload = self._serve(
                    endpoint, method, query, raw_body, client_ip, now, deliveries
                )
                plan.hang = fault == "timeout_after_delivery"
            self._record(endpoint, method, query, body, client_ip, now, plan, fault)
        return plan, deliveries

    def _record(
        self,
        endpoint: str,
        method: str,
        query: dict[str, str],
        body: Any,
        client_ip: str,
        now: float,
        plan: _Plan,
        fault: Fault | None,
    ) -> None:
        payload = None if plan.payload is None else dict(plan.payload)
        errcode = None if payload is None else int(payload["errcode"])
        status = 0 if plan.disconnect else plan.status
        self._calls.append(
            Call(endpoint, method, query, body, client_ip, now, status, errcode, fault, payload)
        )

    def _next_fault(self, endpoint: str) -> Fault | None:
        queue = self._faults[endpoint]
        if not queue:
            return None
        spec = queue[0]
        spec.remaining -= 1
        if spec.remaining <= 0:
            queue.popleft()
        return spec.fault

    def _fault_token_side_effect(self, errcode: int, query: dict[str, str], now: float) -> None:
        token = self._tokens.get(query.get("access_token", ""))
        if token is None:
            return
        if errcode == 42001:
            token.expires_at = min(token.expires_at, now)
        elif errcode == 40014:
            token.revoked = True

    def _error(self, errcode: int, client_ip: str, note: str = "", **extra: Any) -> dict[str, Any]:
        base = ERRMSG.get(errcode, f"error {errcode}")
        if note:
            base = f"{base}, {note}"
        hint = f"{int(time.time())}_{secrets.token_hex(8)}"
        errmsg = f"{base}, hint: [{hint}], from ip: {client_ip}, more info at {MORE_INFO}{errcode}"
        return {"errcode": errcode, "errmsg": errmsg, **extra}

    def _serve(
        self,
        endpoint: str,
        method: str,
        query: dict[str, str],
        raw_body: bytes,
        client_ip: str,
        now: float,
        deliveries: list[Delivery],
    ) -> dict[str, Any]:
        try:
            if endpoint == GETTOKEN:
                return self._gettoken(method, query, client_ip, now)
            if method != "POST":
                raise _WeComError(43002)
            if endpoint == ROBOT_SEND:
                return self._robot_send(query, _json_object(raw_body), now, deliveries)
            token = self._check_token(query, now)
            self._check_ip(endpoint, client_ip)
            body = _json_object(raw_body)
            if endpoint == MESSAGE_SEND:
                return self._send(body, token, now, deliveries)
            if endpoint == UPDATE_CARD:
                return self._update_card(body, token, now)
            if endpoint == RECALL:
                return self._recall(body, token, now)
            return self._userid_by_email(body)
        except _WeComError as err:
            return self._error(err.errcode, client_ip, err.note, **err.extra)

    def _check_ip(self, endpoint: str, client_ip: str) -> None:
        allow = self.ip_allowlist
        if allow is not None and endpoint in self.ip_restricted and client_ip not in allow:
            raise _WeComError(60020)

    def _check_token(self, query: dict[str, str], now: float) -> _Token:
        value = query.get("access_token", "")
        if not value:
            raise _WeComError(41001)
        token = self._tokens.get(value)
        if token is None or token.revoked:
            raise _WeComError(40014)
        if now >= token.expires_at:
            raise _WeComError(42001)
        return token

    def _token_for(self, agent: int, now: float) -> _Token:
        for token in self._tokens.values():
            if token.agent_id == agent and not token.revoked and now < token.expires_at:
                return token
        token = _Token(secrets.token_urlsafe(96), agent, now + self.token_ttl)
        self._tokens[token.value] = token
        return token

    def _gettoken(
        self, method: str, query: dict[str, str], client_ip: str, now: float
    ) -> dict[str, Any]:
        if method != "GET":
            raise _WeComError(43001)
        corpid = query.get("corpid", "")
        secret = query.get("corpsecret", "")
        if not corpid:
            raise _WeComError(41002)
        if corpid != self.corp_id:
            raise _WeComError(40013)
        if not secret:
            raise _WeComError(41004)
        agent = next((a for a, s in self._agents.items() if s == secret), None)
        if agent is None:
            # WeCom echoes the secret it was given in the refusal: a client must never pass
            # an errmsg on unredacted.
            raise _WeComError(40001, f"corpsecret: {secret}")
        self._check_ip(GETTOKEN, client_ip)
        token = self._token_for(agent, now)
        expires_in = max(1, math.ceil(token.expires_at - now))
        return {"errcode": 0, "errmsg": "ok", "access_token": token.value, "expires_in": expires_in}

    def _userid_by_email(self, body: dict[str, Any]) -> dict[str, Any]:
        email = body.get("email")
        email_type = body.get("email_type", 1)
        if not isinstance(email, str) or not email:
            raise _WeComError(40058)
        if email_type not in (1, 2) or isinstance(email_type, bool):
            raise _WeComError(40058)
        if "@" not in email or len(email) > 64:
            raise _WeComError(60105)
        directory = self._emails if email_type == 1 else self._personal_emails
        userid = directory.get(email.lower())
        if userid is None:
            raise _WeComError(46004)
        return {"errcode": 0, "errmsg": "ok", "userid": userid}

    # ------------------------------------------------------------------ webhook/send

    def add_robot(self, key: str, chat: str) -> None:
        """A group chat's robot with webhook ``key``: its messages are delivered to
        ``robot:<chat>``."""
        with self._lock:
            self._robots[key] = chat

    def _robot_send(self, query: dict[str, str], body: dict[str, Any], now: float,
                    deliveries: list[Delivery]) -> dict[str, Any]:
        chat = self._robots.get(query.get("key", ""))
        if chat is None:
            raise _WeComError(93000)
        msgtype = body.get("msgtype")
        if msgtype not in ROBOT_LIMITS:
            raise _WeComError(40008)
        section = body.get(msgtype)
        content = section.get("content") if isinstance(section, dict) else None
        if not isinstance(content, str) or not content:
            raise _WeComError(44004)
        limit = ROBOT_LIMITS[str(msgtype)]
        if utf8_len(content) > limit:
            raise _WeComError(40058, f"{msgtype}.content exceed max length {limit}")
        if not _take_slot(self._robot_sends, str(query["key"]), now,
                          ((60.0, ROBOT_PER_MINUTE),)):
            raise _WeComError(45009)
        delivery = Delivery(f"robot:{chat}", str(msgtype), 0, secrets.token_urlsafe(24), now,
                            content=content)
        self._delivered.append(delivery)
        deliveries.append(delivery)
        return {"errcode": 0, "errmsg": "ok"}

    # ------------------------------------------------------------------ message/send

    def _send(
        self, body: dict[str, Any], token: _Token, now: float, deliveries: list[Delivery]
    ) -> dict[str, Any]:
        agent = _agent_id(body.get("agentid"))
        if agent not in self._agents:
            raise _WeComError(40056)
        if agent != token.agent_id:
            raise _WeComError(301002)
        msgtype = body.get("msgtype")
        if msgtype not in MSGTYPES:
            raise _WeComError(40008)
        fields = self._message_fields(str(msgtype), body.get(msgtype))

        users = _split_ids(body.get("touser"))
        parties = _split_ids(body.get("toparty"))
        tags = _split_ids(body.get("totag"))
        if len(users) > MAX_USERS:
            raise _WeComError(40032)
        if len(parties) > MAX_PARTIES:
            raise _WeComError(82002)
        if len(tags) > MAX_TAGS:
            raise _WeComError(82003)

        valid: list[str] = []
        invalid: list[str] = []
        unlicensed: list[str] = []
        invalid_party: list[str] = []
        invalid_tag: list[str] = []
        if users == ["@all"]:
            valid = ["@all"] if self._open_directory else sorted(self._licensed.values())
            users, parties, tags = [], [], []
        for userid in users:
            self._classify(userid, valid, invalid, unlicensed, report=True)
        for group, directory, bad in (
            (parties, self._parties, invalid_party),
            (tags, self._tags, invalid_tag),
        ):
            for group_id in group:
                if group_id not in directory:
                    bad.append(group_id)
                    continue
                for member in directory[group_id]:
                    self._classify(member, valid, [], unlicensed, report=False)

        report = {
            "invaliduser": "|".join(invalid),
            "invalidparty": "|".join(invalid_party),
            "invalidtag": "|".join(invalid_tag),
            "unlicenseduser": "|".join(unlicensed),
        }
        if not valid:
            raise _WeComError(81013, **report)

        msgid = secrets.token_urlsafe(48)
        check = body.get("enable_duplicate_check") in (1, "1", True)
        interval = _duplicate_interval(body.get("duplicate_check_interval"))
        digest = _content_digest(agent, str(msgtype), fields)

        def duplicate(userid: str) -> bool:
            last = self._history.get((userid.lower(), digest))
            return check and last is not None and now - last < interval

        task_id = fields.get("task_id")
        if task_id is not None and not all(duplicate(u) for u in valid) \
                and (agent, task_id) in self._task_ids:
            raise _WeComError(40058, "task_id exist")
        taken: list[str] = []
        for userid in valid:
            delivery = Delivery(userid, str(msgtype), agent, msgid, now, **fields)
            if duplicate(userid):
                self._suppressed.append(delivery)
                continue
            self._history[(userid.lower(), digest)] = now
            taken.append(userid)
            if self._over_member_limit(userid.lower(), agent, now):
                self._dropped.append(delivery)  # WeCom answers ok and delivers nothing
                continue
            self._delivered.append(delivery)
            deliveries.append(delivery)
        answer = {"errcode": 0, "errmsg": "ok", **report, "msgid": msgid}
        if not taken:
            return answer  # a duplicate: nothing new went out, nothing to update later
        self._sent[msgid] = _Sent(agent, now)
        if task_id is not None:
            self._task_ids.add((agent, task_id))
            if _updatable(fields["card"]):
                code = secrets.token_urlsafe(32)
                self._cards[code] = _Card(agent, msgid, task_id, taken, now)
                answer["response_code"] = code
        return answer

    def _update_card(self, body: dict[str, Any], token: _Token, now: float) -> dict[str, Any]:
        """message/update_template_card (doc 94945)."""
        agent = _agent_id(body.get("agentid"))
        if agent not in self._agents:
            raise _WeComError(40056)
        if agent != token.agent_id:
            raise _WeComError(301002)
        code = body.get("response_code")
        card = self._cards.get(code) if isinstance(code, str) else None
        if card is None or card.agent != agent:
            raise _WeComError(40058, "invalid response_code")
        if card.used:
            raise _WeComError(40058, "response_code has been used")
        if now - card.issued > RESPONSE_CODE_TTL:
            raise _WeComError(40058, "response_code expired")
        users = body.get("userids")
        everyone = body.get("atall") in (1, True)
        if users is not None and (not isinstance(users, list)
                                  or not all(isinstance(u, str) for u in users)):
            raise _WeComError(40058, "userids must be a list of strings")
        users = list(users or [])
        if len(users) > MAX_USERS:
            raise _WeComError(40032)
        if not users and not everyone:
            raise _WeComError(40058, "userids & partyids & tagids & atall all empty")
        button = body.get("button")
        replacement = body.get("template_card")
        replace_name: str | None = None
        new_card: dict[str, Any] | None = None
        if replacement is not None:
            new_card = dict(self._card_fields(replacement)["card"])
        elif isinstance(button, dict) and isinstance(button.get("replace_name"), str) \
                and button["replace_name"]:
            original = next((d.card for d in self._delivered if d.msgid == card.msgid), None)
            if not original or original.get("card_type") == "text_notice":
                raise _WeComError(40058, "button.replace_name needs a button card")
            replace_name = button["replace_name"]
        else:
            raise _WeComError(40058, "template_card or button.replace_name is required")
        recipients = {u.lower(): u for u in card.users}
        targets = list(recipients.values()) if everyone else users
        invalid = [u for u in targets if u.lower() not in recipients]
        changed = [recipients[u.lower()] for u in targets if u.lower() in recipients]
        if not changed:
            raise _WeComError(81013, invaliduser=invalid)
        card.used = True
        for userid in changed:
            self._updates.append(CardUpdate(userid, card.msgid, card.task_id, now,
                                            new_card, replace_name))
        return {"errcode": 0, "errmsg": "ok", "invaliduser": invalid}

    def _recall(self, body: dict[str, Any], token: _Token, now: float) -> dict[str, Any]:
        """message/recall (doc 94867): an app message of this app, within 24 hours."""
        msgid = body.get("msgid")
        sent = self._sent.get(msgid) if isinstance(msgid, str) else None
        if sent is None or sent.agent != token.agent_id:
            raise _WeComError(40058, "invalid msgid")
        if sent.recalled:
            raise _WeComError(40058, "message has been recalled")
        if now - sent.time > RECALL_WINDOW:
            raise _WeComError(40058, "message can only be recalled within 24 hours")
        sent.recalled = True
        self._recalled.append(str(msgid))
        return {"errcode": 0, "errmsg": "ok"}

    def _over_member_limit(self, member: str, agent: int, now: float) -> bool:
        """WeCom delivers at most ``member_limits`` (per minute, per hour) messages of one
        app to one member; the rest are dropped without an error."""
        per_minute, per_hour = self.member_limits
        return not _take_slot(self._member_sends, (member, agent), now,
                              ((60.0, per_minute), (3600.0, per_hour)))

    def _classify(
        self,
        userid: str,
        valid: list[str],
        invalid: list[str],
        unlicensed: list[str],
        *,
        report: bool,
    ) -> None:
        key = userid.lower()
        if key in self._unlicensed:
            if report and key not in unlicensed:
                unlicensed.append(key)
            return
        canonical = self._licensed.get(key)
        if canonical is None and self._open_directory and _USERID.match(userid):
            canonical = userid
        if canonical is None:
            if key not in invalid:
                invalid.append(key)
            return
        if all(v.lower() != key for v in valid):
            valid.append(canonical)

    def _card_fields(self, section: Any) -> dict[str, Any]:
        """A template_card's fields (doc 90236), refused as WeCom refuses them."""
        if not isinstance(section, dict):
            raise _WeComError(40058, "template_card is required")
        card_type = section.get("card_type")
        if card_type not in CARD_TYPES:
            raise _WeComError(40058, "invalid card_type")
        main = section.get("main_title") if isinstance(section.get("main_title"), dict) else {}
        title = main.get("title") if isinstance(main.get("title"), str) else ""
        sub = section.get("sub_title_text")
        sub = sub if isinstance(sub, str) else ""
        if not title and not sub:
            raise _WeComError(40058, "main_title.title and sub_title_text are both empty")
        task_id = section.get("task_id")
        menu = section.get("action_menu")
        if menu is not None:
            actions = menu.get("action_list") if isinstance(menu, dict) else None
            if not isinstance(actions, list) or not 1 <= len(actions) <= 3 or not all(
                    isinstance(a, dict) and isinstance(a.get("text"), str) and a["text"]
                    and isinstance(a.get("key"), str) and a["key"] for a in actions):
                raise _WeComError(40058, "action_menu.action_list needs 1 to 3 text/key")
        buttons = section.get("button_list")
        if card_type == "button_interaction":
            if not isinstance(buttons, list) or not 1 <= len(buttons) <= 6 or not all(
                    isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"]
                    and isinstance(b.get("key"), str) and b["key"] for b in buttons):
                raise _WeComError(40058, "button_list needs 1 to 6 text/key")
        if (menu is not None or card_type == "button_interaction") and task_id is None:
            raise _WeComError(40058, "task_id is required")
        if task_id is not None and (not isinstance(task_id, str)
                                    or not _TASK_ID.match(task_id)):
            raise _WeComError(40058, "invalid task_id")
        action = section.get("card_action")
        url = action.get("url") if isinstance(action, dict) else None
        if card_type == "text_notice":
            if not isinstance(action, dict) or action.get("type") not in (1, 2):
                raise _WeComError(40058, "card_action is required")
            if action.get("type") == 1 and (not isinstance(url, str) or not url):
                raise _WeComError(41010)
        if isinstance(url, str) and utf8_len(url) > URL_LIMIT:
            raise _WeComError(40039)
        fields: dict[str, Any] = {"card": section, "title": title or None,
                                  "description": sub or None,
                                  "url": url if isinstance(url, str) else None}
        if task_id is not None:
            fields["task_id"] = task_id
        return fields

    def _message_fields(self, msgtype: str, section: Any) -> dict[str, Any]:
        if msgtype == "template_card":
            return self._card_fields(section)
        section = section if isinstance(section, dict) else {}
        truncate = self.oversize == "truncate"
        if msgtype in ("text", "markdown"):
            content = section.get("content")
            if not isinstance(content, str) or not content:
                raise _WeComError(44004)
            if utf8_len(content) > CONTENT_LIMIT:
                if not (truncate and msgtype == "text"):
                    raise _WeComError(45002)
                content = truncate_utf8(content, CONTENT_LIMIT)
            return {"content": content}

        title = section.get("title")
        description = section.get("description")
        url = section.get("url")
        btntxt = section.get("btntxt")
        if not isinstance(title, str) or not title:
            raise _WeComError(41016)
        if not isinstance(description, str) or not description:
            raise _WeComError(41033)
        if not isinstance(url, str) or not url:
            raise _WeComError(41010)
        if utf8_len(url) > URL_LIMIT:
            raise _WeComError(40039)
        if utf8_len(title) > TITLE_LIMIT:
            if not truncate:
                raise _WeComError(45002)
            title = truncate_utf8(title, TITLE_LIMIT)
        if utf8_len(description) > DESCRIPTION_LIMIT:
            if not truncate:
                raise _WeComError(45002)
            description = truncate_utf8(description, DESCRIPTION_LIMIT)
        fields = {"title": title, "description": description, "url": url}
        if isinstance(btntxt, str) and btntxt:
            if len(btntxt) > BTNTXT_LIMIT:
                if not truncate:
                    raise _WeComError(45002)
                btntxt = btntxt[:BTNTXT_LIMIT]
            fields["btntxt"] = btntxt
        return fields


# ---------------------------------------------------------------------- helpers


def _take_slot(history: dict[Any, list[float]], key: Any, now: float,
               windows: tuple[tuple[float, int], ...]) -> bool:
    """Count a send for ``key`` in ``history`` unless a window (seconds, at most this many
    sends) is full: ``False``, nothing counted, when one is."""
    longest = max(span for span, _ in windows)
    times = [t for t in history.get(key, ()) if now - t < longest]
    if any(len([t for t in times if now - t < span]) >= limit for span, limit in windows):
        history[key] = times
        return False
    history[key] = [*times, now]
    return True


def _updatable(card: Mapping[str, Any]) -> bool:
    """Doc 94945: button cards, and notice cards that carry an ``action_menu``."""
    return card.get("card_type") != "text_notice" or card.get("action_menu") is not None


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _WeComError(40058, note="Warning: wrong json format.")
    return body


def _agent_id(value: Any) -> int:
    if value is None or value == "":
        raise _WeComError(41011)
    if isinstance(value, bool):
        raise _WeComError(40056)
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise _WeComError(40056)


def _split_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _WeComError(40058)
    return [part.strip() for part in value.split("|") if part.strip()]


def _duplicate_interval(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return DEFAULT_DUPLICATE_INTERVAL
    try:
        seconds = int(value)
    except ValueError:
        return DEFAULT_DUPLICATE_INTERVAL
    if seconds <= 0:
        return DEFAULT_DUPLICATE_INTERVAL
    return min(seconds, MAX_DUPLICATE_INTERVAL)


def _content_digest(agent: int, msgtype: str, fields: Mapping[str, Any]) -> str:
    canonical = json.dumps([agent, msgtype, dict(fields)], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sandbox: WeComSandbox


class _Handler(QuietHandler):
    server: _Server
    server_version = "wecom-sandbox"
    sys_version = ""

    def _handle(self) -> None:
        sandbox = self.server.sandbox
        sandbox._enter()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            plan, deliveries = sandbox._dispatch(
                self.command, self.path, raw, self.client_address[0]
            )
            callback = sandbox.on_delivery
            if callback is not None:
                for delivery in deliveries:
                    callback(delivery)
            if plan.hang:
                sandbox._hang()
            if plan.disconnect:
                self.close_connection = True
                return
            self._answer(plan)
        finally:
            sandbox._leave()

    def _answer(self, plan: _Plan) -> None:
        if plan.payload is not None:
            data = json.dumps(plan.payload, ensure_ascii=False).encode("utf-8")
        else:
            data = plan.raw
        try:
            self.send_response(plan.status)
            self.send_header("Content-Type", plan.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


# ---------------------------------------------------------------------- CLI


def format_delivery(delivery: Delivery) -> str:
    """A readable multi-line rendering of one delivered message."""
    head = (
        f"[wecom] -> {delivery.userid}  ({delivery.msgtype}, agent {delivery.agentid}, "
        f"msgid {delivery.msgid[:12]}…)"
    )
    lines = [head]
    for name in ("title", "description", "url", "btntxt", "content"):
        value = getattr(delivery, name)
        if value is None:
            continue
        text = str(value).splitlines() or [""]
        lines.append(f"  {name}: {text[0]}")
        lines.extend(f"  {' ' * len(name)}  {line}" for line in text[1:])
    return "\n".join(lines)


def _split_csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def _parse_email(value: str) -> tuple[str, str]:
    email, sep, userid = value.partition("=")
    if not sep or not email or not userid:
        raise argparse.ArgumentTypeError(f"expected EMAIL=USERID, got {value!r}")
    return email, userid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dev.fakes.wecom",
        description="WeCom API sandbox: answers gettoken, message/send and "
        "user/get_userid_by_email, and prints every delivered message.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--corp-id", default="ww-test")
    parser.add_argument("--corp-secret", default="s3cret")
    parser.add_argument("--agent-id", type=int, default=1000002)
    parser.add_argument(
        "--users", default=None, help="comma list of member user ids (default: any user id)"
    )
    parser.add_argument("--unlicensed", default=None, help="comma list of unlicensed members")
    parser.add_argument(
        "--email",
        action="append",
        type=_parse_email,
        default=[],
        metavar="EMAIL=USERID",
        help="enterprise mail address of a member (repeatable)",
    )
    parser.add_argument("--token-ttl", type=int, default=7200)
    parser.add_argument("--oversize", choices=("reject", "truncate"), default="reject")
    args = parser.parse_args(argv)

    def show(delivery: Delivery) -> None:
        print(format_delivery(delivery), flush=True)

    sandbox = WeComSandbox(
        corp_id=args.corp_id,
        corp_secret=args.corp_secret,
        agent_id=args.agent_id,
        users=_split_csv(args.users),
        emails=dict(args.email),
        token_ttl=args.token_ttl,
        unlicensed=_split_csv(args.unlicensed) or (),
        host=args.host,
        port=args.port,
        oversize=args.oversize,
        on_delivery=show,
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with sandbox:
        users = "any user id" if args.users is None else args.users
        print(
            f"WeCom sandbox listening: CORPWECHAT_API_URL={sandbox.api_url} "
            f"(corp {args.corp_id}, agent {args.agent_id}, users: {users})",
            flush=True,
        )
        while not stopping.wait(0.5):
            pass
    print("WeCom sandbox stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
