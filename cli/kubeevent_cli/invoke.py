"""``kubeevent invoke``: send a running function (``func run``, functions-framework, a
port-forward) one CloudEvent signed with the local key, as the function before it would.

The filter and the notifier refuse what is not signed with ``KUBEEVENT_SIGNING_KEY`` (and
``func invoke`` cannot sign): this signs the event it is given (a CloudEvent in structured
JSON, or a Kubernetes Event to be wrapped as the ApiServerSource sends it) and posts it in
binary mode, then prints the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from typing import Any

import requests

from . import bridge
from .errors import UserError
from .yamlio import load_file


def event_from(doc: dict[str, Any]) -> Any:
    """A structured CloudEvent as it is, or a Kubernetes Event wrapped as the
    ApiServerSource sends it (mode Resource)."""
    events = bridge.shared_events
    if doc.get("specversion"):
        attributes = {k: v for k, v in doc.items() if k not in ("data", "data_base64")}
        return events.new_event(
            type=str(attributes.pop("type", "")), source=str(attributes.pop("source", "")),
            id=str(attributes.pop("id", "") or uuid.uuid4()), data=doc.get("data"),
            time=attributes.pop("time", None), subject=attributes.pop("subject", None),
            extensions={k: v for k, v in attributes.items()
                        if k not in ("specversion", "datacontenttype")})
    if doc.get("kind") == "Event":
        meta = doc.get("metadata") or {}
        return events.new_event(
            type="dev.knative.apiserver.resource.add", source="kubeevent invoke",
            id=str(uuid.uuid4()), data=doc,
            subject=f"/api/v1/namespaces/{meta.get('namespace')}/events/{meta.get('name')}")
    raise UserError("the file holds neither a CloudEvent (specversion) nor a Kubernetes Event")


def run(args: argparse.Namespace) -> int:
    docs = [d.data for d in load_file(args.event) if isinstance(d.data, dict)]
    if len(docs) != 1:
        raise UserError(f"{args.event}: expected one document, found {len(docs)}")
    event = event_from(docs[0])
    if not args.unsigned:
        try:
            signer = bridge.signing.signer_from_env(os.environ)
        except Exception as exc:  # a ConfigError naming the variable
            raise UserError(str(exc)) from None
        if signer is None:
            raise UserError("KUBEEVENT_SIGNING=off: nothing to sign with (or --unsigned)")
        signer.sign(event)
    headers, body = bridge.shared_events.binary_http(event)
    params = {"broker": args.broker} if args.broker else None
    try:
        answer = requests.post(args.url, data=body, headers=headers, params=params,
                               timeout=args.timeout)
    except requests.RequestException as exc:
        raise UserError(f"{args.url} did not answer: {type(exc).__name__}") from None
    result: dict[str, Any] = {"status": answer.status_code, "id": event["id"],
                              "type": event["type"], "signed": not args.unsigned}
    reply_type = answer.headers.get("ce-type")
    if reply_type:
        result["reply"] = {"type": reply_type, "id": answer.headers.get("ce-id")}
        try:
            result["reply"]["data"] = json.loads(answer.content)
        except ValueError:
            result["reply"]["body"] = answer.text
    elif answer.text.strip():
        result["reason"] = answer.text.strip()
    if args.json:
        json.dump(result, sys.stdout, indent=2, ensure_ascii=False, default=str)
        sys.stdout.write("\n")
    else:
        print(f"{answer.status_code} {reply_type or result.get('reason') or ''}".rstrip())
    return 0 if answer.status_code < 400 else 1
