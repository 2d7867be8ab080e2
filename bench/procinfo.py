"""What the harness reads about processes and the machine, all from /proc.

CPU time is utime+stime of the whole process (every thread) in clock ticks,
so readings have a 10 ms resolution: fine over runs of seconds, useless for
single transactions. RSS is VmRSS, the resident set the kernel reports.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
from pathlib import Path

from sluice.dbserver.mariadb import MariaDbBinariesNotFound, find_binaries
from sluice.dbserver.postgres import PgBinariesNotFound, find_bin_dir

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_WANTED_NOFILE = 65536


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds consumed so far by process `pid` and its live children
    (a supervisor's workers)."""
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds consumed so far by process `pid` and its live children."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(k) for k in children.read_text().split()] if children.exists() else []
    user = system = 0.0
    for one in (pid, *kids):
        own_user, own_system = _own_cpu_times(one)
        user += own_user
        system += own_system
    return user, system


def _own_cpu_times(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are fixed.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return utime / _CLK_TCK, stime / _CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def raise_nofile_limit(wanted: int = _WANTED_NOFILE) -> int:
    """Raise RLIMIT_NOFILE as far as allowed (children inherit it); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        target = max(wanted, soft)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ephemeral_ports() -> int:
    """How many local ports the kernel hands out to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return 28232  # Linux default range 32768-60999
    return int(high) - int(low) + 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def tool_version(*cmd: str) -> str:
    """The first output line of `cmd` (e.g. `pgbouncer --version`), or `unavailable`."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    if not lines:
        return "unavailable"
    first = " ".join(lines[0].split())
    return first.removeprefix(str(Path(cmd[0]).parent) + "/") if "/" in cmd[0] else first


def machine_info(postgres_bin: Path | None = None) -> dict[str, str]:
    """The facts about this machine that a reader needs to weigh the numbers.

    Versions of every tool the harness can run, whether or not this run used it
    (the page merges rows of several runs); `postgres_bin` defaults to the one
    PgCluster would pick.
    """
    if postgres_bin is None:
        try:
            postgres_bin = find_bin_dir()
        except PgBinariesNotFound:  # no PostgreSQL here: the table says unavailable
            postgres_bin = Path("/nonexistent")
    try:
        mariadbd = str(find_binaries().server)
    except MariaDbBinariesNotFound:
        mariadbd = "mariadbd"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "ram": _mem_total_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "postgresql": tool_version(str(postgres_bin / "postgres"), "--version"),
        "pgbench": tool_version("pgbench", "--version"),
        "pgbouncer": tool_version("pgbouncer", "--version"),
        "mariadb": tool_version(mariadbd, "--version"),
        "sysbench": tool_version("sysbench", "--version"),
        "mariadb-slap": tool_version("mariadb-slap", "--version"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
