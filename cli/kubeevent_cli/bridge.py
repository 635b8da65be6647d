"""The functions' own code, made importable from their folders next to the CLI.

The CLI has no matching, CEL or rendering code of its own: everything it decides is
decided by ``subscription_filter``, the notifiers (``corpwechat_notifier``,
``email_notifier``) and ``enricher`` exactly as they run in the cluster. This module
finds their folders (``functions/<name>`` beside ``cli/``), puts them on ``sys.path``
and sends their JSON log lines nowhere, or to stderr with ``--verbose``.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import UserError

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
FOLDERS = ("kubeevent-enricher-sink", "subscription-filter", "corpwechat-notifier",
           "email-notifier")
MANIFESTS = ROOT / "manifests"


def ensure_path() -> None:
    for folder in FOLDERS:
        path = FUNCTIONS / folder
        if not path.is_dir():
            raise UserError(
                f"cannot find the function folder functions/{folder} next to the CLI "
                "(install the CLI from the repository with 'pip install -e cli')")
        if str(path) not in sys.path:
            sys.path.append(str(path))


ensure_path()

from corpwechat_notifier import core as notifier_core  # noqa: E402
from corpwechat_notifier import render, templates  # noqa: E402
from corpwechat_notifier.shared import logs as notifier_logs  # noqa: E402
from corpwechat_notifier.shared import notification, quiet  # noqa: E402
from corpwechat_notifier.shared import templates as shared_templates  # noqa: E402
from corpwechat_notifier.shared.followups import FollowConfig  # noqa: E402
from email_notifier import message as email_message  # noqa: E402
from email_notifier.shared import logs as email_logs  # noqa: E402
from email_notifier.shared import templates as email_templates  # noqa: E402
from enricher import core as enricher_core  # noqa: E402
from enricher.shared import events as shared_events  # noqa: E402
from enricher.shared import logs as enricher_logs  # noqa: E402
from enricher.shared import signing  # noqa: E402
from subscription_filter import binding, celengine, index, reach, subscriptions  # noqa: E402
from subscription_filter import core as filter_core  # noqa: E402
from subscription_filter.shared import errors as filter_errors  # noqa: E402
from subscription_filter.shared import logs as filter_logs  # noqa: E402

__all__ = [
    "FollowConfig",
    "binding",
    "celengine",
    "email_message",
    "enricher_core",
    "filter_core",
    "filter_errors",
    "index",
    "notification",
    "notifier_core",
    "quiet",
    "reach",
    "render",
    "shared_events",
    "shared_templates",
    "signing",
    "subscriptions",
    "templates",
]

def capture_logs(verbose: bool) -> None:
    """Send the functions' log lines to stderr (verbose) or to a buffer nobody reads."""
    stream: TextIO = sys.stderr if verbose else io.StringIO()
    for module in (notifier_logs, email_logs, enricher_logs, filter_logs):
        module.set_stream(stream)


@dataclass(frozen=True)
class Channel:
    """How a notifier makes its messages: its template section, renderer and built-in
    message, and the shared template selection as that notifier carries it (each
    notifier's copy of ``shared/`` has its own error types)."""

    name: str
    section: str  # spec.<section> of a NotificationTemplate
    parse: Callable[[Mapping[str, Any]], Any]
    renderer: Callable[[], Any]
    fallback: Callable[[Mapping[str, Any], str], Any]
    templates: Any  # the notifier's shared.templates


CHANNELS = {
    notifier_core.CHANNEL: Channel(notifier_core.CHANNEL, "corpwechat", render.parse_template,
                                   render.Renderer, render.fallback_message, shared_templates),
    "email": Channel("email", "email", email_message.parse_template, email_message.Renderer,
                     email_message.fallback_message, email_templates),
}


def engine(name: str | None) -> celengine.Engine:
    """The filter's CEL engine: ``--cel-engine``, else ``CEL_ENGINE``, else auto."""
    import os

    chosen = (name or os.environ.get("CEL_ENGINE") or "auto").lower()
    try:
        return celengine.select(chosen)
    except ValueError as exc:
        raise UserError(f"--cel-engine: {exc}") from None



FILTER_MANIFEST = MANIFESTS / "delivery" / "subscription-filter.yaml"


def known_channels(option: str | None = None) -> tuple[str, ...]:
    """The channels a notifier serves, as the filter knows them: ``--channels``, else
    ``NOTIFICATION_CHANNELS`` in the filter's manifest, else the filter's default."""
    import yaml

    from subscription_filter.config import notification_channels

    if option is None:
        try:
            docs = list(yaml.safe_load_all(FILTER_MANIFEST.read_text()))
        except (OSError, yaml.YAMLError):
            docs = []
        for doc in docs:
            for container in _containers(doc):
                for item in container.get("env") or []:
                    if isinstance(item, dict) and item.get("name") == "NOTIFICATION_CHANNELS":
                        option = str(item.get("value") or "")
    environ = {} if option is None else {"NOTIFICATION_CHANNELS": option}
    try:
        return notification_channels(environ)
    except Exception as exc:  # the filter's ConfigError: one line
        raise UserError(f"--channels: {exc}") from None


def _containers(doc: object) -> list[dict[str, object]]:
    spec = doc.get("spec") if isinstance(doc, dict) else None
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    containers = pod.get("containers") if isinstance(pod, dict) else None
    return [c for c in containers or [] if isinstance(c, dict)]
