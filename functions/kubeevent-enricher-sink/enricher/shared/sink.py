"""POST a CloudEvent to a sink (a broker ingress, ``K_SINK``) in binary mode."""

from __future__ import annotations

import requests

from .errors import RateLimited, TemporaryError, Unprocessable
from .events import Event, binary_http
from .sessions import PooledSession


class SinkTimedOut(TemporaryError):
    """No answer in time: the sink may still be working on it (Knative's default broker
    answers after every delivery), so it is not worth repeating at once."""


def post_event(http: PooledSession, url: str, event: Event, timeout: float) -> None:
    """Deliver ``event``. A 400 (the event will never be taken) is ``Unprocessable``;
    any other refusal or an unreachable sink is a ``TemporaryError`` (429:
    ``RateLimited``; 404: the broker may yet be created), so the caller's own sender
    retries the whole delivery."""
    headers, body = binary_http(event)
    try:
        status = http.post(url, data=body, headers=headers, timeout=(3.0, timeout)).status_code
    except requests.Timeout:
        raise SinkTimedOut(f"sink {url} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise TemporaryError(f"sink {url} unreachable ({type(exc).__name__})") from None
    if status == 429:
        raise RateLimited(f"sink {url} is throttling (429)")
    if status == 400:  # Knative's ingress: an event it will never take
        raise Unprocessable(f"sink {url} refused the event (400)")
    if not 200 <= status < 300:
        raise TemporaryError(f"sink {url} answered {status}")
