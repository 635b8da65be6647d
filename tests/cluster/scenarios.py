"""The seed's four scenarios, checked the same way on every broker and channel."""

from __future__ import annotations

import time
import uuid

from dev.cluster.chain import ClusterChain, controller_event
from dev.support.factory import promotion_run
from dev.support.seed import SEED_SUBSCRIPTIONS, TITLES

# (reason, the Event's message, who is told)
SEED_SCENARIOS = [
    ("ApprovalPending", None, {"admin", "bob"}),
    ("ApprovalDenied", "denied by admin", {"alice"}),
    ("Running", None, {"alice"}),
    ("Failed", "push failed: unauthorized", {"alice"}),
]


def reaches_exactly_its_people(chain: ClusterChain, reason: str, message: str | None,
                               who: set[str]) -> None:
    """An Event created with kubectl about a new run in devops: exactly ``who`` get one
    message each (a card for the approvers, a textcard for the requester; and one email
    each, but admin, who subscribes on CorpWeChat only), and
    the broker took one notification request (one id) for their subscriptions."""
    run = chain.new_run(promotion_run(f"run-{uuid.uuid4().hex[:8]}", "devops"))
    chain.happen(controller_event(run, reason, message))
    # Delivery may go on after the broker's answer (a durable channel): wait for the
    # messages expected, then for anything more to arrive.
    # By email too, for those who subscribe with "corpwechat,email" (the example
    # subscriptions; admin's, the seed's, is CorpWeChat only).
    addresses = {f"{user}@example.com" for user in who - {"admin"}}
    deadline = time.monotonic() + 60
    while not (who <= set(chain.received()) and addresses <= set(chain.mailed())) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    chain.settle()
    got = chain.received()
    assert set(got) == who, "approvers or the requester only; carol hears nothing"
    name = run["metadata"]["name"]
    for user in who:
        (delivery,) = got[user]
        assert delivery.msgtype == ("template_card" if reason == "ApprovalPending"
                                    else "textcard")
        assert TITLES[reason] in (delivery.title or "")
        assert f"devops/{name}" in (delivery.description or "")
        if message:
            assert message in (delivery.description or "")
    emails = chain.mailed()
    assert set(emails) == addresses
    for address, got_mail in emails.items():
        assert len(got_mail) == 1, f"{address} got {len(got_mail)} emails"
        assert TITLES[reason] in got_mail[0]["Subject"]
        assert f"devops/{name}" in got_mail[0]["Subject"]
    # By id: a durable channel may deliver one twice (at least once).
    requests = list({e["id"]: e for e in chain.broker.ingress
                     if e["type"].endswith("notification.requested.v1alpha1")
                     and e.get("involvedobjectname") == name}.values())
    assert [sorted(r["subscription"] for r in e.data["recipients"]) for e in requests] == \
        [sorted(SEED_SUBSCRIPTIONS[u] for u in who)]
