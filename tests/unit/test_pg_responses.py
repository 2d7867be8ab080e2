"""ResponseTracker on exact bytes: what reaches the client, and what the tracker knows.

Each case is a queue of outstanding requests (as the client session pushes
them), the server's reply messages, the messages the client must receive, and
the tracker's state afterwards. Every case is fed whole, split at every
offset, and byte by byte: the concatenated output and the final state must not
depend on the chunking, and what has been forwarded at any point must be a
prefix of the full answer (nothing reordered, nothing held back then replayed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pytest

from sluice.errors import ProtocolError
from sluice.wire.pg import messages as m
from sluice.wire.pg import responses as r
from sluice.wire.pg.responses import ResponseTracker

MAX = 64 * 1024

# ---- server messages ----

PARSE_OK = m.PARSE_COMPLETE
BIND_OK = m.message(b"2")
CLOSE_OK = m.CLOSE_COMPLETE
NO_DATA = m.message(b"n")
PARAM_DESC = m.message(b"t", b"\x00\x01\x00\x00\x00\x17")  # one int4 parameter
ROWS = m.row_description(["a"])
ROW = m.data_row(["1"])
ROW_NULL = m.data_row([None, "x"])
SELECT_1 = m.command_complete("SELECT 1")
SELECT_2 = m.command_complete("SELECT 2")
SET = m.command_complete("SET")
BEGIN = m.command_complete("BEGIN")
EMPTY = m.message(b"I")
SUSPENDED = m.message(b"s")
ERROR = m.error_response("42601", "syntax error at or near 'x'")
FATAL = m.error_response("57P01", "terminating connection", severity="FATAL")
NOTICE = m.notice_response("there is no transaction in progress", "25P01")
PARAM = m.parameter_status("TimeZone", "Europe/Paris")
NOTIFY = m.message(b"A", b"\x00\x00\x30\x39chan\x00payload\x00")
COPY_OUT = m.message(b"H", b"\x00\x00\x02\x00\x00\x00\x00")  # text, two columns
COPY_IN = m.message(b"G", b"\x00\x00\x01\x00\x00")
COPY_DATA = m.message(b"d", b"1\tx\n")
COPY_DONE = m.message(b"c")
COPY_2 = m.command_complete("COPY 2")
FUNC_RESULT = m.message(b"V", b"\x00\x00\x00\x02ok")
Z_I = m.READY_IDLE
Z_T = m.READY_IN_TXN
Z_E = m.READY_FAILED

RESET = m.command_complete("RESET")
COMMIT = m.command_complete("COMMIT")
IN_FAILED = m.error_response("25P02", "current transaction is aborted")
TZ_DEFAULT = m.parameter_status("TimeZone", "UTC")
TZ_START = m.parameter_status("TimeZone", "Asia/Tokyo")
APP_DEFAULT = m.parameter_status("application_name", "")
RESTORED = [ROWS, ROW, SELECT_1, TZ_START, Z_I]  # the reply to a restore of TimeZone
TZ = frozenset({b"timezone"})

# a kind, (PARSE / PARSE_SKIP / CLOSE_SKIP, server name), (QUERY_RESTORING /
# SYNC_RESTORING, names), ("prepare", PARSE / PARSE_SKIP, server name): a Parse and its
# DESCRIBE_CHECK, or ("stale", what the client gets for the server's error)
Request = int | tuple[int, bytes] | tuple[int, frozenset[bytes]] | tuple[str, int, bytes]
Request = Request | tuple[str, bytes]
NO_STATEMENT = m.error_response("26000", 'prepared statement "sluice_stale_plan" does not exist')


@dataclass(frozen=True)
class Case:
    """Requests outstanding, the server's replies, and what must come out."""

    requests: Sequence[Request]
    server: Sequence[bytes]
    client: Sequence[bytes]
    queue: Sequence[int] = ()
    status: bytes = b"I"
    errors: int = 0
    swallowed_errors: int = 0
    prepared: Sequence[bytes] = ()  # the connection's statements before the replies
    prepared_after: Sequence[bytes] | None = None  # None: unchanged
    awaiting_sync: bool = False  # an error came before the client's Sync
    replay_error: bool = False  # an injected replay failed: nothing more reaches the client


