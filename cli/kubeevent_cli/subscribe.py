"""``kubeevent subscribe``: a person's ClusterSubscription from a few flags.

The document is the source document's, written for one user: one ``subscriptions`` entry
per namespace, the events of each role (approver: the approval waiting for them;
requester: denied, approved — the first ``running`` —, failed) with the source document's
filters, ``$(subscriber.name)`` left for the filter to bind (never the user's name typed
into CEL), the owner annotation equal to the subscriber. Before it is printed it goes
through ``kubeevent lint``'s own checks; a finding is an error here, never a document
that would silently not match. ``--heredoc`` wraps it in ``kubectl apply -f - <<'EOF'``
(quoted: the shell leaves ``$(subscriber.name)`` alone).
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import yaml

from . import bridge, inputs
from .errors import UserError
from .lint import Linter
from .report import print_json
from .yamlio import loads

KIND = "ArtifactPromotionRun"
API_VERSION = "artifacts.katanomi.dev/v1alpha1"
GROUP = API_VERSION.split("/", 1)[0]
TYPE = "dev.katanomi.cloudevents.kubeevent.artifactpromotionrun.{}.v1alpha1"
APPROVER = 'ce.data.object.status.artifactPromotionSpec.approvalSpec.users.exists(item, ' \
           'item.name == "$(subscriber.name)")'
REQUESTER = 'ce.data.object.status.triggeredBy.user.name == "$(subscriber.name)"'
# role → (event reason, CEL filter, what it tells), in the source document's order
ROLES: dict[str, list[tuple[str, str, str]]] = {
    "approver": [("approvalpending", APPROVER, "an approval waits for you")],
    "requester": [
        ("approvaldenied", REQUESTER, "your promotion was denied"),
        ("running", f"!has(ce.data.event.message) && {REQUESTER}",
         "your promotion was approved (its first running Event)"),
        ("failed", REQUESTER, "your promotion failed"),
    ],
}
# Kubernetes user names are free text; the ones this writes stay on one line and out of
# YAML's and the shell's way.
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,252}$")
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MAIL = re.compile(r"^[^@\s\"'`$\\]+@[^@\s\"'`$\\]+$")


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or [] for part in value.split(",")
            if part.strip()]


def object_name(user: str) -> str:
    """The ClusterSubscription's name: ``<user>-artifactpromotionrun-subscription`` made a
    DNS subdomain (a user name may hold ``@`` or ``_``)."""
    base = re.sub(r"[^a-z0-9.-]+", "-", user.lower()).strip("-.") or "user"
    return f"{base[:200]}-artifactpromotionrun-subscription"


def build(user: str, namespaces: list[str], roles: list[str], channels: list[str], *,
          mail: str = "", user_id: str = "", name: str = "", quiet_hours: str = "",
          reminders: str = "") -> dict[str, Any]:
    if not _USER.match(user):
        raise UserError(f"--user {user!r}: letters, digits and @._+- only, starting with a "
                        "letter or digit")
    if not namespaces:
        raise UserError("--namespace is needed: the namespaces whose runs concern the user")
    for namespace in namespaces:
        if not _NAMESPACE.match(namespace):
            raise UserError(f"--namespace {namespace!r} is not a namespace name")
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise UserError(f"--role {','.join(unknown) or '(none)'}: one or both of "
                        f"{', '.join(ROLES)}")
    if mail and not _MAIL.match(mail):
        raise UserError(f"--mail {mail!r} is not a mail address")
    annotations = {"core.katanomi.dev/sink.pluginclasses": ",".join(channels),
                   "katanomi.dev/owned.username": user}
    if quiet_hours:
        annotations["kubeevent.io/quiet-hours"] = quiet_hours
    if reminders:
        annotations["kubeevent.io/approval-reminders"] = reminders
    info = {k: v for k, v in (("id", user_id), ("mail", mail)) if v}
    events = [{"type": TYPE.format(reason),
               "filter": {"exact": {"involvedobjectkind": KIND, "involvedobjectgroup": GROUP},
                          "cel": cel}}
              for role in dict.fromkeys(roles) for reason, cel, _ in ROLES[role]]
    return {
        "kind": "ClusterSubscription",
        "apiVersion": inputs.KATANOMI_API_VERSION,
        "metadata": {"name": name or object_name(user), "annotations": annotations},
        "spec": {
            "subscriber": {"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                           "name": user, **({"info": info} if info else {})},
            "subscriptions": [{"object": {"kind": KIND, "apiVersion": API_VERSION,
                                          "namespace": namespace}, "events": events}
                              for namespace in dict.fromkeys(namespaces)],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Every entry written out (no ``&id001`` anchors), CEL as a ``|`` block as the source
    document writes it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class _Block(str):
    pass


_Dumper.add_representer(_Block, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|"))


def render(document: dict[str, Any]) -> str:
    def blocks(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: blocks(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [blocks(v) for v in value]
        return _Block(value + "\n") if key == "cel" else value

    return yaml.dump(blocks(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=4096)


def check(text: str, channels: tuple[str, ...] | None, engine: Any) -> list[str]:
    """``kubeevent lint``'s findings about the written document (none expected)."""
    linter = Linter(engine, "", channels)
    for doc in loads(text, "<subscribe>"):
        linter.document(doc)
    return [f"{f.severity}: [{f.check}] {f.message}" for f in linter.findings]


