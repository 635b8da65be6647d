"""Lint findings, and printing them for a terminal or as JSON."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from .yamlio import Position

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    severity: str
    check: str
    message: str
    position: Position | None = None
    document: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "check": self.check,
                               "message": self.message}
        if self.position is not None:
            out.update(self.position.as_json())
        if self.document:
            out["document"] = self.document
        return out

    def line(self) -> str:
        where = f"{self.position}: " if self.position is not None else ""
        doc = f"{self.document}: " if self.document else ""
        return f"{where}{self.severity}: [{self.check}] {doc}{self.message}"


def sort_key(finding: Finding) -> tuple[str, int, int, str]:
    pos = finding.position
    return (pos.source if pos else "", pos.line if pos else 0, pos.column if pos else 0,
            finding.message)


# What a terminal would act on rather than show: control characters (ESC starts a
# sequence that can erase a line or make a hyperlink), bidi overrides and isolates, and
# other invisible format characters.
_ACTIVE = re.compile("[^\n\t -~\u00a0-\U0010ffff]|[\u0080-\u009f\u061c\u200b-\u200f"
                     "\u2028-\u202e\u2060-\u2069\ufeff]")


def visible(text: str) -> str:
    """``text`` with everything a terminal would act on written out (``\\x1b``,
    ``\\u202e``), so what is printed is what the object says, not what it does."""
    def shown(match: re.Match[str]) -> str:
        char = match.group(0)
        return f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"

    return _ACTIVE.sub(shown, text)


class VisibleStream:
    """A text stream that writes everything through ``visible``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        return self.stream.write(visible(text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextmanager
def visible_output() -> Iterator[None]:
    """Everything the CLI prints, on stdout and stderr, made ``visible`` (the Event
    texts, names and reasons it shows are written by whoever created them)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = VisibleStream(sys.stdout), VisibleStream(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def print_json(payload: Any, stream: TextIO | None = None) -> None:
    """JSON with every character a terminal would act on as a ``\\u`` escape (inside
    strings, where JSON allows it; the indentation's newlines are the only raw ones)."""
    out = stream or sys.stdout
    text = json.dumps(payload, ensure_ascii=False, indent=2, default=str)
    text = _ACTIVE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
    out.write(text + "\n")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def print_findings(findings: Sequence[Finding], summary: str,
                   stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for finding in findings:
        out.write(finding.line() + "\n")
    out.write(summary + "\n")