CASES: dict[str, Case] = {
    "simple query": Case([r.QUERY], [ROWS, ROW, ROW_NULL, SELECT_2, Z_I], [...]),
    "simple query opens a transaction": Case([r.QUERY], [BEGIN, Z_T], [...], status=b"T"),
    "multi-statement query": Case(
        [r.QUERY],
        [ROWS, ROW, SELECT_1, SET, ROWS, ROW, ROW, SELECT_2, Z_I],
        [...],
    ),
    "empty query": Case([r.QUERY], [EMPTY, Z_I], [...]),
    "query error": Case([r.QUERY], [ROWS, ROW, ERROR, Z_I], [...], errors=1),
    "query error in a transaction": Case([r.QUERY], [ERROR, Z_E], [...], status=b"E", errors=1),
    "pipelined queries": Case(
        [r.QUERY, r.QUERY, r.QUERY],
        [BEGIN, Z_T, ROWS, ROW, SELECT_1, Z_T, ERROR, Z_E],
        [...],
        status=b"E",
        errors=1,
    ),
    "queries partly answered": Case(
        [r.QUERY, r.QUERY], [SET, Z_I, ROWS, ROW], [...], queue=[r.QUERY]
    ),
    "extended query": Case(
        [(r.PARSE, b"sluice_1"), r.BIND, r.DESCRIBE_PORTAL, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, ROWS, ROW, ROW_NULL, SELECT_2, Z_I],
        [...],
        prepared=[b"sluice_1"],
    ),
    "unnamed parse, describe statement": Case(
        [(r.PARSE, b""), r.DESCRIBE_STMT, r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, PARAM_DESC, ROWS, BIND_OK, ROW, SELECT_1, Z_I],
        [...],
    ),
    "describe statement without rows": Case(
        [(r.PARSE, b""), r.DESCRIBE_STMT, r.SYNC], [PARSE_OK, PARAM_DESC, NO_DATA, Z_I], [...]
    ),
    "describe portal without rows, empty execute": Case(
        [r.BIND, r.DESCRIBE_PORTAL, r.EXECUTE, r.SYNC], [BIND_OK, NO_DATA, EMPTY, Z_I], [...]
    ),
    "extended inside a transaction, partly answered": Case(
        [r.BIND, r.EXECUTE, r.SYNC, r.BIND, r.EXECUTE, r.SYNC],
        [BIND_OK, BEGIN, Z_T, BIND_OK, ROW],
        [...],
        queue=[r.EXECUTE, r.SYNC],
        status=b"T",
    ),
    "portal suspended": Case(
        [r.BIND, r.EXECUTE, r.EXECUTE, r.SYNC],
        [BIND_OK, ROW, SUSPENDED, ROW, SELECT_2, Z_I],
        [...],
    ),
    "function call": Case([r.FUNCTION], [FUNC_RESULT, Z_I], [...]),
    # ---- the proxy's own requests ----
    "parse skip: injected parse swallowed": Case(
        [(r.PARSE_SKIP, b"sluice_7"), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, ROW, SELECT_1, Z_I],
        [BIND_OK, ROW, SELECT_1, Z_I],
        prepared=[b"sluice_7"],
    ),
    "parse fake at the head: owed before the first reply": Case(
        [r.PARSE_FAKE, r.BIND, r.EXECUTE, r.SYNC],
        [BIND_OK, ROW, SELECT_1, Z_I],
        [PARSE_OK, BIND_OK, ROW, SELECT_1, Z_I],
        prepared=[b"sluice_1"],
    ),
    "parse fake after a real parse: before the bind complete": Case(
        [(r.PARSE, b"sluice_1"), r.PARSE_FAKE, r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, SELECT_1, Z_I],
        [PARSE_OK, PARSE_OK, BIND_OK, SELECT_1, Z_I],
        prepared=[b"sluice_1", b"sluice_2"],
    ),
    "parse fake after a sync: after the ready for query": Case(
        [r.BIND, r.EXECUTE, r.SYNC, r.PARSE_FAKE, r.PARSE_FAKE, r.BIND, r.EXECUTE, r.SYNC],
        [BIND_OK, SELECT_1, Z_I, BIND_OK, SELECT_1, Z_I],
        [BIND_OK, SELECT_1, Z_I, PARSE_OK, PARSE_OK, BIND_OK, SELECT_1, Z_I],
    ),
    "parse fake last: flushed at the end of the chunk": Case(
        [(r.PARSE, b"sluice_1"), r.PARSE_FAKE],
        [PARSE_OK],
        [PARSE_OK, PARSE_OK],
        prepared=[b"sluice_1"],
    ),
    "parse fake after a skipped parse": Case(
        [(r.PARSE_SKIP, b"sluice_1"), r.PARSE_FAKE, r.BIND, r.SYNC],
        [PARSE_OK, BIND_OK, Z_I],
        [PARSE_OK, BIND_OK, Z_I],
        prepared=[b"sluice_1"],
    ),
    "close fake": Case(
        [r.BIND, r.EXECUTE, r.CLOSE_FAKE, r.SYNC],
        [BIND_OK, SELECT_1, Z_I],
        [BIND_OK, SELECT_1, CLOSE_OK, Z_I],
    ),
    "close fake at the head": Case([r.CLOSE_FAKE, r.SYNC], [Z_I], [CLOSE_OK, Z_I]),
    "real close": Case([r.CLOSE, r.SYNC], [CLOSE_OK, Z_I], [...]),
    "close skip: eviction swallowed": Case(
        [(r.CLOSE_SKIP, b"sluice_1"), (r.PARSE_SKIP, b"sluice_9"), r.BIND, r.EXECUTE, r.SYNC],
        [CLOSE_OK, PARSE_OK, BIND_OK, ROW, SELECT_1, Z_I],
        [BIND_OK, ROW, SELECT_1, Z_I],
        prepared=[b"sluice_1", b"sluice_9"],
        prepared_after=[b"sluice_9"],
    ),
    "close skipped after an error: the statement is still there": Case(
        [r.BIND, r.EXECUTE, (r.CLOSE_SKIP, b"sluice_1"), (r.PARSE, b"sluice_1"), r.SYNC],
        [ERROR, Z_I],
        [...],
        errors=1,
        prepared=[b"sluice_1"],
    ),
    "query skip: replayed settings swallowed": Case(
        [r.QUERY_SKIP, r.QUERY],
        [SET, PARAM, SET, Z_I, ROWS, ROW, SELECT_1, Z_I],
        [ROWS, ROW, SELECT_1, Z_I],
    ),
    "query skip swallows rows, notices and errors": Case(
        [r.QUERY_SKIP],
        [ROWS, ROW, SELECT_1, NOTICE, ERROR, Z_I],
        [],
        swallowed_errors=1,
    ),
    "query skip before extended requests": Case(
        [r.QUERY_SKIP, (r.PARSE_SKIP, b"s"), r.BIND, r.EXECUTE, r.SYNC],
        [SET, Z_I, PARSE_OK, BIND_OK, SELECT_1, Z_I],
        [BIND_OK, SELECT_1, Z_I],
        prepared=[b"s"],
    ),
    "execute and flush: answered, still in the implicit transaction": Case(
        [(r.PARSE, b""), r.BIND, r.EXECUTE],
        [PARSE_OK, BIND_OK, m.command_complete("INSERT 0 1")],
        [...],
    ),
    "a query after unsynced extended requests ends their transaction": Case(
        [r.BIND, r.EXECUTE, r.QUERY],
        [BIND_OK, m.command_complete("INSERT 0 1"), SELECT_1, Z_I],
        [...],
    ),
    "check: rows kept and swallowed, notification passed on": Case(
        [r.QUERY_CHECK], [SET, ROWS, ROW, NOTICE, NOTIFY, PARAM, ROW_NULL, SELECT_2, Z_I], [NOTIFY]
    ),
    "check after a client query": Case(
        [r.QUERY, r.QUERY_CHECK], [SELECT_1, Z_I, ROWS, ROW, SELECT_1, Z_I], [SELECT_1, Z_I]
    ),
    "query skip then a fake": Case(
        [r.QUERY_SKIP, r.PARSE_FAKE, r.BIND, r.SYNC],
        [SET, Z_I, BIND_OK, Z_I],
        [PARSE_OK, BIND_OK, Z_I],
    ),
    # ---- errors in extended mode: the server skips to the next Sync ----
    "failed parse drops the rest up to sync": Case(
        [
            (r.PARSE, b"sluice_1"),
            r.BIND,
            r.EXECUTE,
            (r.PARSE_SKIP, b"sluice_2"),
            r.BIND,
            r.EXECUTE,
            r.SYNC,
            r.QUERY,
        ],
        [ERROR, Z_I, ROWS, ROW, SELECT_1, Z_I],
        [...],
        errors=1,
        prepared=[b"sluice_0", b"sluice_1", b"sluice_2"],
        prepared_after=[b"sluice_0"],
    ),
    "failed execute keeps the parsed statement": Case(
        [(r.PARSE, b"sluice_1"), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, ROW, ERROR, Z_I],
        [...],
        errors=1,
        prepared=[b"sluice_1"],
    ),
    "failed bind drops a fake behind it": Case(
        [r.BIND, r.EXECUTE, r.PARSE_FAKE, r.BIND, r.EXECUTE, r.SYNC],
        [ERROR, Z_E],
        [ERROR, Z_E],
        status=b"E",
        errors=1,
        prepared=[b"sluice_1"],
    ),
    "error without a sync queued": Case(
        [(r.PARSE, b"sluice_1"), r.BIND, r.DESCRIBE_PORTAL],
        [ERROR],
        [ERROR],
        errors=1,
        prepared=[b"sluice_1"],
        prepared_after=[],
        awaiting_sync=True,  # not idle: the server still skips to the client's Sync
    ),
    "error only up to the first sync": Case(
        [r.BIND, r.EXECUTE, r.SYNC, (r.PARSE, b"sluice_3"), r.BIND, r.EXECUTE, r.SYNC],
        [ERROR, Z_I, PARSE_OK, BIND_OK, SELECT_1, Z_I],
        [...],
        errors=1,
        prepared=[b"sluice_3"],
    ),
    "error in describe statement": Case(
        [(r.PARSE, b""), r.DESCRIBE_STMT, r.SYNC], [PARSE_OK, ERROR, Z_I], [...], errors=1
    ),
    # ---- asynchronous messages ----
    "notice, parameter status, notification within a query": Case(
        [r.QUERY], [NOTICE, SET, PARAM, NOTIFY, Z_I], [...]
    ),
    "notice between extended replies": Case(
        [(r.PARSE, b""), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, NOTICE, BIND_OK, NOTICE, SELECT_1, NOTICE, Z_I],
        [...],
    ),
    "notification while idle": Case([], [NOTIFY, NOTIFY], [...]),
    "notice before a fake": Case(
        [(r.PARSE, b"a"), r.PARSE_FAKE, r.BIND, r.SYNC],
        [PARSE_OK, NOTICE, BIND_OK, Z_I],
        [PARSE_OK, PARSE_OK, NOTICE, BIND_OK, Z_I],
        prepared=[b"a"],
    ),
    "fatal while idle": Case([], [FATAL], [...]),
    # ---- COPY ----
    "copy out, simple": Case(
        [r.QUERY], [COPY_OUT, COPY_DATA, COPY_DATA, COPY_DONE, COPY_2, Z_I], [...]
    ),
    "copy in, simple": Case([r.QUERY], [COPY_IN, COPY_2, Z_I], [...]),
    "copy in, client sent CopyFail": Case([r.QUERY], [COPY_IN, ERROR, Z_I], [...], errors=1),
    # ---- settings replayed and restored
    "replay, then the client's query": Case(
        [r.REPLAY, r.QUERY],
        [BEGIN, SET, COMMIT, TZ_START, Z_I, ROWS, ROW, SELECT_1, Z_I],
        [ROWS, ROW, SELECT_1, Z_I],
    ),
    "failed replay: nothing more for the client": Case(
        [r.REPLAY, r.QUERY],
        [BEGIN, ERROR, Z_E, IN_FAILED, Z_E],
        [],
        queue=[r.REPLAY, r.QUERY],
        replay_error=True,
    ),
    "restore after a RESET": Case(
        [(r.QUERY_RESTORING, TZ)],
        [RESET, APP_DEFAULT, TZ_DEFAULT, Z_I, *RESTORED],
        [RESET, APP_DEFAULT, TZ_START, Z_I],
    ),
    "restore after an extended RESET": Case(
        [(r.PARSE, b""), r.BIND, r.EXECUTE, (r.SYNC_RESTORING, TZ)],
        [PARSE_OK, BIND_OK, RESET, TZ_DEFAULT, Z_I, *RESTORED],
        [PARSE_OK, BIND_OK, RESET, TZ_START, Z_I],
    ),
    "restore in a transaction, a notification meanwhile": Case(
        [(r.QUERY_RESTORING, TZ)],
        [RESET, TZ_DEFAULT, Z_T, ROWS, NOTIFY, ROW, NOTICE, SELECT_1, TZ_START, Z_T],
        [RESET, NOTIFY, TZ_START, Z_T],
        status=b"T",
    ),
    "failed RESET: the restore reports nothing": Case(
        [(r.QUERY_RESTORING, TZ)],
        [RESET, ERROR, Z_I, *RESTORED],
        [RESET, ERROR, Z_I],
        errors=1,
    ),
    "failed extended RESET: the restore reports nothing": Case(
        [r.BIND, r.EXECUTE, (r.SYNC_RESTORING, TZ)],
        [BIND_OK, ERROR, Z_I, *RESTORED],
        [BIND_OK, ERROR, Z_I],
        errors=1,
    ),
    "RESET in a failed transaction: its restore fails too": Case(
        [(r.QUERY_RESTORING, TZ)],
        [IN_FAILED, Z_E, IN_FAILED, Z_E],
        [IN_FAILED, Z_E],
        status=b"E",
        errors=1,
    ),
    "a restore that fails alone is a failed replay": Case(
        [(r.QUERY_RESTORING, TZ)],
        [RESET, TZ_DEFAULT, Z_I, ERROR, Z_I],
        [RESET],
        queue=[r.RESTORE],
        replay_error=True,
    ),
    "copy out, extended": Case(
        [(r.PARSE, b""), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, COPY_OUT, COPY_DATA, COPY_DONE, COPY_2, Z_I],
        [...],
    ),
    "a statement prepared and described: the replies to both swallowed": Case(
        [("prepare", r.PARSE_SKIP, b"sluice_1"), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, PARAM_DESC, ROWS, BIND_OK, ROW, SELECT_1, Z_I],
        [BIND_OK, ROW, SELECT_1, Z_I],
        prepared_after=[b"sluice_1"],
    ),
    "a client's Parse described: only its own replies reach it": Case(
        [("prepare", r.PARSE, b"sluice_1"), r.DESCRIBE_STMT, r.SYNC],
        [PARSE_OK, PARAM_DESC, NO_DATA, PARAM_DESC, NO_DATA, Z_I],
        [PARSE_OK, PARAM_DESC, NO_DATA, Z_I],
        prepared_after=[b"sluice_1"],
    ),
    "an injected Parse fails: its Describe is skipped, the error is the client's": Case(
        [("prepare", r.PARSE_SKIP, b"sluice_1"), r.BIND, r.SYNC],
        [ERROR, Z_I],
        [...],
        errors=1,
        prepared_after=[],
    ),
    "a stale statement's Bind: 0A000 in place of the server's error": Case(
        [("stale", r.STALE_ERROR), r.EXECUTE, r.SYNC],
        [NO_STATEMENT, Z_E],
        [r.STALE_ERROR, Z_E],
        status=b"E",
        errors=1,
    ),
    "a stale statement's Describe: its parameters, then 0A000": Case(
        [r.BIND, r.EXECUTE, ("stale", PARAM_DESC + r.STALE_ERROR), r.SYNC],
        [BIND_OK, ROW, SELECT_1, NO_STATEMENT, Z_I],
        [BIND_OK, ROW, SELECT_1, PARAM_DESC, r.STALE_ERROR, Z_I],
        errors=1,
    ),
    "a stale Bind after an error: discarded, nothing in its place": Case(
        [r.BIND, ("stale", r.STALE_ERROR), r.EXECUTE, r.SYNC, ("stale", r.STALE_ERROR), r.SYNC],
        [ERROR, Z_I, NO_STATEMENT, Z_I],
        [ERROR, Z_I, r.STALE_ERROR, Z_I],
        errors=2,
    ),
    "copy in, extended": Case(
        [(r.PARSE, b""), r.BIND, r.EXECUTE, r.SYNC],
        [PARSE_OK, BIND_OK, COPY_IN, COPY_2, Z_I],
        [...],
    ),
}


