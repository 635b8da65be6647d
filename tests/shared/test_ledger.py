"""One channel's delivery ledger (shared/ledger.py) without delivery records: this
process's memory alone decides (records on: tests/corpwechat_notifier/test_http.py, with
claims, hand-overs and the sweep against an API server)."""

from __future__ import annotations

from shared import records
from shared.delivery import SentRecord
from shared.ledger import Ledger
from shared.notification import NotificationRequest, Recipient


def recipient(name: str) -> Recipient:
    return Recipient(subscription=f"{name}-sub", name=name, mail="", channels=("email",),
                     subscriber={"name": name})


def test_without_records_every_unsent_recipient_is_mine_and_told_once() -> None:
    ledger = Ledger("email", None, SentRecord(100))
    request = NotificationRequest("n-1", {"type": "t"}, (recipient("a"), recipient("b")))
    unsent = ledger.unsent(request, request.recipients)
    claims = ledger.claim(request, unsent)
    assert (claims.mine, claims.busy, claims.done) == ({}, {}, [])
    assert [r.name for r in ledger.mine(claims, unsent)] == ["a", "b"]
    ledger.told(request, ["a"])
    ledger.record(claims, {"a": records.Result(records.SENT, "Sent", "a@x")})
    assert [r.name for r in ledger.unsent(request, request.recipients)] == ["b"]
    other = NotificationRequest("n-2", {"type": "t"}, (recipient("a"),))
    assert [r.name for r in ledger.unsent(other, other.recipients)] == ["a"]
    email_only = Ledger("corpwechat", None, ledger.sent)
    assert [r.name for r in email_only.unsent(request, request.recipients)] == ["a", "b"], \
        "told on one channel is not told on another"
