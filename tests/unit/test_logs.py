"""Log lines of bounded length, whatever a client sends; bursts as one line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from sluice.observe.logs import MAX_MESSAGE, Occasional, clip, setup_logging


def test_clip() -> None:
    assert clip("app") == "app"
    assert clip("u" * 100) == "u" * 64 + "...(100 characters)"
    assert clip("a\nb\udcff") == "a\\nb\\udcff"  # control characters and stray bytes escaped


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    setup_logging("info", "text")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    yield out
    root.handlers[:], root.level = saved, level


def test_every_message_is_cut(stream: io.StringIO) -> None:
    logging.getLogger("sluice.test").info("user=%s", "x" * 100_000)
    line = stream.getvalue().strip()
    assert len(line) < MAX_MESSAGE + 200
    assert line.endswith(f"({100_005 - MAX_MESSAGE} characters cut)")


def test_occasional_logs_a_burst_as_one_line(stream: io.StringIO) -> None:
    burst = Occasional(logging.getLogger("sluice.test"), interval=10.0)
    for i in range(1000):
        burst.note("max_logins", i / 100, "refusing new clients")
    burst.note("max_logins", 10.5, "refusing new clients")
    lines = stream.getvalue().strip().splitlines()
    assert len(lines) == 2
    assert lines[1].endswith("refusing new clients (999 more since the last such line)")
