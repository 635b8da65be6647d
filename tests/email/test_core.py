"""email-notifier's pure parts with plain data: the template section, the message made of
it, the MIME a recipient gets, addresses, and the SMTP settings."""

from __future__ import annotations

from typing import Any

import pytest

from dev.support import factory
from email_notifier.addresses import Addresses, valid_address
from email_notifier.config import Config
from email_notifier.message import (
    SUBJECT_LIMIT,
    Renderer,
    build_message,
    fallback_message,
    mime,
    parse_template,
    text_of,
)
from email_notifier.shared.errors import Unprocessable
from email_notifier.shared.notification import Recipient
from email_notifier.shared.render import RenderError
from email_notifier.smtp import settings_from
from tests.corpwechat_notifier.support import b64


def template(email: Any) -> dict[str, Any]:
    return {"metadata": {"name": "t"}, "spec": {"email": email}}


@pytest.mark.parametrize(("section", "problem"), [
    (None, "has no spec.email"),
    ({"text": "x"}, "has no subject"),
    ({"subject": "s"}, "neither text nor html"),
    ({"subject": "s", "html": ["x"]}, "spec.email.html must be a string"),
])
def test_unusable_sections_are_named(section, problem):
    with pytest.raises(RenderError, match=problem):
        parse_template(template(section))


def test_the_shipped_templates_have_email_sections(templates):
    renderer = Renderer()
    event = factory.as_json(factory.enriched_event("approvaldenied"))
    for name, obj in templates.items():
        spec = parse_template(obj)
        message = renderer.render(renderer.compile(spec), {"event": event, "subscriber": {},
                                                           "platform_url": ""})
        fields = message.section()
        assert "devops/my-promotion" in fields["subject"], name
        assert "Requested by: alice" in fields["text"], name
        assert "/artifactpromotionruns/my-promotion" in fields["html"], name


def test_html_escapes_values_and_the_subject_stays_one_line():
    renderer = Renderer()
    spec = parse_template(template({"subject": "{{ event.x }}",
                                    "html": "<p>{{ event.x }}</p>", "text": "{{ event.x }}"}))
    hostile = 'a\r\nBcc: eve@example.com <script>alert(1)</script>' + "x" * 400
    fields = renderer.render(renderer.compile(spec), {"event": {"x": hostile}}).section()
    assert "\n" not in fields["subject"] and "\r" not in fields["subject"]
    assert len(fields["subject"].encode()) <= SUBJECT_LIMIT
    assert "<script>" not in fields["html"] and "&lt;script&gt;" in fields["html"]
    mail = mime(build_message(**fields), "noreply@example.com", "bob@example.com")
    assert mail.get_all("Bcc") is None and mail["To"] == "bob@example.com"


def test_a_missing_part_is_made_from_the_other():
    only_html = build_message(subject="s", html="<p>Hello</p><p>World &amp; you</p>")
    assert only_html.get("text") == "Hello\nWorld & you"
    only_text = build_message(subject="s", text="a < b\nnext")
    assert only_text.get("html") == '<div style="white-space: pre-wrap">a &lt; b\nnext</div>'
    assert text_of("<style>p{}</style><p>x</p><script>y</script>") == "x"
    with pytest.raises(RenderError):
        build_message(subject="s")


def test_the_fallback_is_a_whole_email_with_the_link():
    event = factory.as_json(factory.enriched_event("approvalpending"))
    message = fallback_message(event, "https://acp.example.com")
    link = "https://acp.example.com/console-devops/workspace/devops/artifactpromotionruns/"
    assert link in message.get("text") and f'href="{link}' in message.get("html")
    mail = mime(message, "Katanomi <noreply@example.com>", "bob@example.com")
    assert mail.get_content_type() == "multipart/alternative"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"].endswith("@example.com>")


def person(name: str, mail: str = "", kind: str = "User") -> Recipient:
    return Recipient("s", name, mail, ("email",), {}, kind)


def test_addresses_come_from_the_admin_and_the_subscription_only_when_opted_in():
    users = {"bob": "bob@corp.example", "eve": "eve@corp.example\r\nBcc: x@y.example"}
    groups = {"rm": "a@corp.example, nope, b@corp.example"}
    carol = person("carol", "carol@corp.example")
    strict = Addresses(lambda: users, lambda: groups)
    trusting = Addresses(lambda: users, lambda: groups, from_subscription=True)
    bob = person("bob", "other@corp.example")
    assert strict.targets(bob).to == ("bob@corp.example",)
    assert strict.targets(carol).to == ()
    assert trusting.targets(carol).to == ("carol@corp.example",)
    assert strict.targets(person("eve")).to == ()
    group = person("rm", kind="Group")
    assert strict.targets(group).to == ("a@corp.example", "b@corp.example")
    assert not valid_address("a@b") and not valid_address("Bob <b@corp.example>")



def test_settings_from_the_secret_with_the_environment_winning():
    secret = {"data": {"host": b64("smtp.corp.example"), "tls": b64("implicit"),
                       "username": b64("u"), "password": b64("pw-Zq81"),
                       "from": b64("Katanomi <noreply@corp.example>")}}
    settings = settings_from({}, secret, "kubeevent-email-server")
    assert (settings.host, settings.port, settings.tls, settings.source) == \
        ("smtp.corp.example", 465, "implicit", "secret")
    assert "pw-Zq81" not in repr(settings)
    overridden = settings_from({"port": "2465", "password": "q"}, secret, "s")
    assert (overridden.port, overridden.password, overridden.source) == (2465, "q", "secret+env")


@pytest.mark.parametrize(("env", "problem"), [
    ({}, "EMAIL_SMTP_HOST"),
    ({"host": "h", "from": "x@y.example", "tls": "ssl"}, "tls must be one of"),
    ({"host": "h", "from": "x@y.example", "port": "99999"}, "port must be"),
    ({"host": "h", "from": "x@y.example", "tls": "none", "password": "p"}, "in clear"),
    ({"host": "h"}, "EMAIL_FROM"),
    ({"host": "h", "from": "x@y.example\r\nBcc: z@y.example"}, "EMAIL_FROM"),
])
def test_bad_settings_say_what_to_fix(env, problem):
    with pytest.raises(Unprocessable, match=problem):
        settings_from(env, None, "kubeevent-email-server")


def test_a_secret_value_that_is_not_base64_is_named():
    with pytest.raises(Unprocessable, match="host is not base64"):
        settings_from({}, {"data": {"host": "not base64!"}}, "kubeevent-email-server")


def test_config_reads_the_environment_once(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    config = Config.from_env({**factory.SIGNING_ENV, "EMAIL_SMTP_HOST": "h",
                              "EMAIL_SMTP_PASSWORD": "secret-pw", "EMAIL_SMTP_CA_FILE": str(ca)})
    assert config.server_env == {"host": "h", "password": "secret-pw", "ca.crt": "PEM"}
    assert "secret-pw" not in repr(config)
    assert config.delivery.sweep_lease == "kubeevent-enricher/kubeevent-email-sweep"
    assert config.address_from_subscription is False