def _client(case: Case) -> bytes:
    """`[...]` in a case means: the client gets exactly what the server sent."""
    if list(case.client) == [...]:
        return b"".join(case.server)
    return b"".join(case.client)


def _tracker(case: Case) -> ResponseTracker:
    tracker = ResponseTracker(MAX)
    for name in case.prepared:
        tracker.prepared[name] = r.Prepared(0)
    for req in case.requests:
        if isinstance(req, int):
            tracker.push(req)
        elif isinstance(req[1], frozenset):
            tracker.push_restoring(req[0], req[1])
        elif req[0] == "prepare":
            tracker.push_prepare(req[1], req[2], 0)
        elif req[0] == "stale":
            tracker.push_stale(req[1])
        elif req[0] == r.CLOSE_SKIP:
            tracker.push_close(req[1])
        else:
            tracker.push_parse(req[0], req[1])
    return tracker


def _feed(case: Case, chunks: Iterable[bytes]) -> tuple[bytes, ResponseTracker]:
    tracker = _tracker(case)
    expected = _client(case)
    out = tracker.flush_fakes()
    for chunk in chunks:
        out += tracker.feed(chunk)
        assert expected.startswith(out)  # forwarded so far: a prefix, in order
    return out, tracker


_EXTENDED = (r.PARSE, r.BIND, r.DESCRIBE_STMT, r.DESCRIBE_PORTAL, r.EXECUTE, r.CLOSE)
_EXTENDED_OWN = (r.PARSE_SKIP, r.PARSE_FAKE, r.CLOSE_SKIP, r.CLOSE_FAKE, r.DESCRIBE_CHECK, r.STALE)


