"""Server logging: the request id of the RPC being served (a ContextVar the call observer sets,
so a line logged anywhere below a servicer carries it too) and two formats, `text` for people
at a terminal and `json` (JSON Lines: one object per line) for log collectors."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

# The id of the RPC this code runs for; "" outside any RPC (start-up, background scans).
REQUEST_ID: ContextVar[str] = ContextVar("maxact_request_id", default="")

LOG_FORMATS = ("text", "json")

# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (on the handler, so every logger's
    records get it, including third-party ones)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, request_id
    when there is one, every `extra=` field, and the traceback as a string (never a newline
    outside a JSON string, so each record stays one line)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in doc and value not in ("", None):
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    """`time logger [request id] message key=value ...`: the `extra=` fields stay visible."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        request_id = extras.pop("request_id", "")
        fields = " ".join(f"{k}={v}" for k, v in extras.items())
        head, _, rest = line.partition("\n")  # a traceback keeps its own lines
        head = f"{head} [{request_id}]" if request_id else head
        return f"{head} {fields}".rstrip() + (f"\n{rest}" if rest else "")


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """Route every logger of the process to stderr in `log_format` (replacing earlier set-up)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {log_format!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
