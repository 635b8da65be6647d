"""Email's section of a NotificationTemplate (``spec.email``: ``subject``, ``html``,
``text``), rendered in the shared sandbox (HTML escaping on in ``html``), and the MIME
message made of it: multipart/alternative, the plain text first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from html.parser import HTMLParser
from typing import Any

from .shared import render as sandbox
from .shared.delivery import Message
from .shared.render import (
    Compiled,
    RenderError,
    html,
    plain,
    template_section,
    truncate_utf8,
)

FIELDS = ("subject", "text", "html")
MSGTYPE = "email"
# Bytes: a subject longer than a line is cut (mail clients show ~80 characters anyway);
# a body is at most 256 KiB (a notification, not a report).
SUBJECT_LIMIT = 255
BODY_LIMIT = 256 * 1024


@dataclass(frozen=True)
class EmailSpec:
    """``spec.email`` of a NotificationTemplate (sources, not yet rendered)."""

    name: str
    subject: str = ""
    text: str = ""
    html: str = ""

    def sources(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f)}


def parse_template(obj: Mapping[str, Any]) -> EmailSpec:
    """A NotificationTemplate object → ``EmailSpec``; unusable ones raise ``RenderError``."""
    section = template_section(obj, "email", FIELDS)
    name, values = section.name, section.fields
    if not values.get("subject"):
        raise RenderError(f"template {name!r}: spec.email has no subject")
    if not values.get("text") and not values.get("html"):
        raise RenderError(f"template {name!r}: spec.email has neither text nor html")
    return EmailSpec(name=name, **values)


def _as_is(text: str) -> str:
    return text


def escaper(field: str) -> Any:
    """How a value is escaped in ``field``: HTML in ``html``, no tag in the subject."""
    return {"html": html, "subject": plain}.get(field, _as_is)


class _Text(HTMLParser):
    """The text of an HTML part, for a template that gives only ``html``."""

    BLOCKS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def text_of(markup: str) -> str:
    parser = _Text()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def html_of(text: str) -> str:
    """An HTML part for a template that gives only ``text``: the lines as they are."""
    return f'<div style="white-space: pre-wrap">{html(text)}</div>'


def build_message(*, subject: str = "", text: str = "", html: str = "") -> Message:
    """The rendered fields fitted into an email: one-line subject, both parts."""
    subject = truncate_utf8(" ".join(subject.split()), SUBJECT_LIMIT)
    text, markup = text.strip(), html.strip()
    if not text and not markup:
        raise RenderError("the rendered message is empty")
    text = truncate_utf8(text or text_of(markup), BODY_LIMIT)
    markup = markup if markup and len(markup.encode()) <= BODY_LIMIT else html_of(text)
    return Message(MSGTYPE, (("subject", subject or text.splitlines()[0][:80]),
                             ("text", text), ("html", markup)))


class Renderer(sandbox.Renderer):
    """The shared sandbox, rendering ``spec.email`` into an email."""

    def render(self, compiled: Compiled, context: Mapping[str, Any]) -> Message:
        values = self.render_fields(
            compiled, context, escaper,
            lambda key, before: SUBJECT_LIMIT if key == "subject" else None)
        return build_message(**values)


def fallback_message(event: Mapping[str, Any], platform_url: str = "") -> Message:
    """The built-in message as an email. It cannot fail."""
    built_in = sandbox.fallback(event, platform_url)
    text = built_in.content + (f"\n\n{built_in.link}" if built_in.link else "")
    link = (f'<p><a href="{html(built_in.link)}">{html(built_in.link)}</a></p>'
            if built_in.link else "")
    markup = "".join(f"<p>{html(line)}</p>" for line in built_in.content.splitlines()
                     if line.strip()) + link
    return build_message(subject=built_in.title, text=text, html=markup)


_DOMAIN = re.compile(r"@([^@>]+)>?$")


def mime(message: Message, sender: str, recipient: str) -> EmailMessage:
    """The email one recipient gets (each is sent alone: nobody sees the others)."""
    mail = EmailMessage()
    mail["Subject"] = message.get("subject")
    mail["From"] = sender
    mail["To"] = recipient
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    domain = _DOMAIN.search(sender)
    mail["Message-ID"] = make_msgid(domain=domain.group(1) if domain else None)
    # RFC 3834: no auto-replies (out of office) to a notification.
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.get("text"))
    mail.add_alternative(message.get("html"), subtype="html")
    return mail