def _unsynced(case: Case) -> bool:
    """Extended-protocol requests after the last Sync (or Query): an implicit transaction."""
    if not case.requests:
        return False
    last = case.requests[-1]
    return (last[0] if isinstance(last, tuple) else last) in _EXTENDED + _EXTENDED_OWN


def _check_state(case: Case, tracker: ResponseTracker) -> None:
    assert list(tracker.queue) == list(case.queue)
    assert bytes([tracker.status]) == case.status
    assert tracker.awaiting_sync == case.awaiting_sync
    assert tracker.unsynced == _unsynced(case)
    idle = not case.queue and case.status == b"I" and not case.awaiting_sync
    assert tracker.idle == (idle and not _unsynced(case))
    assert tracker.errors == case.errors
    assert tracker.swallowed_errors == case.swallowed_errors
    assert (tracker.replay_error is not None) == case.replay_error
    after = case.prepared if case.prepared_after is None else case.prepared_after
    assert list(tracker.prepared) == list(after)
    # bookkeeping that must follow the queue
    assert tracker.specials == sum(k in r.SPECIAL for k in tracker.queue)
    named = (r.PARSE, r.PARSE_SKIP, r.CLOSE_SKIP)
    assert len(tracker.parse_names) == sum(k in named for k in tracker.queue)


