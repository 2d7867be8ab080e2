"""What the host lets an execution environment have: its own /opt, a memory limit, its own uid.

Why it is decided by trying: whether a process may make a mount namespace, a user namespace, a
cgroup or change its uid depends on privileges, kernel settings and the container the server
runs in, which no configuration file reliably tells. So the first environment to start makes
the runner probe each ability once, with the same `isolate.py` steps the environments use, and
what works is used from then on (the server log says what was found, and why not the rest):

- /opt: a private mount namespace when the server runs as root, else a user namespace owning a
  mount namespace when the kernel allows unprivileged ones; /opt is then the function's layers,
  read-only. Without either, /opt is not provided: the layers are still on the import path.
- Memory: each environment in its own memory cgroup (v2, or v1 where that is what the host
  mounts) limited to the function's MemorySize without swap; `cgroups.py`. Without a writable
  cgroup, the environment's watchdog enforces the limit instead.
- Identity: when the server runs as root, environments run as `nobody` if that user can start
  the interpreter, read the runtime script and reach the unpacked code; else as root (the log
  says why). Code files must then be readable by others, as Lambda requires of a package.
- Network identity: the library built from `source_address.c` when Sluice was installed,
  preloaded into the environments' processes, binds every program's connections to this host
  to the environment's source address. Where it was not built (no C compiler), only what
  connects through Python's socket module is bound (`bootstrap.py`).

The layers of a function are merged once into one directory per list of layers (later layers
over earlier ones, file by file, as Lambda unpacks them into /opt), made of hard links to the
unpacked layers; it is what /opt shows, or what the import path points into without /opt.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.machinery
import json
import logging
import os
import pwd
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sluice.functions.cgroups import EnvironmentCgroup, MemoryCgroups

log = logging.getLogger("sluice.functions")

ISOLATE = Path(__file__).with_name("isolate.py")
BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
OPT = Path("/opt")
SOURCE_ADDRESS_LIBRARY = "_source_address"  # its name without the suffix of a built module
_PROBE_TIMEOUT = 10.0
_MARKER = "sluice-probe"
UNPRIVILEGED_USER = "nobody"


@dataclass(slots=True)
class Sandbox:
    """The abilities found on this host (see the module docstring); `plain()` has none."""

    root: Path  # where merged layer trees are kept
    namespace: str = ""  # "mount", "user", or "" (no /opt)
    cgroups: MemoryCgroups | None = None
    uid: int | None = None
    gid: int | None = None
    preload: Path | None = None  # the library binding connections to the source address
    _building: dict[Path, asyncio.Lock] = field(default_factory=dict)

    @property
    def has_opt(self) -> bool:
        return bool(self.namespace)

    def command(
        self, runtime: list[str], layers: Path, cgroup: EnvironmentCgroup | None
    ) -> list[str]:
        """The argv of an environment's process: `runtime` itself, or through isolate.py."""
        plan: dict[str, object] = {}
        if cgroup is not None:
            plan["cgroup"] = str(cgroup.procs)
        if self.namespace:
            plan.update(namespace=self.namespace, opt=str(layers))
        if self.uid is not None:
            plan.update(uid=self.uid, gid=self.gid)
        if not plan:
            return runtime
        return [runtime[0], "-I", "-S", str(ISOLATE), json.dumps(plan), *runtime]

    async def layers(self, unpacked: tuple[Path, ...]) -> Path:
        """The merged tree of these layers, in this order (built on first use)."""
        key = hashlib.sha256("\n".join(map(str, unpacked)).encode()).hexdigest()[:32]
        target = self.root / key
        lock = self._building.setdefault(target, asyncio.Lock())
        async with lock:
            if not target.is_dir():
                await asyncio.to_thread(merge_layers, unpacked, target)
        return target


def source_address_library() -> Path | None:
    """The library built from `source_address.c` at install time, if it was."""
    here = Path(__file__).parent
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        library = here / f"{SOURCE_ADDRESS_LIBRARY}{suffix}"
        if library.is_file():
            return library
    return None


