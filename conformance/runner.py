"""One run: a suite in one mode (direct, or through Sluice in transaction or session mode).

The run starts a fresh server, Sluice in front of it unless the mode is direct, and the
driver (conformance/driver.py) in the suites' virtualenv with the suite's working folder
and environment. Time is bounded twice: the driver times each test out, and the run
kills the driver's process group at its deadline. A driver that ends early (a test stuck
in C code made it exit, or it crashed mid-run) is started again without the tests
already recorded, as long as each attempt records something new.

Files of a run, in `<work>/runs/<suite>/<mode>/`: results.jsonl (the records),
driver.log (the suite's own output), meta.json (versions, timings, how it ended) and,
through Sluice, sluice/ (its configuration and log).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from conformance.results import read_records
from conformance.servers import TlsFiles, make_server, start_sluice
from conformance.suites import Endpoint, Suite

DRIVER = Path(__file__).with_name("driver.py")
HARD_GRACE = 15.0  # seconds a test may ignore its timeout before the driver is ended
MAX_ATTEMPTS = 12
_MIN_ALLOWANCE = 10.0  # seconds: less is not worth starting a server for
# Variables of the harness's own environment that would reach past the endpoint we give.
_DROPPED_ENV = ("PG", "PSYCOPG2_", "MYSQL", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class RunPaths:
    """Where one run keeps its files."""

    folder: Path

    @property
    def results(self) -> Path:
        return self.folder / "results.jsonl"

    @property
    def done(self) -> Path:
        return self.folder / "done.txt"

    @property
    def driver_log(self) -> Path:
        return self.folder / "driver.log"

    @property
    def meta(self) -> Path:
        return self.folder / "meta.json"

    @property
    def sluice(self) -> Path:
        return self.folder / "sluice"


def run_paths(work: Path, suite: Suite, mode: str) -> RunPaths:
    return RunPaths(work / "runs" / suite.name / mode)


@dataclass
class RunMeta:
    """How a run went, kept next to its records for the report."""

    suite: str
    mode: str
    started: str
    seconds: float = 0.0
    attempts: int = 0
    # complete, deadline, no progress, too many restarts, budget spent, setup failed
    ended: str = "not started"
    server: str = ""
    commit: str = ""  # Sluice's
    error: str = ""

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


def load_meta(path: Path) -> RunMeta | None:
    if not path.exists():
        return None
    return RunMeta(**json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class RunContext:
    """What every run of one suite shares."""

    suite: Suite
    python: Path  # the suites' virtualenv
    tests_dir: Path
    tls: TlsFiles
    work: Path
    commit: str  # of the Sluice that runs


def driver_env(suite: Suite, endpoint: Endpoint) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_ENV)}
    env.update(suite.env(endpoint))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _driver_command(ctx: RunContext, endpoint: Endpoint, paths: RunPaths) -> list[str]:
    suite = ctx.suite
    cmd = [str(ctx.python), str(DRIVER), "--results", str(paths.results)]
    cmd += ["--done", str(paths.done), "--test-timeout", str(suite.test_timeout)]
    cmd += ["--hard-grace", str(HARD_GRACE)]
    for exclusion in suite.exclusions:
        cmd += ["--exclude", exclusion.pattern]
    return cmd + suite.driver_args(endpoint)


def _attempt(
    cmd: list[str], ctx: RunContext, env: dict[str, str], paths: RunPaths, deadline: float
) -> bool:
    """One driver process; False if the deadline killed it."""
    with paths.driver_log.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=ctx.tests_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        _kill_group(proc)  # the run's deadline
        return False
    except BaseException:
        _kill_group(proc)  # interrupted: leave no driver running against a removed server
        raise


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the driver and whatever it started (it leads its own session)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def drive(
    ctx: RunContext, endpoint: Endpoint, paths: RunPaths, deadline: float, meta: RunMeta
) -> None:
    """Run the suite's tests against `endpoint` until all are recorded or time is up."""
    cmd = _driver_command(ctx, endpoint, paths)
    env = driver_env(ctx.suite, endpoint)
    recorded = -1
    while meta.attempts < MAX_ATTEMPTS:
        records = read_records(paths.results)
        if records.complete:
            meta.ended = "complete"
            return
        if len(records.ended) == recorded:
            meta.ended = "no progress"  # the driver fails before running anything new
            return
        recorded = len(records.ended)
        paths.done.write_text("".join(t + "\n" for t in records.ended), encoding="utf-8")
        meta.attempts += 1
        if not _attempt(cmd, ctx, env, paths, deadline):
            meta.ended = "deadline"
            return
    meta.ended = "too many restarts"


def _fresh(paths: RunPaths) -> None:
    paths.folder.mkdir(parents=True, exist_ok=True)
    for path in (paths.results, paths.done, paths.driver_log, paths.meta):
        path.unlink(missing_ok=True)


def run(ctx: RunContext, mode: str, allowance: float) -> RunMeta:
    """Run `ctx.suite` in `mode` within `allowance` seconds: a fresh server, Sluice unless
    direct, the driver."""
    paths = run_paths(ctx.work, ctx.suite, mode)
    _fresh(paths)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta = RunMeta(ctx.suite.name, mode, now, commit=ctx.commit)
    started = time.monotonic()
    deadline = started + allowance
    if allowance < _MIN_ALLOWANCE:
        meta.ended = "budget spent"
        meta.save(paths.meta)
        return meta
    print(f"conformance: {ctx.suite.name} {mode} ...", flush=True)
    try:
        with make_server(ctx.suite, ctx.tls) as server:
            meta.server = server.version
            if mode == "direct":
                drive(ctx, server.endpoint, paths, deadline, meta)
            else:
                proxy, endpoint = start_sluice(
                    ctx.suite, mode, server.endpoint, ctx.tls, paths.sluice
                )
                try:
                    drive(ctx, endpoint, paths, deadline, meta)
                finally:
                    proxy.stop()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        meta.ended, meta.error = "setup failed", str(exc)[-2000:]
    meta.seconds = round(time.monotonic() - started, 1)
    meta.save(paths.meta)
    print(f"conformance: {ctx.suite.name} {mode}: {meta.ended} in {meta.seconds:.0f} s", flush=True)
    return meta