@pytest.mark.parametrize("name", list(CASES))
def test_whole_stream(name: str) -> None:
    case = CASES[name]
    out, tracker = _feed(case, [b"".join(case.server)])
    assert out == _client(case)
    _check_state(case, tracker)


@pytest.mark.parametrize("name", list(CASES))
def test_split_at_every_offset(name: str) -> None:
    case = CASES[name]
    stream = b"".join(case.server)
    for cut in range(len(stream) + 1):
        out, tracker = _feed(case, [stream[:cut], stream[cut:]])
        assert out == _client(case), cut
        _check_state(case, tracker)


@pytest.mark.parametrize("name", list(CASES))
def test_byte_by_byte(name: str) -> None:
    case = CASES[name]
    stream = b"".join(case.server)
    out, tracker = _feed(case, [stream[i : i + 1] for i in range(len(stream))])
    assert out == _client(case)
    _check_state(case, tracker)


def test_message_by_message() -> None:
    for case in CASES.values():
        out, tracker = _feed(case, case.server)
        assert out == _client(case)
        _check_state(case, tracker)


def test_a_statement_whose_close_was_skipped_must_be_closed_before_use() -> None:
    _, tracker = _feed(CASES["close skipped after an error: the statement is still there"], [])
    tracker.feed(ERROR + Z_I)
    assert list(tracker.prepared) == [b"sluice_1"]
    assert tracker.prepared[b"sluice_1"].generation == -1  # older than any generation


