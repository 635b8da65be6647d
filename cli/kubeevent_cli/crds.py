"""Schema checks with the CustomResourceDefinitions the project ships (manifests/crds).

A document of a kind whose CRD is there is validated against that CRD's
``openAPIV3Schema`` for its version, as the API server would on ``kubectl apply``: the
schema's rules, and the fields the schema does not know (which the API server refuses
with kubectl's default strict validation, ``unknown field "spec.….filters"``, rather
than drop them silently).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import Draft4Validator

from . import bridge

CRD_DIR = bridge.MANIFESTS / "crds"


@dataclass(frozen=True)
class SchemaError:
    path: tuple[str | int, ...]
    message: str
    unknown: bool = False  # a field the schema does not declare (shown at its key)


@functools.cache
def schemas() -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    """(group, kind) → {version: openAPIV3Schema}."""
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    if not CRD_DIR.is_dir():
        return found
    for path in sorted(CRD_DIR.glob("*.y*ml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc.get("spec") or {}
            group = spec.get("group", "")
            kind = (spec.get("names") or {}).get("kind", "")
            for version in spec.get("versions") or []:
                schema = ((version or {}).get("schema") or {}).get("openAPIV3Schema")
                if isinstance(schema, dict) and version.get("served", True):
                    found.setdefault((group, kind), {})[str(version.get("name"))] = schema
    return found


def versions(group: str, kind: str) -> list[str]:
    return sorted(schemas().get((group, kind), {}))


def validate(api_version: str, kind: str, data: Any) -> Iterator[SchemaError]:
    """Errors of ``data`` against the shipped CRD (nothing when no CRD is shipped)."""
    group, _, version = api_version.rpartition("/")
    schema = schemas().get((group, kind), {}).get(version)
    if schema is None:
        return
    validator = Draft4Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        path = tuple(error.absolute_path)
        shown = _dotted(path) or "(document)"
        yield SchemaError(path, f"{shown}: {error.message}")
    for path in unknown_fields(schema, data):
        yield SchemaError(path, f'unknown field "{_dotted(path)}"', unknown=True)


# What every object has whatever its schema says (the API server checks metadata itself).
_OBJECT_FIELDS = frozenset({"apiVersion", "kind", "metadata"})


def unknown_fields(schema: Any, data: Any, path: tuple[str | int, ...] = ()
                   ) -> Iterator[tuple[str | int, ...]]:
    """The paths of fields in ``data`` that ``schema`` (a structural schema) does not
    declare: an object with ``properties`` and neither
    ``x-kubernetes-preserve-unknown-fields`` nor ``additionalProperties`` keeps no other
    field."""
    if not isinstance(schema, dict):
        return
    if isinstance(data, dict):
        properties = schema.get("properties") if isinstance(schema.get("properties"),
                                                             dict) else {}
        extra = schema.get("additionalProperties")
        keeps_unknown = schema.get("x-kubernetes-preserve-unknown-fields") is True
        for key, value in data.items():
            if not path and key in _OBJECT_FIELDS:
                continue
            if key in properties:
                yield from unknown_fields(properties[key], value, (*path, key))
            elif isinstance(extra, dict):
                yield from unknown_fields(extra, value, (*path, key))
            elif not keeps_unknown and extra is not True and (properties or "type" in schema):
                yield (*path, key)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from unknown_fields(schema.get("items"), item, (*path, index))


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
