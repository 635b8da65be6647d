"""Which template makes a WeCom message (``shared/templates.py``, with ``spec.corpwechat``
and the built-in text message as the channel's part)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .render import Renderer, fallback_message, parse_template
from .shared import templates as shared_templates
from .shared.delivery import Message
from .shared.templates import (
    BUILTIN,
    CONFIG_MAP,
    MAPPING_KEY,
    Lookup,
    MappingProblem,
    Selected,
    parse_mapping,
    select_template,
)

__all__ = ["BUILTIN", "CONFIG_MAP", "MAPPING_KEY", "Lookup", "MappingProblem", "Selected",
           "TemplateStore", "message_for", "parse_mapping", "select_template"]


class TemplateStore(shared_templates.TemplateStore):
    """The shared store, reading ``spec.corpwechat`` of each template."""

    def __init__(self, read_config: Callable[[], Mapping[str, str] | None],
                 read_template: Callable[[str], dict[str, Any] | None], **options: Any
                 ) -> None:
        super().__init__(read_config, read_template, parse=parse_template, **options)


def message_for(selected: Selected, renderer: Renderer, event: Mapping[str, Any],
                subscriber: Mapping[str, Any] | None, platform_url: str
                ) -> tuple[Message, str, str | None]:
    """The WeCom message for one subscriber (``shared.templates.message_for``)."""
    return shared_templates.message_for(selected, renderer, event, subscriber, platform_url,
                                        fallback_message)