def test_a_described_statement_knows_its_types() -> None:
    """A DESCRIBE_CHECK's replies give the statement its parameter and result types (not
    where the columns come from, nor their format) and tell the client session."""
    column = b"b\x00" + b"\x00\x00\x40\x00\x00\x02" + b"\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff"
    rows = m.message(b"T", b"\x00\x01" + column + b"\x00\x00")
    elsewhere = m.message(b"T", b"\x00\x01" + column.replace(b"\x40", b"\x41") + b"\x00\x01")
    tracker = ResponseTracker(MAX)
    first = tracker.push_prepare(r.PARSE_SKIP, b"sluice_1", 3)
    second = tracker.push_prepare(r.PARSE_SKIP, b"sluice_2", 3)
    assert tracker.prepared == {b"sluice_1": first, b"sluice_2": second}
    assert tracker.checks_due == 2 and first.generation == 3
    assert tracker.feed(PARSE_OK + PARAM_DESC) == b""
    assert first.params == PARAM_DESC[5:] and first.shape is None and not tracker.described
    assert tracker.feed(rows) == b""
    assert first.shape is not None and tracker.described and tracker.checks_due == 1
    tracker.feed(PARSE_OK + PARAM_DESC + elsewhere)
    assert second.shape == first.shape == b"\x00\x01b\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff"
    assert r.result_shape(ROWS, 0) != first.shape  # another name, type and modifier
    with pytest.raises(ProtocolError):
        r.result_shape(m.message(b"T", b"\x00\x01b\x00\x00"), 0)


def test_stale_plan_noticed_only_for_0A000() -> None:
    stale = m.error_response("0A000", "cached plan must not change result type")
    for error, noticed in ((ERROR, False), (stale, True)):
        tracker = ResponseTracker(MAX)
        for kind in (r.BIND, r.EXECUTE, r.SYNC):
            tracker.push(kind)
        assert tracker.feed(error + Z_I) == error + Z_I
        assert tracker.stale_plan is noticed


def test_idle_only_after_the_last_byte() -> None:
    case = CASES["extended query"]
    stream = b"".join(case.server)
    tracker = _tracker(case)
    tracker.feed(stream[:-1])
    assert not tracker.idle
    tracker.feed(stream[-1:])
    assert tracker.idle


def test_status_follows_each_ready_for_query() -> None:
    tracker = ResponseTracker(MAX)
    for ready, status, idle in ((Z_T, "T", False), (Z_E, "E", False), (Z_I, "I", True)):
        tracker.push(r.QUERY)
        assert not tracker.idle
        tracker.feed(ready)
        assert (chr(tracker.status), tracker.idle) == (status, idle)


