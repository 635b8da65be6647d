"""corpwechat-notifier: the shared delivery pipeline (``shared/pipeline.py``) with WeCom's
app messages as its channel: a notification request in, WeCom messages out, 202 back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from . import core, quota
from .config import Config
from .credentials import (
    PREFERRED_SECRET,
    SECRET_LABEL,
    CredentialStore,
    secret_labels,
)
from .render import (
    Message,
    Renderer,
    decided_card,
    digest,
    fallback_message,
    follow_up,
    parse_template,
    reminder,
    robot_message,
)
from .robots import RobotKeys, is_robot
from .shared import logs
from .shared.followups import Conclusion, Follower
from .shared.kube import AccessDenied, Kube
from .shared.notification import Recipient
from .shared.pipeline import (
    ADMITTED,
    Admission,
    Channel,
    Pipeline,
    Refusal,
    Report,
    SystemReads,
    Targets,
)
from .shared.times import parse_time
from .users import DIRECTORY, GROUPS_DIRECTORY, GroupTargets, UserDirectory, valid_userid
from .wecom import UNKNOWN_ROBOT, WeComClient, WeComRateLimited, WeComRejected


class KubeReads(SystemReads):
    """What the notifier reads from the API server, all in SYSTEM_NAMESPACE: the shared
    reads (ConfigMaps, templates) and the WeCom app's Secret."""

    def server_secrets(self) -> list[dict[str, Any]]:
        """The labelled notification server Secrets (plain JSON objects). The guide's Secret
        is read by name first, so RBAC can be limited to ``get`` that one Secret; listing by
        label (which needs ``list secrets``) is only tried when it is not there."""
        try:
            named = self.kube.get("v1", "Secret", PREFERRED_SECRET, self.namespace)
        except AccessDenied:
            named = None
        key, _, value = SECRET_LABEL.partition("=")
        if named is not None and secret_labels(named).get(key) == value:
            return [named]
        return self.kube.list_all("v1", "Secret", namespace=self.namespace,
                                  label_selector=SECRET_LABEL)


