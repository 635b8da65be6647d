"""``kubeevent explain``: for the Events of one object, who was notified of which, and
for everybody subscribed who was not, why.

It sends nothing. The decisions are the functions' own, as ``simulate`` makes them, but
from the cluster: the object and its Events, the ClusterSubscriptions (their Ready
condition included), SubjectAccessReviews, and the notifier's delivery records.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import bridge, pipeline, rbac
from .errors import UserError
from .history import follow_up, records_of_object
from .simulate import close, connect, decide
from .yamlio import Document, Position


def subscriptions(kube: Any) -> list[Document]:
    found = [doc for page in kube.pages("core.katanomi.dev/v1alpha1", "ClusterSubscription")
             for doc in page]
    return [Document("cluster", i, doc, Position("cluster", 1, 1))
            for i, doc in enumerate(found)]


def events_of(kube: Any, api_version: str, kind: str, namespace: str, name: str
              ) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in kube.pages("v1", "Event", namespace=namespace):
        for event in page:
            involved = event.get("involvedObject") or event.get("regarding") or {}
            if (involved.get("kind"), involved.get("name")) == (kind, name) and \
                    str(involved.get("apiVersion", "")).split("/")[0] == api_version.split(
                        "/")[0]:
                found.append(event)
    return found


def delivered(record: dict[str, Any] | None, channel: str) -> dict[str, Any]:
    """What one channel's delivery record says (``None``: there is none)."""
    status = (record or {}).get("status") or {}
    return {"channel": channel, "notified": status.get("phase") == "Sent",
            "when": status.get("finishedAt"),
            "follow_up": follow_up(status.get("card")) or None,
            "why": ("sent" if status.get("phase") == "Sent" else
                    f"{status.get('phase') or 'being sent'}: {status.get('reason') or ''}"
                    .rstrip(": ") if record else
                    "matched, but no delivery record (not sent yet, or the notifier runs "
                    "with DELIVERY_RECORDS=off)")}


