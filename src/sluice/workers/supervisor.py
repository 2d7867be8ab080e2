"""The supervisor: `sluice proxy` with `workers = N` above one.

It forks N worker processes and then only watches them; it opens no socket
and runs no event loop, so forking again to replace a worker is as safe as
the first time. Each worker is a whole Sluice (`App` on its own uvloop) in a
`WorkerSlot`: it opens its own listening sockets with SO_REUSEPORT (the
kernel spreads new connections over the workers listening on a port), draws on
its part of every connection budget, and serves its siblings' requests on the
peer channel (workers/peers.py).

Signals, all taken synchronously with `sigtimedwait`:
- READY (SIGRTMIN) from a worker: it is listening (its `App` has started);
- SIGCHLD: a worker ended. While stopping that is expected. A worker that ends
  before every worker has first been ready ends the whole program with its exit
  status (a bad configuration, a port in use: as with one process). Later, the
  worker is logged and started again, at most once per RESTART_DELAY;
- SIGHUP: passed on to every worker, each of which reloads the file itself;
- SIGTERM / SIGINT: passed on as SIGTERM (each worker shuts down gracefully);
  a second one kills the workers. The supervisor exits once they are all gone.

A worker dies with its supervisor (PR_SET_PDEATHSIG), so none is left
listening behind a supervisor that was killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable

from sluice import config as config_mod
from sluice import tls
from sluice.config import Settings
from sluice.errors import ConfigError
from sluice.workers.peers import socket_dir
from sluice.workers.slot import WorkerSlot

log = logging.getLogger("sluice.workers")

# a worker's "I listen": a real-time signal, as those queue (two SIGUSR1 at the same
# moment would be one) and carry the sender's pid
READY = signal.SIGRTMIN
SIGNALS = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT, READY}
RESTART_DELAY = 1.0  # seconds between two starts of the same worker
_PR_SET_PDEATHSIG = 1

# what runs in a worker: its settings, its slot, and a callback for once it listens
WorkerMain = Callable[[Settings, WorkerSlot, Callable[[], None]], int]


class Supervisor:
    """Starts, watches, restarts and stops the worker processes."""

    def __init__(self, settings: Settings, worker_main: WorkerMain) -> None:
        self.settings = settings
        self.count = settings.workers
        self.worker_main = worker_main
        self.workers: dict[int, int] = {}  # pid -> index
        self.ready: set[int] = set()  # pids that have told they listen
        self.started: dict[int, float] = {}  # index -> when last started
        self.due: dict[int, float] = {}  # index -> when to start it again
        self.all_ready = False
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        directory = socket_dir(self.settings.state_dir, os.getpid())
        directory.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(directory.parent, 0o700)  # only the owner may send the workers a request
        directory.mkdir(exist_ok=True)
        # made once here, not by every worker at the same moment
        tls.ensure_self_signed(self.settings.state_dir)
        for index in range(self.count):
            self._start(index)
        while self.workers or (self.due and not self.stopping):
            info = signal.sigtimedwait(SIGNALS, self._timeout())
            if info is not None:
                self._on_signal(info.si_signo, info.si_pid)
            self._restart_due()
        shutil.rmtree(directory, ignore_errors=True)  # the workers' sockets
        log.info("all workers stopped")
        return self.status

    def _timeout(self) -> float:
        if not self.due:
            return 1.0
        return max(0.01, min(self.due.values()) - time.monotonic())

    # ---- starting ----

    def _start(self, index: int) -> None:
        self.started[index] = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os._exit(self._child(index))
        self.workers[pid] = index
        log.info("worker %d started (pid %d)", index, pid)

    def _child(self, index: int) -> int:
        """In the forked worker: never returns into the supervisor's code."""
        try:
            supervisor = os.getppid()
            for signo in SIGNALS:
                signal.signal(signo, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until its loop takes it
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            _die_with_parent()
            if os.getppid() != supervisor:
                return 1  # the supervisor is already gone
            settings = self._current_settings()

            def ready() -> None:
                os.kill(supervisor, READY)

            slot = WorkerSlot(index, self.count, group=supervisor)
            return self.worker_main(settings, slot, ready)
        except BaseException:
            log.exception("worker %d failed", index)
            return 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def _current_settings(self) -> Settings:
        """The file as it is now (a restarted worker reads its changes), or as it was."""
        if self.settings.source is None:
            return self.settings
        try:
            return config_mod.load(self.settings.source)
        except ConfigError as exc:
            log.error("cannot read the configuration, using the one read at start: %s", exc)
            return self.settings

    def _restart_due(self) -> None:
        now = time.monotonic()
        for index, when in list(self.due.items()):
            if when <= now:
                del self.due[index]
                if not self.stopping:
                    self._start(index)

    # ---- signals ----

    def _on_signal(self, signo: int, pid: int) -> None:
        if signo == signal.SIGCHLD:
            self._reap()
        elif signo == READY:
            self._on_ready(pid)
        elif signo == signal.SIGHUP:
            self._reload()
        elif self.stopping:  # a second SIGTERM / SIGINT
            log.warning("stopping now: killing the workers")
            self._send(signal.SIGKILL)
        else:
            log.info("shutting down %d workers", len(self.workers))
            self.stopping = True
            self._send(signal.SIGTERM)

    def _on_ready(self, pid: int) -> None:
        if pid not in self.workers:
            return
        self.ready.add(pid)
        log.info("worker %d (pid %d) ready", self.workers[pid], pid)
        if not self.all_ready and len(self.ready) == self.count:
            self.all_ready = True
            log.info("sluice ready: %d workers", self.count)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            self.ready.discard(pid)
            if index is not None:
                self._ended(index, pid, os.waitstatus_to_exitcode(status))

    def _ended(self, index: int, pid: int, code: int) -> None:
        how = f"signal {-code}" if code < 0 else f"status {code}"
        if self.stopping:
            log.info("worker %d (pid %d) stopped with %s", index, pid, how)
            return
        if not self.all_ready:  # it could not start: neither will the others
            log.error("worker %d (pid %d) could not start (%s): stopping", index, pid, how)
            self.status = code if code > 0 else 1
            self.stopping = True
            self._send(signal.SIGTERM)
            return
        log.warning("worker %d (pid %d) ended with %s: starting it again", index, pid, how)
        self.due[index] = max(time.monotonic(), self.started[index] + RESTART_DELAY)

    def _reload(self) -> None:
        log.info("reloading: passing SIGHUP to %d workers", len(self.ready))
        for pid in list(self.ready):
            _signal(pid, signal.SIGHUP)
        if self.settings.source is None:
            return
        try:
            count = config_mod.load(self.settings.source).workers
        except ConfigError:
            return  # each worker says why, and keeps its configuration
        if count != self.count:
            log.warning("workers = %d takes effect at the next start; %d run", count, self.count)

    def _send(self, signo: int) -> None:
        for pid in list(self.workers):
            _signal(pid, signo)


def _signal(pid: int, signo: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone: its SIGCHLD is on the way
        os.kill(pid, signo)


def _die_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent ends (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: a killed supervisor leaves its workers to be stopped by hand
