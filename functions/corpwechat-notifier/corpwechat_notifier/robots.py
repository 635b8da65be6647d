"""Group chats' robots: the webhook keys, kept in a Secret (``corpwechat-robots`` in
SYSTEM_NAMESPACE: key = the robot's name as ``corpwechat-groups`` writes it after
``robot:``, value = its webhook key), read when needed and kept a while.

A webhook key is a credential (whoever has it posts into the chat): it is registered
with the log redaction the moment it is read and never put into a record or a reason.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections.abc import Callable
from typing import Any

from .shared import logs
from .shared.cache import Expiring

ROBOT = "robot:"
SECRET = "corpwechat-robots"


def is_robot(target: str) -> bool:
    return target.startswith(ROBOT)


class RobotKeys:
    def __init__(self, read_secret: Callable[[], dict[str, Any] | None], ttl: float = 300.0
                 ) -> None:
        self.read_secret = read_secret
        self._keys: Expiring[dict[str, str]] = Expiring(ttl)
        self._lock = threading.Lock()

    def key(self, target: str) -> str | None:
        """The webhook key of ``robot:<name>``, or ``None`` when the Secret has none."""
        with self._lock:
            keys = self._keys.get_or(self._load)
        return keys.get(target.removeprefix(ROBOT)) if keys is not None else None

    def _load(self) -> dict[str, str]:
        secret = self.read_secret() or {}
        data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
        keys: dict[str, str] = {}
        for name, raw in data.items():
            try:
                value = base64.b64decode(str(raw), validate=True).decode("utf-8").strip()
            except (binascii.Error, UnicodeDecodeError):
                logs.warning(f"{SECRET}: a value is not base64 UTF-8 text; robot skipped",
                             robot=str(name))
                continue
            if value:
                logs.register_secret(value)
                keys[str(name)] = value
        return keys
