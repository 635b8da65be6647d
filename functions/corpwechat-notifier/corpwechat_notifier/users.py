"""CorpWeChat user ids of subscribers (docs/design.md §5), first hit wins:

1. the ConfigMap ``corpwechat-users`` in SYSTEM_NAMESPACE (key = username, value = user
   id), which only an administrator writes;
2. only when the operator opts in (``by_mail``): WeCom ``user/get_userid_by_email`` with
   the subscriber's mail (cached, bounded). Whoever creates a subscription writes that
   mail, so by default it is never used to address anyone;
3. only when the operator declares that usernames are WeCom user ids (``by_username``):
   the username itself.

Otherwise the subscriber has no user id and is not sent to (``how`` is ``none``). A mail
WeCom does not know, or a lookup WeCom refuses (48002, 60011), is not replaced by a
guess. A lookup that fails for a reason that may pass (WeCom busy, network) is an error
(503).

``resolve_many`` serves one notification: the ConfigMap is read once, and the mails not
cached are looked up a few at a time (``LOOKUP_WORKERS``), each distinct mail once; the
answer keeps the order of the recipients, and the first failure in that order is raised.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from .shared import logs
from .shared.cache import Cache, CachedMap

DIRECTORY = "corpwechat-users"
# WeCom member ids: 1-64 bytes of letters, digits and "_-@.", starting with a letter or digit.
# Anything else is refused before it reaches touser, whose "|" separates members: a name
# like "x|carol" must never address carol.
_USERID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
# Concurrent user/get_userid_by_email calls for one notification.
LOOKUP_WORKERS = 8


def valid_userid(userid: str) -> bool:
    return _USERID.fullmatch(userid) is not None


GROUPS_DIRECTORY = "corpwechat-groups"
_GROUP_TARGET = re.compile(r"(party|tag):[0-9]{1,10}|robot:[A-Za-z0-9][-._A-Za-z0-9]{0,62}")


class GroupTargets:
    """Where a ``kind: Group`` subscriber is sent: the WeCom departments and tags, and the
    group chats (their robots), the ConfigMap ``corpwechat-groups`` in SYSTEM_NAMESPACE
    maps the group to (key = group, value = ``party:<id>`` / ``tag:<id>`` /
    ``robot:<name>`` entries separated by commas; a robot's webhook key is in the Secret
    ``corpwechat-robots`` under ``<name>``). A group it does not map is sent nothing: never
    to a user id that happens to have the group's name."""

    def __init__(self, read: Callable[[], Mapping[str, str] | None], ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = CachedMap(read, ttl, clock)

    def targets(self, group: str) -> list[str]:
        entries = self.directory.listed(group)
        good = [e for e in entries if _GROUP_TARGET.fullmatch(e)]
        if len(good) != len(entries):
            logs.warning("corpwechat-groups has entries that are not party:<id>, tag:<id> or "
                         "robot:<name>",
                         group=group, ignored=[e for e in entries if e not in good])
        return good


class UserDirectory:
    """Resolves subscribers to WeCom user ids.

    ``read_directory()`` returns the ConfigMap's data (``{}`` when it does not exist) and
    raises a typed error when the API server is in trouble; ``lookup_email(mail)``
    returns the user id or ``None`` and raises typed errors for anything else.
    """

    def __init__(self, read_directory: Callable[[], Mapping[str, str]],
                 lookup_email: Callable[[str], str | None], *, by_mail: bool = False,
                 by_username: bool = False, directory_ttl: float = 30.0,
                 ttl: float = 3600.0, size: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read_directory = read_directory
        self.lookup_email = lookup_email
        self.by_mail = by_mail
        self.by_username = by_username
        # mail key → user id; "" when WeCom has no member for the mail (a negative hit).
        self.mails: Cache[str, str] = Cache(size, ttl, clock)
        self.directory = CachedMap(read_directory, directory_ttl, clock)

    def resolve(self, name: str, mail: str = "") -> tuple[str | None, str]:
        """(user id or ``None``, how: ``configmap`` | ``email`` | ``username`` | ``none``)."""
        return self._resolve(self.directory(), name, mail, {}, set())

    def resolve_many(self, people: Sequence[tuple[str, str]], *,
                     workers: int = LOOKUP_WORKERS) -> list[tuple[str | None, str]]:
        """``resolve(name, mail)`` for each pair, in order, with one read of the ConfigMap
        and the uncached mails looked up concurrently (at most ``workers`` at a time).

        Nothing is guessed: when a lookup fails, the lookups still queued are dropped, the
        ones under way finish (and are cached), and the error of the first failing pair in
        ``people``'s order is raised.
        """
        directory = self.directory()
        wanted: dict[str, str] = {}  # mail key → the mail as the first subscriber gave it
        for name, mail in people:
            if directory.get(name) or not mail or not self.by_mail:
                continue
            key = mail.strip().lower()
            if key not in wanted and self.mails.get(key) is None:
                wanted[key] = mail.strip()
        fresh = self._look_up(wanted, workers)
        noted: set[str] = set()
        return [self._resolve(directory, name, mail, fresh, noted) for name, mail in people]

    def _look_up(self, wanted: Mapping[str, str], workers: int) -> dict[str, str | None]:
        """mail key → user id (or ``None``) for each mail in ``wanted``, all cached."""

        def one(key: str) -> str | None:
            userid = self.lookup_email(wanted[key])
            self.mails.put(key, userid or "")
            return userid

        if len(wanted) <= 1 or workers <= 1:
            return {key: one(key) for key in wanted}
        pool = ThreadPoolExecutor(max_workers=min(workers, len(wanted)),
                                  thread_name_prefix="mail-lookup")
        try:
            futures = {key: pool.submit(one, key) for key in wanted}
            return {key: future.result() for key, future in futures.items()}
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _resolve(self, directory: Mapping[str, str], name: str, mail: str,
                 fresh: Mapping[str, str | None], noted: set[str]) -> tuple[str | None, str]:
        mapped = directory.get(name)
        if mapped:
            return mapped, "configmap"
        if mail and self.by_mail:
            key = mail.strip().lower()
            if key in fresh:
                userid, looked_up = fresh[key], key not in noted
                noted.add(key)
            else:
                userid = self.mails.get(key)
                looked_up = userid is None
                if looked_up:
                    userid = self.lookup_email(mail.strip())
                    self.mails.put(key, userid or "")
            if userid:
                return userid, "email"
            if looked_up:
                logs.info("WeCom gave no member for this mail", subscriber=name)
        if self.by_username:
            return name, "username"
        return None, "none"
