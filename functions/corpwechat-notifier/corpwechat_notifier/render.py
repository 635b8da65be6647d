"""WeCom's section of a NotificationTemplate (``spec.corpwechat``) and WeCom's messages:
how each field is escaped (the textcard description's HTML subset, markdown's syntax, a
text message's tags, a URL), WeCom's size limits, and the built-in message fitted to them.

``template_card`` is WeCom's text notice card (doc 90236) with an action menu, the card
WeCom lets an app change after it was sent (doc 94945): what an approver gets, so that it
can say later what was decided (``decided_card``, or ``follow_up`` once it cannot be
changed any more).
The sandbox, the escaping of values and the fitting of fields to a limit are
``shared/render.py``'s, as for every channel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html import unescape
from typing import Any

from .shared import render as sandbox
from .shared.delivery import Message
from .shared.render import (
    CUT_MARK,
    Compiled,
    RenderError,
    clean,
    html,
    plain,
    template_context,
    template_section,
    truncate_utf8,
    url,
    utf8_len,
)

__all__ = [
    "CONTENT_LIMIT", "CUT_MARK", "DESCRIPTION_LIMIT", "TITLE_LIMIT", "URL_LIMIT", "Compiled",
    "Message", "RenderError", "Renderer", "TemplateSpec", "build_message", "card_section",
    "clean", "decided_card", "digest", "escaper", "fallback_message", "field_limit",
    "follow_up",
    "parse_template", "reminder", "robot_message", "summary", "template_context",
    "truncate_utf8", "utf8_len",
]

MSGTYPES = ("text", "markdown", "textcard", "template_card")
ON_DECISION = ("update", "recall")
# A message's own mark (not sent): take it back once the approval it asks for is decided.
RECALL_MARK = "ondecision"
# A card that asks to decide, with Approve / Deny buttons (corpwechat-callback answers
# them): a template's ``buttons: approval`` where the notifier runs with
# CORPWECHAT_APPROVAL_BUTTONS on. Like RECALL_MARK, ours: never sent to WeCom.
BUTTONS_MARK = "buttons"
MARKS = frozenset({RECALL_MARK, BUTTONS_MARK})
APPROVAL_BUTTONS = [{"text": "批准 Approve", "style": 1, "key": "approve"},
                    {"text": "拒绝 Deny", "style": 2, "key": "deny"}]
FIELDS = ("title", "content", "url", "btntxt")
# WeCom message/send limits, in UTF-8 bytes (btntxt: characters).
CONTENT_LIMIT = 2048
TITLE_LIMIT = 128
DESCRIPTION_LIMIT = 512
URL_LIMIT = 2048
BTNTXT_LIMIT = 4
# A text notice card: WeCom shows about 26 characters of the title and 112 of the text
# under it and cuts the rest; these bytes keep every character it can show.
CARD_TITLE_LIMIT = 128
CARD_TEXT_LIMIT = 512
# The card's action menu (required for a card that can be changed later).
CARD_MENU = {"desc": "kubeevent", "action_list": [{"text": "查看详情 View details",
                                                     "key": "kubeevent-view"}]}


_MARKDOWN = str.maketrans({"<": "＜", ">": "＞", "[": "［", "]": "］", "*": "＊", "`": "ˋ",
                           "#": "＃", "_": "＿", "~": "～", "|": "｜"})


def _markdown(text: str) -> str:
    """For WeCom markdown: no link, emphasis, code, heading, quote or ``<font>``."""
    return text.translate(_MARKDOWN)


def escaper(msgtype: str, field: str) -> Callable[[str], str]:
    """How a value is escaped in ``field`` of a ``msgtype`` message."""
    if field == "url":
        return url
    if msgtype == "markdown":
        return _markdown
    if msgtype == "textcard" and field == "content":
        return html
    return plain


@dataclass(frozen=True)
class TemplateSpec:
    """``spec.corpwechat`` of a NotificationTemplate (sources, not yet rendered)."""

    name: str
    msgtype: str
    title: str = ""
    content: str = ""
    url: str = ""
    btntxt: str = ""
    # What becomes of an approver's message once it is decided: ``update`` (the card is
    # changed in place, else a short follow-up) or ``recall`` (taken back within WeCom's
    # 24 hours, and the short follow-up says how it ended).
    on_decision: str = "update"
    # ``approval``: a card with Approve / Deny buttons (when the notifier offers them).
    buttons: str = ""

    def sources(self) -> dict[str, str]:
        return {f: getattr(self, f) for f in FIELDS if getattr(self, f)}


def parse_template(obj: Mapping[str, Any]) -> TemplateSpec:
    """A NotificationTemplate object → ``TemplateSpec``; unusable ones raise ``RenderError``."""
    section = template_section(obj, "corpwechat", FIELDS)
    name, values = section.name, section.fields
    msgtype = section.raw.get("msgtype") or "text"
    if msgtype not in MSGTYPES:
        raise RenderError(f"template {name!r}: msgtype {msgtype!r} is not one of "
                          f"{', '.join(MSGTYPES)}")
    if not values.get("content") and not values.get("title"):
        raise RenderError(f"template {name!r}: spec.corpwechat has neither title nor content")
    on_decision = section.raw.get("onDecision") or "update"
    if on_decision not in ON_DECISION:
        raise RenderError(f"template {name!r}: onDecision {on_decision!r} is not one of "
                          f"{', '.join(ON_DECISION)}")
    buttons = section.raw.get("buttons") or ""
    if buttons not in ("", "approval"):
        raise RenderError(f"template {name!r}: buttons {buttons!r} is not approval")
    if buttons and msgtype != "template_card":
        raise RenderError(f"template {name!r}: buttons need msgtype template_card")
    return TemplateSpec(name=name, msgtype=msgtype, on_decision=str(on_decision),
                        buttons=str(buttons), **values)


def _with_suffix(body: str, suffix: str, limit: int) -> str:
    """``body`` cut to fit ``limit`` with ``suffix`` (a link) kept intact after it."""
    if suffix and utf8_len(suffix) <= limit // 2:
        return truncate_utf8(body, limit - utf8_len(suffix)) + suffix
    return truncate_utf8(body + suffix, limit)


def build_message(msgtype: str, *, title: str = "", content: str = "", url: str = "",
                  btntxt: str = "") -> Message:
    """Fit rendered fields into a WeCom message of ``msgtype`` within the byte limits.

    A textcard or template_card without a url becomes a text message (nothing is
    dropped); text and markdown carry the title above and the url below the content.
    """
    title, content, url, btntxt = (v.strip() for v in (title, content, url, btntxt))
    if not title and not content:
        raise RenderError("the rendered message is empty")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", url)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        url = ""  # javascript:, data:, …: no link rather than that one
    if msgtype == "template_card" and url:
        lines = [line.strip() for line in content.splitlines() if line.strip()]
        return Message("template_card", (
            ("title", truncate_utf8(title or lines[0], CARD_TITLE_LIMIT)),
            ("content", truncate_utf8("\n".join(lines if title else lines[1:]),
                                      CARD_TEXT_LIMIT)),
            ("url", truncate_utf8(url, URL_LIMIT))))
    if msgtype == "textcard" and url:
        fields = [
            ("title", truncate_utf8(title or content.splitlines()[0], TITLE_LIMIT)),
            ("description", truncate_utf8(content or title, DESCRIPTION_LIMIT)),
            ("url", truncate_utf8(url, URL_LIMIT)),
        ]
        if btntxt:
            fields.append(("btntxt", btntxt[:BTNTXT_LIMIT]))
        return Message("textcard", tuple(fields))
    if msgtype == "markdown":
        body = "\n".join(part for part in (f"**{title}**" if title else "", content) if part)
        suffix = f"\n[查看详情 View details]({url})" if url and url not in body else ""
        return Message("markdown", (("content", _with_suffix(body, suffix, CONTENT_LIMIT)),))
    body = "\n".join(part for part in (title, content) if part)
    suffix = f"\n{url}" if url and url not in body else ""
    return Message("text", (("content", _with_suffix(body, suffix, CONTENT_LIMIT)),))


def field_limit(msgtype: str, key: str, rendered: Mapping[str, str]) -> int:
    """The bytes a rendered field may take in a ``msgtype`` message (``rendered``: the
    fields rendered before it)."""
    if msgtype == "textcard":
        return {"title": TITLE_LIMIT, "content": DESCRIPTION_LIMIT}.get(key, URL_LIMIT)
    if msgtype == "template_card":
        return {"title": CARD_TITLE_LIMIT, "content": CARD_TEXT_LIMIT}.get(key, URL_LIMIT)
    if key != "content":
        return CONTENT_LIMIT // 4 if key == "title" else URL_LIMIT
    around = sum(utf8_len(rendered.get(k, "")) for k in ("title", "url")) + 32
    return max(CONTENT_LIMIT - around, CONTENT_LIMIT // 2)


class Renderer(sandbox.Renderer):
    """The shared sandbox, rendering ``spec.corpwechat`` into a WeCom message
    (``buttons``: whether cards that ask to decide carry Approve / Deny)."""

    buttons = False

    def render(self, compiled: Compiled, context: Mapping[str, Any]) -> Message:
        msgtype = compiled.spec.msgtype
        values = self.render_fields(
            compiled, context, lambda key: escaper(msgtype, key),
            lambda key, before: None if key == "url" else field_limit(msgtype, key, before),
            # The content last: in text and markdown it shares its room with title and link.
            last=("content",))
        message = build_message(msgtype, **values)
        marks: tuple[tuple[str, str], ...] = ()
        if compiled.spec.on_decision == "recall":
            marks += ((RECALL_MARK, "recall"),)
        if self.buttons and compiled.spec.buttons and message.msgtype == "template_card":
            marks += ((BUTTONS_MARK, compiled.spec.buttons),)
        return Message(message.msgtype, (*message.fields, *marks)) if marks else message


ROBOT_MARKDOWN_LIMIT = 4096  # bytes: a group chat robot's markdown content
_TAG = re.compile(r"<[^>]*>")


def robot_message(message: Message) -> Message:
    """``message`` as a group chat's robot takes it: text and markdown as they are; a
    textcard (robots have none) as markdown: the title in bold, the description's text,
    the link."""
    if message.msgtype in ("text", "markdown"):
        return Message(message.msgtype, tuple(wire_section(message).items()))
    fields = message.section()
    lines = [f"**{_markdown(fields.get('title', ''))}**"] if fields.get("title") else []
    text = (fields.get("content", "") if message.msgtype == "template_card" else
            _TAG.sub("\n", fields.get("description", "")).replace("\n\n", "\n"))
    lines += [_markdown(unescape(line)) for line in text.splitlines() if line.strip()]
    if fields.get("url"):
        lines.append(f"[查看详情 View details]({fields['url']})")
    return Message("markdown", (("content", truncate_utf8("\n".join(lines),
                                                          ROBOT_MARKDOWN_LIMIT)),))


def fallback_message(event: Mapping[str, Any], platform_url: str = "") -> Message:
    """The built-in message as a WeCom text message. It cannot fail."""
    built_in = sandbox.fallback(event, platform_url)
    return build_message("text", title=built_in.title, content=built_in.content,
                         url=built_in.link)


# ---------------------------------------------------------------------- cards over time


def wire_section(message: Message) -> dict[str, str]:
    """The message's section as WeCom takes it (without our own marks)."""
    return {k: v for k, v in message.fields if k not in MARKS}


