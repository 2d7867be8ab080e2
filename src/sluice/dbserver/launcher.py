"""One launcher for every database server Sluice runs: tests, demo, benchmarks, DB instances.

Design: a `DbServer` owns one base directory holding `data/` (the engine's data
directory), `run/` (the unix socket and pid file; a short directory under the
temp dir when that path would be too long for a socket) and the server log,
kept outside `data/` so it stays readable and can be quoted in errors. The
server listens on one address only (127.0.0.1 and a free port unless told
otherwise), never reads the system's configuration files, and runs in a
session of its own with an environment stripped of the engine's variables.
Under euid 0 every program that touches the data directory runs as the
engine's OS user (postgres, mysql), which owns the data and run directories.

A server is only ever signalled after /proc shows our own data directory on
its command line, so a server left running by an earlier process on the same
base directory is recognised (`running`, `stop`) and a stranger's never is.

The engine parts (`postgres.PgCluster`, `mariadb.MariaDbCluster`) say how to
make a data directory, the server's command line and configuration, how to
ask whether it answers, which signal each stop mode sends, and what to do once
it is up. This module owns the rest: directories, ownership, ports, spawning,
waiting, stopping and the log.
"""

from __future__ import annotations

import abc
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

LOCALHOST = "127.0.0.1"
SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
START_ATTEMPTS = 3  # retries when an auto-picked port was taken meanwhile
CMD_TIMEOUT = 120.0
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


class BinariesNotFound(RuntimeError):
    """An engine's server programs are not installed."""


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port that was free on `host` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def first_program(names: tuple[str, ...], dirs: tuple[str, ...]) -> Path | None:
    """The first of `names` found executable in `dirs`, else on PATH."""
    for name in names:
        for directory in dirs:
            path = Path(directory) / name
            if path.is_file() and os.access(path, os.X_OK):
                return path
        found = shutil.which(name)
        if found is not None:
            return Path(found)
    return None


def binary_version(binary: Path, pattern: str) -> str:
    """The version a server binary gives for `--version`: the first group of `pattern`
    found in what it prints (or all of it)."""
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    found = re.search(pattern, out)
    return found.group(1) if found else out.strip()


