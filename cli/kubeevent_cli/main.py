"""``kubeevent``: lint and dry-run ClusterSubscriptions and NotificationTemplates.

Exit codes: 0 fine; 1 lint found errors (or warnings with ``--strict``); 2 a usage
or input mistake (missing file, bad YAML in an input of ``simulate``, unknown kind),
always as one line on standard error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from .errors import USAGE, UserError
from .report import visible_output

PROG = "kubeevent"
INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr (exit 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see '{self.prog} --help')")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of text")
    parser.add_argument("--platform-url", metavar="URL", default=None,
                        help="PLATFORM_URL for templates: replaces $PLATFORM_URL in "
                             "NotificationTemplates (as the install command's envsubst does) "
                             "and is their platform_url (default: $PLATFORM_URL, else empty)")
    parser.add_argument("--cel-engine", choices=("auto", "cel-expr"), default=None,
                        help="CEL engine, as the filter's CEL_ENGINE (default: $CEL_ENGINE, "
                             "else auto)")
    parser.add_argument("--channels", metavar="LIST", default=None,
                        help="the channels a notifier serves, as the filter's "
                             "NOTIFICATION_CHANNELS (default: the filter's manifest)")
    parser.add_argument("--config", metavar="FILE",
                        help="katanomi-config: a ConfigMap, or the patch with "
                             "data.\"notification.templates\" (event type -> template)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the functions' own log lines (on stderr)")


def _cluster(parser: argparse.ArgumentParser) -> None:
    """The options of the commands that read the cluster."""
    parser.add_argument("--kubeconfig", metavar="FILE", default=None,
                        help="default: $KUBECONFIG (its first file), else ~/.kube/config")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the functions' own log lines (on stderr)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Lint and dry-run ClusterSubscriptions and NotificationTemplates with the "
                    "functions' own matching and rendering code, before they reach a cluster.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    lint = commands.add_parser(
        "lint", help="check subscriptions and templates in YAML files",
        description="Check ClusterSubscriptions, NotificationTemplates and katanomi-config in "
                    "YAML/JSON files (multi-document; '-' reads standard input; a directory "
                    "means its *.yaml, *.yml and *.json files). Exit 1 on any error.")
    lint.add_argument("files", nargs="+", metavar="FILE")
    lint.add_argument("--templates", metavar="DIR",
                      help="more NotificationTemplates to check the mapping against "
                           "(not linted themselves)")
    lint.add_argument("--event", metavar="FILE",
                      help="render templates against this Event (or enriched CloudEvent) "
                           "instead of the built-in sample")
    lint.add_argument("--object", metavar="FILE", help="the involved object for --event")
    lint.add_argument("--strict", action="store_true", help="warnings fail too (exit 1)")
    lint.add_argument("--schema", action="append", metavar="FILE",
                      help="a CustomResourceDefinition whose schema the filters' paths are "
                           "checked against (repeatable; default: the stand-in for "
                           "ArtifactPromotionRun; CRDs among the linted files count too)")
    lint.add_argument("--kubeconfig", metavar="FILE", default=None,
                      help="read the kinds' schemas from this cluster")
    lint.add_argument("--as", dest="author", metavar="USER", default="",
                      help="who applies the documents: the ownership admission policy's "
                           "rules are evaluated for them (default: each subscription's "
                           "owner)")
    lint.add_argument("--as-group", dest="author_groups", action="append", metavar="GROUP",
                      default=[], help="a group of --as (repeatable)")
    lint.add_argument("--server", action="store_true",
                      help="also send each subscription and template to the API server with "
                           "dryRun=All (its schema, admission policies, webhooks); the "
                           "cluster of --kubeconfig, else $KUBECONFIG, else ~/.kube/config")
    _common(lint)

    sim = commands.add_parser(
        "simulate", help="show who would be notified of an event, with which message",
        description="Run an event through the subscription filter and the notifier's "
                    "rendering without sending anything: which subscriptions match, who "
                    "receives which message on which channel, and why every other "
                    "subscription does not match. No network unless --kubeconfig is given.")
    sim.add_argument("--event", metavar="FILE", required=True,
                     help="a Kubernetes Event (core/v1 or events.k8s.io/v1), an "
                          "ApiServerSource CloudEvent, or an enriched CloudEvent (YAML/JSON)")
    sim.add_argument("--object", metavar="FILE",
                     help="the involved object (default: read it with --kubeconfig, else none)")
    sim.add_argument("--subscriptions", metavar="DIR", required=True,
                     help="ClusterSubscriptions: a directory or a file")
    sim.add_argument("--templates", metavar="DIR",
                     help="NotificationTemplates: a directory or a file (none: the built-in "
                          "message)")
    sim.add_argument("--rbac", metavar="allow|deny|live|FILE", default="allow",
                     help="may each subscriber get the object? allow (default), deny, live "
                          "(SubjectAccessReview via --kubeconfig) or a rules FILE "
                          "(see the README)")
    sim.add_argument("--kubeconfig", metavar="FILE",
                     help="read the involved object from this cluster (when --object is not "
                          "given) and allow --rbac live")
    _common(sim)

    history = commands.add_parser(
        "history", help="what a user was sent (the notifier's delivery records)",
        description="List the NotificationDeliveries of one user: when, which event about "
                    "which object, on which channel, and what became of it (Sent, Refused, "
                    "Failed, Deferred, or Sending). With a subscriber's own credentials "
                    "(who may not read the records): the latest outcomes their own "
                    "ClusterSubscriptions' status keeps, and nobody else's.")
    history.add_argument("--user", default=None,
                         help="the Kubernetes user name (default: whom the credentials are)")
    history.add_argument("--since", default="24h", help="how far back (e.g. 30m, 24h, 7d)")
    history.add_argument("--namespace", default="cpaas-system",
                         help="where the records are (the notifier's SYSTEM_NAMESPACE)")
    _cluster(history)

    explain = commands.add_parser(
        "explain", help="who was notified of an object's Events, and why not the others",
        description="For each Event of one object: every subscriber, notified (when, on "
                    "which channel) or not and why (subscription not Ready, no entry for "
                    "that event type, exact or CEL filter false, RBAC denied, refused by "
                    "WeCom, deferred). Reads the cluster; sends nothing.")
    explain.add_argument("object", metavar="NAMESPACE/NAME")
    explain.add_argument("--kind", default="ArtifactPromotionRun")
    explain.add_argument("--api-version", default="artifacts.katanomi.dev/v1alpha1")
    explain.add_argument("--namespace", default="cpaas-system",
                         help="where the delivery records are (the notifier's "
                              "SYSTEM_NAMESPACE)")
    explain.add_argument("--cel-engine", choices=("auto", "cel-expr"), default=None)
    explain.add_argument("--channels", metavar="LIST", default=None,
                         help="the filter's NOTIFICATION_CHANNELS (default: its manifest)")
    _cluster(explain)

    test_send = commands.add_parser(
        "test-send", help="send one test message to one subscription's subscriber",
        description="Render the subscription's template for one of its event types against "
                    "a sample event and send it to that subscriber only, with the "
                    "channel's notifier's own code, marked [TEST]. corpwechat: WeCom "
                    "credentials from the cluster's Secret, or CORPWECHAT_*; "
                    "CORPWECHAT_API_URL and the notifier's other variables apply. email: "
                    "the SMTP server from the Secret kubeevent-email-server, or EMAIL_*.")
    test_send.add_argument("--subscription", required=True, help="the ClusterSubscription")
    test_send.add_argument("--event-type", default=None,
                           help="part of one of its event types (default: its first), "
                                "e.g. approvaldenied")
    test_send.add_argument("--channel", default="corpwechat", choices=("corpwechat", "email"),
                           help="the channel to send on (one the subscription names; "
                                "default: corpwechat)")
    test_send.add_argument("--channels", metavar="LIST", default=None,
                           help="the filter's NOTIFICATION_CHANNELS (default: its manifest)")
    test_send.add_argument("--namespace", default="cpaas-system",
                           help="the notifier's SYSTEM_NAMESPACE")
    _cluster(test_send)

    from .subscribe import add_parser as add_subscribe

    add_subscribe(commands)

    invoke = commands.add_parser(
        "invoke", help="send a running function one CloudEvent signed with the local key",
        description="Sign a CloudEvent (structured JSON/YAML) or a Kubernetes Event (wrapped "
                    "as the ApiServerSource sends it) with KUBEEVENT_SIGNING_KEY, as the "
                    "function before it would, POST it in binary mode and print the "
                    "answer. For `func run`, functions-framework or a port-forward: "
                    "`func invoke` cannot sign, and the filter and the notifier refuse "
                    "unsigned events (403). Exit 1 on a 4xx or 5xx.")
    invoke.add_argument("url", help="the function, e.g. http://127.0.0.1:8080")
    invoke.add_argument("--event", required=True, help="the event file ('-': standard input)")
    invoke.add_argument("--broker", default=None, help="?broker= for the enricher")
    invoke.add_argument("--unsigned", action="store_true", help="send it without signing")
    invoke.add_argument("--timeout", type=float, default=30.0)
    invoke.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _tolerant_streams() -> None:
    """A terminal that cannot show a character gets a replacement, not a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (OSError, ValueError):
                pass


