"""An execution environment's OS process, started without stalling the server's event loop.

Why not `asyncio.create_subprocess_exec`: under uvloop (as `sluice server` runs) it forks the
whole server process on the event loop's thread, copying its page tables: about 10-15 ms of
a loop that also relays every proxied connection, once per environment started (a burst of
200 cold starts stalled the loop for seconds). `subprocess.Popen` starts the child with
vfork (the standard library does when no `preexec_fn` and no uid/gid change is asked, as
here) and is called in a worker thread, so the loop never waits for it. The child's merged
stdout/stderr is then read on the loop like any pipe; its exit is waited for in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_OUTPUT_LIMIT = 1024 * 1024  # the StreamReader's buffer; reads are in chunks well below


class RuntimeProcess:
    """A started environment process: its pid, its output as a stream, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], output: asyncio.StreamReader) -> None:
        self._popen = popen
        self.output = output

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """None while it runs (checked without blocking)."""
        return self._popen.poll()

    async def wait(self, timeout: float | None = None) -> int | None:
        """Its exit status, waited for at most `timeout` seconds (None: still running)."""
        try:
            return await asyncio.to_thread(self._popen.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_group(self) -> None:
        """SIGKILL to its process group (it leads a session of its own)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signal.SIGKILL)


async def spawn(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], pass_fd: int
) -> RuntimeProcess:
    """Start `argv` in a session of its own, stdin from /dev/null, stdout and stderr merged
    into one pipe, `pass_fd` inherited (OSError if it cannot be started)."""
    popen = await asyncio.to_thread(
        subprocess.Popen, list(argv), cwd=cwd, env=dict(env), pass_fds=(pass_fd,),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert popen.stdout is not None
    output = asyncio.StreamReader(limit=_OUTPUT_LIMIT)
    loop = asyncio.get_running_loop()
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), popen.stdout)
    except BaseException:
        popen.kill()  # the process is not watched by anyone: never left behind
        await asyncio.to_thread(popen.wait)
        raise
    return RuntimeProcess(popen, output)
