"""The filter's configuration, read once at start (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .celengine import ENGINES, cel_expr_available
from .shared.config import ConfigError, env, env_bool, env_float, env_int, env_url
from .shared.signing import Signer, signer_from_env

CEL_ENGINES = ("auto", *ENGINES)


@dataclass(frozen=True)
class Config:
    rbac_check: bool = True
    rbac_cache_seconds: float = 30.0
    cel_engine: str = "auto"
    watch_timeout_seconds: int = 60
    watch_retry_seconds: float = 1.0
    status_updates: bool = True
    # A subscriber's subscriptions beyond this many (the newest) are not used.
    subscriptions_per_subscriber: int = 50
    system_namespace: str = "cpaas-system"
    groups_configmap: str = "kubeevent-user-groups"
    # Where the second and later notification requests of a long recipient list go (the
    # broker's ingress); the first is the reply.
    k_sink: str | None = None
    http_timeout: float = 10.0
    # Verifies the enricher's signature and signs its notification requests.
    signer: Signer | None = field(default=None, repr=False)
    # The channels a notifier serves here (NOTIFICATION_CHANNELS): a subscription naming
    # another is not Ready (UnknownChannel).
    notification_channels: tuple[str, ...] = ("corpwechat", "email")
    # A matched subscriber left out (RBAC, an evaluation limit) is recorded as a Skipped
    # delivery record in system_namespace, for explain and history (SKIPPED_RECORDS).
    skipped_records: bool = True
    recent_notifications: int = 5  # SUBSCRIPTION_RECENT_NOTIFICATIONS, as the notifiers'

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        engine = env("CEL_ENGINE", "auto", environ).lower()
        if engine == "celpy":
            raise ConfigError("CEL_ENGINE=celpy: that engine is gone; cel-expr evaluates every "
                              "filter (use auto or cel-expr)")
        if engine not in CEL_ENGINES:
            raise ConfigError(f"CEL_ENGINE must be one of {', '.join(CEL_ENGINES)}, "
                              f"got {engine!r}")
        if not cel_expr_available():
            raise ConfigError(f"CEL_ENGINE={engine}: cel-expr-python is not installed (or its "
                              f"native part does not load on this platform)")
        groups = env("SUBSCRIBER_GROUPS_CONFIGMAP", "kubeevent-user-groups", environ)
        channels = notification_channels(environ)
        return cls(
            rbac_check=env_bool("SUBSCRIPTION_RBAC_CHECK", True, environ),
            rbac_cache_seconds=env_float("SUBSCRIPTION_RBAC_CACHE_SECONDS", 30.0, environ),
            cel_engine=engine,
            watch_timeout_seconds=env_int("SUBSCRIPTION_WATCH_TIMEOUT_SECONDS", 60, environ,
                                          minimum=1),
            watch_retry_seconds=env_float("SUBSCRIPTION_WATCH_RETRY_SECONDS", 1.0, environ,
                                          minimum=0.05),
            status_updates=env_bool("SUBSCRIPTION_STATUS_UPDATES", True, environ),
            subscriptions_per_subscriber=env_int("SUBSCRIPTIONS_PER_SUBSCRIBER", 50, environ,
                                                 minimum=1),
            system_namespace=env("SYSTEM_NAMESPACE", "cpaas-system", environ),
            # Unset means the default; "-" for no group directory at all.
            groups_configmap="" if groups == "-" else groups,
            k_sink=env_url("K_SINK", "", environ) or None,
            http_timeout=env_float("HTTP_TIMEOUT_SECONDS", 10.0, environ, minimum=0.1),
            signer=signer_from_env(environ),
            notification_channels=channels,
            skipped_records=env_bool("SKIPPED_RECORDS", True, environ),
            recent_notifications=min(50, env_int("SUBSCRIPTION_RECENT_NOTIFICATIONS", 5,
                                                 environ)),
        )


def notification_channels(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``NOTIFICATION_CHANNELS``: the channels a notifier serves, lowercased, in order."""
    channels = tuple(dict.fromkeys(
        c.strip().lower() for c in env("NOTIFICATION_CHANNELS", "corpwechat,email",
                                       environ).split(",") if c.strip()))
    if not channels:
        raise ConfigError("NOTIFICATION_CHANNELS names no channel (a comma-separated list "
                          "of the channels a notifier serves, e.g. corpwechat)")
    return channels
