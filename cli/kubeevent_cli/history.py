"""``kubeevent history``: what a user was sent, from the notifier's delivery records."""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

from . import bridge
from .errors import UserError

_SINCE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
COLUMNS = ("WHEN", "EVENT", "OBJECT", "CHANNEL", "PHASE", "REASON", "FOLLOW-UP")


def follow_up(card: Any) -> str:
    """What became of a message that asked its recipient to decide (``status.card``):
    ``updated: 已由 bob 批准 / Approved by bob at 14:02 UTC``, ``waiting, reminded 2×``…;
    empty for a message that asked nothing."""
    if not isinstance(card, dict) or not card.get("state"):
        return ""
    words = {"Open": "waiting", "Updated": "card updated", "Recalled": "recalled",
             "FollowedUp": "followed up", "Closed": "closed"}
    state = words.get(str(card["state"]), str(card["state"]).lower())
    reminders = card.get("reminders")
    if isinstance(reminders, int) and reminders:
        state += f", reminded {reminders}×"
    outcome = card.get("outcome")
    said = f"{state}: {outcome}" if isinstance(outcome, str) and outcome else state
    clicks = [c for c in card.get("clicks") or [] if isinstance(c, dict)]
    if clicks:  # pressed on the card (corpwechat-callback): the last one, and how many
        last = clicks[-1]
        said += f"; clicked {last.get('key')} at {last.get('at')}: {last.get('outcome')}" + \
            (f" ({len(clicks)} clicks)" if len(clicks) > 1 else "")
    return said


def seconds(text: str) -> int:
    found = _SINCE.match(text.strip())
    if found is None:
        raise UserError(f"--since {text!r}: give a number and s, m, h or d (e.g. 24h)")
    return int(found[1]) * _UNITS[found[2]]


def records_of(kube: Any, namespace: str, user: str) -> list[dict[str, Any]]:
    """The user's NotificationDeliveries (by the label the notifier gives them)."""
    from corpwechat_notifier.shared import records

    selector = f"{records.LABEL}user={records.label_value(user)}"
    return [i for i in _listed(kube, namespace, selector)
            if (i.get("spec") or {}).get("recipient", {}).get("name") == user]


def records_of_object(kube: Any, namespace: str, object_namespace: str, name: str
                      ) -> list[dict[str, Any]]:
    """The NotificationDeliveries about one object."""
    from corpwechat_notifier.shared import records

    selector = (f"{records.LABEL}namespace={records.label_value(object_namespace)},"
                f"{records.LABEL}object={records.label_value(name)}")
    return [i for i in _listed(kube, namespace, selector)
            if (i.get("spec") or {}).get("object", {}).get("name") == name]


class Forbidden(UserError):
    """The credentials may not list the delivery records."""