class WeComChannel(Channel):
    """WeCom's app messages as a channel of the shared pipeline: ``spec.corpwechat``,
    user ids from the admin directory (or, opted in, by mail or username), groups to
    departments and tags, WeCom's per-member limits, ``message/send``."""

    name = core.CHANNEL
    parse_template = staticmethod(parse_template)
    fallback = staticmethod(fallback_message)

    def __init__(self, config: Config, reads: KubeReads, client: WeComClient) -> None:
        self.config = config
        self.client = client
        self.kube = reads.kube
        self.renderer = Renderer()
        self.renderer.buttons = config.approval_buttons
        self.credentials = CredentialStore(
            {"corp_id": config.corp_id, "corp_secret": config.corp_secret,
             "agent_id": config.agent_id},
            reads.server_secrets, config.delivery.system_namespace,
            config.credentials_cache_seconds)
        cache_seconds = config.delivery.template_cache_seconds
        self.users = UserDirectory(
            lambda: reads.config_map(DIRECTORY) or {},
            lambda mail: self.client.userid_by_email(self.credentials.get(), mail),
            by_mail=config.userid_by_mail, by_username=config.userid_from_username,
            directory_ttl=cache_seconds, ttl=config.user_id_cache_seconds,
            size=config.user_id_cache_size)
        self.groups = GroupTargets(lambda: reads.config_map(GROUPS_DIRECTORY), cache_seconds)
        self.robots = RobotKeys(lambda: reads.secret(config.robots_secret),
                                config.credentials_cache_seconds)
        # What one member, and one group chat's robot, may get: counted in the API server
        # for every replica with the records, else per replica. A robot has no duplicate
        # check.
        self.member_limit = self._limit(config.member_per_minute, config.member_per_hour,
                                        config.duplicate_check_interval, config.digest_after)
        # A card carries the task id of its notification: never one WeCom drops as a
        # duplicate of another notification's, so it always spends a slot.
        self.card_limit = self._limit(config.member_per_minute, config.member_per_hour, 0,
                                      config.digest_after)
        self.robot_limit = self._limit(config.robot_per_minute, config.robot_per_minute * 60,
                                       0)
        self.follower = CardFollower(self)
        self.rate_limit = (f"WeCom takes at most {config.member_per_minute} messages a minute "
                           f"and {config.member_per_hour} an hour for one member, and "
                           f"{config.robot_per_minute} a minute for a group chat's robot")

    def _limit(self, per_minute: int, per_hour: int, duplicate_window: int,
               burst: int = 0) -> Callable[[str, Message], Admission]:
        if self.config.delivery.delivery_records:
            counted = quota.MemberQuota(
                self.kube, self.config.delivery.system_namespace, core.CHANNEL,
                per_minute=per_minute, per_hour=per_hour, duplicate_window=duplicate_window,
                burst=burst)
            return counted.admit
        limits = core.MemberLimits(per_minute, per_hour)

        def admit(target: str, message: Message) -> Admission:
            until = limits.admit(target)
            return Admission(until is None, until)

        return admit

    # ------------------------------------------------------------------ targets

    def targets(self, recipients: Sequence[Recipient]) -> list[Targets]:
        found = iter(self.users.resolve_many(
            [(r.name, r.mail) for r in recipients if r.kind == "User"]))
        return [self._targets(recipient, found) for recipient in recipients]

    def _targets(self, recipient: Recipient,
                 found: Iterator[tuple[str | None, str]]) -> Targets:
        if recipient.kind == "Group":
            targets = self.groups.targets(recipient.name)
            if not targets:
                logs.warning("no WeCom department or tag for this group in "
                             f"{GROUPS_DIRECTORY}; recipient skipped", subscriber=recipient.name)
            return Targets(tuple(targets), "group" if targets else "none")
        userid, how = next(found)
        if userid is None:
            logs.warning(f"no CorpWeChat user id for this subscriber in {DIRECTORY}; "
                         "recipient skipped", subscriber=recipient.name)
            return Targets((), how)
        if not valid_userid(userid):
            logs.warning("not a valid CorpWeChat user id; recipient skipped",
                         subscriber=recipient.name, found_by=how)
            return Targets((), how)
        return Targets((userid,), how)

    def admit(self, target: str, message: Message) -> Admission:
        """The member limit, or a robot's: departments and tags are not members."""
        if target.startswith(("party:", "tag:")):
            return ADMITTED
        if is_robot(target):
            return self.robot_limit(target, message)
        if message.msgtype == "template_card":
            return self.card_limit(target, message)
        return self.member_limit(target, message)

    # ------------------------------------------------------------------ sending

    def prepare(self) -> None:
        self.credentials.get()  # before anything is made: missing credentials fail first

    def digest(self, messages: Sequence[Message]) -> list[tuple[Message, list[int]]]:
        return digest(list(messages))

    def send(self, message: Message, targets: list[str], on_sent: Callable[..., None], *,
             key: str = "") -> Report:
        members = [t for t in targets if not is_robot(t)]
        report = Report()
        if members:
            sent = self.client.send(self.credentials.get(), message, members, on_sent=on_sent,
                                    key=key)
            report.calls, report.delivered = sent.calls, sent.delivered
            report.refused = [Refusal(u, "InvalidUser", f"WeCom refused user {u}")
                              for u in sent.invalid]
            report.refused += [Refusal(u, "Unlicensed", f"WeCom refused user {u}")
                               for u in sent.unlicensed]
            report.unreachable = list(sent.unreachable)
        for robot in (t for t in targets if is_robot(t)):
            self._to_robot(robot, message, report, on_sent)
        return report

    def _to_robot(self, target: str, message: Message, report: Report,
                  on_sent: Callable[[list[str]], None]) -> None:
        """One group chat: refused for good (an unknown key), put off (its limit; sent
        again from the record), or sent."""
        key = self.robots.key(target)
        if key is None:
            report.refused.append(Refusal(target, "NoRobotKey", f"no webhook key for {target} "
                                          f"in the Secret {self.config.robots_secret}"))
            return
        report.calls += 1
        try:
            self.client.robot_send(key, robot_message(message))
        except WeComRateLimited as exc:
            report.put_off = report.put_off or exc
            return
        except WeComRejected as exc:
            if exc.errcode == UNKNOWN_ROBOT:
                report.refused.append(Refusal(target, "InvalidRobot", exc.reason))
            else:
                report.unreachable.append(exc)
            return
        report.delivered.append(target)
        on_sent([target])

    def swept(self) -> None:
        """The counts of members and robots sent nothing for an hour go (one kind of
        object for both)."""
        if self.config.delivery.delivery_records:
            quota.sweep(self.kube, self.config.delivery.system_namespace)


