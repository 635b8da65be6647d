"""Pure parts: the sent record, credentials, user ids, template lookup (the request's
parsing: tests/shared/test_notification.py)."""

from __future__ import annotations

import base64
import io
import json
import threading
from typing import Any

import pytest
import yaml

from corpwechat_notifier.config import Config
from corpwechat_notifier.credentials import CredentialStore, from_secret_data, unwrap
from corpwechat_notifier.shared import logs
from corpwechat_notifier.shared.config import ConfigError
from corpwechat_notifier.shared.errors import TemporaryError, Unprocessable
from corpwechat_notifier.templates import TemplateStore, parse_mapping
from corpwechat_notifier.users import GroupTargets, UserDirectory
from corpwechat_notifier.wecom import target_batches
from dev.support import factory
from dev.support.seed import example
from tests.corpwechat_notifier.support import installed_templates


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def request_data(**overrides: Any) -> dict[str, Any]:
    data = factory.notification_request().data
    data.update(overrides)
    return data


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- configuration


def test_config_defaults_and_validation():
    with pytest.raises(ConfigError, match="KUBEEVENT_SIGNING_KEY is required"):
        Config.from_env({})
    assert Config.from_env({"KUBEEVENT_SIGNING": "off"}).delivery.signer is None
    config = Config.from_env(factory.SIGNING_ENV)
    assert config.delivery.system_namespace == "cpaas-system"
    assert config.api_url == "https://qyapi.weixin.qq.com/cgi-bin"
    assert config.duplicate_check_interval == 1800 and config.timeout == (3.0, 10.0)
    assert "s3cret" not in repr(Config.from_env({**factory.SIGNING_ENV,
                                                 "CORPWECHAT_CORP_SECRET": "s3cret"}))
    assert factory.SIGNING_KEY not in repr(config)
    for bad in ({"CORPWECHAT_AGENT_ID": "abc"}, {"CORPWECHAT_API_URL": "ftp://x"},
                {"CORPWECHAT_DUPLICATE_CHECK_INTERVAL": "99999"},
                {"CORPWECHAT_RETRY_ATTEMPTS": "0"}, {"PLATFORM_URL": "acp.example.com"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            Config.from_env({**factory.SIGNING_ENV, **bad})


# ---------------------------------------------------------------- credentials


@pytest.mark.parametrize("value, numeric, expected", [
    (b64("ww1234567890abcdef"), False, "ww1234567890abcdef"),       # the seed's base64 text
    ("ww1234567890abcdef", False, "ww1234567890abcdef"),            # plain corp id
    (b64("Ab3_-cD" * 6 + "x"), False, "Ab3_-cD" * 6 + "x"),         # 43-char secret, encoded
    ("Ab3_-cD" * 6 + "x", False, "Ab3_-cD" * 6 + "x"),              # plain secret
    (b64("1000002"), True, "1000002"),
    ("1000002", True, "1000002"),
    ("10000020", True, "10000020"),                                 # digits stay digits
    (b64("not a token!"), False, b64("not a token!")),              # decodes to other text
    ("abcd", False, "abcd"),                                        # decodes to binary
])
def test_unwrap_removes_only_an_unambiguous_base64_layer(value, numeric, expected):
    assert unwrap(value, numeric=numeric) == expected


def secret(name: str = "platform-corpwechat-server", **data: str) -> dict[str, Any]:
    """A Secret as the API server's JSON (what the notifier reads): base64 ``data``."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "cpaas-system",
                         "labels": {"cpaas.io/notification.server.type": "CorpWeChat"}},
            "data": data}


def test_seed_secret_values_are_decoded_twice():
    # stringData holds base64 text; the API returns data = base64(stringData value)
    data = {"corpId": b64(b64("ww-corp")), "corpSecret": b64(b64("s3cret-value")),
            "agentId": b64(b64("1000002")), "displayNameEn": b64("xx")}
    credentials = from_secret_data(data, "platform-corpwechat-server")
    assert (credentials.corp_id, credentials.corp_secret, credentials.agent_id) == (
        "ww-corp", "s3cret-value", 1000002)
    assert "s3cret" not in repr(credentials)
    assert logs.redact_text("x s3cret-value y") == "x *** y"


@pytest.mark.parametrize("data, reason", [
    ({"corpId": b64("ww"), "corpSecret": b64("s")}, "no agentId"),
    ({"corpId": "!!", "corpSecret": b64("s"), "agentId": b64("1")}, "corpId is not valid base64"),
    ({"corpId": b64("ww"), "corpSecret": b64("s"), "agentId": b64("app")}, "agentId must be"),
])
def test_broken_secrets_are_unprocessable(data, reason):
    with pytest.raises(Unprocessable, match=reason):
        from_secret_data(data, "s")


def test_credential_store_prefers_env_and_caches():
    calls: list[int] = []

    def listing() -> list[Any]:
        calls.append(1)
        return [secret("other", corpId=b64("ww-other"), corpSecret=b64("x1234"),
                       agentId=b64("7")),
                secret(corpId=b64(b64("ww-seed")), corpSecret=b64(b64("seed-secret")),
                       agentId=b64(b64("1000002")))]

    clock = Clock()
    store = CredentialStore({"corp_id": "", "corp_secret": "", "agent_id": "42"}, listing,
                            "cpaas-system", ttl=60, clock=clock)
    got = store.get()
    assert (got.corp_id, got.corp_secret, got.agent_id) == ("ww-seed", "seed-secret", 42)
    assert store.get() is got and len(calls) == 1
    clock.now += 61
    store.get()
    assert len(calls) == 2
    env_only = CredentialStore({"corp_id": "ww", "corp_secret": "sec-ret", "agent_id": "5"},
                               listing, "ns")
    assert env_only.get().source == "env" and len(calls) == 2


def test_no_credentials_anywhere_is_unprocessable():
    store = CredentialStore({}, lambda: [], "cpaas-system")
    with pytest.raises(Unprocessable, match="no CorpWeChat credentials: set CORPWECHAT_CORP_ID"):
        store.get()


# ---------------------------------------------------------------- user ids


def test_by_default_only_the_administrators_configmap_gives_user_ids():
    """A subscription's mail is written by whoever creates it: carol subscribing with
    bob's address must not make bob the recipient. By default it is never looked up,
    and the username is never taken for a user id."""
    lookups: list[str] = []
    directory = UserDirectory(lambda: {"alice": "alice-cm"}, lambda m: lookups.append(m) or "bob")
    assert directory.resolve("alice", "alice@example.com") == ("alice-cm", "configmap")
    assert directory.resolve("carol", "bob@example.com") == (None, "none")
    assert directory.resolve("bob") == (None, "none")
    assert lookups == []


def test_user_ids_first_hit_wins_and_are_cached_when_mail_lookup_is_on():
    lookups: list[str] = []
    emails = {"carol@example.com": "carol-mail", "dave@example.com": "dave-mail"}

    def lookup(mail: str) -> str | None:
        lookups.append(mail)
        return emails.get(mail.lower())

    directory = UserDirectory(lambda: {"carol": "carol-cm", "blank": " "}, lookup,
                              by_mail=True)
    assert directory.resolve("carol", "carol@example.com") == ("carol-cm", "configmap")
    assert directory.resolve("dave", "Dave@Example.com ") == ("dave-mail", "email")
    assert directory.resolve("dave", "dave@example.com") == ("dave-mail", "email")
    # a mail WeCom does not know (or will not look up) is never replaced by a guess
    assert directory.resolve("erin", "erin@example.com") == (None, "none")
    assert directory.resolve("erin", "erin@example.com") == (None, "none")
    assert directory.resolve("blank") == (None, "none")
    assert lookups == ["Dave@Example.com", "erin@example.com"]


def test_usernames_are_user_ids_only_when_the_operator_says_so():
    directory = UserDirectory(lambda: {"carol": "carol-cm"}, lambda m: None,
                              by_username=True)
    assert directory.resolve("carol") == ("carol-cm", "configmap")
    assert directory.resolve("frank") == ("frank", "username")


def test_user_id_lookup_trouble_is_not_guessed_around():
    def lookup(mail: str) -> str | None:
        raise TemporaryError("WeCom busy")

    directory = UserDirectory(dict, lookup, by_mail=True)
    with pytest.raises(TemporaryError):
        directory.resolve("dave", "dave@example.com")
    assert directory.resolve("frank") == (None, "none")


def test_many_user_ids_are_looked_up_concurrently_and_answered_in_order():
    emails = {f"u{i}@example.com": f"wx{i}" for i in range(12)}
    reads: list[int] = []
    lookups: list[str] = []
    guard = threading.Lock()
    running = [0, 0]  # now, most at once
    together = threading.Barrier(4)  # four lookups must be under way at the same time

    def read_directory() -> dict[str, str]:
        reads.append(1)
        return {"carol": "carol-cm"}

    def lookup(mail: str) -> str | None:
        with guard:
            lookups.append(mail)
            running[0] += 1
            running[1] = max(running)
        if len(lookups) <= 4:
            together.wait(timeout=30)  # breaks (and the test fails) if they run one by one
        with guard:
            running[0] -= 1
        return emails.get(mail.lower())

    directory = UserDirectory(read_directory, lookup, ttl=0, by_mail=True, by_username=True)
    people = [(f"user{i}", f"u{i}@example.com") for i in range(12)]
    people[3:3] = [("carol", "carol@example.com"), ("frank", ""),
                   ("nobody", "nobody@example.com"), ("again", "U0@Example.com ")]
    got = directory.resolve_many(people, workers=4)
    assert got[:7] == [("wx0", "email"), ("wx1", "email"), ("wx2", "email"),
                       ("carol-cm", "configmap"), ("frank", "username"),
                       ("nobody", "username"), ("wx0", "email")]
    assert got[7:] == [(f"wx{i}", "email") for i in range(3, 12)]
    assert len(reads) == 1  # the ConfigMap once per notification
    assert sorted(lookups) == sorted([*emails, "nobody@example.com"])  # each mail once
    assert running[1] == 4  # bounded by the workers


def test_one_failed_lookup_fails_them_all_with_the_first_error_in_order():
    def lookup(mail: str) -> str | None:
        if mail.startswith("bad"):
            raise TemporaryError(f"WeCom busy for {mail}")
        return mail.split("@")[0]

    directory = UserDirectory(dict, lookup, by_mail=True)
    people = [("a", "a@example.com"), ("b", "bad1@example.com"), ("c", "c@example.com"),
              ("d", "bad2@example.com")]
    with pytest.raises(TemporaryError, match=r"bad1@example\.com"):
        directory.resolve_many(people, workers=3)
    # nothing was guessed; what was found is cached for the retry
    assert directory.resolve_many([("a", "a@example.com")]) == [("a", "email")]


def test_looked_up_mails_expire_and_are_bounded():
    clock = Clock()
    lookups: list[str] = []

    def lookup(mail: str) -> str | None:
        lookups.append(mail)
        return None if mail.startswith("nobody") else mail.split("@")[0]

    directory = UserDirectory(dict, lookup, by_mail=True, ttl=10, size=2, clock=clock)
    for _ in range(2):  # the second round is served from the cache, the miss included
        assert directory.resolve_many([("a", "a@x.io"), ("n", "nobody@x.io")], workers=1) == [
            ("a", "email"), (None, "none")]
    assert lookups == ["a@x.io", "nobody@x.io"]
    directory.resolve("c", "c@x.io")  # a third mail pushes out the oldest (a@x.io)
    directory.resolve("a", "a@x.io")
    clock.now += 11  # and after the ttl every one is looked up again
    directory.resolve("c", "c@x.io")
    assert lookups == ["a@x.io", "nobody@x.io", "c@x.io", "a@x.io", "c@x.io"]


# ---------------------------------------------------------------- template lookup


def test_seed_mapping_is_understood():
    text = yaml.safe_load(example("seed-katanomi-config-patch.yaml"))["data"][
        "notification.templates"]
    mapping, problems = parse_mapping(text)
    assert mapping[factory.KUBEEVENT.format("running")] == \
        "kubeevent.artifactpromotionrun.running"
    assert problems == []


BROKEN_ENTRIES = ("- type: a\n- templateRef: {name: b}\n- type: c\n  templateRef: {name: d}\n"
                  "- type: c\n  templateRef: {name: e}")


def test_broken_mapping_is_ignored_and_each_problem_is_returned():
    mapping, [problem] = parse_mapping("- type: [unclosed")
    assert mapping == {}
    assert problem.message == "katanomi-config notification.templates is not valid YAML; " \
        "ignoring it"
    assert problem.entry is None and "flow sequence" in problem.error
    mapping, [problem] = parse_mapping("type: a")
    assert mapping == {} and "is not a YAML list" in problem.message and problem.entry is None
    mapping, problems = parse_mapping(BROKEN_ENTRIES)
    assert mapping == {"c": "d"}
    assert [p.entry for p in problems] == [0, 1]
    assert problems[1].message == "katanomi-config notification.templates: entry 1 needs " \
        "type and templateRef.name; skipped"


def test_the_store_logs_each_mapping_problem_once_per_read():
    out = io.StringIO()
    logs.set_stream(out)
    data = {"notification.templates": BROKEN_ENTRIES}
    clock = Clock()
    try:
        store = TemplateStore(lambda: data, lambda name: None, ttl=30, clock=clock)
        assert store.mapping() == {"c": "d"}
        assert store.mapping() == {"c": "d"}  # from the cache: not parsed, not logged again
        data["notification.templates"] = "- type: [unclosed"
        clock.now += 31
        assert store.mapping() == {}
    finally:
        logs.set_stream(None)
    warnings = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [w["severity"] for w in warnings] == ["WARNING"] * 3
    assert [w["message"] for w in warnings[:2]] == [
        f"katanomi-config notification.templates: entry {i} needs type and "
        "templateRef.name; skipped" for i in (0, 1)]
    assert "error" not in warnings[0] and "flow sequence" in warnings[2]["error"]


def test_template_store_caches_for_its_ttl_and_says_what_is_missing():
    reads: list[str] = []
    templates = {d["metadata"]["name"]: d for d in installed_templates()}
    mapping_text = yaml.safe_load(example("seed-katanomi-config-patch.yaml"))["data"][
        "notification.templates"]
    config: dict[str, Any] = {"data": {"notification.templates": mapping_text}}

    def read_config() -> dict[str, str] | None:
        reads.append("config")
        return config["data"]

    def read_template(name: str) -> dict[str, Any] | None:
        reads.append(name)
        return templates.get(name)

    clock = Clock()
    store = TemplateStore(read_config, read_template, ttl=30, clock=clock)
    pending = factory.KUBEEVENT.format("approvalpending")
    assert store.lookup(pending).spec.msgtype == "template_card"
    assert store.lookup(pending).name == "kubeevent.artifactpromotionrun.approvalpending"
    assert reads == ["config", "kubeevent.artifactpromotionrun.approvalpending"]
    assert "no template mapped" in store.lookup("other.type").missing
    del templates["kubeevent.artifactpromotionrun.failed"]
    assert "not found" in store.lookup(factory.KUBEEVENT.format("failed")).missing
    clock.now += 31
    config["data"] = None
    assert "katanomi-config not found" in store.lookup(pending).missing
    assert reads.count("config") == 2


def test_template_store_lets_api_trouble_through():
    def down() -> dict[str, str] | None:
        raise TemporaryError("API server unreachable")

    with pytest.raises(TemporaryError):
        TemplateStore(down, lambda name: None).lookup("t")


# ---------------------------------------------------------------- group subscribers


def test_groups_go_only_to_the_departments_and_tags_the_administrator_maps():
    groups = GroupTargets(lambda: {"release-managers": "party:2, tag:7",
                                   "odd": "party:2, alice, tag:x"})
    assert groups.targets("release-managers") == ["party:2", "tag:7"]
    assert groups.targets("odd") == ["party:2"], "anything else is ignored, never a user id"
    assert groups.targets("unmapped") == []


def test_target_batches_address_users_parties_and_tags_apart():
    users = [f"u{i}" for i in range(1001)]
    calls = target_batches([*users, "party:1", "tag:9", "party:2"])
    assert [fields for _, fields in calls][1:] == [
        {"touser": "u1000"}, {"toparty": "1|2", "totag": "9"}]
    assert calls[0][1]["touser"].count("|") == 999
    assert calls[2][0] == ["party:1", "party:2", "tag:9"]


def test_member_limits_hold_to_wecoms_minute_and_hour() -> None:
    from corpwechat_notifier.core import MemberLimits

    now = [1000.0]
    limits = MemberLimits(per_minute=2, per_hour=3, clock=lambda: now[0])
    assert limits.admit("bob") is None and limits.admit("bob") is None
    assert limits.admit("bob") == 1060.0, "the first slot frees a minute after it was taken"
    assert limits.admit("ann") is None, "per member"
    now[0] = 1061.0
    assert limits.admit("bob") is None
    now[0] = 1130.0
    assert limits.admit("bob") == 4600.0, "three an hour: the first frees at 1000 + 3600"


def test_record_names_and_label_values_are_deterministic_and_valid() -> None:
    from corpwechat_notifier.shared.records import label_value, record_name

    assert record_name("n1", "corpwechat", "bob") == record_name("n1", "corpwechat", "bob")
    assert record_name("n1", "corpwechat", "bob") != record_name("n1", "corpwechat", "ann")
    assert len(record_name("n" * 500, "c", "r" * 500)) <= 63
    assert label_value("alice") == "alice"
    hashed = label_value("alice@example.com")
    assert hashed.startswith("h-") and len(hashed) == 42
    assert label_value("x" * 64).startswith("h-")


def test_the_member_window_slides_and_a_duplicate_is_free() -> None:
    from corpwechat_notifier.quota import decide

    now = 10_000.0
    spec = {"sent": [now - 3700, now - 59, now - 30, now - 10], "recent": {"h1": now - 10}}
    admission, sent, recent = decide(spec, now, "h2", 3, 1000, 1800)
    assert (admission.admitted, admission.until) == (False, now - 59 + 60), \
        "three within the minute: the oldest of them frees the next slot"
    assert sent == [now - 59, now - 30, now - 10], "older than an hour is forgotten"
    free, _, _ = decide(spec, now, "h1", 3, 1000, 1800)
    assert free.admitted and free.duplicate, "what WeCom drops as a duplicate spends no slot"
    later, sent, recent = decide(spec, now + 60, "h2", 3, 1000, 1800)
    assert later.admitted and sent[-1] == now + 60 and recent["h2"] == now + 60
    hourly, _, _ = decide({"sent": [now - 3000 + i for i in range(5)]}, now, "h", 30, 5, 1800)
    assert (hourly.admitted, hourly.until) == (False, now - 3000 + 3600)
