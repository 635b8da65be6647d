"""The enricher's configuration, read once at start (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .shared.config import ConfigError, env, env_bool, env_float, env_int, env_list, env_url
from .shared.signing import Signer, signer_from_env

DEFAULT_BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local"
# The source document's Broker: the one place enriched events go unless configured otherwise.
DEFAULT_BROKER = "cpaas-system/cloudevents-katanomi-dev"


def trusted_reporters(entries: list[str]) -> dict[str, frozenset[str]]:
    """``Kind.group=reporter|reporter`` entries → kind key → reporters."""
    found: dict[str, frozenset[str]] = {}
    for entry in entries:
        kind, _, names = entry.partition("=")
        reporters = frozenset(n.strip() for n in names.split("|") if n.strip())
        if not kind.strip() or not reporters:
            raise ConfigError(f"TRUSTED_REPORTERS entries must be Kind.group=reporter|reporter, "
                              f"got {entry!r}")
        found[kind.strip().lower()] = found.get(kind.strip().lower(), frozenset()) | reporters
    return found


@dataclass(frozen=True)
class Config:
    broker_ingress_url: str = DEFAULT_BROKER_INGRESS
    default_broker_namespace: str = "cpaas-system"
    # ``ns/name`` of every broker ``?broker=`` may name; the first is where events without
    # ``?broker=`` and every catch-up go (unless K_SINK is set). Never "any".
    allowed_brokers: tuple[str, ...] = (DEFAULT_BROKER,)
    k_sink: str | None = None
    # Answer with the enriched event (200) when no broker is named: only for a Trigger
    # chain that routes replies, since the caller then reads it.
    reply: bool = False
    involved_object_kinds: frozenset[str] = frozenset()
    # The same kinds as written (``Kind``, case kept): what the catch-up lists Events by.
    kind_names: tuple[str, ...] = ()
    never_enriched_kinds: frozenset[str] = frozenset()
    # kind.group → the reporters whose Events about that kind count (TRUSTED_REPORTERS).
    trusted_reporters: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # Knative's default broker answers after every delivery down the chain (both Trigger
    # hops with their retries, 20 s an attempt): wait that long for it.
    http_timeout: float = 280.0
    kube_timeout: float = 10.0
    # Tries of the object GET and the broker POST within one request (a hiccup: a pause).
    attempts: int = 3
    # Catch-up on a PingSource's ping: re-read the recent Events of the watched namespaces.
    catchup_namespace_selector: str = "cpaas.io/inner-namespace"
    catchup_window_seconds: float = 3600.0
    catchup_max_events: int = 500  # sent per run, shared fairly among namespaces
    catchup_max_listed: int = 5000  # listed per namespace
    # At most one run at a time, across replicas (the Lease), and one per interval.
    catchup_min_interval_seconds: float = 60.0
    catchup_lease: str = "kubeevent-enricher/kubeevent-catch-up"
    # Signs what it emits (KUBEEVENT_SIGNING_KEY; required unless KUBEEVENT_SIGNING=off).
    signer: Signer | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        kinds = env_list("INVOLVED_OBJECT_KINDS", environ)
        brokers = env_list("ALLOWED_BROKERS", environ) or (DEFAULT_BROKER,)
        for broker in (*brokers, env("CATCHUP_LEASE", "x/y", environ)):
            if broker.count("/") != 1 or not all(broker.split("/")):
                raise ConfigError(f"ALLOWED_BROKERS and CATCHUP_LEASE entries must be "
                                  f"namespace/name, got {broker!r}")
        return cls(
            broker_ingress_url=env_url("BROKER_INGRESS_URL", DEFAULT_BROKER_INGRESS, environ),
            default_broker_namespace=env("DEFAULT_BROKER_NAMESPACE", "cpaas-system", environ),
            allowed_brokers=tuple(dict.fromkeys(brokers)),
            k_sink=env_url("K_SINK", "", environ) or None,
            reply=env_bool("ENRICHER_REPLY", False, environ),
            involved_object_kinds=frozenset(k.lower() for k in kinds),
            kind_names=tuple(sorted({k.partition(".")[0] for k in kinds})),
            never_enriched_kinds=frozenset(
                k.lower() for k in env_list("NEVER_ENRICHED_KINDS", environ)),
            trusted_reporters=trusted_reporters(env_list("TRUSTED_REPORTERS", environ)),
            catchup_namespace_selector=env("CATCHUP_NAMESPACE_SELECTOR",
                                           "cpaas.io/inner-namespace", environ),
            catchup_window_seconds=env_float("CATCHUP_WINDOW_SECONDS", 3600.0, environ,
                                             minimum=1.0),
            catchup_max_events=env_int("CATCHUP_MAX_EVENTS", 500, environ, minimum=1),
            catchup_max_listed=env_int("CATCHUP_MAX_LISTED", 5000, environ, minimum=1),
            catchup_min_interval_seconds=env_float("CATCHUP_MIN_INTERVAL_SECONDS", 60.0,
                                                   environ, minimum=1.0),
            catchup_lease=env("CATCHUP_LEASE", "kubeevent-enricher/kubeevent-catch-up",
                              environ),
            http_timeout=env_float("HTTP_TIMEOUT_SECONDS", 280.0, environ, minimum=0.1),
            kube_timeout=env_float("KUBE_TIMEOUT_SECONDS", 10.0, environ, minimum=0.1),
            attempts=env_int("RETRY_ATTEMPTS", 3, environ, minimum=1),
            signer=signer_from_env(environ),
        )