def recalled_once_decided(message: Message) -> bool:
    return message.get(RECALL_MARK) == "recall"


def card_section(message: Message, task_id: str) -> dict[str, Any]:
    """The ``template_card`` of a message/send: a text notice card that WeCom lets us
    change later (it has an action menu, so it needs our ``task_id``)."""
    fields = message.section()
    card: dict[str, Any] = {
        "card_type": "text_notice",
        "main_title": {"title": fields.get("title", "")},
        "card_action": {"type": 1, "url": fields.get("url", "")},
        "action_menu": CARD_MENU,
        "task_id": task_id,
    }
    if message.get(BUTTONS_MARK) == "approval":  # asks to decide: Approve / Deny on it
        del card["action_menu"]
        card.update(card_type="button_interaction", button_list=APPROVAL_BUTTONS)
    if fields.get("content"):
        card["sub_title_text"] = fields["content"]
    return card


def summary(message: Message) -> tuple[str, str]:
    """(a title line, the link) of a sent message, kept to say later what it was about."""
    fields = message.section()
    title = fields.get("title") or next(
        (line.strip() for line in fields.get("content", "").splitlines() if line.strip()), "")
    return truncate_utf8(title, CARD_TITLE_LIMIT), fields.get("url", "")


def decided_card(title: str, outcome: str, url: str) -> dict[str, Any]:
    """The card an approver's pending card becomes once it is decided: the outcome as its
    title, what it was about under it, the same link (every card has one); no menu
    (nothing left to do)."""
    return {
        "card_type": "text_notice",
        "main_title": {"title": truncate_utf8(outcome, CARD_TITLE_LIMIT)},
        "sub_title_text": truncate_utf8(title, CARD_TEXT_LIMIT),
        "card_action": {"type": 1, "url": url},
    }