class CardFollower(Follower):
    """What becomes of an approver's WeCom message once the approval is decided (their
    card says it, updated in place; a message that cannot be changed gets a short
    follow-up) and while it waits (a reminder), within the member's limits."""

    # A response_code is good for 72 hours, a recall for 24: this close to the end, not
    # tried.
    CODE_LIFETIME = 72 * 3600.0 - 600.0
    RECALL_WINDOW = 24 * 3600.0 - 600.0

    def __init__(self, channel: WeComChannel) -> None:
        self.channel = channel

    def _text(self, target: str, message: Message) -> bool:
        """Send ``message`` to one member within their limits; ``False``: not now."""
        if not self.channel.admit(target, message).admitted:
            return False
        self.channel.client.send(self.channel.credentials.get(), message, [target])
        return True

    def conclude(self, target: str, card: Mapping[str, Any], conclusion: Conclusion
                 ) -> str | None:
        if is_robot(target) or target.startswith(("party:", "tag:")):
            return "kept"  # a group's message is not one approver's to change
        title, url = str(card.get("title") or ""), str(card.get("url") or "")
        code, sent = str(card.get("responseCode") or ""), parse_time(card.get("sentAt"))
        age = time.time() - sent if sent is not None else None
        msgid = str(card.get("msgid") or "")
        if card.get("onDecision") == "recall" and msgid and age is not None \
                and age < self.RECALL_WINDOW:
            # The message is taken back and a short one says how it ended: its slot first,
            # so the approver is never left with neither.
            said = follow_up(title, conclusion.outcome, url)
            if not self.channel.admit(target, said).admitted:
                return None
            try:
                self.channel.client.recall(self.channel.credentials.get(), msgid)
            except WeComRejected as exc:
                logs.warning("WeCom would not take the message back; updated or followed "
                             "up instead", errcode=exc.errcode, subscriber=target)
            else:
                self.channel.client.send(self.channel.credentials.get(), said, [target])
                return "recalled"
        if code and url and sent is not None and time.time() - sent < self.CODE_LIFETIME:
            try:
                self.channel.client.update_card(self.channel.credentials.get(), code,
                                                [target], decided_card(title,
                                                                       conclusion.outcome, url))
                return "updated"
            except WeComRejected as exc:
                logs.warning("WeCom would not update the card; a follow-up message instead",
                             errcode=exc.errcode, subscriber=target)
        if not self._text(target, follow_up(title, conclusion.outcome, url)):
            return None
        return "followed_up"

    def remind(self, target: str, card: Mapping[str, Any], text: str) -> bool:
        if is_robot(target) or target.startswith(("party:", "tag:")):
            return False
        return self._text(target, reminder(str(card.get("title") or ""), text,
                                           str(card.get("url") or "")))


def build(environ: Mapping[str, str] | None = None) -> Pipeline:
    """Read configuration and connect; called once when the process starts."""
    logs.configure()
    config = Config.from_env(environ)
    logs.register_secret(config.corp_secret)
    client = WeComClient(config.api_url, timeout=config.timeout,
                         attempts=config.retry_attempts, backoff=config.retry_backoff,
                         duplicate_check_interval=config.duplicate_check_interval,
                         deadline=config.call_deadline)
    reads = KubeReads(Kube(), config.delivery.system_namespace)
    return Pipeline("corpwechat-notifier", WeComChannel(config, reads, client),
                    config.delivery, reads)
