"""Typed errors: the only way a function chooses an HTTP status.

On the Trigger hops Knative retries 5xx, 404, 408, 409 and 429 and gives up on other 4xx,
so a ``PermanentError`` (bad or unprocessable input, bad configuration) is never retried
while a ``TemporaryError`` (a dependency that may recover) is. The ApiServerSource ->
enricher hop retries only 404, 413, 425, 429, 502, 503, 504 and network errors, for about
3 s, never a 500 (docs/design.md §3).
"""

from __future__ import annotations

MAX_REASON = 300
# Knative base64-encodes a failed delivery's body into the dead-lettered event and caps the
# encoded text at 1024 characters (768 bytes); some releases crash on longer bodies. A
# reason stays well under that in UTF-8 bytes, whatever script it is written in.
MAX_REASON_BYTES = 700


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """Fold ``text`` to a single line of at most ``limit`` characters and
    ``MAX_REASON_BYTES`` UTF-8 bytes."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    raw = flat.encode("utf-8", "replace")  # a lone surrogate becomes "?"
    if len(raw) > MAX_REASON_BYTES:
        flat = raw[: MAX_REASON_BYTES - 3].decode("utf-8", "ignore") + "…"
    return flat


class FunctionError(Exception):
    """Base class: carries the HTTP status and a one-line reason."""

    status = 500

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(one_line(reason))
        if status is not None:
            self.status = status

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else ""


class PermanentError(FunctionError):
    """Input or configuration that will not get better by retrying (4xx)."""

    status = 400


class BadRequest(PermanentError):
    status = 400


class Forbidden(PermanentError):
    status = 403


class PayloadTooLarge(PermanentError):
    status = 413


class Unprocessable(PermanentError):
    """Well-formed input that cannot be acted on, e.g. a rejected configuration."""

    status = 422


class TemporaryError(FunctionError):
    """A dependency that may recover: the caller should retry (503)."""

    status = 503

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class RateLimited(TemporaryError):
    status = 429


def status_for(exc: BaseException) -> int:
    """The single mapping from an exception to an HTTP status."""
    if isinstance(exc, FunctionError):
        return exc.status
    return 500
