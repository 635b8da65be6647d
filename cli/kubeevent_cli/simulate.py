"""``kubeevent simulate``: who would be notified of an event, with which message, and why
every other subscription stays silent.

The decisions are the functions' own: the enricher's ``enrich`` builds the event, the
filter's ``Compiler``, ``Index`` and ``match`` decide who matches and ``why.explain``
says why (by the same evaluation ``match`` runs), the filter's ``notification`` builds
the request, the notifier's ``parse_request``, ``for_channel``, ``select_template`` and
``message_for`` make the messages.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import bridge, crds, inputs, pipeline, rbac, why
from .errors import UserError
from .report import plural, print_json
from .yamlio import Document

subs_mod = bridge.subscriptions
filter_core = bridge.filter_core
CHANNEL = bridge.notifier_core.CHANNEL
BUILTIN = bridge.templates.BUILTIN
READINESS_CHECKS = {
    "InvalidSpec": "invalid", "OwnerMismatch": "owner", "NoChannels": "channels",
    "InvalidCEL": "cel-compile",
}


@dataclass(frozen=True)
class Reason:
    """Why a subscription is not notified: the failed check and where it is written."""

    check: str
    message: str
    where: str

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "where": self.where}


@dataclass
class Verdict:
    """One ClusterSubscription: matched or not, why, and what it would receive."""

    name: str
    doc: Document
    subscription: Any = None
    matched: bool = False
    reason: Reason | None = None
    matched_by: str = ""
    rbac: tuple[bool, str] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "MATCH" if self.matched else "NO MATCH"

    def subscriber_json(self) -> dict[str, Any]:
        if self.subscription is not None:
            return dict(self.subscription.subscriber.as_json())
        raw = self.doc.get("spec", "subscriber")
        return dict(raw) if isinstance(raw, dict) else {}

    def channels(self) -> list[str]:
        if self.subscription is not None:
            return list(self.subscription.channels)
        annotations = self.doc.get("metadata", "annotations")
        return list(subs_mod.channels_of(annotations if isinstance(annotations, dict) else {}))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "file": self.doc.source, "line": self.doc.position.line,
            "status": self.status, "match": self.matched,
            "subscriber": self.subscriber_json(), "channels": self.channels(),
        }
        if self.matched:
            out["matched_by"] = self.matched_by
        else:
            out["reason"] = self.reason.as_json() if self.reason else None
        if self.rbac is not None:
            out["rbac"] = {"allowed": self.rbac[0], "reason": self.rbac[1]}
        if self.matched:
            out["messages"] = self.messages
        return out


# ------------------------------------------------------------------- explaining


def reason(explanation: Any, sub: Any, enriched: Any) -> Reason | None:
    """The filter's failed check, in the CLI's words; ``None`` when nothing failed."""
    failed = explanation.failed
    if failed is None:
        return None
    if failed.name == "ready":
        return Reason(READINESS_CHECKS.get(failed.detail, "invalid"), failed.message, "")
    if failed.name == "type":
        rules = {rule.where: rule for obj in sub.objects for rule in obj.events}
        wanted = sorted({rules[t.where].type.removeprefix(pipeline.ENRICHED_PREFIX)
                         .removesuffix(pipeline.ENRICHED_SUFFIX)
                         for t in explanation.trials if t.last.name == "type"})
        return Reason("type", f"event type {enriched.type} is not subscribed "
                      f"(subscribed: {', '.join(wanted)})", "spec.subscriptions")
    return Reason(failed.name, failed.message, failed.where)


# --------------------------------------------------------------------- the run


def kubeconfig(option: str | None) -> str:
    """The kubeconfig a cluster command uses: ``--kubeconfig``, else the first file of
    ``$KUBECONFIG``, else ``~/.kube/config`` -- as kubectl finds it."""
    return _kubeconfig(option)[0]


def _kubeconfig(option: str | None) -> tuple[str, str]:
    """(the file, where it was named)."""
    if option:
        return option, "--kubeconfig"
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return listed[0], "KUBECONFIG"
    default = Path.home() / ".kube" / "config"
    if default.is_file():
        return str(default), "~/.kube/config"
    raise UserError("no kubeconfig: give --kubeconfig FILE, set KUBECONFIG, or create "
                    "~/.kube/config")


def connect(option: str | None) -> Any:
    """A client for the cluster of ``--kubeconfig`` (else ``$KUBECONFIG``, else
    ``~/.kube/config``), the functions' own ``Kube``."""
    path, named = _kubeconfig(option)
    if not Path(path).is_file():
        raise UserError(f"{named} {path}: no such file")
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    from subscription_filter.shared.kube import Kube

    configuration = k8s.Configuration()
    try:
        k8s_config.load_kube_config(config_file=path, client_configuration=configuration)
    except Exception as exc:  # the loader raises many kinds for one bad file
        raise UserError(f"{named} {path}: unusable ({' '.join(str(exc).split())[:200]})") \
            from None
    return Kube(configuration)


