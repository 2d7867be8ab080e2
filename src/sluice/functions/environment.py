"""One execution environment: a `bootstrap.py` process and the parent's half of its protocol.

Why it is built this way: the parent never runs user code. It starts the process with the
environment Lambda sets, speaks framed JSON over a socket pair, reads the process's merged
stdout/stderr as the function's log, and enforces what the handler cannot be trusted to: the
timeout (the process is killed, as Lambda resets a timed-out environment) and the process
staying alive (a crash ends the environment; the runner starts a new one next time). An
environment serves one invocation at a time; the runner guarantees that. What the host allows
beyond a plain process (its own /opt, a memory cgroup, an unprivileged uid) comes from the
runner's `Sandbox`; without a cgroup, a watchdog enforces the memory limit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sluice.functions.bootstrap import MARKER, PYTHON_BINDING
from sluice.functions.cgroups import EnvironmentCgroup
from sluice.functions.process import RuntimeProcess, spawn
from sluice.functions.sandbox import BOOTSTRAP, OPT, Sandbox
from sluice.functions.spec import (
    FunctionSpec,
    LogLine,
    Outcome,
    RunnerSettings,
    TemporaryCredentials,
)

log = logging.getLogger("sluice.functions")

_HEADER = struct.Struct(">I")
_MAX_FRAME = 16 * 1024 * 1024
_INIT_TIMEOUT = 10.0  # Lambda's init phase limit
_MARKER_WAIT = 2.0  # how long to wait for the output of a finished invocation
_LOG_TAIL = 4096
_MEMORY_CHECK = 0.05
_CHUNK = 65536
_MAX_LINE = 256 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024


class EnvironmentGone(Exception):
    """The process exited (or stopped answering) in the middle of an invocation."""


@dataclass(frozen=True, slots=True)
class _Answer:
    document: dict[str, object]
    output: list[LogLine]


def lambda_variables(
    spec: FunctionSpec, settings: RunnerSettings, creds: TemporaryCredentials, stream: str,
    layers: Path = OPT,
) -> dict[str, str]:
    """The environment Lambda gives a Python function (the function's own variables first).

    `layers` is where the function sees its merged layers: /opt, or their directory on the
    host when /opt cannot be its own.
    """
    # The function's own variables may point AWS_ENDPOINT_URL elsewhere; the rest are Lambda's.
    variables = {"AWS_ENDPOINT_URL": settings.endpoint_url, **spec.variables}
    variables.update({
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
        "LAMBDA_TASK_ROOT": str(spec.task_root),
        "LAMBDA_RUNTIME_DIR": str(BOOTSTRAP.parent),
        "_HANDLER": spec.handler,
        "SLUICE_FUNCTION_ARN": spec.arn,
        "SLUICE_LAYER_PATHS": os.pathsep.join(map(str, layer_import_paths(layers))),
        "SLUICE_LIBRARIES": str(settings.libraries),
        "SLUICE_SOURCE_ADDRESS": spec.source_address,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    })  # fmt: skip
    variables.update(credential_variables(creds))
    return variables


def preload_variable(library: Path, variables: Mapping[str, str]) -> str:
    """LD_PRELOAD for an environment: `library` first, then what the function sets itself."""
    theirs = variables.get("LD_PRELOAD", "").strip()
    return f"{library}:{theirs}" if theirs else str(library)


def layer_import_paths(layers: Path) -> tuple[Path, ...]:
    """Where Lambda's Python runtime looks for a layer's modules, after the task root."""
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return layers / "python" / "lib" / python / "site-packages", layers / "python"


def credential_variables(creds: TemporaryCredentials) -> dict[str, str]:
    """The role's credentials as variables. With their expiry in AWS_CREDENTIAL_EXPIRATION,
    botocore reads them again from the environment as they near it, so the SDK clients a
    handler keeps (its default session's, or ones made at init) pick up renewed ones."""
    expiry = datetime.fromtimestamp(creds.expiration, UTC)
    return {
        "AWS_ACCESS_KEY_ID": creds.access_key_id,
        "AWS_SECRET_ACCESS_KEY": creds.secret_access_key,
        "AWS_SESSION_TOKEN": creds.session_token,
        "AWS_CREDENTIAL_EXPIRATION": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


class Environment:
    """A running execution environment; see the module docstring."""

    def __init__(self, spec: FunctionSpec, settings: RunnerSettings, sandbox: Sandbox) -> None:
        self.spec = spec
        self.settings = settings
        self.sandbox = sandbox
        self.cgroup: EnvironmentCgroup | None = None
        self.stream_id = os.urandom(16).hex()
        self.stream = f"{datetime.now(UTC):%Y/%m/%d}/[{spec.version}]{self.stream_id}"
        self.idle_since = time.monotonic()
        self.credentials_expire = 0.0
        self.init_ms = 0.0
        self._proc: RuntimeProcess | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._output: list[LogLine] = []
        self._marker = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._first = True
        self._cold = False  # the invocation under way is this environment's first
        self._out_of_memory = False
        self._ooms_before = 0  # the cgroup's OOM kills before the invocation under way
        self._init_output: list[LogLine] = []  # the init phase's, shown with the first invocation
        self.binding = ""  # how the runtime binds connections to the source address (bootstrap)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self, creds: TemporaryCredentials) -> None:
        """Start the process and wait for its init phase (the handler's module imported)."""
        layers = await self.sandbox.layers(self.spec.layer_paths)
        seen_as = OPT if self.sandbox.has_opt else layers
        variables = lambda_variables(self.spec, self.settings, creds, self.stream, seen_as)
        if self.sandbox.preload is not None:
            variables["LD_PRELOAD"] = preload_variable(self.sandbox.preload, variables)
        self.credentials_expire = creds.expiration
        if self.sandbox.cgroups is not None:
            try:  # in a thread: making a cgroup takes the kernel milliseconds
                self.cgroup = await asyncio.to_thread(self.sandbox.cgroups.create,
                                                      self.stream_id, self.spec.memory_mb)
            except OSError as exc:
                log.warning("function %s: no memory cgroup for a new environment (%s); its "
                            "watchdog enforces MemorySize", self.spec.name, exc)  # fmt: skip
        parent, child = socket.socketpair()
        # Without `site`: only the task root, the layers and Lambda's libraries are importable.
        runtime = [self.settings.python, "-S", str(BOOTSTRAP), str(child.fileno())]
        spawned = time.monotonic()
        try:
            self._proc = await spawn(self.sandbox.command(runtime, layers, self.cgroup),
                                     self.spec.task_root, variables, child.fileno())
        except OSError:
            await self._remove_cgroup()
            raise
        finally:
            child.close()
        self._reader, self._writer = await asyncio.open_connection(sock=parent)
        self._pump = asyncio.create_task(self._read_output())
        try:
            ready = await asyncio.wait_for(self._receive(), _INIT_TIMEOUT)
        except (TimeoutError, EnvironmentGone):
            said = "".join(text for _, text in self._output)[-_LOG_TAIL:].strip()
            await self.close(f"its init phase failed: {said or 'no output'}")
            raise EnvironmentGone("the runtime did not start") from None
        # Init Duration as Lambda counts it: the runtime's start and the handler's import.
        self.init_ms = (time.monotonic() - spawned) * 1000
        self._init_output = ready.output
        self.binding = str(ready.document.get("binding", ""))
        if self.sandbox.preload is not None and self.binding == PYTHON_BINDING:
            log.warning("function %s: the library %s did not load in environment %d (its "
                        "log says why): only connections made through Python's socket module "
                        "leave from %s", self.spec.name, self.sandbox.preload, self.pid,
                        self.spec.source_address)  # fmt: skip

    async def run(
        self, request_id: str, event: bytes, creds: TemporaryCredentials | None
    ) -> Outcome:
        """One invocation, within the function's timeout."""
        started = time.monotonic()
        deadline_ms = int(time.time() * 1000 + self.spec.timeout * 1000)
        message: dict[str, object] = {"id": request_id, "event": event.decode("utf-8"),
                                      "deadline_ms": deadline_ms}  # fmt: skip
        if creds is not None:
            message["env"] = credential_variables(creds)
            self.credentials_expire = creds.expiration
        head = [(time.time(), f"START RequestId: {request_id} Version: {self.spec.version}\n")]
        self._cold, self._first = self._first, False
        if self._cold:
            head = self._init_output + head
        self._ooms_before = self.cgroup.oom_kills() if self.cgroup is not None else 0
        watchdog = asyncio.create_task(self._watch_memory())
        try:
            self._send(message)
            answer = await asyncio.wait_for(self._receive(), self.spec.timeout)
        except TimeoutError:
            output = self._take_output()
            await self.close(f"invocation {request_id} timed out")
            return self._timed_out(request_id, head + output, started)
        except EnvironmentGone:
            output = self._take_output()
            status = await self._exit_status()
            outcome = self._exited(request_id, head + output, status, started)  # cgroup kept
            await self.close(f"the runtime exited during invocation {request_id}")
            return outcome
        finally:
            watchdog.cancel()
            self.idle_since = time.monotonic()
        if self.cgroup is None and _peak_bytes(answer.document) > self.spec.memory_mb * _MB:
            # Over the limit between two checks: the peak the process reports still counts.
            self._out_of_memory = True
            await self.close(f"invocation {request_id} exceeded {self.spec.memory_mb} MB")
            return self._exited(request_id, head + answer.output, "signal: killed", started)
        outcome = self._finished(request_id, head + answer.output, answer.document, started)
        if answer.document.get("init_failed"):
            await self.close("its init phase failed")  # the next invocation starts afresh
        return outcome

    # ---- answers ----

    def _finished(
        self, rid: str, output: list[LogLine], doc: dict[str, object], started: float
    ) -> Outcome:
        if doc.get("ok"):
            payload = str(doc.get("payload", "null")).encode("utf-8")
            error = None
        else:
            error_doc = doc.get("error") or {}
            if isinstance(error_doc, dict):
                error_doc["requestId"] = rid
            payload = json.dumps(error_doc).encode("utf-8")
            error = "Unhandled"
        lines = output + self._report(rid, started, self._used_mb(doc))
        return Outcome(payload, error, tuple(lines), self.stream)

    def _timed_out(self, rid: str, output: list[LogLine], started: float) -> Outcome:
        seconds = f"{self.spec.timeout:.2f}"
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = f"{stamp} {rid} Task timed out after {seconds} seconds\n"
        message = f"RequestId: {rid} Error: Task timed out after {seconds} seconds"
        doc = {"errorType": "Sandbox.Timedout", "errorMessage": message}
        lines = [*output, (time.time(), line), *self._report(rid, started, 0, status="timeout")]
        return Outcome(json.dumps(doc).encode(), "Unhandled", tuple(lines), self.stream)

    def _used_mb(self, doc: dict[str, object]) -> int:
        """Max Memory Used: the larger of the cgroup's peak (every process of the environment,
        but only pages first touched inside it) and the runtime process's own (VmHWM, which
        counts the interpreter's shared pages too)."""
        peak = self.cgroup.peak_bytes() if self.cgroup is not None else None
        peak = max(peak or 0, _peak_bytes(doc))
        return min(math.ceil(peak / _MB), self.spec.memory_mb)

    def _exited(self, rid: str, output: list[LogLine], status: str, started: float) -> Outcome:
        # As Lambda answers an environment the OOM killer ended: the runtime's exit is the
        # error; only the REPORT line's status names the cause.
        message = f"RequestId: {rid} Error: Runtime exited with error: {status}"
        doc = {"errorType": "Runtime.ExitError", "errorMessage": message}
        ooms = self.cgroup.oom_kills() if self.cgroup is not None else 0
        out_of_memory = self._out_of_memory or ooms > self._ooms_before
        cause = "Runtime.OutOfMemory" if out_of_memory else "Runtime.ExitError"
        used = self.spec.memory_mb if out_of_memory else self._used_mb({})
        now = time.time()
        report = self._report(rid, started, used, status=f"error\tError Type: {cause}")
        lines = [*output, (now, f"{message}\n"), (now, "Runtime.ExitError\n"), *report]
        return Outcome(json.dumps(doc).encode(), "Unhandled", tuple(lines), self.stream)

    def _report(self, rid: str, started: float, used_mb: int, status: str = "") -> list[LogLine]:
        ms = (time.monotonic() - started) * 1000
        parts = [
            f"REPORT RequestId: {rid}", f"Duration: {ms:.2f} ms",
            f"Billed Duration: {math.ceil(ms)} ms", f"Memory Size: {self.spec.memory_mb} MB",
            f"Max Memory Used: {used_mb} MB",
        ]  # fmt: skip
        if self._cold:
            parts.append(f"Init Duration: {self.init_ms:.2f} ms")
        if status:
            parts.append(f"Status: {status}")
        now = time.time()
        return [(now, f"END RequestId: {rid}\n"), (now, "\t".join(parts) + "\t\n")]

    # ---- the process ----

    async def _watch_memory(self) -> None:
        """Kill the process when its resident memory exceeds the function's MemorySize.

        The fallback where the environment has no memory cgroup: checked every 50 ms during
        an invocation (so a short spike or a subprocess can escape it); the invocation then
        fails as Lambda's does.
        """
        if self.cgroup is not None:
            return  # the kernel enforces the limit
        limit = self.spec.memory_mb * 1024 * 1024
        while self.alive:
            await asyncio.sleep(_MEMORY_CHECK)
            if resident_bytes(self.pid) > limit:
                self._out_of_memory = True
                log.info("function %s: environment %d exceeded %d MB", self.spec.name,
                         self.pid, self.spec.memory_mb)  # fmt: skip
                if self._proc is not None:
                    self._proc.kill_group()
                return

    def _send(self, message: dict[str, object]) -> None:
        if self._writer is None or not self.alive:
            raise EnvironmentGone("the runtime is not running")
        body = json.dumps(message).encode("utf-8")
        self._writer.write(_HEADER.pack(len(body)) + body)

    async def _receive(self) -> _Answer:
        assert self._reader is not None
        try:
            head = await self._reader.readexactly(_HEADER.size)
            (length,) = _HEADER.unpack(head)
            if length > _MAX_FRAME:
                raise EnvironmentGone("the runtime sent an oversized frame")
            document = json.loads(await self._reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            raise EnvironmentGone("the runtime closed its socket") from None
        with contextlib.suppress(TimeoutError):  # its output ends with a marker line
            await asyncio.wait_for(self._marker.wait(), _MARKER_WAIT)
        return _Answer(dict(document), self._take_output())

    def _take_output(self) -> list[LogLine]:
        taken, self._output = self._output, []
        self._marker.clear()
        return taken

    async def _read_output(self) -> None:
        """Collect the process's output, line by line, until it closes it."""
        assert self._proc is not None
        pending = b""
        while chunk := await self._proc.output.read(_CHUNK):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._line(line)
            if len(pending) >= _MAX_LINE:  # one event of at most this much, as Lambda splits
                self._line(pending)
                pending = b""
        if pending:
            self._line(pending)

    def _line(self, raw: bytes) -> None:
        # The marker follows the invocation's output, possibly on its unfinished last line.
        text = raw.decode("utf-8", errors="replace")
        before, marker, _ = text.partition(MARKER)
        if before or not marker:
            self._output.append((time.time(), before + "\n"))
        if marker:
            self._marker.set()

    async def _exit_status(self) -> str:
        if self._proc is None:
            return "exit status 1"
        code = await self._proc.wait(1.0)
        if code is not None and code < 0:
            return f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
        return f"exit status {code}"

    async def close(self, reason: str) -> None:
        """Stop the process (killed: an environment is never asked twice)."""
        if self._proc is not None and self._proc.returncode is None:
            log.info("function %s: environment %d stopped: %s", self.spec.name, self.pid, reason)
            self._proc.kill_group()
            await self._proc.wait()
        await self._remove_cgroup()
        if self._writer is not None:
            self._writer.close()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._pump, 1.0)

    async def _remove_cgroup(self) -> None:
        if self.cgroup is not None:
            cgroup, self.cgroup = self.cgroup, None
            await cgroup.remove()


def no_runtime(request_id: str, spec: FunctionSpec) -> Outcome:
    """The answer when an environment could not even start (its process died at once)."""
    message = f"RequestId: {request_id} Error: Runtime exited without providing a reason"
    document = {"errorType": "Runtime.ExitError", "errorMessage": message}
    now = time.time()
    lines = ((now, f"{message}\n"), (now, "Runtime.ExitError\n"))
    stream = f"{datetime.now(UTC):%Y/%m/%d}/[{spec.version}]runtime"
    return Outcome(json.dumps(document).encode(), "Unhandled", lines, stream)


def _peak_bytes(document: dict[str, object]) -> int:
    peak = document.get("max_rss_kb", 0)
    return peak * 1024 if isinstance(peak, int) else 0


def resident_bytes(pid: int) -> int:
    """A process's resident set size (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def log_tail(text: str) -> str:
    """The last 4 KB of an invocation's log, base64, as X-Amz-Log-Result carries it."""
    data = text.encode("utf-8")[-_LOG_TAIL:]
    return base64.b64encode(data).decode("ascii")
