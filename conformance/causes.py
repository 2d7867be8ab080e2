"""Why tests that pass directly fail through Sluice: the causes found by reading the failures.

Each `Cause` names the tests it explains (regexes searched in "<suite> <test id>", e.g.
"asyncpg tests.test_prepare.TestPrepare.test_prepare_01", optionally also in the
failure text) and says whether any pooler would fail them in that mode (`inherent`) or
what Sluice does differently. The report groups regressions by the first cause that
matches; a regression no cause matches is listed as unclassified with its failure, so
a new failure is never hidden behind an old explanation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from conformance.results import Difference


@dataclass(frozen=True)
class Cause:
    """One reason for failures through Sluice, and the tests it explains."""

    key: str
    title: str
    why: str
    inherent: bool  # any pooler in this mode: not a Sluice defect
    tests: tuple[str, ...]  # regexes searched in "<suite> <test id>"
    modes: tuple[str, ...] = ("transaction", "session")
    detail: str = ""  # regex that must also be found in the failure text, if given

    def explains(self, suite: str, diff: Difference, mode: str) -> bool:
        name = f"{suite} {diff.test}"
        if mode not in self.modes or not any(re.search(p, name) for p in self.tests):
            return False
        return not self.detail or re.search(self.detail, diff.detail) is not None


_ASYNCPG = r"^asyncpg tests\."
_PSYCOPG2 = r"^psycopg2 tests\."
_MYSQL = r"^mysql-connector-python tests\."

CAUSES: tuple[Cause, ...] = (
    # ---------------------------------------------------------------- inherent
    Cause(
        key="backend-pid",
        title="Transaction mode: backend pids name pooled connections, not clients",
        why=(
            "The pid a client reads (`pg_backend_pid()`, the pid in a NotificationResponse) "
            "belongs to the server connection that ran that transaction; the next transaction "
            "may run on another one, and the BackendKeyData pid is the pooler's. Any "
            "transaction pooler differs here (DESIGN.md lists backend pids among the documented "
            "differences)."
        ),
        inherent=True,
        modes=("transaction",),
        tests=(
            _PSYCOPG2 + r"test_connection\.TestConnectionInfo\.test_backend_pid$",
            _PSYCOPG2 + r"test_notify\.",
            _PSYCOPG2 + r"test_async\.AsyncTests\.test_notify$",
            _ASYNCPG + r"test_listeners\.TestListeners\.test_listen_",
        ),
    ),
    Cause(
        key="terminate-by-pid",
        title="Transaction mode: pg_terminate_backend(pid) hits whoever holds that connection now",
        why=(
            "The test reads a victim's `pg_backend_pid()`, then terminates that pid from a "
            "second connection. In transaction mode the victim's server connection went back to "
            "the pool after its transaction, and the killer's own next transaction may run on "
            "it: the killer terminates itself (connection closed in the middle of the "
            "operation). Killing backends by pid cannot be aimed at a client through any "
            "transaction pooler."
        ),
        inherent=True,
        modes=("transaction",),
        tests=(
            _PSYCOPG2 + r"test_cursor\.CursorTests\.test_external_close_",
            _ASYNCPG + r"test_pool\.TestPool\.test_pool_remote_close$",
        ),
    ),
    Cause(
        key="statement-names",
        title="Transaction mode: protocol statement names are the pooler's, not SQL's",
        why=(
            "A protocol-level statement (Parse with a name) must follow the client from server "
            "connection to server connection, so a pooler renames it; SQL `EXECUTE name` with "
            "the client's name then finds nothing. PgBouncer 1.21+ behaves the same; asyncpg's "
            "error hint says so."
        ),
        inherent=True,
        modes=("transaction",),
        tests=(_ASYNCPG + r"test_prepare\.TestPrepare\.test_prepare_explicitly_named$",),
    ),
    Cause(
        key="pipelined-writes",
        title="A second hop buffers more of what a client writes (timing-bound tests)",
        why=(
            "asyncpg's executemany pipelines 128 rows of 32 kB; the server fails the second "
            "row and the test expects asyncpg to stop writing before the end. With Sluice in "
            "between there are two more socket buffers, and all 4 MB are written before the "
            "error comes back. psycopg2's test_flush_on_write sends queries of up to 50 MB and "
            "expects a write to block at least once; Sluice reads them as fast as they come "
            "(the test itself calls a miss 'a testing glitch' of a loaded machine and only "
            "warns, which the suite's settings turn into an error). Both are timing-bound: "
            "the asyncpg one also failed directly in an earlier run on this machine."
        ),
        inherent=True,
        tests=(
            _ASYNCPG
            + r"test_execute\.TestExecuteMany\.test_executemany_server_failure_during_writes$",
            _PSYCOPG2 + r"test_green\.GreenTestCase\.test_flush_on_write$",
        ),
    ),
    Cause(
        key="session-login-connects",
        title="Session mode: a login waits for its server connection (timing-bound test)",
        why=(
            "In session mode a client is given its server connection at login, so that its "
            "BackendKeyData carries that server's pid. When no idle connection is at hand the "
            "login waits while Sluice opens one (TLS and SCRAM with the server, after those "
            "with the client): after pg_terminate_backend of its only connection, asyncpg's "
            "pool reconnects within `acquire(timeout=0.1)` directly, not always through Sluice "
            "on a loaded machine. A session pooler that hands out its server's pid connects at "
            "login."
        ),
        inherent=True,
        modes=("session",),
        tests=(_ASYNCPG + r"test_pool\.TestPool\.test_pool_remote_close$",),
        detail=r"TimeoutError",
    ),
    Cause(
        key="server-status-counters",
        title="Server status variables describe Sluice's connections to the server",
        why=(
            'What the server reports about "this connection" or about clients is about '
            "Sluice's connections: `SHOW STATUS LIKE 'Ssl_version'` gives the TLS of Sluice's "
            "connection to the server (TLSv1.3 here), not the TLSv1.2 the client asked for, nor "
            "'' for a client with `ssl_disabled`; `Aborted_clients` does not grow when a client "
            "drops its socket without COM_QUIT, because the server connection is Sluice's and "
            "stays open; `SHOW SESSION STATUS LIKE 'Compression'` is OFF for a client that "
            "compresses its packets with Sluice, as Sluice's connections to the server are not "
            "compressed. Any proxy that ends the client's connection, TLS and compression "
            "differs here."
        ),
        inherent=True,
        tests=(
            _MYSQL + r"test_bugs\.Bug26484601\.test_get_connection_using_given_TLS_version",
            _MYSQL + r"test_bugs\.BugOra35349093\.test_set_compress_(cext_)?true$",
            _MYSQL + r"test_connection\.WL14852\.test_giving_ssl_disable_does_not_raise_error",
            _MYSQL + r"test_connection\.MySQLConnectionTests\.test_shutdown$",
        ),
    ),
)


def classify(suite: str, diff: Difference, mode: str) -> Cause | None:
    """The first cause that explains `diff` of `suite` in `mode`, if any."""
    for cause in CAUSES:
        if cause.explains(suite, diff, mode):
            return cause
    return None
