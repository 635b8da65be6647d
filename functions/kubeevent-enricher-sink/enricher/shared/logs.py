"""One JSON object per line, secrets redacted.

``log()`` is the one way functions write logs; ``configure()`` routes the
standard ``logging`` records of libraries (kubernetes, urllib3, werkzeug)
through the same formatter so nothing bypasses redaction.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import traceback
from typing import Any, TextIO

from . import times, tracing

REDACTED = "***"
_SECRET_KEY = re.compile(
    r"secret|token|password|passwd|authorization|credential|api[-_]?key", re.IGNORECASE
)
_SECRET_IN_TEXT = re.compile(
    r"(?i)((?:access_token|corpsecret|secret|token|password)=)[^&\s\"']+"
    r"|(bearer\s+)[A-Za-z0-9._~+/=-]+"
)
_secrets: set[str] = set()
_lock = threading.Lock()
_stream: TextIO | None = None


def register_secret(value: str | None) -> None:
    """Make every later log line and error reason hide ``value``."""
    if value and len(value) >= 4:
        with _lock:
            _secrets.add(value)


def redact_text(text: str) -> str:
    text = _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def set_stream(stream: TextIO | None) -> None:
    """Where lines go (default: stdout at call time). For tests and tools."""
    global _stream
    _stream = stream


def log(severity: str, message: str, **fields: Any) -> None:
    record: dict[str, Any] = {
        "time": times.now_text(),
        "severity": severity.upper(),
        "message": redact_text(str(message)),
    }
    trace = tracing.current()
    if trace is not None:
        record["trace_id"] = trace.trace_id
    for key, value in fields.items():
        if value is not None:
            record[key] = redact(value, key)
    line = json.dumps(record, ensure_ascii=False, default=str)
    stream = _stream or sys.stdout
    with _lock:
        stream.write(line + "\n")
        stream.flush()


def debug(message: str, **fields: Any) -> None:
    log("DEBUG", message, **fields)


def info(message: str, **fields: Any) -> None:
    log("INFO", message, **fields)


def warning(message: str, **fields: Any) -> None:
    log("WARNING", message, **fields)


def error(message: str, **fields: Any) -> None:
    log("ERROR", message, **fields)


class _JsonHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exception"] = "".join(traceback.format_exception(*record.exc_info))
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format string must not kill logging
            message = str(record.msg)
        log(record.levelname, message, **fields)


def configure(level: int = logging.INFO) -> None:
    """Send the standard ``logging`` tree through ``log()`` (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(h, _JsonHandler) for h in root.handlers):
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(_JsonHandler())
    root.setLevel(level)
    for noisy in ("urllib3", "kubernetes", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
