"""Count the bench user's backend connections, once or every 100 ms.

A counter keeps one admin connection to the database server and answers
`count()`: for PostgreSQL the bench role's client backends in
pg_stat_activity (a superuser connection over the unix socket, whose own
backend belongs to `postgres`), for MariaDB the bench user's threads in the
process list (see bench.mysql). The PostgreSQL counter also reads each backend's
TLS state from pg_stat_ssl: the most backends it saw with and without TLS, and the
TLS versions and ciphers they used, are how a TLS row shows that its database leg
really was encrypted. The poller runs a counter in a thread while a
row is measured; `peak` is the largest count it saw. A query that fails is
remembered and retried on a new connection, never raised: the count is a side
measurement and must not sink the row.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Protocol

import psycopg

from bench.systems import BENCH_USER

_COUNT_SQL = (
    "SELECT count(*), count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl), "
    "string_agg(DISTINCT s.version || ' ' || s.cipher, ', ') "
    "FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
    "WHERE a.backend_type = 'client backend' AND a.usename = %s"
)
_CONNECT_TIMEOUT = 10


class BackendCounter(Protocol):
    """Counts the bench user's backends; raises on failure, reconnects on the next call."""

    def count(self) -> int: ...

    def close(self) -> None: ...


class PgBackendCounter:
    """The bench role's client backends in pg_stat_activity, over one kept connection.

    Beside the count: `tls_peak` and `plaintext_peak`, the most backends seen at once
    with and without TLS (pg_stat_ssl), and `tls_kinds`, the versions and ciphers seen.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self._conn: psycopg.Connection[tuple[int, int, int, str | None]] | None = None
        self.tls_peak = 0
        self.plaintext_peak = 0
        self.tls_kinds: set[str] = set()

    def count(self) -> int:
        try:
            if self._conn is None:
                self._conn = psycopg.connect(
                    self.conninfo, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
                )
            row = self._conn.execute(_COUNT_SQL, (BENCH_USER,)).fetchone()
        except psycopg.Error:
            self.close()
            raise
        if row is None:
            return 0
        total, tls, plaintext, kinds = row
        self.tls_peak = max(self.tls_peak, int(tls))
        self.plaintext_peak = max(self.plaintext_peak, int(plaintext))
        if kinds:
            self.tls_kinds.update(kinds.split(", "))
        return int(total)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def wait_no_backends(counter: BackendCounter, timeout: float = 15.0) -> str | None:
    """Wait until the previous row's backends are gone; return a warning if they are not."""
    deadline = time.monotonic() + timeout
    try:
        while (left := counter.count()) and time.monotonic() < deadline:
            time.sleep(0.1)
    except Exception as exc:  # a side check: report, never raise
        return f"cannot count backends: {exc}"
    finally:
        counter.close()
    return f"{left} backends of the last row are still open" if left else None


class BackendPoller:
    """A thread sampling a backend counter every `interval` seconds; `peak` is the max."""

    def __init__(self, counter: BackendCounter, interval: float = 0.1) -> None:
        self.counter = counter
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backend-poller", daemon=True)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self.peak = max(self.peak, self.counter.count())
                    self.samples += 1
                except Exception as exc:  # remembered, retried on a new connection
                    self.error = str(exc).strip()
                self._stop.wait(self.interval)
        finally:
            self.counter.close()

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
