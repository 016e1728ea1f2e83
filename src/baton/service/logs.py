"""Structured logs: one JSON object per line on stderr (``[log] format = "json"``, the default),
or readable text (``format = "text"``).

Each line has ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``msg``, and any ``extra={...}``
fields the caller gave (``request_id``, ``principal``, ``status``, ``ms`` on access lines). The
uvicorn loggers are routed here too, so a deployment has one log format.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from typing import Any

__all__ = ["JsonFormatter", "configure_logging", "redact"]

# Attributes every LogRecord has; anything else was passed with ``extra=``. (uvicorn adds a
# terminal-coloured copy of its message and a proxy of the socket: neither belongs in a log.)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
    "websocket",
}
#: Credentials never reach a log line (a WebSocket URL may carry ``?token=``).
_SECRET = re.compile(r"(token=)[^&\s\"']+")


def redact(text: str) -> str:
    return _SECRET.sub(r"\1***", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = (
                    value
                    if isinstance(value, str | int | float | bool | type(None))
                    else repr(value)
                )
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install one stderr handler on the root logger (replacing earlier ones) and route uvicorn's
    loggers to it; uvicorn's own access log is silenced (the service writes its own)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
