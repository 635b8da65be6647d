"""A hand-over between two replicas (shared/ledger.py over shared/records.py) against an
API server: the second claimant of a recipient leaves its message to the record the first
holds; when that record changed between the read and the hand-over, it is read again
instead of the request being asked again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dev.fakes.kube_api import FakeKubeAPI
from shared import records
from shared.delivery import Message, SentRecord
from shared.kube import Kube
from shared.ledger import Ledger
from shared.notification import NotificationRequest, Recipient
from tests.corpwechat_notifier.support import DELIVERY_CRD

NS = "cpaas-system"
API, KIND = records.API_VERSION, records.KIND
BOB = Recipient(subscription="bob-sub", name="bob", mail="", channels=("corpwechat",),
                subscriber={"name": "bob"})
REQUEST = NotificationRequest("n-1", {
    "type": "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.failed",
    "involvedobjectkind": "ArtifactPromotionRun", "involvedobjectnamespace": "devops",
    "involvedobjectname": "run-1", "eventreason": "Failed"}, (BOB,))
LEFT = {"bob": records.Pending("bob.wx", Message("text", (("content", "run-1 failed"),)))}


@pytest.fixture
def kube() -> Iterator[Kube]:
    with FakeKubeAPI() as api:
        api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        api.load_yaml(DELIVERY_CRD)
        yield Kube(api.new_api_client().configuration)


def replica(kube: Kube) -> Ledger:
    return Ledger("corpwechat", records.DeliveryRecords(kube, NS), SentRecord(100))


def record(kube: Kube, claim: records.Claim) -> dict[str, Any]:
    found = kube.get(API, KIND, claim.record, NS)
    assert found is not None
    return found


def test_a_claimant_that_finishes_before_the_hand_over_leaves_nothing_to_hand(kube: Kube
                                                                              ) -> None:
    first, second = replica(kube), replica(kube)
    mine = first.claim(REQUEST, [BOB])
    held = second.claim(REQUEST, [BOB])
    assert list(mine.mine) == ["bob"] and list(held.busy) == ["bob"]
    first.record(mine, {"bob": records.Result(records.SENT, "Sent", "bob.wx")})
    assert second.hand_over(held.busy, LEFT) == [], "told already: nothing to ask again"
    done = record(kube, held.busy["bob"])
    assert done["status"]["phase"] == "Sent" and not done["status"].get("pending")
    assert records.RETRY_LABEL not in (done["metadata"].get("labels") or {})


def test_a_record_still_held_after_it_changed_takes_the_message_at_its_new_version(
        kube: Kube) -> None:
    first, second = replica(kube), replica(kube)
    first.claim(REQUEST, [BOB])
    held = second.claim(REQUEST, [BOB])
    claim = held.busy["bob"]
    kube.patch(API, KIND, claim.record, NS, {"metadata": {"labels": {"touched": "yes"}}})
    assert record(kube, claim)["metadata"]["resourceVersion"] != claim.version
    assert second.hand_over(held.busy, LEFT) == []
    handed = record(kube, claim)
    assert handed["status"]["pending"] == LEFT["bob"].as_json()
    assert "phase" not in handed["status"]
    assert handed["metadata"]["labels"][records.RETRY_LABEL] == "true"


@pytest.mark.parametrize("meanwhile", ["failed", "swept"])
def test_a_record_anyone_may_take_now_is_asked_again(kube: Kube, meanwhile: str) -> None:
    """Its claimant failed (a redelivery takes it over and sends) or the record is gone:
    nothing was handed, so the request is asked again rather than the message dropped."""
    first, second = replica(kube), replica(kube)
    mine = first.claim(REQUEST, [BOB])
    held = second.claim(REQUEST, [BOB])
    if meanwhile == "failed":
        first.record(mine, {"bob": records.Result(records.FAILED, "NotSent", "HTTP 503")})
    else:
        assert kube.delete(API, KIND, held.busy["bob"].record, NS)
    assert second.hand_over(held.busy, LEFT) == ["bob"]
