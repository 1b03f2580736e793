"""Structured logging: JSON lines (or text) on stderr, request context from contextvars, secrets redacted."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# Fields attached to every log record made while they are set (request id, job id, RPC method, ...).
_context: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("convgen_log_context", default={})  # noqa: B039

REDACTED = "[REDACTED]"
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Adds fields to every log record made inside the block (and in tasks it starts)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        # An async generator closed by the garbage collector runs this in another context, where there is
        # nothing of ours to restore.
        with contextlib.suppress(ValueError):
            _context.reset(token)


class RedactingFilter(logging.Filter):
    """Replaces every configured secret in the formatted message and extra fields."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """The text with every secret replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
            for key, value in list(vars(record).items()):
                if key in _STANDARD_ATTRS:
                    continue
                if key == "context" and isinstance(value, dict):
                    # A copy: the dict belongs to the log context of the running code.
                    record.context = {k: self.redact(str(v)) for k, v in value.items()}
                elif isinstance(value, str):
                    setattr(record, key, self.redact(value))
                elif not isinstance(value, (int, float, bool, type(None))):
                    # The formatters print any other value with str(): redact that text.
                    setattr(record, key, self.redact(str(value)))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "context", {}))
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key != "context":
                entry[key] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the context fields appended."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        context = getattr(record, "context", {})
        if context:
            base += " " + " ".join(f"{k}={v}" for k, v in context.items())
        return base


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = _context.get()
        return True


def configure_logging(*, level: str = "INFO", fmt: str = "json", secrets: Iterable[str] = ()) -> RedactingFilter:
    """Sets up the root logger once per process; returns the redacting filter (tests use it)."""
    handler = logging.StreamHandler(sys.stderr)
    redactor = RedactingFilter(secrets)
    handler.addFilter(_ContextFilter())
    handler.addFilter(redactor)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that log request bodies or headers at DEBUG stay at WARNING.
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic", "botocore", "aiobotocore", "boto3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return redactor