def close(kube: Any) -> None:
    kube.close()


def involved_object(event: pipeline.EventInput, option: str | None,
                    kube: Any | None) -> tuple[dict[str, Any] | None, str]:
    """(the object, where it came from)."""
    if option:
        return object_from_file(option, event), f"from {option}"
    if event.shape == "enriched":
        return None, "from the enriched event"
    if kube is None:
        return None, "none: give --object FILE (or --kubeconfig); data.object is null"
    ref = pipeline.parse_kube_event(event).involved
    try:
        obj = kube.get(ref.api_version, ref.kind, ref.name, ref.namespace or None)
    except bridge.filter_errors.FunctionError as exc:
        raise UserError(f"--kubeconfig: cannot read the involved object: {exc}") from None
    if obj is None:
        return None, "not found in the cluster; data.object is null (as the enricher sends it)"
    return obj, "read from the cluster"


def object_from_file(path: str, event: pipeline.EventInput) -> dict[str, Any]:
    """The object of ``--object``: its one document, or of several (a run with its
    Namespace, as the examples are written) the Event's involved object, else the one
    that is not a Namespace."""
    docs = [d for d in pipeline.load_file(path) if isinstance(d.data, dict)]
    if len(docs) == 1:
        return dict(docs[0].data)
    if not docs:
        raise UserError(f"{path}: --object holds no object")
    if event.shape == "kube":
        ref = pipeline.parse_kube_event(event).involved
        named = [d for d in docs if (d.kind, d.name) == (ref.kind, ref.name)]
        if len(named) == 1:
            return dict(named[0].data)
    objects = [d for d in docs if d.kind not in ("Namespace", "List")]
    if len(objects) == 1:
        return dict(objects[0].data)
    shown = ", ".join(d.label for d in docs)
    raise UserError(f"{path}: --object holds {len(docs)} documents ({shown}) and none is "
                    "the Event's involved object: give a file with that one")


def object_mismatch(event: pipeline.EventInput, obj: dict[str, Any]) -> str:
    if event.shape != "kube":
        return ""
    ref = pipeline.parse_kube_event(event).involved
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    have = (obj.get("apiVersion"), obj.get("kind"), meta.get("name"),
            meta.get("namespace") or "")
    want = (ref.api_version, ref.kind, ref.name, ref.namespace)
    if have == want:
        return ""
    return (f"--object is {have[1]} {have[3]}/{have[2]} ({have[0]}) but the Event is about "
            f"{want[1]} {want[3]}/{want[2]} ({want[0]})")


def run(args: argparse.Namespace) -> int:
    bridge.capture_logs(args.verbose)
    engine = bridge.engine(args.cel_engine)
    url = inputs.platform_url(args.platform_url)
    kube = connect(args.kubeconfig) if args.kubeconfig else None
    try:
        return _run(args, engine, url, kube)
    finally:
        if kube is not None:
            close(kube)


