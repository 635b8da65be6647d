"""The notifier's configuration, read once at start (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .shared.config import ConfigError, env, env_bool, env_float, env_int, env_url
from .shared.pipeline import DeliveryConfig

DEFAULT_API_URL = "https://qyapi.weixin.qq.com/cgi-bin"
# WeCom accepts duplicate_check_interval up to four hours.
MAX_DUPLICATE_CHECK_INTERVAL = 4 * 3600


@dataclass(frozen=True)
class Config:
    api_url: str = DEFAULT_API_URL
    # Credentials from the environment; each may be empty (then the Secret fills it in).
    corp_id: str = ""
    corp_secret: str = field(default="", repr=False)
    agent_id: str = ""
    duplicate_check_interval: int = 1800
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    call_deadline: float = 15.0
    retry_attempts: int = 3
    retry_backoff: float = 0.2
    credentials_cache_seconds: float = 300.0
    user_id_cache_seconds: float = 3600.0
    user_id_cache_size: int = 10000
    # Where a user id may come from besides the corpwechat-users ConfigMap (both opt-in).
    userid_by_mail: bool = False
    userid_from_username: bool = False
    # Cards that ask to decide carry Approve / Deny (templates with ``buttons: approval``):
    # only with corpwechat-callback installed, which answers them.
    approval_buttons: bool = False
    # WeCom drops what an app sends one member beyond these (counted for all replicas in
    # the API server with the delivery records; per replica without them).
    member_per_minute: int = 30
    member_per_hour: int = 1000
    # A group chat's robot takes at most 20 messages a minute (45009 beyond); its webhook
    # keys are in this Secret of SYSTEM_NAMESPACE.
    robot_per_minute: int = 20
    # After this many messages within a minute for one member, the rest wait and go out
    # together as one digest a minute later (0: off; with the delivery records only).
    digest_after: int = 10
    robots_secret: str = "corpwechat-robots"
    # What every notifier reads (records, sweep, templates, signature).
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for every WeCom request."""
        return (self.connect_timeout, self.read_timeout)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        agent_id = env("CORPWECHAT_AGENT_ID", "", environ)
        if agent_id and not agent_id.isdigit():
            raise ConfigError(f"CORPWECHAT_AGENT_ID must be a number, got {agent_id!r}")
        interval = env_int("CORPWECHAT_DUPLICATE_CHECK_INTERVAL", 1800, environ, minimum=1)
        if interval > MAX_DUPLICATE_CHECK_INTERVAL:
            raise ConfigError(
                f"CORPWECHAT_DUPLICATE_CHECK_INTERVAL must be at most "
                f"{MAX_DUPLICATE_CHECK_INTERVAL} seconds (WeCom's limit), got {interval}"
            )
        return cls(
            api_url=env_url("CORPWECHAT_API_URL", DEFAULT_API_URL, environ),
            corp_id=env("CORPWECHAT_CORP_ID", "", environ),
            corp_secret=env("CORPWECHAT_CORP_SECRET", "", environ),
            agent_id=agent_id,
            duplicate_check_interval=interval,
            connect_timeout=env_float("CORPWECHAT_CONNECT_TIMEOUT_SECONDS", 3.0, environ,
                                      minimum=0.05),
            read_timeout=env_float("CORPWECHAT_TIMEOUT_SECONDS", 10.0, environ, minimum=0.05),
            call_deadline=env_float("CORPWECHAT_CALL_DEADLINE_SECONDS", 15.0, environ,
                                    minimum=0.1),
            retry_attempts=env_int("CORPWECHAT_RETRY_ATTEMPTS", 3, environ, minimum=1),
            retry_backoff=env_float("CORPWECHAT_RETRY_BACKOFF_SECONDS", 0.2, environ),
            credentials_cache_seconds=env_float("CREDENTIALS_CACHE_SECONDS", 300.0, environ),
            user_id_cache_seconds=env_float("USER_ID_CACHE_SECONDS", 3600.0, environ),
            user_id_cache_size=env_int("USER_ID_CACHE_SIZE", 10000, environ, minimum=1),
            userid_by_mail=env_bool("CORPWECHAT_USERID_BY_MAIL", False, environ),
            userid_from_username=env_bool("CORPWECHAT_USERID_FROM_USERNAME", False, environ),
            approval_buttons=env_bool("CORPWECHAT_APPROVAL_BUTTONS", False, environ),
            member_per_minute=env_int("CORPWECHAT_MEMBER_MESSAGES_PER_MINUTE", 30, environ,
                                      minimum=1),
            member_per_hour=env_int("CORPWECHAT_MEMBER_MESSAGES_PER_HOUR", 1000, environ,
                                    minimum=1),
            robot_per_minute=env_int("CORPWECHAT_ROBOT_MESSAGES_PER_MINUTE", 20, environ,
                                     minimum=1),
            robots_secret=env("CORPWECHAT_ROBOTS_SECRET", "corpwechat-robots", environ),
            digest_after=env_int("CORPWECHAT_DIGEST_AFTER_PER_MINUTE", 10, environ,
                                 minimum=0),
            delivery=DeliveryConfig.from_env(environ),
        )