def follow_up(title: str, outcome: str, url: str) -> Message:
    """What an approver gets when their card cannot be changed (a textcard, a card sent
    more than 72 hours ago, a refused update): one short text."""
    return build_message("text", title=outcome, content=title, url=url)


def reminder(title: str, text: str, url: str) -> Message:
    """A reminder to decide, as a text message with the link."""
    return build_message("text", title=text, content=title, url=url)


DIGEST_LINE_LIMIT = 200  # bytes of one message's line in a digest


def _about(message: Message) -> tuple[str, str, str]:
    """(title, the first line that says more, link) of a waiting message."""
    fields = message.section()
    title, url = summary(message)
    body = fields.get("content") or _TAG.sub("\n", fields.get("description", ""))
    detail = next((unescape(line).strip() for line in body.splitlines()
                   if line.strip() and unescape(line).strip() != title), "")
    return title, detail, url


def digest(messages: list[Message]) -> list[tuple[Message, list[int]]]:
    """Messages waiting for one member as markdown digests within WeCom's 2,048 bytes:
    a heading with their number (and their title, when they share one: "3 × 制品晋级待您
    审批"), then one linked line each, oldest first."""
    about = [_about(m) for m in messages]
    titles = {title for title, _, _ in about}
    shared = titles.pop() if len(titles) == 1 else ""

    def line(title: str, detail: str, link: str) -> str:
        text = detail if shared and detail else " — ".join(t for t in (title, detail) if t)
        text = _markdown(truncate_utf8(text, DIGEST_LINE_LIMIT))
        return f"- [{text}]({link})" if link else f"- {text}"

    heading_room = 96 + utf8_len(shared)
    parts: list[list[tuple[int, str]]] = [[]]
    for index, (title, detail, link) in enumerate(about):
        text = line(title, detail, link)
        used = sum(utf8_len(t) + 1 for _, t in parts[-1])
        if parts[-1] and heading_room + used + utf8_len(text) + 1 > CONTENT_LIMIT:
            parts.append([])
        parts[-1].append((index, text))
    out = []
    for part in parts:
        count = len(part)
        heading = (f"**{count} × {_markdown(shared)}**" if shared else
                   f"**{count} 条消息等您查看 / {count} messages for you**")
        content = "\n".join([heading, *(text for _, text in part)])
        out.append((Message("markdown", (("content", content),)), [i for i, _ in part]))
    return out
