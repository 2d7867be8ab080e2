"""Runs a client library's own unittest suite and writes one JSON line per test outcome.

Why a driver of our own: the three suites (asyncpg, psycopg2, mysql-connector-python)
are all `unittest` suites, each with its own runner; the harness needs the same
per-test record from all of them, and a run that always ends. This file is executed
by the suites' virtualenv (the pinned client versions), not by the project's, so it
imports nothing but the standard library.

Records (`--results`, appended, flushed after each line):
  {"event": "planned", "tests": [ids]}                        once per process
  {"event": "start", "test": id}                              before each test
  {"event": "end", "test": id, "outcome": ..., "seconds": s, "detail": text}
Outcomes: pass, fail, error, skip, timeout (xfail counts as pass, an unexpected
success as fail). A test whose class or module setup failed gets that error.

Bounded time: SIGALRM interrupts a test after `--test-timeout` seconds (it errors as
a timeout); a watchdog thread ends the process `--hard-grace` seconds later if the
test is stuck where signals are not looked at (inside C code), after writing its
timeout record. The harness then starts the driver again with `--done` naming
the tests already recorded, which are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import unittest
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, TextIO

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

HARD_TIMEOUT_EXIT = 75
_DETAIL_MAX = 4000
_FIXTURE_RE = re.compile(r"^(setUpClass|setUpModule|tearDownClass|tearDownModule) \((.+)\)$")


class TestTimeout(Exception):
    """Raised in the main thread by SIGALRM when a test runs too long."""


class Recorder:
    """Appends JSON records to the results file, one flushed line each, from any thread."""

    def __init__(self, path: str) -> None:
        self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


def iter_tests(suite: unittest.TestSuite | unittest.TestCase) -> Iterator[unittest.TestCase]:
    """Every test case in `suite`, depth first (the order unittest runs them)."""
    if isinstance(suite, unittest.TestSuite):
        for item in suite:
            yield from iter_tests(item)
    else:
        yield suite


def select(suite: unittest.TestSuite, wanted: Callable[[str], bool]) -> unittest.TestSuite:
    """A copy of `suite` with only the tests whose id is `wanted` (nesting kept)."""
    kept = unittest.TestSuite()
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            kept.addTest(select(item, wanted))
        elif wanted(item.id()):
            kept.addTest(item)
    return kept


def format_error(err: ExcInfo) -> str:
    """The traceback's last frames and the message, at most _DETAIL_MAX characters."""
    text = "".join(traceback.format_exception(*err)) if err[0] is not None else ""
    return text[-_DETAIL_MAX:]