def test_check_rows_and_failure() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY_CHECK)
    assert not tracker.idle and tracker.settling
    assert tracker.feed(ROWS + ROW + ROW_NULL + SELECT_2 + Z_I) == b""
    assert tracker.check_rows == [ROW[5:], ROW_NULL[5:]]
    assert tracker.idle and not tracker.settling and not tracker.check_failed
    tracker.push(r.QUERY_CHECK)
    assert tracker.feed(ERROR + Z_I) == b""
    assert tracker.check_failed and tracker.errors == 0 and tracker.idle


def test_settling_only_for_own_queries_outside_a_transaction() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY_CHECK)
    tracker.push(r.QUERY_SKIP)
    assert tracker.settling
    tracker.push(r.QUERY)
    assert not tracker.settling
    tracker.feed(Z_I + Z_I + Z_T)
    tracker.push(r.QUERY_SKIP)
    assert not tracker.settling  # the client's transaction is still open


def test_flush_fakes() -> None:
    tracker = ResponseTracker(MAX)
    assert tracker.flush_fakes() == b""
    tracker.push(r.PARSE_FAKE)
    tracker.push(r.CLOSE_FAKE)
    tracker.push(r.PARSE_FAKE)
    tracker.push(r.SYNC)
    tracker.push(r.PARSE_FAKE)
    assert tracker.specials == 4
    assert tracker.flush_fakes() == PARSE_OK + CLOSE_OK + PARSE_OK
    assert list(tracker.queue) == [r.SYNC, r.PARSE_FAKE]
    assert tracker.flush_fakes() == b""  # a Sync is still outstanding before the last one
    assert tracker.feed(Z_I) == Z_I + PARSE_OK
    assert tracker.specials == 0
    assert not tracker.idle and tracker.unsynced  # the client has not sent its next Sync


def test_errors_counter_accumulates() -> None:
    tracker = ResponseTracker(MAX)
    for _ in range(3):
        tracker.push(r.QUERY)
        tracker.push(r.QUERY_SKIP)
    tracker.feed((ERROR + Z_I) * 6)
    assert (tracker.errors, tracker.swallowed_errors) == (3, 3)
    assert tracker.idle


def test_error_before_the_sync_keeps_the_connection_until_the_sync() -> None:
    """psycopg's pipeline: the server reports an error before the client's Sync arrives. The
    connection is not idle then (the server discards everything up to that Sync), requests
    sent meanwhile get no reply, and only the Sync's ReadyForQuery makes it idle."""
    tracker = ResponseTracker(MAX)
    tracker.prepared[b"s1"] = r.Prepared(0)
    for kind in (r.BIND, r.DESCRIBE_PORTAL, r.EXECUTE):
        tracker.push(kind)
    tracker.push_parse(r.PARSE, b"s2")
    tracker.push(r.BIND)
    tracker.push(r.EXECUTE)
    assert tracker.feed(BIND_OK + NO_DATA + ERROR) == BIND_OK + NO_DATA + ERROR
    assert not tracker.queue and tracker.awaiting_sync and not tracker.idle
    tracker.prepared[b"s3"] = r.Prepared(0)
    tracker.push_parse(r.PARSE, b"s3")  # discarded by the server: never made
    tracker.push(r.PARSE_FAKE)  # nothing is owed for a discarded Parse either
    tracker.push(r.EXECUTE)
    assert not tracker.queue and b"s3" not in tracker.prepared and not tracker.idle
    assert tracker.flush_fakes() == b""
    tracker.push(r.SYNC)
    assert not tracker.awaiting_sync and not tracker.idle
    assert tracker.feed(Z_I) == Z_I
    assert tracker.idle


def test_error_with_the_sync_queued_is_not_awaiting_one() -> None:
    tracker = ResponseTracker(MAX)
    for kind in (r.BIND, r.EXECUTE, r.SYNC):
        tracker.push(kind)
    tracker.feed(BIND_OK + ERROR)
    assert list(tracker.queue) == [r.SYNC] and not tracker.awaiting_sync
    tracker.feed(Z_I)
    assert tracker.idle


# ---- streaming large rows --------------------------------------------------------------------

BIG_ROW = m.data_row(["x" * (1024 * 1024)])  # 1 MB, far above MAX


def test_big_row_streamed_incrementally() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    stream = ROWS + BIG_ROW + SELECT_1 + Z_I
    head = len(ROWS) + 5  # once the row's header is in, every byte goes straight through
    out = tracker.feed(stream[:head])
    assert out == stream[:head]
    pos, row_end = head, len(ROWS) + len(BIG_ROW)
    while pos < row_end:
        chunk = stream[pos : min(pos + 1000, row_end)]
        assert tracker.feed(chunk) == chunk  # forwarded at once, never held back
        out += chunk
        pos += len(chunk)
    assert out == stream[:row_end]
    assert not tracker.idle
    out += tracker.feed(stream[pos:])
    assert out == stream
    assert tracker.idle