def os_user_ids(name: str) -> tuple[int, int]:
    """uid and gid of the OS user a server runs as under root."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(
            f"running as root but there is no {name!r} OS user to run the server as"
        ) from None
    return entry.pw_uid, entry.pw_gid


class DbServer(abc.ABC):
    """One database server process and its directories; see the module docstring."""

    os_user: ClassVar[str]  # who runs the server under root
    temp_prefix: ClassVar[str]  # base directories made under the temp dir
    log_name: ClassVar[str]
    socket_name: ClassVar[str]  # the longest socket file name the server makes in run/
    env_prefixes: ClassVar[tuple[str, ...]]  # variables the engine's programs would read
    stop_signals: ClassVar[dict[str, signal.Signals]]  # stop mode -> signal
    port_taken_markers: ClassVar[tuple[str, ...]]  # log lines of a failed bind

    host: str
    port: int
    base_dir: Path
    data_dir: Path
    run_dir: Path
    log_file: Path
    superuser_password: str
    version: str

    def __init__(
        self,
        base_dir: Path | None,
        *,
        host: str,
        port: int | None,
        max_connections: int,
        settings: dict[str, str],
    ) -> None:
        self.host = host
        self._auto_port = port is None
        self.port = free_port(host) if port is None else port
        self.max_connections = max_connections
        self.settings = settings
        self.superuser_password = secrets.token_urlsafe(18)
        self.version = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as = os_user_ids(self.os_user) if os.geteuid() == 0 else None
        self._owns_base = base_dir is None or not base_dir.exists()
        self.base_dir = self._make_base(base_dir)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / self.log_name
        self.run_dir = self.base_dir / "run"
        self._own_run_dir = len(str(self.run_dir / self.socket_name)) > SOCKET_PATH_MAX
        if self._own_run_dir:
            self._check_reachable(Path(tempfile.gettempdir()))
            self.run_dir = Path(tempfile.mkdtemp(prefix=self.temp_prefix + "s-")).resolve()
        self._prepare_dirs()

    # ----------------------------------------------------------- engine parts

    @abc.abstractmethod
    def _initialized(self) -> bool:
        """Whether the data directory holds a server's data already."""

    @abc.abstractmethod
    def _init_data(self) -> None:
        """Make a fresh data directory (initdb, mariadb-install-db)."""

    @abc.abstractmethod
    def _write_config(self) -> None:
        """(Re)write the configuration the server reads, before every start."""

    @abc.abstractmethod
    def _server_command(self) -> list[str]:
        """The server's command line; it names `data_dir` as `_identity` does."""

    @abc.abstractmethod
    def _identity(self) -> list[bytes]:
        """Arguments on a command line that show the process serves our data directory."""

    @abc.abstractmethod
    def _pid_file(self) -> Path:
        """Where the server writes its pid (first line)."""

    @abc.abstractmethod
    def _socket_file(self) -> Path:
        """The unix socket the server listens on."""

    @abc.abstractmethod
    def _probe(self) -> subprocess.CompletedProcess[str]:
        """Ask the server for its version over the socket (exit 0 once it answers)."""

    @abc.abstractmethod
    def _after_start(self, fresh: bool) -> None:
        """Work once the server answers (`fresh`: its data directory was just made)."""

    # ----------------------------------------------------------- filesystem

    def _make_base(self, base_dir: Path | None) -> Path:
        """Resolve (or, if None, create under the temp dir) the base directory."""
        parent = Path(tempfile.gettempdir()) if base_dir is None else base_dir.resolve().parent
        self._check_reachable(parent)
        if base_dir is None:
            return Path(tempfile.mkdtemp(prefix=self.temp_prefix + "-")).resolve()
        return base_dir.resolve()

    def _check_reachable(self, directory: Path) -> None:
        """Under root, fail early if the server's OS user cannot enter `directory`."""
        if self._run_as is None:
            return
        for path in [directory, *directory.parents]:
            if not path.exists():
                continue
            st = path.stat()
            if st.st_uid != self._run_as[0] and not st.st_mode & 0o001:
                raise RuntimeError(
                    f"the {self.os_user!r} OS user cannot enter {path} (mode "
                    f"{st.st_mode & 0o777:o}); put the server's base dir somewhere it can reach"
                )

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, *self._run_as)

    def _prepare_dirs(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir.chmod(0o755)
        for path, mode in ((self.data_dir, 0o700), (self.run_dir, 0o755)):
            path.mkdir(exist_ok=True)
            path.chmod(mode)
            self._chown(path)
        self.log_file.touch()
        self._chown(self.log_file)

    def _write_file(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        self._chown(path)

    # ----------------------------------------------------------- subprocess

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(self.env_prefixes)}
        env["LC_ALL"] = "C"
        return env

    def _run(
        self,
        args: list[str],
        *,
        as_server: bool = False,
        stdin: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a program; `as_server` ones run as the engine's OS user under root."""
        uid, gid = self._run_as if as_server and self._run_as is not None else (None, None)
        return subprocess.run(
            args,
            input=stdin,
            cwd=self.base_dir,
            env=env or self._env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=CMD_TIMEOUT,
            user=uid,
            group=gid,
            extra_groups=None if uid is None else [],
        )

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the server log (empty if there is none)."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _fail(self, what: str, output: str, code: int | None = None) -> RuntimeError:
        status = "" if code is None else f" (exit {code})"
        return RuntimeError(
            f"{what} failed{status} for {self.data_dir}:\n{output.strip()}\n"
            f"--- tail of {self.log_file} ---\n{self.log_tail()}"
        )

    # ----------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """Whether our server process is alive."""
        return self.server_pid() is not None

    def start(self) -> None:
        """Make the data directory if needed, write the configuration, start and wait."""
        if self.running:
            raise RuntimeError(f"a server is already running on {self.data_dir}")
        fresh = not self._initialized()
        if fresh:
            self._init_data()
        for attempt in range(START_ATTEMPTS):
            self._write_config()
            try:
                self._spawn_and_wait()
                break
            except RuntimeError:
                self._kill_leftover()
                if not (self._auto_port and attempt + 1 < START_ATTEMPTS and self._port_taken()):
                    raise
                self.port = free_port(self.host)
        self._after_start(fresh)

    def _spawn_and_wait(self) -> None:
        uid, gid = self._run_as if self._run_as is not None else (None, None)
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self._server_command(),
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                user=uid,
                group=gid,
                extra_groups=None if uid is None else [],
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise self._fail("server start", "the server exited", code)
            if self._socket_file().exists():
                proc = self._probe()
                if proc.returncode == 0:
                    self.version = proc.stdout.strip()
                    return
                last = proc.stderr
            time.sleep(0.05)
        raise self._fail("server start", f"not ready after {READY_TIMEOUT:.0f} s\n{last}")

    def _port_taken(self) -> bool:
        tail = self.log_tail(15)
        return any(marker in tail for marker in self.port_taken_markers)

    def server_pid(self) -> int | None:
        """The server's pid: the child we started, else the pid file's, if it serves our data."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            lines = self._pid_file().read_text(encoding="ascii").split()
            pid = int(lines[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return None
        return pid if all(arg in cmdline for arg in self._identity()) else None

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        """Send `sig` to our server; True once it has exited within `timeout` seconds."""
        pid = self.server_pid()
        if pid is None:
            return True
        try:
            if sig == signal.SIGKILL:
                os.killpg(pid, sig)  # the server leads its session: its children go too
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server_pid() is None:
                return True
            time.sleep(0.05)
        return False

    def _kill_leftover(self) -> None:
        """After a failed start or stop: make sure the server is gone."""
        self._signal_and_wait(signal.SIGKILL, 10.0)
        self._proc = None

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (no-op if it is not running); modes are the engine's."""
        sig = self.stop_signals.get(mode)
        if sig is None:
            raise ValueError(f"unsupported stop mode {mode!r}")
        if not self._signal_and_wait(sig, STOP_TIMEOUT):
            raise self._fail("server stop", f"still running {STOP_TIMEOUT:.0f} s after {sig.name}")
        self._proc = None

    def restart(self) -> None:
        """Stop (fast) and start again; data survives."""
        self.stop()
        self.start()

    def destroy(self) -> None:
        """Stop the server, whatever state it is in, and remove what we created."""
        try:
            self.stop("fast")
        except RuntimeError:
            self._kill_leftover()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self._owns_base:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # ----------------------------------------------------------- accounts

    @abc.abstractmethod
    def create_admin(self, name: str, password: str) -> None:
        """Create the account that administers the server as RDS's master user does."""

    @abc.abstractmethod
    def set_password(self, name: str, password: str) -> None:
        """Change a login's password."""

    @abc.abstractmethod
    def create_database(self, name: str, owner: str) -> None:
        """Create a database that `owner` may use fully."""
