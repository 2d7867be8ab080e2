"""`python -m bench.builds`: pgbench through the interpreted and the compiled Sluice, in turns.

One throwaway PostgreSQL with pgbench's tables; then, round after round, a fresh
`sluice proxy` from each build (the sources under src/, the package that
`make compiled` installs into .build/compiled, and any other given with `--also`,
such as an earlier version's compiled package), each warmed up and then loaded
with `pgbench -S` while /proc gives its CPU time, user and system. Alternating the
builds (and which goes first) spreads the noise of a shared machine over them; the
report gives every round and the median per build.

`--callgrind` counts instead the instructions the whole proxy process (event loop,
sessions, pools, wire layer) executes per transaction, user space only: each build's
proxy runs under `valgrind --tool=callgrind` twice, for `pgbench -S -t` of a few and of
many transactions per client, and the difference is divided by the extra
transactions. Unlike CPU time, the count does not move with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.pgbench import PgbenchRun, run_pgbench
from bench.procinfo import cpu_times
from bench.systems import BENCH_DB, BENCH_USER, LOCALHOST, BenchDatabase, Endpoint, pg_env
from sluice.dbserver.launcher import free_port
from sluice.devtools.runner import SluiceProcess

ROOT = Path(__file__).resolve().parent.parent


def _check_build(path: Path, compiled: bool) -> None:
    """Fail early if `path` does not hold the build it is said to."""
    code = "import sluice.wire.pg.responses as r; print(r.__file__)"
    env = {"PYTHONPATH": str(path)}
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    if found.endswith(".py") == compiled:
        raise SystemExit(f"{path} does not hold the {'compiled' if compiled else 'pure'} build")


def _one(
    db: BenchDatabase, workdir: Path, path: Path, run: PgbenchRun, pool: int
) -> tuple[float, float, float]:
    """(tps, proxy user and system CPU µs per transaction) of one fresh proxy from the
    build at `path`."""
    port = free_port()
    proxy = _proxy_config(db, port, pool)
    rundir = Path(tempfile.mkdtemp(prefix="sluice-", dir=workdir))
    proc = SluiceProcess(
        [proxy], glob={"log_level": "warning"}, workdir=rundir, env={"PYTHONPATH": str(path)}
    )
    proc.start(timeout=30)
    try:
        endpoint = Endpoint(LOCALHOST, port, proc.pid)
        warm = PgbenchRun(run.mode, run.clients, run.threads, 2)
        run_pgbench(warm, endpoint, db.password)
        user, system = cpu_times(proc.pid)
        result = run_pgbench(run, endpoint, db.password)
        user_after, system_after = cpu_times(proc.pid)
    finally:
        proc.stop(timeout=15)
    if result.error or not result.transactions or result.tps is None:
        raise RuntimeError(f"pgbench failed: {result.error}")
    per_txn = 1e6 / result.transactions
    return result.tps, (user_after - user) * per_txn, (system_after - system) * per_txn


def _proxy_config(db: BenchDatabase, port: int, pool: int) -> dict[str, object]:
    return {
        "name": "bench",
        "listen": f"{LOCALHOST}:{port}",
        "target": {"host": db.cluster.host, "port": db.cluster.port},
        "pool": {"mode": "transaction", "max_connections": pool, "max_idle_connections": pool},
        "users": [{"name": BENCH_USER, "password": db.password}],
    }


def _instructions(
    db: BenchDatabase, workdir: Path, path: Path, mode: str, clients: int, txns: int, pool: int
) -> int:
    """Instructions a fresh proxy from the build at `path`, run under callgrind, executes
    from its start to its exit, with `pgbench -t txns` (per client) run through it."""
    port = free_port()
    rundir = Path(tempfile.mkdtemp(prefix="sluice-", dir=workdir))
    proc = SluiceProcess(
        [_proxy_config(db, port, pool)], glob={"log_level": "warning"}, workdir=rundir
    )
    out = rundir / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    cmd += [sys.executable, "-m", "sluice", "proxy", "--config", str(proc.config_path)]
    stderr = rundir / "valgrind.log"
    with stderr.open("wb") as log:
        # (a fixed hash seed: with a random one, the dictionary probes of the proxy's
        # start moved the difference by a few hundred instructions per transaction)
        env = {**os.environ, "PYTHONPATH": str(path), "PYTHONHASHSEED": "0"}
        child = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        deadline = time.monotonic() + 300
        while True:  # python starts slowly under valgrind
            try:
                socket.create_connection((LOCALHOST, port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the proxy did not start:\n{stderr.read_text()}") from None
                time.sleep(0.5)
        bench = ["pgbench", "-n", "-S", "-M", mode, "-c", str(clients), "-j", "2"]
        bench += ["-t", str(txns), "-h", LOCALHOST, "-p", str(port), "-U", BENCH_USER, BENCH_DB]
        subprocess.run(bench, capture_output=True, check=True, env=pg_env(db.password))
    finally:
        child.terminate()
        child.wait(timeout=300)
    found = re.search(r"Collected : (\d+)", stderr.read_text())
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{stderr.read_text()}")
    return int(found.group(1))


def _callgrind(
    db: BenchDatabase, workdir: Path, builds: dict[str, Path], args: argparse.Namespace
) -> None:
    few, many = 20, 20 + args.callgrind_txns
    for name, path in builds.items():
        counts = [
            _instructions(db, workdir, path, args.mode, args.clients, n, args.pool_size)
            for n in (few, many)
        ]
        per_txn = (counts[1] - counts[0]) / ((many - few) * args.clients)
        print(f"{name:12} {per_txn:9.0f} instructions/txn", flush=True)


def _line(label: str, name: str, tps: float, user: float, system: float) -> str:
    return (
        f"{label} {name:12} {tps:8.0f} tps {user + system:6.2f} us CPU/txn"
        f" (user {user:5.2f}, system {system:5.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compiled", type=Path, default=ROOT / ".build" / "compiled")
    parser.add_argument("--pure", type=Path, default=ROOT / "src")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--mode", default="simple", choices=("simple", "extended", "prepared"))
    parser.add_argument("--pool-size", type=int, default=20)
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="another build to measure in the same rounds (e.g. an earlier compiled one)",
    )
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument(
        "--callgrind-txns", type=int, default=100, help="extra transactions per client counted"
    )
    args = parser.parse_args()
    builds = {"interpreted": args.pure.resolve(), "compiled": args.compiled.resolve()}
    _check_build(builds["interpreted"], compiled=False)
    _check_build(builds["compiled"], compiled=True)
    for also in args.also:
        name, _, path = also.partition("=")
        if not name or not path or name in builds:
            parser.error(f"--also {also!r}: expected a new NAME=PATH")
        builds[name] = Path(path).resolve()
    run = PgbenchRun(args.mode, args.clients, 2, args.duration)
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory(prefix="sluice-builds-") as tmp:
        Path(tmp).chmod(0o755)  # the server runs as the postgres OS user
        db = BenchDatabase(Path(tmp), max_connections=100, scale=10)
        db.start()
        try:
            if args.callgrind:
                _callgrind(db, Path(tmp), builds, args)
                return
            for round_ in range(1, args.rounds + 1):
                order = list(builds.items())
                for name, path in order if round_ % 2 else reversed(order):  # neither always first
                    row = _one(db, Path(tmp), path, run, args.pool_size)
                    results[name].append(row)
                    print(_line(f"round {round_}", name, *row), flush=True)
        finally:
            db.stop()
    for name, rows in results.items():
        tps, user, system = (statistics.median(row[i] for row in rows) for i in range(3))
        print(_line("median", name, tps, user, system))


if __name__ == "__main__":
    main()
