"""Reading configuration from the environment, once, at start."""

from __future__ import annotations

import os
from collections.abc import Mapping


class ConfigError(Exception):
    """Start-up must fail: names the variable at fault."""


def env(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    source = os.environ if environ is None else environ
    value = source.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def require(name: str, environ: Mapping[str, str] | None = None) -> str:
    value = env(name, "", environ)
    if not value:
        raise ConfigError(f"{name} is required but not set")
    return value


def env_url(name: str, default: str = "", environ: Mapping[str, str] | None = None) -> str:
    """An http(s) URL without a trailing slash, or "" when unset and no default."""
    value = env(name, default, environ)
    if value and not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value.rstrip("/")


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    raw = env(name, "", environ).lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def env_int(
    name: str, default: int, environ: Mapping[str, str] | None = None, *, minimum: int = 0
) -> int:
    raw = env(name, "", environ)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(
    name: str, default: float, environ: Mapping[str, str] | None = None, *, minimum: float = 0.0
) -> float:
    raw = env(name, "", environ)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """A comma-separated list; blanks are dropped, order kept."""
    raw = env(name, "", environ)
    return tuple(item.strip() for item in raw.split(",") if item.strip())
