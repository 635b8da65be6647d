"""Lint findings, and printing them for a terminal or as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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


def print_json(payload: Any, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(payload, ensure_ascii=False, indent=2, default=str) + "\n")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def print_findings(findings: Sequence[Finding], summary: str,
                   stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    for finding in findings:
        out.write(finding.line() + "\n")
    out.write(summary + "\n")
