"""Log setup: plain text or one JSON object per line, each line of bounded length.

What a client sends before it has logged in (a user name, a database name)
ends up in log lines, and a client may send 10,000 bytes of it. `clip` bounds
such a value where it is logged; `MAX_MESSAGE` bounds every message whatever
it holds, so no client can make the log grow faster than its connections do.
`Occasional` logs a burst of alike events (connections refused by a limit) as
one line, then one line per `interval` with how many happened since.
"""

from __future__ import annotations

import json
import logging
import sys

MAX_MESSAGE = 4000  # characters of one log message (a traceback comes on top)
MAX_NAME = 64  # characters of a client-given name in a log line


def clip(text: str, limit: int = MAX_NAME) -> str:
    """`text` as a log line shows it: printable, at most `limit` characters and a count."""
    shown = text[:limit]
    if not shown.isprintable():
        shown = repr(shown)[1:-1]  # control characters, lone surrogates: escaped
    return shown if len(text) <= limit else f"{shown}...({len(text)} characters)"


class _Bounded(logging.Filter):
    """Cuts a message longer than MAX_MESSAGE (its arguments formatted first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if len(text) > MAX_MESSAGE:
            record.msg = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} characters cut)"
            record.args = None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class Occasional:
    """One line for a burst of alike events: the first at once, then at most one per
    `interval` seconds for each key, saying how many happened in between."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self.logger = logger
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # key -> (logged at, events since)

    def note(self, key: str, now: float, text: str) -> None:
        logged_at, since = self._last.get(key, (-self.interval, 0))
        if now - logged_at < self.interval:
            self._last[key] = (logged_at, since + 1)
            return
        more = f" ({since} more since the last such line)" if since else ""
        self.logger.warning("%s%s", text, more)
        self._last[key] = (now, 0)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Bounded())
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
