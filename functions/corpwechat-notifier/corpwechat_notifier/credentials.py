"""CorpWeChat credentials: the CORPWECHAT_* variables, else the notification server Secret.

The solution guide creates the Secret with ``stringData`` values that are themselves
base64 text (``corpId: <BASE64_ENCODED_CORP_ID>``), so after Kubernetes' own base64
layer a value may carry a second one. ``unwrap`` removes it only when the result is
unambiguous: the value is canonical base64 (standard alphabet, padded, length a
multiple of 4) and decodes to text made only of the characters WeCom uses for the field
(corp ids and secrets: letters, digits, ``-`` and ``_``; agent ids: digits). Raw WeCom
values do not look like that (corp ids are 18 characters, secrets 43, agent ids are
numbers), so a plain value is never decoded by mistake.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .shared import logs
from .shared.cache import Expiring
from .shared.errors import Unprocessable

SECRET_LABEL = "cpaas.io/notification.server.type=CorpWeChat"
PREFERRED_SECRET = "platform-corpwechat-server"
_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")
_TOKEN_TEXT = re.compile(r"^[A-Za-z0-9_-]+$")
_DIGITS = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class Credentials:
    corp_id: str
    corp_secret: str = field(repr=False)
    agent_id: int
    source: str = "env"

    def __post_init__(self) -> None:
        logs.register_secret(self.corp_secret)  # whoever builds one, it never shows in logs

    @property
    def app_key(self) -> str:
        """Identifies the WeCom app (token cache key) without holding the secret."""
        digest = hashlib.sha256(self.corp_secret.encode("utf-8")).hexdigest()[:16]
        return f"{self.corp_id}/{self.agent_id}/{digest}"


def unwrap(value: str, *, numeric: bool = False) -> str:
    """Strip a second base64 layer when the value unambiguously has one (module doc)."""
    value = value.strip()
    wanted = _DIGITS if numeric else _TOKEN_TEXT
    if numeric and _DIGITS.match(value):
        return value  # already a number: never decode it
    if not _BASE64.match(value):
        return value
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError):
        return value
    return decoded if decoded and wanted.match(decoded) else value


def from_secret_data(data: Mapping[str, Any], name: str) -> Credentials:
    """Credentials from a Secret's ``data`` (base64 values, as the API returns them)."""
    values: dict[str, str] = {}
    for key in ("corpId", "corpSecret", "agentId"):
        raw = data.get(key)
        if not isinstance(raw, str) or not raw.strip():
            raise Unprocessable(f"Secret {name} has no {key}")
        try:
            plain = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unprocessable(f"Secret {name}: {key} is not valid base64 data") from None
        values[key] = unwrap(plain, numeric=key == "agentId")
        if key == "corpSecret":
            logs.register_secret(plain.strip())
            logs.register_secret(values[key])
    if not _DIGITS.match(values["agentId"]):
        raise Unprocessable(f"Secret {name}: agentId must be a number (or base64 of one)")
    return Credentials(values["corpId"], values["corpSecret"], int(values["agentId"]),
                       source=f"secret/{name}")


def _metadata(secret: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = secret.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def secret_name(secret: Mapping[str, Any]) -> str:
    return str(_metadata(secret).get("name") or "")


def secret_labels(secret: Mapping[str, Any]) -> Mapping[str, Any]:
    labels = _metadata(secret).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def pick_secret(secrets: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The Secret to use when several carry the label: the guide's name, else the first."""
    if not secrets:
        return None
    by_name = {secret_name(s): s for s in secrets}
    if PREFERRED_SECRET in by_name:
        return by_name[PREFERRED_SECRET]
    return by_name[sorted(by_name)[0]]


class CredentialStore:
    """Loads credentials lazily and keeps them for ``ttl`` seconds.

    ``env`` holds the CORPWECHAT_* values (possibly empty); ``list_secrets`` returns the
    labelled Secrets of the system namespace as the API server's JSON objects (``data``
    values are base64 text; it may raise typed errors: API trouble is a 503). Every value
    set in the environment wins over the Secret's.
    """

    def __init__(self, env: Mapping[str, str],
                 list_secrets: Callable[[], list[Mapping[str, Any]]],
                 namespace: str, ttl: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.env = {k: v for k, v in env.items() if v}
        self.list_secrets = list_secrets
        self.namespace = namespace
        self._cached: Expiring[Credentials] = Expiring(ttl, clock)
        self._lock = threading.Lock()  # one read of the Secrets at a time
        logs.register_secret(self.env.get("corp_secret"))

    def get(self) -> Credentials:
        with self._lock:
            return self._cached.get_or(self._load)

    def _load(self) -> Credentials:
        if all(self.env.get(k) for k in ("corp_id", "corp_secret", "agent_id")):
            return Credentials(self.env["corp_id"], self.env["corp_secret"],
                               int(self.env["agent_id"]), source="env")
        secret = pick_secret(self.list_secrets())
        if secret is None:
            raise Unprocessable(
                "no CorpWeChat credentials: set CORPWECHAT_CORP_ID, CORPWECHAT_CORP_SECRET and "
                f"CORPWECHAT_AGENT_ID, or create the Secret labelled {SECRET_LABEL} in "
                f"{self.namespace}"
            )
        name = secret_name(secret)
        data = secret.get("data")
        loaded = from_secret_data(data if isinstance(data, Mapping) else {}, name)
        credentials = Credentials(
            self.env.get("corp_id") or loaded.corp_id,
            self.env.get("corp_secret") or loaded.corp_secret,
            int(self.env.get("agent_id") or loaded.agent_id),
            source=loaded.source if not self.env else f"{loaded.source}+env",
        )
        logs.info("CorpWeChat credentials loaded", source=credentials.source,
                  corp_id=credentials.corp_id, agent_id=credentials.agent_id)
        return credentials
