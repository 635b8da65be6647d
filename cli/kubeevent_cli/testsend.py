"""``kubeevent test-send``: one real message to one subscriber, to check a setup end to
end: the subscription's first (or the named) event type rendered against a sample event
with the cluster's templates, sent by the channel's notifier's own code (``--channel``:
corpwechat, its WeCom client and credentials from the cluster's Secret or
``CORPWECHAT_*``; email, its SMTP client and the server Secret or ``EMAIL_*``), marked as
a test."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

from . import bridge
from .errors import UserError
from .samples import enriched_sample
from .simulate import close, connect, kubeconfig

TEST_MARK = "[TEST] "
# The fields that carry the mark: a WeCom message's title and text, an email's subject and
# plain text.
MARKED = frozenset({"title", "content", "subject", "text"})


def run(args: argparse.Namespace) -> int:
    bridge.capture_logs(args.verbose)
    kube = connect(args.kubeconfig)
    try:
        found = kube.get("core.katanomi.dev/v1alpha1", "ClusterSubscription", args.subscription)
    except bridge.filter_errors.FunctionError as exc:
        raise UserError(f"cannot read ClusterSubscription {args.subscription}: {exc}") from None
    finally:
        close(kube)
    if found is None:
        raise UserError(f"ClusterSubscription {args.subscription} does not exist")
    loaded = bridge.subscriptions.Compiler(
        bridge.engine(None), channels=bridge.known_channels(args.channels)).load(found)
    if loaded.subscription is None:
        raise UserError(f"ClusterSubscription {args.subscription} is not Ready "
                        f"({loaded.readiness.reason}): {loaded.readiness.message}")
    sub = loaded.subscription
    if args.channel not in sub.channels:
        raise UserError(f"the subscription does not name the channel {args.channel} (its "
                        f"channels: {', '.join(sub.channels)}); choose one with --channel")
    types = [rule.type for obj in sub.objects for rule in obj.events]
    wanted = next((t for t in types if args.event_type and args.event_type in t), None) \
        if args.event_type else (types[0] if types else None)
    if wanted is None:
        raise UserError(f"the subscription has no event type matching {args.event_type!r} "
                        f"(it has: {', '.join(types)})")
    sample = enriched_sample(wanted)
    sample["id"] = f"test-send-{uuid.uuid4()}"  # a new notification every time
    (request,) = bridge.filter_core.notifications(sample, [sub])
    built = notifier(args)
    try:
        outcome = built.handle(request, {})
    except Exception as exc:  # the notifier's typed errors carry their status and reason
        reason, status = getattr(exc, "reason", None), getattr(exc, "status", None)
        if not isinstance(reason, str) or not isinstance(status, int):
            raise
        where = os.environ.get("CORPWECHAT_API_URL") if args.channel == "corpwechat" else None
        raise UserError(f"not sent ({status}): {reason}" + (f" [CORPWECHAT_API_URL={where}]"
                                                           if where else "")) from None
    result = {"subscription": args.subscription, "subscriber": sub.subscriber.name,
              "channel": args.channel, "event_type": wanted, "notification": request["id"],
              "status": outcome.status, "reason": outcome.reason or None,
              **{k: v for k, v in outcome.fields.items()
                 if k in ("sent", "users", "refused", "invalid", "deferred", "template")}}
    if args.json:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        sent = result.get("sent") or 0
        print(f"{'sent' if sent else 'not sent'}: {wanted} to {sub.subscriber.name} "
              f"({json.dumps({k: v for k, v in result.items() if v is not None}, default=str)})")
    return 0 if result.get("sent") else 1


def notifier(args: argparse.Namespace) -> Any:
    """The channel's notifier, built as it starts (its environment), on the cluster of
    ``--kubeconfig``; its request signature is not checked (nothing crosses a network)."""
    if args.channel == "email":
        from email_notifier import app
        from email_notifier.shared.delivery import Message
    else:
        from corpwechat_notifier import app  # type: ignore[no-redef]
        from corpwechat_notifier.shared.delivery import Message  # type: ignore[assignment]

    os.environ["KUBECONFIG"] = kubeconfig(args.kubeconfig)
    os.environ["KUBEEVENT_SIGNING"] = "off"
    # A test message is not a delivery: no record (a failed one would be sent again by the
    # notifiers' sweep, long after the test), nothing followed.
    os.environ["DELIVERY_RECORDS"] = "off"
    os.environ.setdefault("SYSTEM_NAMESPACE", args.namespace)

    built = app.build()
    render = built._render

    def marked(request: Any, recipients: list[Any]) -> Any:
        rendered, template = render(request, recipients)
        return [(Message(message.msgtype, tuple(
                    (k, TEST_MARK + v if k in MARKED and v else v)
                    for k, v in message.fields)), group)
                for message, group in rendered], template

    built._render = marked  # type: ignore[method-assign]
    return built
