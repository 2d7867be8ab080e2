"""Function logs as CloudWatch Logs keeps them: groups of streams of timestamped events.

The runner appends each invocation's lines (START, the handler's output, END, REPORT) to the
stream of the environment that ran it, in the function's group `/aws/lambda/NAME`; the Logs
API (`sluice.control.services.logs`) reads them back. A stream is one JSON-lines file, so
appending never rewrites what is there and a restart finds everything again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from sluice.functions.spec import LogLine


@dataclass(frozen=True, slots=True)
class LogEvent:
    timestamp: int  # epoch milliseconds
    ingestion_time: int
    message: str


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    created: int  # epoch milliseconds
    first_event: int
    last_event: int
    stored_bytes: int


class LogArchive:
    """Groups and streams under `root`, one directory and one file each (names escaped)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def append(self, group: str, stream: str, lines: Sequence[LogLine]) -> None:
        """Add one event per line, at the line's own time."""
        path = self._stream_path(group, stream)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            for when, text in lines:
                out.write(json.dumps([int(when * 1000), text]) + "\n")

    def groups(self) -> list[tuple[str, int]]:
        """(name, creation time in ms) of every group, by name."""
        if not self.root.is_dir():
            return []
        found = [(unquote(p.name), int(p.stat().st_ctime * 1000)) for p in self.root.iterdir()]
        return sorted(found)

    def has_group(self, group: str) -> bool:
        return self._group_path(group).is_dir()

    def streams(self, group: str) -> list[StreamInfo]:
        found = []
        for path in sorted(self._group_path(group).glob("*.jsonl")):
            events = self._read(path)
            first = events[0].timestamp if events else 0
            last = events[-1].timestamp if events else 0
            name = unquote(path.name.removesuffix(".jsonl"))
            created = int(path.stat().st_ctime * 1000)
            found.append(StreamInfo(name, min(created, first or created), first, last,
                                    path.stat().st_size))  # fmt: skip
        return found

    def events(self, group: str, stream: str) -> list[LogEvent]:
        path = self._stream_path(group, stream)
        return self._read(path) if path.exists() else []

    def _read(self, path: Path) -> list[LogEvent]:
        events = []
        for line in path.read_text(encoding="utf-8").splitlines():
            stamp, message = json.loads(line)
            events.append(LogEvent(int(stamp), int(stamp), str(message)))
        return events

    def _group_path(self, group: str) -> Path:
        return self.root / quote(group, safe="")

    def _stream_path(self, group: str, stream: str) -> Path:
        return self._group_path(group) / f"{quote(stream, safe='')}.jsonl"
