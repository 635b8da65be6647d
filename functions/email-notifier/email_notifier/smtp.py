"""The SMTP server: its settings (a Secret, each value overridable from the environment)
and sending one message to its recipients, each alone, over one connection.

========================================  ==============================================
what the server did                       what becomes of it
========================================  ==============================================
250 for a recipient                       Sent
5xx for a recipient (RCPT or DATA)        Refused for that recipient only
4xx for a recipient                       the others go on; then 503 (``put_off``: the
                                          record keeps the message for the sweep)
4xx / no answer / dropped / deadline      503 (retried, as above)
5xx for the sender (MAIL FROM), AUTH      422: configuration; not retried
========================================  ==============================================

Every recipient has its own total deadline (connecting, TLS and AUTH count against the
first): a server that answers slowly cannot hold a request past it.
"""

from __future__ import annotations

import base64
import binascii
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from .message import mime
from .shared import logs, metrics
from .shared.cache import Cache, Expiring
from .shared.delivery import Message
from .shared.errors import TemporaryError, Unprocessable
from .shared.pipeline import Refusal, Report

TLS_MODES = ("starttls", "implicit", "none")
SECRET_KEYS = ("host", "port", "username", "password", "from", "tls", "ca.crt")
SMTP_REPLIES = metrics.counter(
    "kubeevent_smtp_replies", "SMTP transactions by their outcome: the reply class (2xx, "
    "4xx, 5xx) or network", ("outcome",))


class SmtpUnavailable(TemporaryError):
    """The server did not take it now (4xx, no answer, deadline): 503, retried."""


class SmtpMisconfigured(Unprocessable):
    """The server refused the sender or the login: configuration (422)."""


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    tls: str = "starttls"
    username: str = ""
    password: str = field(default="", repr=False)
    sender: str = ""
    ca_pem: str = field(default="", repr=False)
    source: str = "env"


