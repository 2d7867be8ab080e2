"""Enter an execution environment's sandbox, then exec its runtime (a standard-library script).

Why a separate process image: the steps below must run in the new process before any user code
and without the parent's threads around (a `preexec_fn` in a threaded asyncio server can
deadlock), and they need no outside tool (`unshare`, `mount`, a shell) whose presence or
version could vary. Run as `python -I -S isolate.py PLAN ARGV...`, it applies PLAN (JSON) to
itself and then replaces itself with ARGV, so the runtime starts as a fresh image: nothing of
this script stays in it, and capabilities held only inside a user namespace are dropped by the
exec for a non-zero uid.

PLAN's keys, each optional, applied in this order:
- `cgroup`: a `cgroup.procs` file to join (the environment's memory limit), before anything
  is allocated;
- `namespace`: "mount" (a private mount namespace; needs root) or "user" (a user namespace
  owning a mount namespace, mapping only the caller's own uid and gid; for a non-root server);
- `opt`: a directory bind-mounted read-only on /opt inside that namespace, so that /opt holds
  the function's layers while the host's /opt stays as it is (mounts are made private first,
  so nothing propagates back);
- `uid`, `gid`: the unprivileged identity the runtime then runs as.
A step that fails ends the process with a one-line reason on stderr (the function's log) and
exit status 70, before the runtime starts.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
# Flags a bind remount must keep (the kernel refuses to clear them inside a user namespace);
# statvfs reports them with the same bit values as mount(2) takes them.
KEPT_FLAGS = 0x2 | 0x4 | 0x8 | 0x400 | 0x800 | 0x1000  # nosuid nodev noexec noatime ...
FAILED = 70

# The C library this interpreter is linked with, by its own symbols: `ctypes.util.find_library`
# would run `ldconfig -p` in a subprocess, a third of an environment's start.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_void_p]  # fmt: skip
_libc.unshare.argtypes = [ctypes.c_int]


class StepFailed(Exception):
    pass


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise StepFailed(f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as out:
            out.write(text)
    except OSError as exc:
        raise StepFailed(f"cannot write {path}: {exc.strerror}") from None


def join_cgroup(procs: str) -> None:
    _write(procs, str(os.getpid()))


def enter_namespace(kind: str) -> None:
    uid, gid = os.getuid(), os.getgid()
    if kind == "user":
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(user, mount)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
    elif kind == "mount":
        _check(_libc.unshare(CLONE_NEWNS), "unshare(mount)")
    else:
        raise StepFailed(f"unknown namespace {kind!r}")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making mounts private")


def mount_opt(source: str) -> None:
    _check(_libc.mount(source.encode(), b"/opt", None, MS_BIND | MS_REC, None), "mounting /opt")
    kept = os.statvfs(source).f_flag & KEPT_FLAGS
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | kept
    _check(_libc.mount(b"none", b"/opt", None, flags, None), "making /opt read-only")


def drop_to(uid: int, gid: int) -> None:
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise StepFailed(f"cannot run as uid {uid}: {exc.strerror}") from None


def apply(plan: dict[str, Any]) -> None:
    if plan.get("cgroup"):
        join_cgroup(str(plan["cgroup"]))
    if plan.get("namespace"):
        enter_namespace(str(plan["namespace"]))
        if plan.get("opt"):
            mount_opt(str(plan["opt"]))
    if plan.get("uid") is not None:
        drop_to(int(plan["uid"]), int(plan["gid"]))


def main(argv: list[str]) -> int:
    plan, command = json.loads(argv[1]), argv[2:]
    try:
        apply(plan)
    except StepFailed as exc:
        print(f"execution environment not started: {exc}", file=sys.stderr, flush=True)
        return FAILED
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
