"""email-notifier: the shared delivery pipeline (``shared/pipeline.py``) with email as its
channel: a notification request in, one email per recipient over SMTP, 202 back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .addresses import DIRECTORY, GROUPS_DIRECTORY, Addresses
from .config import Config
from .message import Renderer, fallback_message, parse_template
from .shared import logs
from .shared.delivery import Message
from .shared.kube import Kube
from .shared.notification import Recipient
from .shared.pipeline import (
    ADMITTED,
    Admission,
    Channel,
    Pipeline,
    Report,
    SystemReads,
    Targets,
)
from .smtp import SettingsStore, SmtpClient

CHANNEL = "email"


class EmailChannel(Channel):
    """``spec.email``, addresses from ``email-users``/``email-groups``, SMTP."""

    name = CHANNEL
    rate_limit = ""  # SMTP has no per-member limit: nothing is deferred
    parse_template = staticmethod(parse_template)
    fallback = staticmethod(fallback_message)

    def __init__(self, config: Config, reads: SystemReads, client: SmtpClient) -> None:
        self.client = client
        self.renderer = Renderer()
        self.settings = SettingsStore(config.server_env,
                                      lambda: reads.secret(config.server_secret),
                                      config.server_secret, config.settings_cache_seconds)
        ttl = config.delivery.template_cache_seconds
        self.addresses = Addresses(lambda: reads.config_map(DIRECTORY),
                                   lambda: reads.config_map(GROUPS_DIRECTORY),
                                   from_subscription=config.address_from_subscription, ttl=ttl)

    def targets(self, recipients: Sequence[Recipient]) -> list[Targets]:
        return [self.addresses.targets(recipient) for recipient in recipients]

    def admit(self, target: str, message: Message) -> Admission:
        return ADMITTED

    def digest(self, messages: Sequence[Message]) -> list[tuple[Message, list[int]]]:
        """Each email alone: a mailbox keeps what waited, and each keeps its subject."""
        return [(message, [i]) for i, message in enumerate(messages)]

    def prepare(self) -> None:
        self.settings.get()  # before anything is made: a missing server fails first

    def send(self, message: Message, targets: list[str], on_sent: Callable[..., None], *,
             key: str = "") -> Report:
        return self.client.send(self.settings.get(), message, targets, on_sent)

    def swept(self) -> None:
        pass

    # An email cannot be changed once sent, and a second one for every decision is noise:
    # approval requests by email are not followed.
    follower = None


def build(environ: Mapping[str, str] | None = None) -> Pipeline:
    """Read configuration and connect; called once when the process starts."""
    logs.configure()
    config = Config.from_env(environ)
    logs.register_secret(config.server_env.get("password"))
    reads = SystemReads(Kube(), config.delivery.system_namespace)
    client = SmtpClient(connect_timeout=config.connect_timeout, deadline=config.deadline)
    return Pipeline("email-notifier", EmailChannel(config, reads, client), config.delivery,
                    reads)