def run(args: argparse.Namespace) -> int:
    bridge.capture_logs(False)
    channels = _split(args.channel) or ["corpwechat"]
    known = bridge.known_channels(args.channels)
    if known is not None:
        strange = [c for c in channels if c not in known]
        if strange:
            raise UserError(f"--channel {','.join(strange)}: not a channel a notifier "
                            f"serves ({', '.join(known)})")
    document = build(args.user, _split(args.namespace), _split(args.role) or ["approver",
                                                                             "requester"],
                     channels, mail=args.mail or "", user_id=args.id or "",
                     name=args.name or "", quiet_hours=args.quiet_hours or "",
                     reminders=args.approval_reminders or "")
    text = render(document)
    problems = check(text, known, bridge.engine(None))
    if problems:
        raise UserError(f"not written: {problems[0]}")
    if args.json:
        print_json(document)
    elif args.heredoc:
        print("kubectl apply -f - <<'EOF'\n" + text + "EOF")
    else:
        print(text, end="")
    return 0


def add_parser(commands: Any) -> None:
    sub = commands.add_parser(
        "subscribe", help="write a person's ClusterSubscription from a few flags",
        description="Print a ClusterSubscription for one user: the events of their roles "
                    "(approver: approvals waiting for them; requester: their promotions "
                    "denied, approved, failed) in the given namespaces, on the given "
                    "channels, checked by lint. Pipe it to `kubectl apply -f -`, or use "
                    "--heredoc for a command to paste.")
    sub.add_argument("--user", required=True, help="the Kubernetes user name")
    sub.add_argument("--namespace", action="append", required=True, metavar="NS[,NS]",
                     help="namespaces whose runs concern the user (repeat or comma-separate)")
    sub.add_argument("--role", action="append", metavar="approver|requester",
                     help="approver, requester or both (default: both)")
    sub.add_argument("--channel", action="append", metavar="NAME[,NAME]",
                     help="corpwechat (default), email, or both")
    sub.add_argument("--mail", help="the user's mail address (spec.subscriber.info.mail)")
    sub.add_argument("--id", help="the platform's user id (spec.subscriber.info.id; on ACP "
                                  "`kubectl get users`)")
    sub.add_argument("--name", help="the ClusterSubscription's name (default: "
                                    "<user>-artifactpromotionrun-subscription)")
    sub.add_argument("--quiet-hours", metavar="'22:00-08:00 ZONE'|off",
                     help="annotation kubeevent.io/quiet-hours")
    sub.add_argument("--approval-reminders", metavar="'30m,2h'|off",
                     help="annotation kubeevent.io/approval-reminders")
    sub.add_argument("--channels", metavar="LIST", default=None,
                     help="the filter's NOTIFICATION_CHANNELS (default: its manifest)")
    sub.add_argument("--heredoc", action="store_true",
                     help="print a `kubectl apply` command with the document in a quoted "
                          "heredoc")
    sub.add_argument("--json", action="store_true", help="print it as JSON")
