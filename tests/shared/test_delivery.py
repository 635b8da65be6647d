"""What every channel's delivery shares (shared/delivery.py)."""

from __future__ import annotations

from shared.delivery import Message, SentRecord


def test_sent_record_is_bounded_and_keyed_by_notification():
    record = SentRecord(size=3)
    record.add("n1", "corpwechat", ["a", "b"])
    assert record.sent("n1", "corpwechat", "a") and not record.sent("n2", "corpwechat", "a")
    assert not record.sent("n1", "email", "a")
    record.add("n2", "corpwechat", ["c", "d"])
    assert len(record) == 3
    # least recently used goes first: "a" was just looked at, "b" was not
    assert not record.sent("n1", "corpwechat", "b")
    assert record.sent("n1", "corpwechat", "a") and record.sent("n2", "corpwechat", "d")



def test_identical_messages_are_one_key() -> None:
    one = Message("textcard", (("title", "t"), ("description", "d")))
    assert one == Message("textcard", (("title", "t"), ("description", "d")))
    assert len({one, Message("textcard", (("title", "t"), ("description", "d")))}) == 1
    assert one.get("title") == "t" and one.get("url") == ""
