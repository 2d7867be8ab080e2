"""Memory cgroups: each execution environment limited to its function's MemorySize, as on Lambda.

Why cgroups: a limit the kernel enforces covers every process of the environment (a handler's
subprocesses too), acts at the allocation that crosses it (the OOM killer sends SIGKILL, which
the runtime reports as "signal: killed"), and gives the peak the REPORT line shows. The
environments' cgroups are made under the server's own cgroup, in `sluice-functions/`, so the
server's own limits still hold over them.

Both hierarchies are handled, since hosts still mount either: cgroup v2 (`memory.max`,
`memory.swap.max`, `memory.peak`, `memory.events`) and the v1 memory controller
(`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `memory.max_usage_in_bytes`,
`memory.oom_control`). On v2 the server's cgroup must be able to delegate the memory
controller to a child (it cannot when it holds processes itself and is not the root cgroup);
`find()` says why not when it is not usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path

GROUP = "sluice-functions"
_MB = 1024 * 1024
_REMOVE_TRIES = 50


@dataclass(frozen=True, slots=True)
class MemoryCgroups:
    """The directory the environments' cgroups are made in, and its hierarchy's version."""

    group: Path
    version: int

    @classmethod
    def find(cls) -> tuple[MemoryCgroups | None, str]:
        """The usable memory hierarchy of this process, or None and why not."""
        try:
            mounts = Path("/proc/self/mountinfo").read_text()
            membership = Path("/proc/self/cgroup").read_text()
        except OSError as exc:
            return None, str(exc)
        found = _locate(mounts, membership)
        if found is None:
            return None, "no memory controller is mounted"
        base, version = found
        group = base / GROUP
        try:
            if version == 2:
                _delegate(base)
            group.mkdir(exist_ok=True)
            if version == 2:
                _delegate(group)
        except OSError as exc:
            return None, f"{group}: {exc.strerror}"
        return cls(group, version), ""

    def describe(self) -> str:
        return f"cgroup v{self.version} ({self.group})"

    def create(self, name: str, memory_mb: int) -> EnvironmentCgroup:
        """A new cgroup limited to `memory_mb` without swap (OSError if it cannot be made)."""
        path = self.group / name
        path.mkdir()
        limit = str(memory_mb * _MB)
        try:
            if self.version == 2:
                (path / "memory.max").write_text(limit)
                _optional(path / "memory.swap.max", "0")
            else:
                (path / "memory.limit_in_bytes").write_text(limit)
                _optional(path / "memory.memsw.limit_in_bytes", limit)
        except OSError:
            path.rmdir()
            raise
        return EnvironmentCgroup(path, self.version)


@dataclass(frozen=True, slots=True)
class EnvironmentCgroup:
    """One environment's cgroup: joined by its process, read for the REPORT line."""

    path: Path
    version: int

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def peak_bytes(self) -> int | None:
        """The most memory the environment has used (None if the kernel does not say)."""
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        try:
            return int((self.path / name).read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many processes of this environment the OOM killer has killed."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    async def remove(self) -> None:
        """Kill what is left in it (a handler's stray children), then remove it."""
        for _ in range(_REMOVE_TRIES):
            self._kill_all()
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                await asyncio.sleep(0.02)  # processes still exiting

    def _kill_all(self) -> None:
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
            return
        with contextlib.suppress(OSError, ValueError):
            for pid in self.procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def _locate(mounts: str, membership: str) -> tuple[Path, int] | None:
    """This process's cgroup directory in the hierarchy holding the memory controller."""
    v1: tuple[Path, str] | None = None
    v2: tuple[Path, str] | None = None
    for line in mounts.splitlines():
        before, _, after = line.partition(" - ")
        fields, extra = before.split(), after.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        fstype, options = extra[0], extra[2].split(",")
        if fstype == "cgroup" and "memory" in options:
            v1 = (Path(fields[4]), fields[3])
        elif fstype == "cgroup2":
            v2 = (Path(fields[4]), fields[3])
    for line in membership.splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and v2 is not None:
            base = _inside(*v2, path)
            if "memory" in _words(base / "cgroup.controllers"):
                return base, 2
        elif "memory" in controllers.split(",") and v1 is not None:
            return _inside(*v1, path), 1
    return None


def _inside(mountpoint: Path, mount_root: str, path: str) -> Path:
    relative = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path
    return mountpoint if relative == "." else mountpoint / relative.lstrip("/")


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _delegate(path: Path) -> None:
    if "memory" not in _words(path / "cgroup.subtree_control"):
        (path / "cgroup.subtree_control").write_text("+memory")


def _optional(path: Path, value: str) -> None:
    """A setting the kernel may not offer (no swap accounting): skipped when absent."""
    with contextlib.suppress(FileNotFoundError):
        path.write_text(value)