def _listed(kube: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    from corpwechat_notifier.shared import records
    from subscription_filter.shared.errors import FunctionError
    from subscription_filter.shared.kube import AccessDenied

    try:
        return kube.list_all(f"{records.GROUP}/{records.VERSION}", records.KIND,
                             namespace=namespace, label_selector=selector)
    except AccessDenied:
        raise Forbidden(f"cannot list {records.PLURAL}.{records.GROUP} in {namespace}: "
                        f"these credentials may not") from None
    except FunctionError as exc:
        raise UserError(f"cannot list {records.PLURAL}.{records.GROUP} in {namespace}: "
                        f"{exc.reason}") from None


def whoami(kube: Any) -> str:
    """The user the credentials are (a SelfSubjectReview, as ``kubectl auth whoami``)."""
    from kubernetes import client as k8s

    from subscription_filter.shared.errors import FunctionError
    from subscription_filter.shared.kube import translate

    try:
        with translate("create selfsubjectreviews.authentication.k8s.io"):
            review = k8s.AuthenticationV1Api(kube.api).create_self_subject_review(
                {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
                _request_timeout=kube.timeout)
    except FunctionError as exc:
        raise UserError(f"cannot tell who these credentials are ({exc.reason}); "
                        f"give --user") from None
    user = ((review.status.user_info if review.status else None) or None)
    name = getattr(user, "username", None)
    if not name:
        raise UserError("the API server did not say who these credentials are; give --user")
    return str(name)


def own_rows(kube: Any, user: str, since: int, now: float) -> list[dict[str, str]]:
    """What the user's own ClusterSubscriptions' status says they were sent (the
    notifiers keep their latest outcomes there): no object names, only namespaces."""
    from corpwechat_notifier.shared.recent import GROUP, KIND, PLURAL, VERSION
    from corpwechat_notifier.shared.times import parse_time
    from subscription_filter.shared.errors import FunctionError

    try:
        listed = kube.list_all(f"{GROUP}/{VERSION}", KIND)
    except FunctionError as exc:
        raise UserError(f"cannot read the delivery records, nor list {PLURAL}.{GROUP}: "
                        f"{exc.reason}") from None
    out = []
    for item in listed:
        meta, spec = item.get("metadata") or {}, item.get("spec") or {}
        owner = (meta.get("annotations") or {}).get("katanomi.dev/owned.username")
        if owner != user or (spec.get("subscriber") or {}).get("name") != user:
            continue
        for entry in (item.get("status") or {}).get("notifications") or []:
            at = parse_time(entry.get("at")) if isinstance(entry, dict) else None
            if at is None or now - at > since:
                continue
            out.append({
                "when": str(entry["at"]), "event": str(entry.get("event") or ""),
                "object": f"{entry.get('namespace') or ''}/…",
                "kind": "", "channel": str(entry.get("channel") or ""),
                "phase": str(entry.get("result") or ""),
                "reason": str(entry.get("reason") or ""), "follow_up": "",
                "notification": "", "record": "", "subscription": str(meta.get("name")),
            })
    return sorted(out, key=lambda r: r["when"])


def rows(items: list[dict[str, Any]], since: int, now: float) -> list[dict[str, str]]:
    from corpwechat_notifier.shared.times import parse_time

    out = []
    for item in items:
        meta, spec = item.get("metadata") or {}, item.get("spec") or {}
        status = item.get("status") or {}
        made = parse_time(meta.get("creationTimestamp"))
        if made is None or now - made > since:
            continue
        obj = spec.get("object") or {}
        out.append({
            "when": str(meta.get("creationTimestamp")),
            "event": str((spec.get("event") or {}).get("reason") or ""),
            "object": f"{obj.get('namespace') or ''}/{obj.get('name') or ''}".lstrip("/"),
            "kind": str(obj.get("kind") or ""),
            "channel": str(spec.get("channel") or ""),
            "phase": str(status.get("phase") or "Sending"),
            "reason": str(status.get("reason") or ""),
            "follow_up": follow_up(status.get("card")),
            "notification": str(spec.get("notification") or ""),
            "record": str(meta.get("name") or ""),
        })
    return sorted(out, key=lambda r: r["when"])


def run(args: Any) -> int:
    from .simulate import close, connect

    bridge.capture_logs(args.verbose)
    kube = connect(args.kubeconfig)
    source = "records"
    try:
        user = args.user or whoami(kube)
        try:
            found = rows(records_of(kube, args.namespace, user), seconds(args.since),
                         time.time())
        except Forbidden:
            # A subscriber's own credentials: only what their own subscriptions say.
            me = whoami(kube)
            if me != user:
                raise UserError(f"these credentials are {me!r}'s: they may read only their "
                                f"own history, not {user!r}'s") from None
            found = own_rows(kube, user, seconds(args.since), time.time())
            source = "subscriptions"
    finally:
        close(kube)
    if args.json:
        json.dump({"user": user, "since": args.since, "source": source,
                   "deliveries": found}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if source == "subscriptions":
        print(f"from your ClusterSubscriptions' status (the latest outcomes the notifiers "
              f"keep there; the records, with the objects' names, are in {args.namespace})")
    if not found:
        print(f"nothing was sent to {user} in the last {args.since}")
        return 0
    table = [COLUMNS] + [(r["when"], r["event"], r["object"], r["channel"], r["phase"],
                          r["reason"], r["follow_up"]) for r in found]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0