def _run(args: argparse.Namespace, engine: Any, url: str, kube: Any | None) -> int:
    policy = rbac.policy(args.rbac, kube)
    event_input = pipeline.read_event(args.event)
    obj, object_from = involved_object(event_input, args.object, kube)
    warnings: list[str] = []
    if obj is not None and (mismatch := object_mismatch(event_input, obj)):
        warnings.append(mismatch)
    event = pipeline.enriched_event(event_input, obj, replace_object=bool(args.object))
    enriched = pipeline.parse_enriched(event, args.event)

    sub_docs = inputs.gather([args.subscriptions], lambda d: inputs.role(d) == "subscription")
    if not sub_docs:
        raise UserError(f"{args.subscriptions}: no ClusterSubscription found")
    template_docs = inputs.gather([args.templates], lambda d: inputs.role(d) in (
        "template", "config")) if args.templates else []
    templates = inputs.TemplateSet()
    for doc in template_docs:
        if inputs.role(doc) == "template":
            templates.add(inputs.prepare_template(doc, url))
    config = choose_config(args.config, [d for d in template_docs
                                         if inputs.role(d) == "config"])
    if config is not None:
        warnings.extend(message for message, _ in config.warnings)

    for doc in sub_docs:  # what the API server would refuse is not simulated as written
        for error in crds.validate(doc.api_version, inputs.SUBSCRIPTION, doc.data):
            if error.unknown:
                warnings.append(f"{doc.label}: {error.message}: the API server refuses this "
                                "subscription (kubeevent lint shows where)")
    verdicts, recipients = decide(sub_docs, enriched, engine, policy, warnings,
                                  bridge.known_channels(args.channels))
    reply, request = pipeline.notification_request(event, recipients)
    selected = render(request, templates, config, url, verdicts).selected
    problem = selected.problem
    if problem and not args.templates:
        problem += " (no --templates given)"
    payload = {
        "event": {
            "type": enriched.type, "id": enriched.id,
            "source": enriched.attributes.get("source"),
            "object": enriched.object_ref, "object_from": object_from,
        },
        "mapping": config.source if config is not None else None,
        "template": {"name": selected.name or None,
                     "used": selected.compiled is not None, "problem": problem or None},
        "subscriptions": [v.as_json() for v in verdicts],
        "recipients": [bridge.filter_core.recipient(s) for s in recipients],
        "notification": {"type": reply["type"], "id": reply["id"]} if recipients else None,
        "warnings": warnings,
    }
    if args.json:
        print_json(payload)
    else:
        print_text(payload, sys.stdout)
    return 0


def choose_config(option: str | None, found: Sequence[Document]) -> inputs.Config | None:
    if option:
        return inputs.load_config(option)
    if found:
        return inputs.config_from(found[-1])
    return inputs.default_config()


def decide(sub_docs: Sequence[Document], enriched: Any, engine: Any, policy: rbac.Policy,
           warnings: list[str], channels: tuple[str, ...] | None = None
           ) -> tuple[list[Verdict], list[Any]]:
    """Every subscription's verdict, and the recipients (matched and allowed);
    ``channels``: the ones a notifier serves (``bridge.known_channels``)."""
    compiler = subs_mod.Compiler(engine, channels=channels)
    by_name: dict[str, tuple[Document, Any]] = {}
    for doc in sub_docs:
        loaded = compiler.load(doc.data)
        if loaded.name in by_name:
            warnings.append(f"two ClusterSubscriptions are named {loaded.name!r} "
                            f"({by_name[loaded.name][0].position}, {doc.position}): the "
                            "later one is used, as in a cluster")
        by_name[loaded.name] = (doc, loaded)
    snapshot = bridge.index.build_snapshot(loaded for _, loaded in by_name.values())
    scope = filter_core.Scope(enriched, engine)
    result = filter_core.match(snapshot.index, enriched, engine, scope)
    matched = {s.name for s in result.matched}
    verdicts: list[Verdict] = []
    for name, (doc, loaded) in sorted(by_name.items()):
        verdict = Verdict(name or "(no name)", doc, loaded.subscription)
        verdicts.append(verdict)
        explanation = why.explain(loaded, scope)
        verdict.matched = name in matched
        deciding = explanation.deciding
        if verdict.matched and deciding is not None:
            verdict.matched_by = deciding.where
        elif not verdict.matched:
            verdict.reason = reason(explanation, loaded.subscription, enriched)
    recipients: list[Any] = []
    matched_verdicts = [v for v in verdicts if v.matched]
    if matched_verdicts:
        target = policy.target(enriched)
        for verdict in matched_verdicts:
            allowed, why_not = policy.decide(verdict.subscription.subscriber, target)
            verdict.rbac = (allowed, why_not)
            if allowed:
                recipients.append(verdict.subscription)
            else:
                verdict.matched = False
                verdict.reason = Reason("rbac", f"RBAC denied: "
                                        f"{verdict.subscription.subscriber.name} may not "
                                        f"{target.describe()} ({why_not})", "")
    return verdicts, recipients


