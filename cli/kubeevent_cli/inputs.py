"""What the documents are: subscriptions, templates, katanomi-config; and their sources."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from . import bridge
from .errors import UserError
from .yamlio import Document, Position, content_position, load_all, loads

SUBSCRIPTION = "ClusterSubscription"
TEMPLATE = "NotificationTemplate"
CONFIG_MAP = "ConfigMap"
KATANOMI_GROUP = "core.katanomi.dev"
KATANOMI_VERSION = "v1alpha1"
KATANOMI_API_VERSION = f"{KATANOMI_GROUP}/{KATANOMI_VERSION}"
MAPPING_KEY = bridge.templates.MAPPING_KEY
CONFIG_NAME = bridge.templates.CONFIG_MAP
DEFAULT_CONFIG = bridge.MANIFESTS / "base" / "katanomi-config.yaml"
_PLATFORM_URL = re.compile(r"\$(?:\{PLATFORM_URL\}|PLATFORM_URL(?![A-Za-z0-9_]))")
KNOWN = f"{SUBSCRIPTION}, {TEMPLATE}, and the {CONFIG_NAME} ConfigMap (or its data patch)"


def role(doc: Document) -> str:
    """``subscription``, ``template``, ``config``, ``configmap`` (another ConfigMap),
    ``crd`` (a kind's schema, for the filters' paths), ``nokind``, ``notmapping`` or
    ``unknown``."""
    if not isinstance(doc.data, dict):
        return "notmapping"
    kind = doc.data.get("kind")
    if kind == SUBSCRIPTION:
        return "subscription"
    if kind == TEMPLATE:
        return "template"
    if kind == CONFIG_MAP:
        data = doc.data.get("data")
        if doc.name == CONFIG_NAME or (isinstance(data, dict) and MAPPING_KEY in data):
            return "config"
        return "configmap"
    if kind == "CustomResourceDefinition":
        return "crd"
    if kind is None:
        # The seed's `kubectl patch configmap katanomi-config --patch-file` shape.
        if isinstance(doc.data.get("data"), dict) and set(doc.data) <= {"data", "metadata"}:
            return "config"
        return "nokind"
    return "unknown"


def describe_unknown(doc: Document) -> str:
    what = role(doc)
    if what == "notmapping":
        return f"{doc.label}: a document must be a mapping, found {type(doc.data).__name__}"
    if what == "nokind":
        return f"{doc.label}: no kind (expected {KNOWN})"
    return f"{doc.label}: unknown kind {doc.kind!r} (expected {KNOWN})"


def platform_url(option: str | None) -> str:
    value = option if option is not None else os.environ.get("PLATFORM_URL", "")
    return value.strip().rstrip("/")


def substitute(value: Any, url: str) -> Any:
    """``$PLATFORM_URL`` / ``${PLATFORM_URL}`` replaced in every text of ``value``."""
    if isinstance(value, str):
        return _PLATFORM_URL.sub(lambda _: url, value)
    if isinstance(value, dict):
        return {k: substitute(v, url) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, url) for v in value]
    return value


def prepare_template(doc: Document, url: str) -> Document:
    """The template as ``envsubst | kubectl apply`` would create it (same positions)."""
    if isinstance(doc.data, dict) and _uses_platform_url(doc.data):
        doc.data = substitute(doc.data, url)
    return doc


def _uses_platform_url(value: Any) -> bool:
    return bool(_PLATFORM_URL.search(json.dumps(value, default=str)))


# ------------------------------------------------------------------------ config


@dataclass
class Config:
    """katanomi-config: where it came from, its data, and the event type mapping."""

    source: str
    data: dict[str, str] | None
    doc: Document | None = None
    warnings: list[tuple[str, Position | None]] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def types_for(self, template: str) -> list[str]:
        return [t for t, name in self.mapping.items() if name == template]


def config_from(doc: Document) -> Config:
    data = doc.get("data")
    if data is not None and not isinstance(data, dict):
        raise UserError(f"{doc.position}: {doc.label}: data must be a mapping")
    values = {str(k): v if isinstance(v, str) else json.dumps(v)
              for k, v in (data or {}).items()}
    config = Config(str(doc.position.source), values, doc)
    config.mapping, problems = bridge.templates.parse_mapping(values.get(MAPPING_KEY))
    config.warnings = [(p.message, mapping_position(doc, p.entry)) for p in problems]
    if MAPPING_KEY not in values:
        config.warnings.append(
            (f"{CONFIG_NAME} has no {MAPPING_KEY}: every notification gets the built-in "
             "message", doc.at("data")))
    return config


def load_config(path: str) -> Config:
    """``--config FILE``: exactly one ConfigMap (or the patch shape) in the file."""
    docs = list(load_all([path]))
    configs = [d for d in docs if role(d) == "config"]
    if len(configs) != 1:
        found = ", ".join(d.label for d in docs) or "no document"
        raise UserError(f"{path}: expected one {CONFIG_NAME} ConfigMap or its data patch, "
                        f"found {found}")
    return config_from(configs[0])


def default_config() -> Config | None:
    if not DEFAULT_CONFIG.is_file():
        return None
    source = os.path.relpath(DEFAULT_CONFIG)
    if source.startswith(".."):
        source = str(DEFAULT_CONFIG)
    docs = loads(DEFAULT_CONFIG.read_text(encoding="utf-8"), source)
    configs = [d for d in docs if role(d) == "config"]
    return config_from(configs[0]) if configs else None


def mapping_position(doc: Document, entry: int | None) -> Position:
    """Where in ``notification.templates`` its ``entry``-th list entry is written."""
    path = ("data", MAPPING_KEY)
    text = doc.get(*path)
    if entry is None or not isinstance(text, str):
        return doc.at(*path)
    try:
        inner = loads(text, doc.source)
    except UserError:
        return doc.at(*path)
    if not inner:
        return doc.at(*path)
    where = inner[0].at(entry)
    return content_position(doc, path, where.line, where.column)


# --------------------------------------------------------------------- templates


@dataclass
class TemplateSet:
    """NotificationTemplates by name, as the notifier would read them."""

    docs: dict[str, Document] = field(default_factory=dict)

    def add(self, doc: Document) -> Document | None:
        """Add ``doc``; the previous document of that name when it replaces one."""
        previous = self.docs.get(doc.name)
        self.docs[doc.name] = doc
        return previous

    def read(self, name: str) -> dict[str, Any] | None:
        doc = self.docs.get(name)
        return doc.data if doc is not None and isinstance(doc.data, dict) else None

    def store(self, config: Config | None, channel: str = "corpwechat") -> Any:
        """The notifiers' TemplateStore over these documents and ``config``, reading
        ``channel``'s section."""
        data = None if config is None else config.data

        def read_config() -> Mapping[str, str] | None:
            return data

        kit = bridge.CHANNELS[channel]
        return kit.templates.TemplateStore(read_config, self.read, parse=kit.parse, ttl=0.0)


def gather(paths: Iterable[str], accept: Callable[[Document], bool]) -> list[Document]:
    """Documents of ``paths`` that ``accept``; unknown kinds raise ``UserError``."""
    found: list[Document] = []
    for doc in load_all(paths):
        if role(doc) in ("subscription", "template", "config", "configmap"):
            if accept(doc):
                found.append(doc)
            continue
        raise UserError(f"{doc.position}: {describe_unknown(doc)}")
    return found
