"""`python -m bench.guard`: what a DB instance's guarded front costs, measured with pgbench.

A throwaway PostgreSQL server (the `dbserver` launcher) and, in a child
process under uvloop as in `sluice server`, an `InstanceGuard` in front of it
that admits every client. pgbench -S runs against the server directly and
through the front, with long-lived connections and with a new connection per
transaction (-C); the table shows both rates and the front's CPU time per
transaction. Numbers from a shared machine move with its load: compare rows of
one run, not runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.procinfo import cpu_seconds
from sluice.dbserver.launcher import free_port
from sluice.dbserver.postgres import PgCluster

USER, PASSWORD, DB = "bench", "bench-pw", "bench"


def serve(port: int, backend_port: int) -> None:
    """The child: a front on 127.0.0.1:`port` for the server on `backend_port`."""
    import uvloop

    from sluice.control.guard import InstanceGuard

    async def main() -> None:
        guard = InstanceGuard("bench", "postgres", ("127.0.0.1", port),
                              ("127.0.0.1", backend_port), lambda address: True)  # fmt: skip
        await guard.start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


def pgbench(bin_dir: Path, port: int, clients: int, seconds: int, connect: bool) -> float:
    cmd = [str(bin_dir / "pgbench"), "-n", "-S", "-T", str(seconds), "-c", str(clients),
           "-j", str(min(clients, 4)), "-h", "127.0.0.1", "-p", str(port), "-U", USER, DB]
    if connect:
        cmd.append("-C")
    env = {**os.environ, "PGPASSWORD": PASSWORD}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("tps = "))
    return float(line.split()[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    with PgCluster() as pg:
        pg.create_user(USER, PASSWORD)
        pg.create_database(DB, USER)
        env = {**os.environ, "PGPASSWORD": PASSWORD}
        subprocess.run([str(pg.bin_dir / "pgbench"), "-i", "-q", "-s", "1", "-h", pg.host,
                        "-p", str(pg.port), "-U", USER, DB],
                       env=env, check=True, capture_output=True)  # fmt: skip
        port = free_port()
        child = subprocess.Popen([sys.executable, "-m", "bench.guard", "--serve", str(port),
                                  str(pg.port)], stdout=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            print(f"{'pgbench -S':<24}{'direct tps':>12}{'front tps':>12}{'ratio':>8}"
                  f"{'front CPU us/txn':>18}")
            for connect in (False, True):
                clients = args.clients if not connect else max(1, args.clients // 2)
                direct = pgbench(pg.bin_dir, pg.port, clients, args.seconds, connect)
                before = cpu_seconds(child.pid)
                started = time.monotonic()
                fronted = pgbench(pg.bin_dir, port, clients, args.seconds, connect)
                spent = cpu_seconds(child.pid) - before
                txns = fronted * (time.monotonic() - started)
                label = f"-c {clients}" + (" -C" if connect else "")
                print(f"{label:<24}{direct:>12.0f}{fronted:>12.0f}{fronted / direct:>8.2f}"
                      f"{spent / txns * 1e6:>18.1f}")
        finally:
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