def test_big_rows_every_split_around_boundaries() -> None:
    stream = ROWS + BIG_ROW + ROW + BIG_ROW + SELECT_2 + Z_I
    b1 = len(ROWS)
    b2 = b1 + len(BIG_ROW)
    b3 = b2 + len(ROW)
    b4 = b3 + len(BIG_ROW)
    cuts = set(range(0, len(stream), 7919))
    for boundary in (b1, b2, b3, b4, len(stream)):
        cuts.update(range(max(0, boundary - 12), min(len(stream), boundary + 12) + 1))
    for cut in sorted(cuts):
        tracker = ResponseTracker(MAX)
        tracker.push(r.QUERY)
        out = tracker.feed(stream[:cut]) + tracker.feed(stream[cut:])
        assert out == stream, cut
        assert tracker.idle


def test_big_row_in_small_chunks_extended() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push_parse(r.PARSE, b"")
    tracker.push(r.BIND)
    tracker.push(r.EXECUTE)
    tracker.push(r.SYNC)
    stream = PARSE_OK + BIND_OK + BIG_ROW + BIG_ROW + SELECT_2 + Z_I
    out = b"".join(tracker.feed(stream[i : i + 4099]) for i in range(0, len(stream), 4099))
    assert out == stream
    assert tracker.idle


def test_big_copy_data_streamed() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    big = m.message(b"d", b"y" * (256 * 1024))
    stream = COPY_OUT + big + COPY_DONE + COPY_2 + Z_I
    out = b""
    for i in range(0, len(stream), 3001):
        chunk = stream[i : i + 3001]
        got = tracker.feed(chunk)
        out += got
    assert out == stream
    assert tracker.idle


# ---- malformed server streams ----------------------------------------------------------------


@pytest.mark.parametrize("kind", [b"T", b"C", b"E", b"N", b"Z", b"1"])
def test_oversized_message_rejected_on_header(kind: bytes) -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    header = kind + (MAX + 100).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="invalid message length"):
        tracker.feed(header)


def test_oversized_message_rejected_whole() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    with pytest.raises(ProtocolError, match="invalid message length"):
        tracker.feed(m.notice_response("n" * MAX) + Z_I)


def test_oversized_row_is_not_an_error() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    assert tracker.feed(BIG_ROW[:100]) == BIG_ROW[:100]


@pytest.mark.parametrize("length", [0, 1, 3])
@pytest.mark.parametrize("kind", [b"D", b"d", b"Z", b"C"])
def test_length_below_four_rejected(kind: bytes, length: int) -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    with pytest.raises(ProtocolError, match="invalid message length"):
        tracker.feed(ROWS + kind + length.to_bytes(4, "big") + b"\x00" * 8)


@pytest.mark.parametrize("body", [b"", b"IX"])
def test_malformed_ready_for_query(body: bytes) -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    with pytest.raises(ProtocolError, match="malformed ReadyForQuery"):
        tracker.feed(SELECT_1 + m.message(b"Z", body) + ROWS)


def test_rollback_flag_on_rollback() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    tracker.feed(BEGIN + SET + m.command_complete("ROLLBACK") + Z_I)
    assert tracker.rolled_back


def test_rollback_to_savepoint_then_commit_is_not_a_rollback() -> None:
    tracker = ResponseTracker(MAX)
    tracker.push(r.QUERY)
    savepoint, rollback_to = m.command_complete("SAVEPOINT"), m.command_complete("ROLLBACK")
    tracker.feed(BEGIN + SET + savepoint + rollback_to + m.command_complete("COMMIT") + Z_I)
    assert not tracker.rolled_back


@pytest.mark.parametrize(
    ("queue", "reply", "relayed", "fatal"),
    [
        ([], FATAL, True, True),  # unsolicited: the server is about to close
        ([r.QUERY], FATAL, True, True),  # in the middle of a query
        ([r.QUERY], ERROR + Z_I, True, False),
        ([r.QUERY_SKIP], FATAL, False, False),  # swallowed: the proxy answers for it
        ([], NOTICE, True, False),
        ([], m.message(b"E", b"SFATAL"), True, False),  # malformed: relayed, not understood
    ],
)
def test_fatal_noted_only_when_the_client_gets_it(
    queue: list[int], reply: bytes, relayed: bool, fatal: bool
) -> None:
    """`fatal`: the client has had the error that ends its session (the proxy adds none)."""
    tracker = ResponseTracker(MAX)
    for kind in queue:
        tracker.push(kind)
    assert tracker.feed(reply) == (reply if relayed else b"")
    assert tracker.fatal is fatal