def _decoded(data: Mapping[str, Any], key: str, secret: str) -> str:
    raw = data.get(key)
    if raw in (None, ""):
        return ""
    try:
        return base64.b64decode(str(raw), validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        raise Unprocessable(f"Secret {secret}: {key} is not base64 UTF-8 text") from None


def settings_from(env: Mapping[str, str], secret: Mapping[str, Any] | None,
                  secret_name: str) -> Settings:
    """The server's settings: each value from ``env`` (the EMAIL_* variables) when set,
    else from the Secret's ``data``."""
    data = (secret or {}).get("data")
    data = data if isinstance(data, Mapping) else {}
    values = {key: env.get(key) or _decoded(data, key, secret_name) for key in SECRET_KEYS}
    host = values["host"]
    if not host:
        raise Unprocessable(f"no SMTP server: set EMAIL_SMTP_HOST, or create the Secret "
                            f"{secret_name} with host, port, from (and username, password)")
    tls = (values["tls"] or "starttls").lower()
    if tls not in TLS_MODES:
        raise Unprocessable(f"SMTP tls must be one of {', '.join(TLS_MODES)}, got {tls!r}")
    port_text = values["port"] or ("465" if tls == "implicit" else "587")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise Unprocessable(f"SMTP port must be a port number, got {port_text!r}")
    if values["password"] and tls == "none":
        raise Unprocessable("SMTP tls is none: a password would cross the network in clear; "
                            "use starttls or implicit")
    sender = values["from"]
    if "@" not in parseaddr(sender)[1] or any(c in sender for c in "\r\n"):
        raise Unprocessable(f"no sender address: set EMAIL_FROM or from in {secret_name}")
    logs.register_secret(values["password"])
    source = "env" if not data else ("secret" if not any(env.values()) else "secret+env")
    return Settings(host, int(port_text), tls, values["username"], values["password"],
                    sender, values["ca.crt"], source)


class SettingsStore:
    """The settings, read at most every ``ttl`` seconds (a rotated Secret is picked up)."""

    def __init__(self, env: Mapping[str, str], read_secret: Callable[[], dict[str, Any] | None],
                 secret_name: str, ttl: float = 300.0) -> None:
        self.env = {k: v for k, v in env.items() if v}
        self.read_secret = read_secret
        self.secret_name = secret_name
        self._cached: Expiring[Settings] = Expiring(ttl)
        self._lock = threading.Lock()

    def get(self) -> Settings:
        with self._lock:
            return self._cached.get_or(self._load)

    def _load(self) -> Settings:
        complete = all(self.env.get(k) for k in ("host", "from"))
        secret = None if complete else self.read_secret()
        settings = settings_from(self.env, secret, self.secret_name)
        logs.info("SMTP settings loaded", source=settings.source, host=settings.host,
                  port=settings.port, tls=settings.tls)
        return settings


class _Deadline:
    """Cuts the connection when the time is up (``seconds`` from ``start``), whatever it
    is waiting for."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self.ends = time.monotonic() + seconds
        self._timer: threading.Timer | None = None
        self._sock: socket.socket | None = None

    def start(self) -> None:
        """A new deadline from now (one recipient's)."""
        self.ends = time.monotonic() + self.seconds

    def watch(self, client: smtplib.SMTP) -> None:
        """Cut ``client``'s socket (after STARTTLS: the TLS one) when the time is up."""
        self.cancel()
        self._sock = client.sock
        self._timer = threading.Timer(max(0.0, self.ends - time.monotonic()), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        self.expired = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class SmtpClient:
    def __init__(self, *, connect_timeout: float = 5.0, deadline: float = 30.0,
                 local_hostname: str | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.local_hostname = local_hostname
        # The trust store is read once per CA (the system's, or the Secret's ca.crt).
        self._contexts: Cache[str, ssl.SSLContext] = Cache(4)

    def _context(self, settings: Settings) -> ssl.SSLContext:
        def made() -> ssl.SSLContext:
            context = ssl.create_default_context()
            if settings.ca_pem:
                context.load_verify_locations(cadata=settings.ca_pem)
            return context

        return self._contexts.get_or(settings.ca_pem, made)

    def _connect(self, settings: Settings, deadline: _Deadline) -> smtplib.SMTP:
        timeout = min(self.connect_timeout, self.deadline)
        client: smtplib.SMTP
        if settings.tls == "implicit":
            client = smtplib.SMTP_SSL(settings.host, settings.port, timeout=timeout,
                                      local_hostname=self.local_hostname,
                                      context=self._context(settings))
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=timeout,
                                  local_hostname=self.local_hostname)
        deadline.watch(client)
        client.ehlo()
        if settings.tls == "starttls":
            client.starttls(context=self._context(settings))
            deadline.watch(client)  # the same deadline, on the TLS socket now
            client.ehlo()
        if settings.username:
            client.login(settings.username, settings.password)
        return client

    def send(self, settings: Settings, message: Message, recipients: list[str],
             on_sent: Callable[[list[str]], None]) -> Report:
        """``message`` to each recipient alone; ``on_sent([recipient])`` after each."""
        report = Report()
        later: list[str] = []  # why recipients were put off (4xx)
        deadline = _Deadline(self.deadline)  # the first recipient's: connecting counts
        client: smtplib.SMTP | None = None
        try:
            client = self._connect(settings, deadline)
            for number, recipient in enumerate(recipients):
                if number:
                    deadline.start()
                deadline.watch(client)
                report.calls += 1
                code, text = self._one(client, settings, message, recipient)
                if code < 300:
                    report.delivered.append(recipient)
                    on_sent([recipient])
                elif code >= 500:
                    report.refused.append(Refusal(recipient, "Rejected",
                                                  f"SMTP {code} for {recipient}: {text}"))
                else:
                    later.append(f"SMTP {code} for {recipient}: {text}")
        except smtplib.SMTPAuthenticationError as exc:
            raise _refused(exc, "the login") from None
        except smtplib.SMTPSenderRefused as exc:
            raise _refused(exc, f"the sender {exc.sender}") from None
        except smtplib.SMTPResponseException as exc:  # HELO, STARTTLS, connect
            SMTP_REPLIES.labels(f"{exc.smtp_code // 100}xx").inc()
            raise SmtpUnavailable(f"SMTP server answered {exc.smtp_code} "
                                  f"{_said(exc.smtp_error)}") from None
        except (OSError, smtplib.SMTPException) as exc:
            SMTP_REPLIES.labels("network").inc()
            why = (f"no answer within {self.deadline:g} s" if deadline.expired
                   else type(exc).__name__)
            raise SmtpUnavailable(f"SMTP server {settings.host}:{settings.port} "
                                  f"unreachable ({why})") from None
        finally:
            deadline.cancel()
            if client is not None:
                _quit(client)
        if later:
            report.put_off = SmtpUnavailable(later[0] + (f" (and {len(later) - 1} more)"
                                                         if len(later) > 1 else ""))
        return report

    @staticmethod
    def _one(client: smtplib.SMTP, settings: Settings, message: Message,
             recipient: str) -> tuple[int, str]:
        """One recipient's transaction: its reply code and text (2xx: taken)."""
        mail = mime(message, settings.sender, recipient)
        try:
            client.send_message(mail, from_addr=parseaddr(settings.sender)[1],
                                to_addrs=[recipient])
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:  # RCPT, DATA
            code, said = (exc.recipients.get(recipient, (550, b"refused"))
                          if isinstance(exc, smtplib.SMTPRecipientsRefused)
                          else (exc.smtp_code, exc.smtp_error))
            SMTP_REPLIES.labels(f"{code // 100}xx").inc()
            client.rset()
            return code, _said(said)
        SMTP_REPLIES.labels("2xx").inc()
        return 250, "ok"


def _refused(exc: smtplib.SMTPResponseException, what: str) -> Exception:
    """The server refused ``what`` (the login, the sender): for good (5xx: configuration,
    422) or for now (4xx: 503)."""
    SMTP_REPLIES.labels(f"{exc.smtp_code // 100}xx").inc()
    said = f"{exc.smtp_code} {_said(exc.smtp_error)}"
    if exc.smtp_code >= 500:
        return SmtpMisconfigured(f"the SMTP server refused {what}: {said}")
    return SmtpUnavailable(f"the SMTP server put off {what}: {said}")


def _said(raw: Any) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:200]


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()