def render(request: Any, templates: inputs.TemplateSet, config: inputs.Config | None,
           url: str, verdicts: Sequence[Verdict]) -> pipeline.Rendering:
    """Each recipient's messages, one per channel, as each notifier would send them; the
    CorpWeChat rendering (its template choice is the one reported)."""
    renderings = {channel: pipeline.Rendering(templates.store(config, channel),
                                              request.event_type, url, channel)
                  for channel in bridge.CHANNELS}
    by_subscription = {v.name: v for v in verdicts}
    chosen = {channel: {r.subscription for r in bridge.notification.for_channel(
        request.recipients, channel)} for channel in bridge.CHANNELS}
    first_for: dict[tuple[str, str], str] = {}
    for recipient in request.recipients:
        verdict = by_subscription.get(recipient.subscription)
        if verdict is None:
            continue
        for channel in recipient.channels:
            if channel not in bridge.CHANNELS:
                verdict.messages.append({"channel": channel, "rendered": False,
                                         "note": f"no {channel} notifier in this project"})
                continue
            if recipient.subscription not in chosen[channel]:
                verdict.messages.append({
                    "channel": channel, "rendered": False,
                    "note": f"{recipient.name} already gets this notification through "
                            f"{first_for.get((channel, recipient.name), 'another subscription')}"
                            " (one message per person and channel)"})
                continue
            first_for.setdefault((channel, recipient.name), recipient.subscription)
            rendered = renderings[channel].render(request.event, recipient.subscriber)
            verdict.messages.append({"channel": channel, "rendered": True,
                                     "to": recipient.name, **rendered.as_json()})
    return renderings[CHANNEL]


# ---------------------------------------------------------------------- output

FIELD_ORDER = ("title", "description", "content", "url", "btntxt", "subject", "text", "html")


def print_text(payload: dict[str, Any], out: TextIO) -> None:
    event = payload["event"]
    ref = event["object"]
    target = "/".join(p for p in (ref.get("namespace"), ref.get("name")) if p)
    w = out.write
    w(f"event     {event['type']}\n")
    w(f"          id {event['id']}, {ref.get('kind')} {target} (object {event['object_from']})\n")
    template = payload["template"]
    if payload["mapping"] is None:
        w("mapping   none (no katanomi-config): the built-in message\n")
    else:
        shown = template["name"] if template["used"] else \
            f"{BUILTIN} (the built-in message: {template['problem']})"
        w(f"mapping   {payload['mapping']} -> {shown}\n")
    for warning in payload["warnings"]:
        w(f"warning   {warning}\n")
    for item in payload["subscriptions"]:
        w("\n")
        w(f"{item['status']:<9} {item['name']}  ({item['file']}:{item['line']})\n")
        sub = item["subscriber"]
        details = [str(sub.get("kind") or "User")]
        info = sub.get("info") if isinstance(sub.get("info"), dict) else {}
        if info.get("mail"):
            details.append(str(info["mail"]))
        w(f"  subscriber  {sub.get('name') or '-'} ({', '.join(details)})\n")
        w(f"  channels    {', '.join(item['channels']) or '-'}\n")
        if item["match"]:
            w(f"  matched by  {item['matched_by']}\n")
        elif item.get("reason"):
            reason = item["reason"]
            where = f"{reason['where']}: " if reason["where"] else ""
            w(f"  why         [{reason['check']}] {where}{reason['message']}\n")
        if item.get("rbac") and item["rbac"]["allowed"]:
            w(f"  rbac        {item['rbac']['reason']}\n")
        for message in item.get("messages", []):
            _print_message(message, w)
    recipients = payload["recipients"]
    names = sorted({r["subscriber"]["name"] for r in recipients})
    w("\n")
    w(f"{len(recipients)} of {plural(len(payload['subscriptions']), 'subscription')} matched; "
      f"{'notified: ' + ', '.join(names) if names else 'nobody is notified'}\n")


def _print_message(message: dict[str, Any], w: Any) -> None:
    channel = message["channel"]
    if not message.get("rendered"):
        w(f"  {channel:<11} not sent here: {message.get('note')}\n")
        return
    template = message["template"]
    if message.get("fallback_reason"):
        template += f" ({message['fallback_reason']})"
    w(f"  {channel:<11} to {message.get('to')}, template {template}\n")
    w(f"    msgtype      {message['msgtype']}\n")
    for name in FIELD_ORDER:
        if name not in message:
            continue
        lines = str(message[name]).splitlines() or [""]
        w(f"    {name:<12} {lines[0]}\n")
        for line in lines[1:]:
            w(f"    {'':<12} {line}\n")
