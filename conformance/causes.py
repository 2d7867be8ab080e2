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
    # ---------------------------------------------------------------- Sluice
    Cause(
        key="stale-statement",
        title="A new Parse gets a server statement prepared before a schema change",
        why=(
            "Sluice keeps one server-side statement per query text on each server connection "
            "and answers a client's Parse of a text the connection already has with its own "
            "ParseComplete (`sluice.pg.statements`, PARSE_FAKE). After DDL changes a table or "
            "type the query uses, that statement is stale: Describe returns the old parameter "
            "types (asyncpg then encodes a `time` value with the old `date` codec), or the server "
            "refuses it with 0A000 `cached plan must not change result type`. Directly, a new "
            "Parse plans the query again; that is how asyncpg recovers from "
            "InvalidCachedStatementError (it prepares the statement again), and through Sluice "
            "the new Parse lands on the same stale statement, so the error repeats. To fix: "
            "send a client's Parse to the server (or at least drop the shared statement when "
            "the server reports 0A000 for it, and whenever the client re-prepares after an error)."
        ),
        inherent=False,
        tests=(
            _ASYNCPG + r"test_cache_invalidation\.",
            _ASYNCPG + r"test_codecs\.TestCodecs\.test_custom_codec_override_tuple$",
            _ASYNCPG + r"test_copy\.TestCopyTo\.test_copy_records_to_table_no_binary_codec$",
        ),
    ),
    Cause(
        key="client-encoding-status",
        title="ParameterStatus client_encoding is the client's text, not the server's name",
        why=(
            "asyncpg sends `client_encoding='utf-8'` (quoted) in its startup packet. The server "
            "reports `client_encoding` = `UTF8`; Sluice builds the greeting's ParameterStatus "
            "from the client's startup value, upper-cased without dashes "
            "(`_REPORTED_NORMALIZE` in `sluice.pg.handshake`), and reports `'UTF8'` with the "
            "quotes. To fix: report the value the server reports for the setting (take it from "
            "a server's ParameterStatus after applying the startup value), not a rewrite of the "
            "client's text."
        ),
        inherent=False,
        tests=(_ASYNCPG + r"test_connect\.TestSettings\.test_get_settings_01$",),
    ),
    Cause(
        key="backend-pid-session",
        title="Session mode: the backend pid a client is given is not its server's",
        why=(
            "In session mode a client keeps one server connection for its whole session, yet "
            "Sluice gives it a BackendKeyData pid of its own. Whatever the server reports with "
            "the real pid differs from what the client believes: `pg_backend_pid()`, and the pid "
            "in every NotificationResponse (the tests compare a NOTIFY's sender pid with the "
            "sending connection's `backend_pid`). DESIGN.md lists backend pids among the "
            "documented differences; in session mode Sluice could give the server's pid (with a "
            "secret of its own, so cancels still go through Sluice)."
        ),
        inherent=False,
        modes=("session",),
        tests=(
            _PSYCOPG2 + r"test_connection\.TestConnectionInfo\.test_backend_pid$",
            _PSYCOPG2 + r"test_notify\.",
            _PSYCOPG2 + r"test_async\.AsyncTests\.test_notify$",
            _ASYNCPG + r"test_listeners\.TestListeners\.test_listen_",
        ),
    ),
    Cause(
        key="statement-names-session",
        title="Session mode: protocol statement names are renamed, SQL EXECUTE cannot see them",
        why=(
            "asyncpg prepares `select 1` with Parse name `foobar`, then runs SQL `EXECUTE "
            "foobar`. Sluice renames protocol-level statements (`sluice_N`) also in session mode "
            "by default, so the server has no `foobar`. Setting `max_prepared_statements = 0` "
            "passes names through (documented for session mode); the default could do so in "
            "session mode."
        ),
        inherent=False,
        modes=("session",),
        tests=(_ASYNCPG + r"test_prepare\.TestPrepare\.test_prepare_explicitly_named$",),
    ),
    Cause(
        key="mysql-compression",
        title="MySQL compressed protocol: not offered, and the pure-Python client then hangs",
        why=(
            "Sluice leaves CLIENT_COMPRESS out of the capabilities it offers (the server offers "
            "it). mysql-connector's pure-Python client with `compress=True` switches to "
            "compressed packets without checking the flag and waits for a compressed reply that "
            "never comes (each such test hangs until the per-test timeout); the C extension "
            "(libmysqlclient) falls back to plain packets, and tests that check `SHOW STATUS "
            "LIKE 'Compression'` see OFF. To fix: speak the compressed protocol on the client "
            "side (zlib framing around the same packets), or fail the login with a clear error "
            "when a client asks for compression that was not offered."
        ),
        inherent=False,
        tests=(
            _MYSQL + r"test_bugs\.BugOra17022399\.test_execute_compressed",
            _MYSQL + r"test_bugs\.BugOra19169990\.test_compress",
            _MYSQL + r"test_bugs\.BugOra19549363\.test_compress_reset_connection",
            _MYSQL + r"test_bugs\.BugOra35349093\.test_set_compress",
        ),
    ),
    Cause(
        key="no-backslash-escapes",
        title="SET sql_mode answered without SERVER_STATUS_NO_BACKSLASH_ESCAPES: SQL injection",
        why=(
            "The C extension (libmysqlclient) escapes strings with `''` or `\\'` according to "
            "the NO_BACKSLASH_ESCAPES bit of the status flags in the last OK packet. With "
            "autocommit off, in transaction mode, the OK that answers `SET sql_mode = "
            "'NO_BACKSLASH_ESCAPES'` lacks the bit, so the next INSERT is escaped with "
            "backslashes and the server (now in that mode) rejects it with 1064; in "
            "BugOra36476195 the parameter `' UNION SELECT SCHEMA_NAME FROM "
            "INFORMATION_SCHEMA.SCHEMATA #` is not escaped for the server's mode and the "
            "injected UNION runs (reproduced apart from the suite with `connect(sql_mode="
            "'NO_BACKSLASH_ESCAPES', use_pure=False)` and `SELECT %s`). Every OK packet "
            "Sluice relays or makes must carry the status flags of the client's own session "
            "state (here sql_mode)."
        ),
        inherent=False,
        modes=("transaction",),
        tests=(
            _MYSQL + r"test_bugs\.BugOra34984850\.test_no_backslash_escapes",
            _MYSQL + r"test_bugs\.BugOra36476195\.test_execute_with_",
        ),
    ),
    Cause(
        key="stale-cancel",
        title="A cancel lands on the client's next statement",
        why=(
            "A client cancels a statement and runs the next one, which then fails at once "
            "with 57014 `canceling statement due to user request`: asyncpg's `pg_sleep(10)` "
            "with a 20 ms timeout followed by `select 1` and the next `pg_sleep` (3 of 24 "
            "statements in the test; 7 of 40 in a loop run apart from the suite; never "
            "directly), and `SELECT 1` after cancelling or timing out a COPY TO. Which of "
            "these tests hits it varies from run to run (four did over the three full runs "
            "made here, in either mode). The server acts on a "
            "CancelRequest asynchronously; libpq and the server close the cancel connection "
            "only once the backend has been signalled, and asyncpg waits for that close before "
            "its next statement. Sluice closes the client's cancel connection as soon as it "
            "has written the CancelRequest to the server (`PgProxy.send_cancel` does not wait "
            "for the server to close its side), so the signal can arrive during the client's "
            "next statement. To fix: wait for the server to close the forwarded cancel "
            "connection before closing the client's; in transaction mode, also only forward "
            "while the client's statement is still running on that server connection."
        ),
        inherent=False,
        tests=(
            _ASYNCPG + r"test_timeout\.",
            _ASYNCPG + r"test_copy\.TestCopyFrom\.test_copy_from_query_(cancellation|timeout)",
        ),
        detail=r"QueryCanceledError: canceling statement due to user request",
    ),
    Cause(
        key="mysql-wait-timeout",
        title="Transaction mode: SET wait_timeout no longer ends an idle client",
        why=(
            "The test sets `wait_timeout = 1`, sleeps 2 s and expects its next statement to "
            "fail (the server closed the idle connection: 4033 or 2013). In transaction mode the "
            "client holds no server connection while idle, so nothing closes it; Sluice "
            "replays `wait_timeout` on the connection it borrows next, where it limits nothing "
            "the client sees. Sluice could close a client idle for longer than its own "
            "`wait_timeout` (as it does for `idle_client_timeout`)."
        ),
        inherent=False,
        modes=("transaction",),
        tests=(_MYSQL + r"test_connection\.MySQLConnectionTests\.test_timeout$",),
    ),
    Cause(
        key="mysql-kill-connection",
        title="KILL CONNECTION: the victim gets error 1927 instead of a lost connection",
        why=(
            "One connection runs a long SELECT, another sends `KILL <its connection id>`. "
            "Directly the server closes the victim's connection and the client reports 2013 "
            "`Lost connection to MySQL server during query` (InterfaceError). Through Sluice "
            "(both modes) the victim receives error packet 1927 `Connection was killed` "
            "(DatabaseError), which the test does not accept: Sluice relays the killed server "
            "connection's error as a statement error instead of ending the client's connection "
            "as the server would."
        ),
        inherent=False,
        tests=(_MYSQL + r"test_bugs\.Bug809033\.test_lost_connection",),
    ),
    Cause(
        key="mysql-connection-ids",
        title="Connection ids are random; the server's only grow",
        why=(
            "The test reconnects and expects the new `connection_id` to be greater than the "
            "old one, as the server's thread ids are. Sluice gives each client a random 32-bit "
            "id (DESIGN.md lists connection ids among the documented differences); ids taken "
            "from a counter would keep the order clients rely on here."
        ),
        inherent=False,
        tests=(_MYSQL + r"test_connection\.MySQLConnectionTests\.test_reconnect$",),
        detail=r"not greater than or equal to",
    ),
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
            "transaction pooler. (Apart from that: directly the terminated client reads the "
            "server's FATAL 57P01 `terminating connection due to administrator command`; "
            "through Sluice it reads Sluice's own `server connection lost; the transaction was "
            "not completed`.)"
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
        title="A second hop buffers more of a pipelined batch before an early error returns",
        why=(
            "asyncpg's executemany pipelines 128 rows of 32 kB; the server fails the second "
            "row and the test expects asyncpg to stop writing before the end. With Sluice in "
            "between there are two more socket buffers, and all 4 MB are written before the "
            "error comes back. The test is timing-bound: it also failed directly in an "
            "earlier run on this machine."
        ),
        inherent=True,
        tests=(
            _ASYNCPG
            + r"test_execute\.TestExecuteMany\.test_executemany_server_failure_during_writes$",
        ),
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
            "stays open. Any proxy that ends the client's connection and TLS differs here."
        ),
        inherent=True,
        tests=(
            _MYSQL + r"test_bugs\.Bug26484601\.test_get_connection_using_given_TLS_version",
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
