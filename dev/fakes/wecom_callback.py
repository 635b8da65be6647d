"""WeCom's side of an app's callbacks, for tests and ``make dev``: it signs and encrypts
each callback as WeCom documents it (doc 91144), calls the app's callback URL, retries a
callback that got no answer within 5 seconds (as WeCom does: the same body again, three
times in all), and opens the app's passive reply (doc 90241) to apply it to the clicker's
card in the sandbox.

Written from the documentation on its own (not from the function's code): a test in
which both sides share one implementation would prove nothing about either.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

ANSWER_WITHIN = 5.0  # seconds WeCom waits for an answer before it retries
ATTEMPTS = 3


def _sha1(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


@dataclass
class Answer:
    """What the app answered each attempt (``status`` of the last; ``reply``: the passive
    reply's message, decrypted, when it sent one)."""

    attempts: int
    status: int
    body: bytes
    reply: str | None = None
    statuses: list[int] = field(default_factory=list)


class WeComCallbacks:
    def __init__(self, url: str, *, token: str, encoding_aes_key: str, corp_id: str,
                 clock: Callable[[], float] = time.time,
                 answer_within: float = ANSWER_WITHIN) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.key = base64.b64decode(encoding_aes_key + "=")
        self.corp_id = corp_id
        self.clock = clock
        self.answer_within = answer_within
        self.http = requests.Session()

    # ------------------------------------------------------------------ crypto

    def seal(self, message: str) -> str:
        body = message.encode("utf-8")
        plain = os.urandom(16) + struct.pack(">I", len(body)) + body + \
            self.corp_id.encode("utf-8")
        pad = 32 - len(plain) % 32
        plain += bytes([pad]) * pad
        enc = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).encryptor()
        return base64.b64encode(enc.update(plain) + enc.finalize()).decode("ascii")

    def unseal(self, encrypted: str) -> str:
        dec = Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16])).decryptor()
        plain = dec.update(base64.b64decode(encrypted)) + dec.finalize()
        plain = plain[:-plain[-1]]
        (length,) = struct.unpack(">I", plain[16:20])
        if plain[20 + length:].decode("utf-8") != self.corp_id:
            raise ValueError("the reply is for another corp")
        return plain[20:20 + length].decode("utf-8")

    def signed_query(self, encrypted: str, *, timestamp: str | None = None,
                     nonce: str | None = None) -> dict[str, str]:
        timestamp = timestamp or str(int(self.clock()))
        nonce = nonce or os.urandom(6).hex()
        return {"msg_signature": _sha1(self.token, timestamp, nonce, encrypted),
                "timestamp": timestamp, "nonce": nonce}

    # ------------------------------------------------------------------ calls

    def verify_url(self) -> requests.Response:
        """The GET WeCom sends when the app's callback URL is saved."""
        echo = os.urandom(8).hex()
        encrypted = self.seal(echo)
        query = {**self.signed_query(encrypted), "echostr": encrypted}
        response = self.http.get(f"{self.url}/?{urlencode(query)}", timeout=10)
        response.expected = echo  # type: ignore[attr-defined]
        return response

    @staticmethod
    def click_event(userid: str, task_id: str, key: str, *, corp_id: str,
                    response_code: str = "", agent_id: int = 1000002,
                    created: int | None = None) -> str:
        created = created if created is not None else int(time.time())
        fields = {"ToUserName": corp_id, "FromUserName": userid, "CreateTime": str(created),
                  "MsgType": "event", "Event": "template_card_event", "EventKey": key,
                  "TaskId": task_id, "CardType": "button_interaction",
                  "ResponseCode": response_code, "AgentID": str(agent_id)}
        return "<xml>" + "".join(f"<{k}><![CDATA[{v}]]></{k}>" for k, v in fields.items()) \
            + "</xml>"

    def envelope(self, message: str, **signing: Any) -> tuple[dict[str, str], bytes]:
        encrypted = self.seal(message)
        body = (f"<xml><ToUserName><![CDATA[{self.corp_id}]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt>"
                f"<AgentID><![CDATA[1000002]]></AgentID></xml>").encode()
        return self.signed_query(encrypted, **signing), body

    def post(self, query: dict[str, str], body: bytes) -> Answer:
        """One callback as WeCom delivers it: the same request again when the app does not
        answer 200 within ``answer_within`` seconds, ``ATTEMPTS`` in all."""
        statuses: list[int] = []
        response = None
        for _ in range(ATTEMPTS):
            try:
                response = self.http.post(f"{self.url}/?{urlencode(query)}", data=body,
                                          headers={"Content-Type": "text/xml"},
                                          timeout=self.answer_within)
            except requests.RequestException:
                statuses.append(0)
                continue
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
        status = response.status_code if response is not None else 0
        content = response.content if response is not None else b""
        return Answer(len(statuses), status, content, self.open_reply(content)
                      if status == 200 else None, statuses)

    def click(self, userid: str, task_id: str, key: str, **event: Any) -> Answer:
        message = self.click_event(userid, task_id, key, corp_id=self.corp_id, **event)
        return self.post(*self.envelope(message))

    def open_reply(self, content: bytes) -> str | None:
        """The passive reply's message, its signature checked (``None``: no reply)."""
        if not content.strip().startswith(b"<xml"):
            return None
        root = ET.fromstring(content)
        encrypted = root.findtext("Encrypt") or ""
        timestamp, nonce = root.findtext("TimeStamp") or "", root.findtext("Nonce") or ""
        if _sha1(self.token, timestamp, nonce, encrypted) != root.findtext("MsgSignature"):
            raise ValueError("the reply's signature does not match")
        return self.unseal(encrypted)

    @staticmethod
    def replaced_button(reply: str | None) -> str | None:
        """The text an ``update_button`` reply puts on the clicker's card."""
        if not reply:
            return None
        root = ET.fromstring(reply)
        if root.findtext("MsgType") != "update_button":
            return None
        return root.findtext("Button/ReplaceName")
