"""What a callback from WeCom is, and what a click on one of our cards decides: plain data.

The order of trust: the signature (``crypto.verify``) before anything is parsed beyond the
outer envelope; the timestamp within ``max_age`` of now; the decrypted message for this
corp; then the click's card (its ``TaskId``) names one delivery record, whose recipient
the clicker must be (their WeCom id mapped back through the admin's directory); and the
decision is written as that person, so the API server's RBAC and admission judge it.
``decide`` here only says what to ask for and why a click is refused before asking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from .crypto import CallbackKeys, Refused, decrypt, verify
from .shared.approvals import DENIED, PENDING, Approval

APPROVE, DENY = "approve", "deny"  # the buttons' keys
MAX_XML_BYTES = 64 * 1024


@dataclass(frozen=True)
class Signed:
    """The query of a callback: what the signature covers besides the ciphertext."""

    msg_signature: str
    timestamp: str
    nonce: str

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Signed:
        values = [str(query.get(k) or "") for k in ("msg_signature", "timestamp", "nonce")]
        if not all(values):
            raise Refused("msg_signature, timestamp and nonce are required")
        return cls(*values)


@dataclass(frozen=True)
class Click:
    """A button pressed on one of our cards (``template_card_event``, doc 90240)."""

    user_id: str  # FromUserName: the clicker's WeCom id
    task_id: str
    key: str  # EventKey: approve | deny
    response_code: str
    create_time: int
    agent_id: str

    @property
    def approved(self) -> bool:
        return self.key == APPROVE


def check_time(signed: Signed, now: float, max_age: float) -> None:
    try:
        sent = int(signed.timestamp)
    except ValueError:
        raise Refused("timestamp is not a number") from None
    if abs(now - sent) > max_age:
        raise Refused(f"timestamp is {int(now - sent)} s away from now (at most "
                      f"{int(max_age)} s)")


def _xml(text: str | bytes) -> Any:
    if len(text) > MAX_XML_BYTES:
        raise Refused("the XML is too large")
    try:
        return ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        raise Refused("the body is not the XML WeCom sends") from None


def _field(root: Any, name: str) -> str:
    found = root.find(name)
    return (found.text or "").strip() if found is not None else ""


def opened(keys: CallbackKeys, signed: Signed, body: bytes) -> str:
    """The decrypted message of a POSTed callback (signature checked first)."""
    encrypted = _field(_xml(body), "Encrypt")
    if not encrypted:
        raise Refused("the body has no Encrypt")
    verify(keys, signed.msg_signature, signed.timestamp, signed.nonce, encrypted)
    return decrypt(keys, encrypted)


def echo(keys: CallbackKeys, signed: Signed, echostr: str) -> str:
    """The URL verification's answer: ``echostr`` decrypted (signature checked first)."""
    verify(keys, signed.msg_signature, signed.timestamp, signed.nonce, echostr)
    return decrypt(keys, echostr)


def click_of(message: str) -> Click | None:
    """The click in a decrypted message; ``None`` for any other message or event (WeCom
    may call for others: they are acknowledged and ignored)."""
    root = _xml(message)
    if _field(root, "MsgType") != "event" or _field(root, "Event") != "template_card_event":
        return None
    user, task, key = (_field(root, n) for n in ("FromUserName", "TaskId", "EventKey"))
    if not user or not task or key not in (APPROVE, DENY):
        raise Refused("the card event has no clicker, card or known button")
    try:
        created = int(_field(root, "CreateTime") or "0")
    except ValueError:
        raise Refused("CreateTime is not a number") from None
    return Click(user, task, key, _field(root, "ResponseCode"), created,
                 _field(root, "AgentID"))


@dataclass(frozen=True)
class Verdict:
    """What to do with a click: ``write`` the decision, or refuse with ``reason`` (shown
    on the clicker's card)."""

    write: bool
    reason: str = ""


def decide(approval: Approval | None, user: str, requester: str = "") -> Verdict:
    """Refuse what the platform's rules would refuse anyway, with a reason a person
    reads; the API server's admission stays the judge of what is written."""
    if approval is None:
        return Verdict(False, "this run asks nobody to approve it")
    if user not in approval.approvers:
        return Verdict(False, "you are not an approver of this run")
    if approval.state != PENDING:
        decided = approval.decided_by
        verb = "denied" if approval.state == DENIED else "decided"
        who = decided.user if decided is not None else "someone"
        return Verdict(False, f"already {verb} by {who}")
    if approval.decision_of(user) is not None:
        return Verdict(False, "you have decided already")
    if approval.policy == "InOrder" and approval.waiting_on[:1] != (user,):
        return Verdict(False, f"not your turn: {approval.waiting_on[0]} decides first")
    if requester and requester == user:
        return Verdict(False, "you requested this run: another approver decides")
    return Verdict(True)


def decisions_with(current: Any, user: str, approved: bool, operator: str = "",
                   description: str = "") -> list[dict[str, Any]]:
    """The decisions list with ``user``'s decision in it (Katanomi's ``UserApproval``:
    ``approved`` omitted for a denial), the others as they were."""
    listed = [dict(d) for d in current if isinstance(d, Mapping)] \
        if isinstance(current, list) else []
    given: dict[str, Any] = {"approved": True} if approved else {}
    if description:
        given["description"] = description
    entry: dict[str, Any] = {"kind": "User", "name": user, "input": given}
    if operator:
        entry["operator"] = {"kind": "User", "name": operator}
    for i, existing in enumerate(listed):
        if existing.get("name") == user and not existing.get("input"):
            listed[i] = {**existing, **entry}
            return listed
    return [*listed, entry]
