"""Run `sluice proxy` as a child process, for the tests, the demo and the benchmark.

`ChildProcess` is what both the proxy and the control plane (`controlplane.py`)
run as. A `SluiceProcess` writes a TOML file, starts `python -m sluice proxy --config`
with it, waits until every listener accepts connections, and can reload it
(SIGHUP), stop it (SIGTERM, then SIGKILL after a timeout) and show its log.
The proxy runs as a real process so tests observe it exactly as users run it.
"""

from __future__ import annotations

import abc
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self


def toml_value(value: Any) -> str:
    """A Python value as a TOML value (strings, numbers, booleans, lists of those)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def render_config(glob: dict[str, Any], proxies: list[dict[str, Any]]) -> str:
    """A configuration file: `[sluice]` from `glob`, one `[[proxy]]` per dict.

    A proxy dict holds plain keys plus optional `target` and `pool` dicts and a
    `users` list of dicts.
    """
    lines = ["[sluice]"] + [f"{k} = {toml_value(v)}" for k, v in glob.items()]
    for proxy in proxies:
        lines += ["", "[[proxy]]"]
        tables = {k: v for k, v in proxy.items() if isinstance(v, dict)}
        users: list[dict[str, Any]] = proxy.get("users", [])
        plain = {k: v for k, v in proxy.items() if k not in tables and k != "users"}
        lines += [f"{k} = {toml_value(v)}" for k, v in plain.items()]
        for section, table in tables.items():
            lines += [f"[proxy.{section}]"] + [f"{k} = {toml_value(v)}" for k, v in table.items()]
        for user in users:
            lines += ["[[proxy.users]]"] + [f"{k} = {toml_value(v)}" for k, v in user.items()]
    return "\n".join(lines) + "\n"


class ChildProcess(abc.ABC):
    """A `python -m sluice ...` child with its output in a log file: started, waited for on
    a port, stopped with SIGTERM (then SIGKILL after a timeout). Subclasses say how to start."""

    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    cpus: frozenset[int] | None = None  # the CPUs it may run on (as taskset -c), or any

    @abc.abstractmethod
    def start(self, timeout: float = 15.0) -> None:
        """Start the child and wait until it listens."""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        cpus = self.cpus

        def pin() -> None:  # in the child, before exec: its own children inherit it
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sluice", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                preexec_fn=pin if cpus is not None else None,
            )

    def _wait_port(self, host: str, port: int, deadline: float) -> None:
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"sluice exited early:\n{self.log_tail()}")
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"sluice did not listen on {port}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; return the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SluiceProcess(ChildProcess):
    """`sluice proxy` in a child process with a generated configuration."""

    def __init__(
        self,
        proxies: list[dict[str, Any]],
        glob: dict[str, Any] | None = None,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
        cpus: frozenset[int] | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sluice-run-"))
        self.cpus = cpus
        self.config_path = self.workdir / "sluice.toml"
        self.log_path = self.workdir / "sluice.log"
        # one worker unless asked: most tests count on a single pool of a known size
        self.glob = {"state_dir": str(self.workdir / "state"), "workers": 1, **(glob or {})}
        self.proxies = proxies
        self.env = env or {}
        self.proc = None
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(render_config(self.glob, self.proxies))

    def start(self, timeout: float = 15.0) -> None:
        self._spawn(["proxy", "--config", str(self.config_path)], self.env)
        deadline = time.monotonic() + timeout
        for proxy in self.proxies:
            host, _, port = str(proxy["listen"]).rpartition(":")
            self._wait_port(host, int(port), deadline)

    def reload(self) -> None:
        self.write_config()
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
