"""What a subscriber was sent lately, on their own ClusterSubscription's status: self-service
without reading the delivery records of the system namespace.

Every notifier, once it has written a delivery's outcome (``records.finish``), puts it at
the top of ``status.notifications`` of the subscription that asked for it (at most
``SUBSCRIPTION_RECENT_NOTIFICATIONS``, default 5; ``0``: not written) and sets
``status.lastNotified`` (when the last message went out) and ``status.lastResult`` (the
newest outcome), which ``kubectl get clustersubscription`` shows as LAST NOTIFIED and
RESULT.

What is written is what the subscription itself already says: when, on which channel, the
event's reason, the namespace (one it subscribes to) and the outcome with its reason —
never the object's name or the message. Whoever may list ClusterSubscriptions (the
``kubeevent-subscriber`` role lets every subscriber) sees that much of everyone's; the
records, with the objects' names, stay in the system namespace.

A merge patch of ``/status`` guarded by the resourceVersion of the copy just read (the
filter writes its conditions the same way): a conflict reads again. A failure is logged
and never fails the delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import logs
from .kube import Kube

GROUP = "core.katanomi.dev"
VERSION = "v1alpha1"
PLURAL = "clustersubscriptions"
KIND = "ClusterSubscription"
SENT = "Sent"


@dataclass(frozen=True)
class Outcome:
    """One delivery's outcome, as the subscription's status shows it."""

    at: str
    channel: str
    reason: str  # the Event's reason, e.g. approvalpending
    namespace: str
    result: str  # the record's phase: Sent, Refused, Failed, Deferred, Expired, Skipped
    why: str = ""  # the record's reason, e.g. QuietHours, InvalidUser

    def as_json(self) -> dict[str, str]:
        entry = {"at": self.at, "channel": self.channel, "event": self.reason,
                 "namespace": self.namespace, "result": self.result}
        if self.why and self.why != self.result:
            entry["reason"] = self.why[:64]
        return entry

    @property
    def shown(self) -> str:
        """``lastResult``: the outcome and, when it is not plain, why."""
        return self.result if not self.why or self.why == self.result \
            else f"{self.result} ({self.why[:64]})"


class RecentNotifications:
    def __init__(self, kube: Kube, keep: int = 5) -> None:
        self.kube = kube
        self.keep = keep

    def note(self, subscription: str, outcome: Outcome) -> None:
        if self.keep <= 0 or not subscription:
            return
        try:
            for _attempt in range(3):
                if self._write(subscription, outcome):
                    return
        except Exception as exc:  # the delivery is done whatever this says
            logs.warning("could not note the outcome on the subscription's status",
                         subscription=subscription,
                         error=getattr(exc, "reason", None) or type(exc).__name__)

    def _write(self, name: str, outcome: Outcome) -> bool:
        """False on a conflict (written meanwhile: read again)."""
        obj = self.kube.get(f"{GROUP}/{VERSION}", KIND, name)
        if obj is None:  # deleted since: nobody to show it to
            return True
        status = obj.get("status") if isinstance(obj.get("status"), Mapping) else {}
        listed = status.get("notifications")
        earlier = [e for e in listed if isinstance(e, Mapping)] \
            if isinstance(listed, list) else []
        body: dict[str, Any] = {
            "notifications": [outcome.as_json(), *earlier][:self.keep],
            "lastResult": outcome.shown,
        }
        if outcome.result == SENT:
            body["lastNotified"] = outcome.at
        patch = {"metadata": {"resourceVersion": str(
            (obj.get("metadata") or {}).get("resourceVersion") or "")}, "status": body}
        return self.kube.merge_status(f"{GROUP}/{VERSION}", KIND, name, patch) is not False
