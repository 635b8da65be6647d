"""The real SMTP server the email notifier is tested against (Mailpit, built from its Go
module): what it takes and how it refuses, through the standard library's smtplib as the
notifier talks to it."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from dev.support.mailpit import Mailpit, why_not


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailpit]:
    if why_not():
        pytest.skip(str(why_not()))
    with Mailpit(tmp_path_factory.mktemp("mailpit")) as server:
        yield server


def message(to: str, subject: str = "制品晋级待您审批") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Katanomi <noreply@example.com>"
    mail["To"] = to
    mail["Subject"] = subject
    mail.set_content("plain text body")
    mail.add_alternative("<p>html <b>body</b></p>", subtype="html")
    return mail


def test_a_multipart_message_arrives_with_both_parts(plain: Mailpit) -> None:
    plain.clear()
    with smtplib.SMTP("127.0.0.1", plain.smtp_port, timeout=10) as smtp:
        smtp.send_message(message("alice@example.com"))
    (got,) = plain.to("alice@example.com")
    assert got["Subject"] == "制品晋级待您审批"
    assert got["Text"].strip() == "plain text body"
    assert "<b>body</b>" in got["HTML"]


@pytest.mark.parametrize(("code", "kind"), [(451, "temporary"), (550, "permanent")])
def test_chaos_makes_the_real_server_refuse_a_recipient(plain: Mailpit, code: int,
                                                        kind: str) -> None:
    plain.clear()
    plain.chaos(recipient=code)
    try:
        with smtplib.SMTP("127.0.0.1", plain.smtp_port, timeout=10) as smtp, \
                pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            smtp.send_message(message("bob@example.com"))
    finally:
        plain.chaos()
    ((answer, _),) = refused.value.recipients.values()
    assert answer == code, kind
    assert plain.messages() == []


def test_starttls_with_a_verified_certificate_and_auth(tmp_path: Path) -> None:
    with Mailpit(tmp_path, tls="starttls", auth=("notifier", "s3cret")) as server:
        assert server.ca_file is not None
        context = ssl.create_default_context(cafile=str(server.ca_file))
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
            with pytest.raises(smtplib.SMTPException):
                smtp.login("notifier", "s3cret")  # not before STARTTLS
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
            smtp.starttls(context=context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                smtp.login("notifier", "wrong")
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp:
            smtp.starttls(context=context)
            smtp.login("notifier", "s3cret")
            smtp.send_message(message("carol@example.com"))
        assert [m["Subject"] for m in server.to("carol@example.com")] == ["制品晋级待您审批"]
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as smtp, \
                pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=ssl.create_default_context())  # not trusted


def test_implicit_tls(tmp_path: Path) -> None:
    with Mailpit(tmp_path, tls="implicit") as server:
        assert server.ca_file is not None
        context = ssl.create_default_context(cafile=str(server.ca_file))
        with smtplib.SMTP_SSL("127.0.0.1", server.smtp_port, timeout=10,
                              context=context) as smtp:
            smtp.send_message(message("dave@example.com"))
        assert len(server.to("dave@example.com")) == 1
