"""Where a subscriber's email goes: addresses the admin gave, never the subscriber alone.

* ``email-users`` (ConfigMap in SYSTEM_NAMESPACE): key = Kubernetes username (the
  subscriber's name), value = the address.
* the subscription's ``info.mail``, only with EMAIL_ADDRESS_FROM_SUBSCRIPTION=true: the
  subscriber wrote it, so by default it is not believed (as for WeCom ids).
* ``email-groups``: key = a ``kind: Group`` subscriber's name, value = addresses separated
  by commas; a group it does not map is sent nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping

from .shared import logs
from .shared.cache import CachedMap
from .shared.notification import Recipient
from .shared.pipeline import Targets

DIRECTORY = "email-users"
GROUPS_DIRECTORY = "email-groups"
# One address: a local part and a domain, no spaces, no display name, no header breaks.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@"
                      r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


def valid_address(address: str) -> bool:
    return len(address) <= 254 and _ADDRESS.fullmatch(address) is not None


class Addresses:
    def __init__(self, read_users: Callable[[], Mapping[str, str] | None],
                 read_groups: Callable[[], Mapping[str, str] | None], *,
                 from_subscription: bool = False, ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = CachedMap(read_users, ttl, clock)
        self.groups = CachedMap(read_groups, ttl, clock)
        self.from_subscription = from_subscription

    def targets(self, recipient: Recipient) -> Targets:
        if recipient.kind == "Group":
            entries = self.groups.listed(recipient.name)
            good = [e for e in entries if valid_address(e)]
            if len(good) != len(entries):
                logs.warning(f"{GROUPS_DIRECTORY} has entries that are not addresses",
                             group=recipient.name, ignored=len(entries) - len(good))
            if not good:
                logs.warning(f"no address for this group in {GROUPS_DIRECTORY}; recipient "
                             "skipped", subscriber=recipient.name)
            return Targets(tuple(good), "group" if good else "none")
        address, how = (self.users().get(recipient.name) or "").strip(), "configmap"
        if not address and self.from_subscription and recipient.mail:
            address, how = recipient.mail.strip(), "subscription"
        if not address:
            logs.warning(f"no address for this subscriber in {DIRECTORY}; recipient skipped",
                         subscriber=recipient.name)
            return Targets((), "none")
        if not valid_address(address):
            logs.warning("not a valid email address; recipient skipped",
                         subscriber=recipient.name, found_by=how)
            return Targets((), how)
        return Targets((address,), how)
