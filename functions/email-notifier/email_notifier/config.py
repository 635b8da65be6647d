"""The email notifier's configuration, read once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .shared.config import env, env_bool, env_float
from .shared.pipeline import DeliveryConfig

SWEEP_LEASE = "kubeevent-enricher/kubeevent-email-sweep"
SERVER_SECRET = "kubeevent-email-server"
# EMAIL_* variable → the key of the server Secret it overrides.
ENV_KEYS = {"EMAIL_SMTP_HOST": "host", "EMAIL_SMTP_PORT": "port",
            "EMAIL_SMTP_USERNAME": "username", "EMAIL_SMTP_PASSWORD": "password",
            "EMAIL_SMTP_TLS": "tls", "EMAIL_FROM": "from"}


@dataclass(frozen=True)
class Config:
    # The SMTP settings set in the environment (Secret keys → values; the Secret fills in
    # the rest), and the Secret's name in SYSTEM_NAMESPACE.
    server_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    server_secret: str = SERVER_SECRET
    ca_file: str = ""
    connect_timeout: float = 5.0
    # The most one recipient's message may take, from connecting to the server's answer.
    deadline: float = 30.0
    settings_cache_seconds: float = 300.0
    # The subscription's own info.mail is believed only when the admin opts in.
    address_from_subscription: bool = False
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        server_env = {key: env(name, "", environ).strip() for name, key in ENV_KEYS.items()}
        ca_file = env("EMAIL_SMTP_CA_FILE", "", environ)
        if ca_file:
            with open(ca_file, encoding="utf-8") as pem:  # missing: fails start, named
                server_env["ca.crt"] = pem.read()
        return cls(
            server_env={k: v for k, v in server_env.items() if v},
            server_secret=env("EMAIL_SERVER_SECRET", SERVER_SECRET, environ),
            ca_file=ca_file,
            connect_timeout=env_float("EMAIL_SMTP_CONNECT_TIMEOUT_SECONDS", 5.0, environ,
                                      minimum=0.05),
            deadline=env_float("EMAIL_SMTP_DEADLINE_SECONDS", 30.0, environ, minimum=0.1),
            settings_cache_seconds=env_float("EMAIL_SETTINGS_CACHE_SECONDS", 300.0, environ),
            address_from_subscription=env_bool("EMAIL_ADDRESS_FROM_SUBSCRIPTION", False,
                                               environ),
            delivery=DeliveryConfig.from_env(environ, sweep_lease=SWEEP_LEASE),
        )
