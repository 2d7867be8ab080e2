"""Count the bench role's backends in pg_stat_activity, once or every 100 ms.

The poller keeps one superuser connection over the unix socket (its own
backend belongs to `postgres`, so it never counts itself) and runs in a
thread while a row is measured; `peak` is the largest count it saw. A query
that fails is remembered and retried on a new connection, never raised: the
count is a side measurement and must not sink the row.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import psycopg

from bench.systems import BENCH_USER

_COUNT_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename = %s"
)
_CONNECT_TIMEOUT = 10


def count_backends(conninfo: str) -> int:
    """The bench role's client backends right now."""
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT) as conn:
        return _count(conn)


def _count(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute(_COUNT_SQL, (BENCH_USER,)).fetchone()
    return 0 if row is None else int(row[0])


def wait_no_backends(conninfo: str, timeout: float = 15.0) -> str | None:
    """Wait until the previous row's backends are gone; return a warning if they are not."""
    deadline = time.monotonic() + timeout
    try:
        while (left := count_backends(conninfo)) and time.monotonic() < deadline:
            time.sleep(0.1)
    except psycopg.Error as exc:
        return f"cannot count backends: {exc}"
    return f"{left} backends of the last row are still open" if left else None


class BackendPoller:
    """A thread sampling the backend count every `interval` seconds; `peak` is the max."""

    def __init__(self, conninfo: str, interval: float = 0.1) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backend-poller", daemon=True)

    def _loop(self) -> None:
        conn: psycopg.Connection[tuple[int]] | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = psycopg.connect(
                        self.conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
                    )
                self.peak = max(self.peak, _count(conn))
                self.samples += 1
            except psycopg.Error as exc:
                self.error = str(exc).strip()
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()

    def __enter__(self) -> BackendPoller:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=_CONNECT_TIMEOUT + 5)
