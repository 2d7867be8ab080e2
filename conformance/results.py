"""What a run recorded: per test an outcome, and the comparison of a run with the direct run.

The driver appends JSON records (see conformance/driver.py); a run may have several
driver processes (one per restart after a stuck test), each writing a `planned` list
first. A test with a `start` and no `end` was running when the run's deadline killed
the driver: it counts as a timeout. A planned test with neither did not run.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUTCOMES = ("pass", "fail", "error", "skip", "timeout", "not run")
# What counts against Sluice; a test the run's deadline left out is counted, not listed.
BROKEN = frozenset({"fail", "error", "timeout"})


@dataclass
class TestRecord:
    """One test's outcome in one run."""

    outcome: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Records:
    """Everything one run's results file says."""

    planned: list[str] = field(default_factory=list)
    ended: dict[str, TestRecord] = field(default_factory=dict)
    running: str | None = None  # started, not ended (the last such test)
    fixture_errors: list[tuple[str, str]] = field(default_factory=list)

    def _add(self, record: dict[str, Any]) -> None:
        event, test = record.get("event"), str(record.get("test", ""))
        if event == "planned":
            self.planned = [str(t) for t in record["tests"]]
        elif event == "start":
            self.running = test
        elif event == "end":
            outcome, detail = str(record["outcome"]), str(record.get("detail", ""))
            self.ended.setdefault(test, TestRecord(outcome, detail, float(record["seconds"])))
            if self.running == test:
                self.running = None
        elif event == "fixture-error":
            self.fixture_errors.append((test, str(record.get("detail", ""))))

    @property
    def complete(self) -> bool:
        return bool(self.planned) and all(t in self.ended for t in self.planned)

    def outcomes(self) -> dict[str, TestRecord]:
        """Every planned test's record: a test still running timed out, others did not run."""
        result: dict[str, TestRecord] = {}
        for test in self.planned:
            if test in self.ended:
                result[test] = self.ended[test]
            elif test == self.running:
                result[test] = TestRecord("timeout", "still running at the run's deadline")
            else:
                result[test] = TestRecord("not run", "the run ended before it")
        return result


def read_records(path: Path) -> Records:
    """Parse a results file (a missing file: no records); a torn last line is ignored."""
    records = Records()
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the driver was killed while writing it
        records._add(record)
    return records


def count(outcomes: dict[str, TestRecord]) -> Counter[str]:
    """How many tests had each outcome."""
    return Counter(record.outcome for record in outcomes.values())


@dataclass(frozen=True)
class Difference:
    """A test whose outcome through Sluice differs from the direct run's."""

    test: str
    direct: str
    proxied: str
    detail: str


def regressions(direct: dict[str, TestRecord], proxied: dict[str, TestRecord]) -> list[Difference]:
    """Tests that pass directly and fail, error or time out through Sluice."""
    found = []
    for test, record in sorted(proxied.items()):
        base = direct.get(test)
        if base is not None and base.outcome == "pass" and record.outcome in BROKEN:
            found.append(Difference(test, base.outcome, record.outcome, record.detail))
    return found


def improvements(direct: dict[str, TestRecord], proxied: dict[str, TestRecord]) -> list[Difference]:
    """Tests that fail directly but pass through Sluice (a flaky test, or a difference)."""
    found = []
    for test, record in sorted(proxied.items()):
        base = direct.get(test)
        if base is not None and base.outcome in BROKEN and record.outcome == "pass":
            found.append(Difference(test, base.outcome, record.outcome, base.detail))
    return found


def last_line(detail: str, width: int = 160) -> str:
    """The most telling line of a failure: its last non-empty line, shortened."""
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    return text if len(text) <= width else text[: width - 1] + "…"