def merge_layers(unpacked: tuple[Path, ...], target: Path) -> None:
    """Lay each layer over the ones before it (hard links, or copies across file systems)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".part-"))
    try:
        for layer in unpacked:
            _overlay(layer, partial)
        partial.chmod(0o755)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _overlay(source: Path, target: Path) -> None:
    for directory, subdirs, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        here = target / relative
        if here.exists() and not here.is_dir():
            here.unlink()  # a later layer's directory replaces an earlier layer's file
        here.mkdir(exist_ok=True)
        for name in files:
            destination = here / name
            if destination.is_dir() and not destination.is_symlink():
                shutil.rmtree(destination)
            elif destination.exists() or destination.is_symlink():
                destination.unlink()
            try:
                os.link(Path(directory) / name, destination)
            except OSError:
                shutil.copy2(Path(directory) / name, destination)
        subdirs.sort()


async def probe(root: Path, python: str, code_root: Path) -> Sandbox:
    """Find what this host allows (see the module docstring); never raises."""
    sandbox = Sandbox(root)
    sandbox.namespace = await _probe_namespace(python, root)
    sandbox.cgroups, why_not = MemoryCgroups.find()
    if sandbox.cgroups is None:
        log.info("function environments: no memory cgroup (%s); a watchdog enforces "
                 "MemorySize", why_not)  # fmt: skip
    if os.geteuid() == 0:
        sandbox.uid, sandbox.gid = await _probe_user(python, code_root)
    sandbox.preload = source_address_library()
    log.info("function environments: connections to this host bound to the source address %s",
             f"by the preloaded library {sandbox.preload}" if sandbox.preload else
             "through Python's socket module only, not from C (no library to preload: it is "
             "built when Sluice is installed with a C compiler)")  # fmt: skip
    log.info("function environments: /opt %s, memory limit by %s, running as %s",
             f"in a {sandbox.namespace} namespace" if sandbox.namespace else "not provided",
             sandbox.cgroups.describe() if sandbox.cgroups else "a watchdog",
             UNPRIVILEGED_USER if sandbox.uid is not None else pwd.getpwuid(os.geteuid())[0])
    return sandbox  # fmt: skip


async def _probe_namespace(python: str, root: Path) -> str:
    if not OPT.is_dir():
        log.info("function environments: no /opt on this host to mount layers on")
        return ""
    kinds = ("mount", "user") if os.geteuid() == 0 else ("user",)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".probe-") as scratch:
        Path(scratch, _MARKER).touch()
        check = f"import os,sys; sys.exit(0 if os.path.exists('/opt/{_MARKER}') else 1)"
        for kind in kinds:
            plan = {"namespace": kind, "opt": scratch}
            ok, why = await _try(python, plan, check)
            if ok:
                return kind
            log.info("function environments: no %s namespace: %s", kind, why)
    return ""


async def _probe_user(python: str, code_root: Path) -> tuple[int | None, int | None]:
    try:
        user = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return None, None
    code_root.mkdir(parents=True, exist_ok=True)
    check = f"import os; os.listdir({str(code_root)!r}); open({str(BOOTSTRAP)!r}).close()"
    ok, why = await _try(python, {"uid": user.pw_uid, "gid": user.pw_gid}, check)
    if not ok:
        log.warning("function environments run as root: user %s cannot run %s or read %s (%s)",
                    UNPRIVILEGED_USER, python, code_root, why)  # fmt: skip
        return None, None
    return user.pw_uid, user.pw_gid


async def _try(python: str, plan: Mapping[str, object], check: str) -> tuple[bool, str]:
    argv = [python, "-I", "-S", str(ISOLATE), json.dumps(plan), python, "-I", "-S", "-c", check]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd="/",
        )  # fmt: skip
    except OSError as exc:
        return False, str(exc)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), _PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, "no answer"
    text = out.decode("utf-8", "replace").strip().splitlines()
    return proc.returncode == 0, (text[-1] if text else f"exit status {proc.returncode}")