def main(argv: Sequence[str] | None = None) -> int:
    _tolerant_streams()
    with visible_output():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("KUBEEVENT_DEBUG") == "1"
    try:
        args = build_parser().parse_args(args_list)
        if args.command is None:
            raise UserError(f"a command is needed: lint, simulate, history, explain, "
                            f"test-send, subscribe or invoke "
                            f"(see '{PROG} --help')")
        if args.command == "lint":
            from .lint import run as run_lint

            return run_lint(args)
        if args.command == "subscribe":
            from .subscribe import run as run_subscribe

            return run_subscribe(args)
        if args.command == "invoke":
            from .invoke import run as run_invoke

            return run_invoke(args)
        if args.command == "test-send":
            from .testsend import run as run_test_send

            return run_test_send(args)
        if args.command == "explain":
            from .explain import run as run_explain

            return run_explain(args)
        if args.command == "history":
            from .history import run as run_history

            return run_history(args)
        from .simulate import run as run_simulate

        return run_simulate(args)
    except UserError as exc:
        _stderr(f"{PROG}: error: {exc.message}")
        return USAGE
    except KeyboardInterrupt:
        _stderr(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): nothing more to say.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except Exception as exc:
        if debug:
            raise
        _stderr(f"{PROG}: internal error: {type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:300]} (set KUBEEVENT_DEBUG=1 for details)")
        return INTERNAL


def _stderr(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
