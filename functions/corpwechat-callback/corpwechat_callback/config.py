"""The callback function's configuration, read once at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .crypto import CallbackKeys
from .shared.approvals import DEFAULT_PATHS, ApprovalError, ApprovalPaths, paths_from
from .shared.config import ConfigError, env, env_float

WRITE_AS = ("user", "operator")


@dataclass(frozen=True)
class Config:
    keys: CallbackKeys = field(repr=False)
    system_namespace: str = "cpaas-system"
    # A callback signed longer ago than this (or ahead of now) is refused: WeCom answers
    # within seconds and retries within a minute.
    max_age_seconds: float = 300.0
    users_configmap: str = "corpwechat-users"
    groups_configmap: str = "kubeevent-user-groups"
    paths: Mapping[str, ApprovalPaths] = field(default_factory=lambda: dict(DEFAULT_PATHS))
    # user: the decision is written as the clicker (impersonation); operator: by this
    # function on their behalf, with operator_name recorded (Katanomi's on-behalf rule).
    write_as: str = "user"
    operator_name: str = "system:serviceaccount:kubeevent-enricher:corpwechat-callback"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        values = {}
        for name in ("CORPWECHAT_CALLBACK_TOKEN", "CORPWECHAT_CALLBACK_AES_KEY",
                     "CORPWECHAT_CORP_ID"):
            values[name] = env(name, "", environ)
            if not values[name]:
                raise ConfigError(f"{name} is required (the WeCom app's callback settings)")
        try:
            keys = CallbackKeys.parse(values["CORPWECHAT_CALLBACK_TOKEN"],
                                      values["CORPWECHAT_CALLBACK_AES_KEY"],
                                      values["CORPWECHAT_CORP_ID"])
        except ValueError as exc:
            raise ConfigError(f"CORPWECHAT_CALLBACK_AES_KEY or _TOKEN: {exc}") from None
        write_as = env("CALLBACK_WRITE_AS", "user", environ).lower()
        if write_as not in WRITE_AS:
            raise ConfigError(f"CALLBACK_WRITE_AS must be user or operator, got {write_as!r}")
        try:
            paths = paths_from(env("APPROVAL_PATHS", "", environ))
        except ApprovalError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            keys=keys,
            system_namespace=env("SYSTEM_NAMESPACE", "cpaas-system", environ),
            max_age_seconds=env_float("CALLBACK_MAX_AGE_SECONDS", 300.0, environ,
                                      minimum=10.0),
            users_configmap=env("CORPWECHAT_USERS_CONFIGMAP", "corpwechat-users", environ),
            groups_configmap=env("SUBSCRIBER_GROUPS_CONFIGMAP", "kubeevent-user-groups",
                                 environ),
            paths=paths,
            write_as=write_as,
            operator_name=env("CALLBACK_OPERATOR_NAME",
                              "system:serviceaccount:kubeevent-enricher:corpwechat-callback",
                              environ),
        )
