"""Which groups a subscriber is in, from a source an administrator controls.

Kubernetes has no API that says which groups a user belongs to: groups come from the
authenticator (client certificate, OIDC claims, a webhook) at each request. A
SubjectAccessReview about a user that names no groups therefore misses every grant made
to a group, the common case with OIDC. The filter reads the groups from the ConfigMap
``SUBSCRIBER_GROUPS_CONFIGMAP`` in ``SYSTEM_NAMESPACE`` (key = username, value = the
groups, comma- or newline-separated), which only an administrator may write. Nothing a
subscription says about its subscriber is trusted for this. Every review also carries
``system:authenticated``, which the API server gives every authenticated user.

With no ConfigMap (or the variable set empty) a subscriber's access must come from
grants to the user itself (or to ``system:authenticated``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

from .shared.cache import CachedMap

AUTHENTICATED = "system:authenticated"
_SEPARATORS = re.compile(r"[,\n]")


def parse_groups(value: str) -> tuple[str, ...]:
    """``"a, b\\nc"`` → ``("a", "b", "c")``: blanks dropped, order and first copy kept."""
    seen: dict[str, None] = {}
    for item in _SEPARATORS.split(value):
        if item.strip():
            seen.setdefault(item.strip(), None)
    return tuple(seen)


class GroupDirectory:
    """``groups_of(user)``: the user's groups plus ``system:authenticated``.

    ``read()`` returns the ConfigMap's data, ``None`` when it does not exist, and raises
    a typed error when the API server is in trouble (the event is then retried); ``read``
    ``None``: no directory. The data is kept for ``ttl`` seconds.
    """

    def __init__(self, read: Callable[[], Mapping[str, str] | None] | None, *,
                 ttl: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = CachedMap(read or (lambda: None), ttl, clock)

    def groups_of(self, user: str) -> tuple[str, ...]:
        listed = parse_groups(self.directory().get(user, ""))
        return (*listed, AUTHENTICATED) if AUTHENTICATED not in listed else listed