class Watchdog:
    """Arms SIGALRM per test and ends the process when a test ignores it too long."""

    def __init__(self, recorder: Recorder, timeout: float, grace: float) -> None:
        self._recorder = recorder
        self._timeout = timeout
        self._grace = grace
        self._current: str | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        signal.signal(signal.SIGALRM, self._on_alarm)
        threading.Thread(target=self._watch, name="conformance-watchdog", daemon=True).start()

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        raise TestTimeout(f"test still running after {self._timeout:.0f} s (per-test timeout)")

    def arm(self, test_id: str) -> None:
        with self._lock:
            self._current, self._started = test_id, time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, self._timeout)

    def disarm(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        with self._lock:
            self._current = None

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            with self._lock:
                current, started = self._current, self._started
            if current is None or time.monotonic() - started < self._timeout + self._grace:
                continue
            self._recorder.write(
                {
                    "event": "end",
                    "test": current,
                    "outcome": "timeout",
                    "seconds": round(time.monotonic() - started, 3),
                    "detail": "stuck past the per-test timeout where no signal reaches it; "
                    "the driver process was ended and restarted",
                }
            )
            os._exit(HARD_TIMEOUT_EXIT)  # the harness restarts us without the recorded tests


class RecordingResult(unittest.TextTestResult):
    """A unittest result that writes a record per test, including failed subtests."""

    def __init__(
        self,
        stream: Any,
        descriptions: bool,
        verbosity: int,
        *,
        recorder: Recorder,
        watchdog: Watchdog,
        planned: list[str],
    ) -> None:
        super().__init__(stream, descriptions, verbosity)
        self._recorder = recorder
        self._watchdog = watchdog
        self._planned = planned
        self._recorded: set[str] = set()
        self._outcome: tuple[str, str] | None = None
        self._current = ""
        self._started = 0.0

    # ----------------------------------------------------------- per test

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        # The id as planned: some suites rename a test while it runs (mysql-connector's
        # foreach_cnx appends "(using <class>)"), which would not match across runs.
        self._current = test.id()
        self._outcome = None
        self._started = time.monotonic()
        self._recorder.write({"event": "start", "test": self._current})
        self._watchdog.arm(self._current)

    def stopTest(self, test: unittest.TestCase) -> None:
        self._watchdog.disarm()
        super().stopTest(test)
        outcome, detail = self._outcome or ("pass", "")
        self._end(self._current, outcome, detail, time.monotonic() - self._started)

    def _set(self, outcome: str, detail: str) -> None:
        if self._outcome is None or self._outcome[0] in ("pass", "skip"):
            self._outcome = (outcome, detail)

    def _end(self, test_id: str, outcome: str, detail: str, seconds: float) -> None:
        if test_id in self._recorded:
            return
        self._recorded.add(test_id)
        record = {"event": "end", "test": test_id, "outcome": outcome}
        self._recorder.write({**record, "seconds": round(seconds, 3), "detail": detail})

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._set("pass", "")

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._set("pass", "expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._set("fail", "unexpected success")

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        if not self._fixture_outcome(test, "skip", reason):
            self._set("skip", reason)

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._set("fail", format_error(err))

    def addSubTest(self, test: unittest.TestCase, subtest: unittest.TestCase, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._set("fail" if failed else "error", f"{subtest.id()}\n{format_error(err)}")

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        outcome = "timeout" if err[0] is TestTimeout else "error"
        if not self._fixture_outcome(test, outcome, format_error(err)):
            self._set(outcome, format_error(err))

    # ----------------------------------------------------------- fixtures

    def _fixture_outcome(self, test: Any, outcome: str, detail: str) -> bool:
        """A class or module setup failed or skipped: its tests did not run, they get that.

        `test` is then unittest's stand-in named like "setUpClass (module.Class)";
        returns False for a real test case.
        """
        match = None if isinstance(test, unittest.TestCase) else _FIXTURE_RE.match(test.id())
        if match is None:
            return False
        fixture, scope = match.group(1), match.group(2)
        if fixture.startswith("tearDown"):
            record = {"event": "fixture-error", "test": scope, "outcome": outcome}
            self._recorder.write({**record, "detail": detail})
            return True
        prefix = scope + "."
        for test_id in self._planned:
            if test_id.startswith(prefix) and test_id not in self._recorded:
                self._end(test_id, outcome, f"{fixture}: {detail}", 0.0)
        return True


class RecordingRunner(unittest.TextTestRunner):
    """A TextTestRunner whose result records, and that leaves out the tests already done."""

    def __init__(
        self,
        recorder: Recorder,
        watchdog: Watchdog,
        *,
        done: set[str],
        exclude: list[re.Pattern[str]],
        stream: TextIO,
    ) -> None:
        super().__init__(stream=stream, verbosity=1)
        self._recorder = recorder
        self._watchdog = watchdog
        self._done = done
        self._exclude = exclude
        self._planned: list[str] = []

    def _included(self, test_id: str) -> bool:
        return not any(pattern.search(test_id) for pattern in self._exclude)

    def run(self, test: unittest.TestSuite | unittest.TestCase) -> unittest.TextTestResult:
        suite = test if isinstance(test, unittest.TestSuite) else unittest.TestSuite([test])
        suite = select(suite, self._included)
        self._planned = [case.id() for case in iter_tests(suite)]
        self._recorder.write({"event": "planned", "tests": self._planned})
        return super().run(select(suite, lambda test_id: test_id not in self._done))

    def _makeResult(self) -> unittest.TextTestResult:
        return RecordingResult(
            self.stream,
            self.descriptions,
            self.verbosity,
            recorder=self._recorder,
            watchdog=self._watchdog,
            planned=self._planned,
        )


# ----------------------------------------------------------- loaders


def run_names(runner: RecordingRunner, names: list[str]) -> None:
    """Load test modules by dotted name (asyncpg, psycopg2) and run them."""
    sys.path.insert(0, os.getcwd())
    suite = unittest.TestLoader().loadTestsFromNames(names)
    runner.run(suite)


def run_mysql_connector(runner: RecordingRunner, argv: list[str]) -> None:
    """Run mysql-connector-python's own unittests.py main() with `argv`, our runner inside."""
    sys.path.insert(0, os.getcwd())
    import unittests  # type: ignore[import-not-found]  # the suite's own harness

    def make_runner(*args: Any, **kwargs: Any) -> RecordingRunner:
        return runner

    unittests.BasicTestRunner = make_runner
    sys.argv = ["unittests.py", *argv]
    with contextlib.suppress(SystemExit):  # main() always exits; the outcome is in the records
        unittests.main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--done", default="", help="file with ids of tests already recorded")
    parser.add_argument("--test-timeout", type=float, default=60.0)
    parser.add_argument("--hard-grace", type=float, default=20.0)
    parser.add_argument("--exclude", action="append", default=[], help="regex of test ids left out")
    parser.add_argument("--loader", choices=("names", "mysql-connector"), default="names")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args()
    done: set[str] = set()
    if opts.done:
        with open(opts.done, encoding="utf-8") as fh:
            done = {line.strip() for line in fh if line.strip()}
    recorder = Recorder(opts.results)
    watchdog = Watchdog(recorder, opts.test_timeout, opts.hard_grace)
    stream = io.TextIOWrapper(sys.stderr.buffer, encoding="utf-8", errors="replace")
    exclude = [re.compile(pattern) for pattern in opts.exclude]
    runner = RecordingRunner(recorder, watchdog, done=done, exclude=exclude, stream=stream)
    args = [a for a in opts.args if a != "--"]
    if opts.loader == "names":
        run_names(runner, args)
    else:
        run_mysql_connector(runner, args)


if __name__ == "__main__":
    main()