def explain(kube: Any, args: argparse.Namespace) -> dict[str, Any]:
    namespace, _, name = args.object.rpartition("/")
    if not namespace or not name:
        raise UserError(f"{args.object!r}: give <namespace>/<name>")
    try:
        obj = kube.get(args.api_version, args.kind, name, namespace)
    except bridge.filter_errors.FunctionError as exc:
        raise UserError(f"cannot read {args.kind} {args.object}: {exc}") from None
    if obj is None:
        raise UserError(f"{args.kind} {args.object} does not exist")
    engine = bridge.engine(args.cel_engine)
    channels = bridge.known_channels(getattr(args, "channels", None))
    policy = rbac.policy("live", kube)
    docs = subscriptions(kube)
    records = records_of_object(kube, args.namespace, namespace, name)
    told: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    left_out: dict[tuple[Any, Any], dict[str, Any]] = {}  # the filter's Skipped records
    for record in records:
        spec = record.get("spec") or {}
        if not spec.get("event"):
            continue
        key = (spec["event"].get("id"), spec["recipient"]["name"])
        if str(spec.get("notification") or "").startswith("skipped:"):
            left_out.setdefault(key, record)
        else:
            told[(*key, spec.get("channel"))] = record
    unwatched = watched_by_source(kube, namespace)
    out = []
    for raw in sorted(events_of(kube, args.api_version, args.kind, namespace, name),
                      key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        try:
            kube_event = bridge.enricher_core.parse_kube_event(raw)
        except bridge.enricher_core.BadRequest as exc:
            out.append({"event": (raw.get("metadata") or {}).get("name"), "problem": str(exc)})
            continue
        event = bridge.enricher_core.enrich(kube_event, obj)
        enriched = pipeline.parse_enriched(event, "the cluster")
        warnings: list[str] = []
        verdicts, _ = decide(docs, enriched, engine, policy, warnings, channels)
        people = []
        for verdict in verdicts:
            subscriber = verdict.subscriber_json().get("name") or verdict.name
            entry: dict[str, Any] = {"subscription": verdict.name, "subscriber": subscriber}
            skipped = left_out.get((enriched.id, subscriber))
            by_channel = [delivered(told.get((enriched.id, subscriber, channel)), channel)
                          for channel in verdict.channels() if channel in channels]
            if skipped is not None and not any(d["notified"] for d in by_channel):
                # What the filter answered then: a later RBAC change or its cache would not
                # tell now.
                status = skipped.get("status") or {}
                entry.update(notified=False, channels=[], why=(
                    f"left out by the filter at {status.get('finishedAt') or '?'}: "
                    f"{status.get('reason') or 'Skipped'}: {status.get('message') or ''}"
                ).rstrip(": "))
            elif verdict.matched:
                # one delivery per channel the subscription names (and a notifier serves)
                entry.update(
                    notified=bool(by_channel) and all(d["notified"] for d in by_channel),
                    channels=by_channel,
                    why="; ".join(f"{d['channel']}: {d['why']}" for d in by_channel)
                    if any(d["why"] != "sent" for d in by_channel) else "sent")
            else:
                reason = verdict.reason
                entry.update(notified=False, why=f"{reason.check}: {reason.message}"
                             if reason else "no match")
            people.append(entry)
        if unwatched:
            warnings.append(unwatched)
        out.append({"event": raw["metadata"]["name"], "reason": kube_event.reason,
                    "message": raw.get("message"), "id": enriched.id,
                    "time": str(kube_event.time or ""), "subscribers": people,
                    "warnings": warnings})
    return {"object": {"apiVersion": args.api_version, "kind": args.kind,
                       "namespace": namespace, "name": name}, "events": out,
            "source": unwatched or None}


def watched_by_source(kube: Any, namespace: str) -> str:
    """Why the Events of ``namespace`` never reach the enricher (``""``: an
    ApiServerSource watching Events selects it, or there is none to ask: no Knative)."""
    try:
        sources = [s for page in kube.pages("sources.knative.dev/v1", "ApiServerSource")
                   for s in page]
        ns = kube.get("v1", "Namespace", namespace)
    except Exception:  # not served here (no Knative), or not readable: nothing to say
        return ""
    watching = [s for s in sources if any(
        r.get("kind") == "Event" and str(r.get("apiVersion", "")) in ("v1", "events.k8s.io/v1")
        for r in (s.get("spec") or {}).get("resources") or [])]
    if not watching or ns is None:
        return ""
    labels = (ns.get("metadata") or {}).get("labels") or {}
    said = []
    for source in watching:
        selector = (source.get("spec") or {}).get("namespaceSelector")
        meta = source.get("metadata") or {}
        if selector is None or selects(selector, labels):
            return ""
        said.append(f"ApiServerSource {meta.get('namespace')}/{meta.get('name')} selects "
                    f"{describe_selector(selector)}")
    return (f"namespace {namespace} is not watched: {'; '.join(said)}, and {namespace} "
            f"has labels {json.dumps(labels, sort_keys=True)}; its Events never reach the "
            f"enricher (label the namespace, e.g. kubectl label namespace {namespace} "
            f"<key>=<value>)")


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against a namespace's labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for rule in selector.get("matchExpressions") or []:
        key, operator = rule.get("key"), rule.get("operator")
        values = rule.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def describe_selector(selector: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for rule in selector.get("matchExpressions") or []:
        operator, values = rule.get("operator"), rule.get("values") or []
        parts.append({"Exists": f"{rule.get('key')} (exists)",
                      "DoesNotExist": f"no {rule.get('key')}"}.get(
            str(operator), f"{rule.get('key')} {str(operator).lower()} {values}"))
    return "namespaces with " + ", ".join(parts) if parts else "every namespace"


def run(args: argparse.Namespace) -> int:
    bridge.capture_logs(args.verbose)
    kube = connect(args.kubeconfig)
    try:
        payload = explain(kube, args)
    finally:
        close(kube)
    if args.json:
        json.dump(payload, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
        return 0
    ref = payload["object"]
    print(f"{ref['kind']} {ref['namespace']}/{ref['name']}")
    if payload.get("source"):
        print(f"  {payload['source']}")
    if not payload["events"]:
        print("  no Events")
    for event in payload["events"]:
        print(f"\n{event.get('time', '')}  {event.get('reason', '')}  ({event['event']})")
        if "problem" in event:
            print(f"  not an Event the enricher takes: {event['problem']}")
            continue
        for person in event["subscribers"]:
            mark = "notified" if person["notified"] else "not notified"
            print(f"  {person['subscriber']:<16} {mark:<13} {person['why']}"
                  f"  [{person['subscription']}]")
            for told in person.get("channels") or []:
                if told.get("follow_up"):
                    print(f"  {'':<16} {'':<13} {told['channel']}: {told['follow_up']}")
    return 0
