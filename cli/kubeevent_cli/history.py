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
    return f"{state}: {outcome}" if isinstance(outcome, str) and outcome else state


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


def _listed(kube: Any, namespace: str, selector: str) -> list[dict[str, Any]]:
    from kubernetes.client.rest import ApiException

    from corpwechat_notifier.shared import records

    found: list[dict[str, Any]] = []
    token = None
    custom = kube.custom()
    while True:
        kwargs: dict[str, Any] = {"label_selector": selector, "limit": 500}
        if token:
            kwargs["_continue"] = token
        try:
            page = custom.list_namespaced_custom_object(
                records.GROUP, records.VERSION, namespace, records.PLURAL, **kwargs)
        except ApiException as exc:
            raise UserError(f"cannot list {records.PLURAL}.{records.GROUP} in {namespace}: "
                            f"the API server answered {exc.status} {exc.reason}") from None
        found.extend(page.get("items") or [])
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return found


def rows(items: list[dict[str, Any]], since: int, now: float) -> list[dict[str, str]]:
    from corpwechat_notifier.shared.records import parse_time

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
    try:
        found = rows(records_of(kube, args.namespace, args.user), seconds(args.since),
                     time.time())
    finally:
        close(kube)
    if args.json:
        json.dump({"user": args.user, "since": args.since, "deliveries": found}, sys.stdout,
                  indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if not found:
        print(f"nothing was sent to {args.user} in the last {args.since}")
        return 0
    table = [COLUMNS] + [(r["when"], r["event"], r["object"], r["channel"], r["phase"],
                          r["reason"], r["follow_up"]) for r in found]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0
