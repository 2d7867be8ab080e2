"""ReplyTracker on exact packets: which command each server packet answers, and the status.

Three layers of cases:
- MariaDB's real replies to a script of commands (mysql_captures), without and
  with CLIENT_DEPRECATE_EOF: each answer must end exactly at its last packet,
  with the flags and status flags written out below; the same replies fed as
  one pipelined stream of framed packets, split at every offset, must give the
  same flags;
- hand-made replies for what the real server could not be asked to do from a
  read-only account (LOCAL INFILE, stored procedure results, a query killed
  mid-rows, huge rows starting with 0xFE);
- the proxy's own commands (OWN), commands with no reply, malformed replies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from mysql_captures import (
    STEPS_DEPRECATE,
    STEPS_DEPRECATE_CAPABILITIES,
    STEPS_EOF,
    STEPS_EOF_CAPABILITIES,
)
from sluice.errors import PacketTooLarge, ProtocolError
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import messages as m
from sluice.wire.mysql import replies as r
from sluice.wire.mysql.packets import MAX_CHUNK, PacketReader, frame, renumber
from sluice.wire.mysql.replies import ReplyTracker

Steps = dict[str, tuple[str, list[str]]]
MODES = {
    "eof": (STEPS_EOF, STEPS_EOF_CAPABILITIES),
    "deprecate": (STEPS_DEPRECATE, STEPS_DEPRECATE_CAPABILITIES),
}
AC = c.SERVER_STATUS_AUTOCOMMIT
IN = c.SERVER_STATUS_IN_TRANS
MORE = c.SERVER_MORE_RESULTS_EXISTS
CHANGED = c.SERVER_SESSION_STATE_CHANGED
D, E, S, RE, OK_ = r.DONE, r.ERROR, r.STATE_CHANGED, r.RESULT_END, r.OK
DE, DX = r.DEFS_END, r.DEFS_EOF


def _commands(steps: Steps) -> Iterator[tuple[str, bytes, list[bytes]]]:
    """(label, command, replies) in order; the answer to the auth switch joins change-user."""
    items = list(steps.items())
    for i, (label, (command, replies)) in enumerate(items):
        if label == "change-user-answer":
            continue
        payloads = [bytes.fromhex(x) for x in replies]
        if label == "change-user":
            payloads += [bytes.fromhex(x) for x in items[i + 1][1][1]]
        yield label, bytes.fromhex(command), payloads


# Flags of every packet of the answer, and the status afterwards, per mode.
EXPECTED: dict[str, dict[str, tuple[list[int], int]]] = {
    "eof": {
        "select": ([0, 0, 0, DE, DX, 0, RE | D], AC),
        "prepare": ([r.PREPARED, DE, DX, 0, DE, DX | D], AC),
        "execute": ([0, 0, DE, DX, 0, RE | D], AC),
        "execute-cursor": ([0, 0, DE, DX | D], AC | c.SERVER_STATUS_CURSOR_EXISTS),
        "fetch-1": ([0, RE | D], AC | c.SERVER_STATUS_CURSOR_EXISTS),
        "fetch-2": ([RE | D], AC | c.SERVER_STATUS_LAST_ROW_SENT),
        "stmt-reset": ([OK_ | D], AC),
        "prepare-noparams": ([r.PREPARED | D], AC),
        "execute-noresult": ([OK_ | D], AC),
        "prepare-empty": ([r.PREPARED, DE, DX | D], AC),
        "execute-empty": ([0, DE, DX, RE | D], AC),
        "execute-empty-cursor": ([0, DE, DX | D], AC | c.SERVER_STATUS_CURSOR_EXISTS),
        "fetch-empty": ([RE | D], AC | c.SERVER_STATUS_LAST_ROW_SENT),
        "execute-closed": ([E | D], AC | c.SERVER_STATUS_LAST_ROW_SENT),  # ERR: unchanged
        "multi": ([0, DE, DX, 0, RE, 0, DE, DX, 0, RE | D], AC),
        "multi-error": ([0, DE, DX, 0, RE, E | D], AC | MORE),
        "begin-ro": ([OK_ | D], AC | IN | c.SERVER_STATUS_IN_TRANS_READONLY),
        "select-in-trans": (
            [0, DE, DX, 0, RE | S | D],
            AC | IN | c.SERVER_STATUS_IN_TRANS_READONLY | CHANGED,
        ),
        "commit": ([OK_ | D], AC),
        "autocommit-0": ([OK_ | D], 0),
        "select-ac0": ([0, DE, DX, 0, RE | S | D], CHANGED),
        "error": ([E | D], CHANGED | IN),  # autocommit off: assume a transaction
        "ping": ([OK_ | D], 0),
        "statistics": ([D], 0),
        "set-option-off": ([RE | S | D], CHANGED),
        "field-list": ([0, 0, 0, 0, 0, RE | S | D], CHANGED),
        "kill-unknown": ([E | D], CHANGED | IN),
        "reset-connection": ([OK_ | D], AC),
        "change-user": ([r.AUTH, OK_ | D], AC),
        "select-after": ([0, DE, DX, 0, RE | D], AC),
    },
    "deprecate": {
        "select": ([0, 0, 0, DE, 0, RE | D], AC),
        "prepare": ([r.PREPARED, DE, 0, DE | D], AC),
        "execute": ([0, 0, DE, 0, RE | D], AC),
        "execute-cursor": ([0, 0, DE, RE | D], AC | c.SERVER_STATUS_CURSOR_EXISTS),
        "prepare-empty": ([r.PREPARED, DE | D], AC),
        "execute-empty": ([0, DE, RE | D], AC),
        "multi": ([0, DE, 0, RE, 0, DE, 0, RE | D], AC),
        "multi-error": ([0, DE, 0, RE, E | D], AC | MORE),
        "init-db": ([OK_ | S | D], AC | CHANGED),
        "begin-ro": ([OK_ | S | D], AC | IN | c.SERVER_STATUS_IN_TRANS_READONLY | CHANGED),
        "commit": ([OK_ | S | D], AC | CHANGED),
        "autocommit-0": ([OK_ | S | D], CHANGED),
        "select-ac0": ([0, DE, 0, RE | D], 0),
        "error": ([E | D], IN),
        "set-option-off": ([RE | D], 0),
        "field-list": ([0, 0, 0, 0, 0, RE | D], 0),
    },
}


def _replay(mode: str) -> Iterator[tuple[str, list[int], ReplyTracker]]:
    steps, caps = MODES[mode]
    tracker = ReplyTracker(caps)
    for label, command, replies in _commands(steps):
        if not tracker.expect(command[0]):
            assert not replies, label
            continue
        flags = [tracker.feed(payload) for payload in replies]
        yield label, flags, tracker


@pytest.mark.parametrize("mode", MODES)
def test_real_replies(mode: str) -> None:
    expected = EXPECTED[mode]
    seen = set()
    for label, flags, tracker in _replay(mode):
        assert [f & D for f in flags] == [0] * (len(flags) - 1) + [D], label
        assert tracker.pending == 0, label
        if label in expected:
            assert (flags, tracker.status) == expected[label], label
            seen.add(label)
    assert seen == set(expected)


@pytest.mark.parametrize("mode", MODES)
def test_real_prepare_ok_exposed(mode: str) -> None:
    steps, caps = MODES[mode]
    tracker = ReplyTracker(caps)
    tracker.expect(c.COM_STMT_PREPARE)
    first = bytes.fromhex(steps["prepare"][1][0])
    assert tracker.feed(first) == r.PREPARED
    assert tracker.prepared == cmd.PrepareOk(cmd.stmt_id(first), 2, 1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_pipelined_stream_split_anywhere(mode: str) -> None:
    """All commands sent at once; the replies read from one stream cut at every offset."""
    steps, caps = MODES[mode]
    commands = [(lb, cm, rp) for lb, cm, rp in _commands(steps) if not lb.startswith("change")]
    stream = b"".join(
        frame(x, seq) for _, _, replies in commands for seq, x in enumerate(replies, 1)
    )
    one_by_one = [f for label, flags, _ in _replay(mode) if label != "change-user" for f in flags]
    reference = _flags_for(stream, len(stream), caps, commands)
    assert reference == one_by_one
    assert sum(bool(f & D) for f in reference) == sum(1 for *_, replies in commands if replies)
    for cut in range(len(stream) + 1):
        assert _flags_for(stream, cut, caps, commands) == reference, cut


def _flags_for(
    stream: bytes, cut: int, caps: int, commands: list[tuple[str, bytes, list[bytes]]]
) -> list[int]:
    tracker = ReplyTracker(caps)
    for _, command, _ in commands:
        tracker.expect(command[0])
    reader = PacketReader(1 << 20)
    flags = []
    for chunk in (stream[:cut], stream[cut:]):
        reader.feed(chunk)
        while (packet := reader.next()) is not None:
            flags.append(tracker.feed(packet[1]))
    assert tracker.pending == 0
    return flags


def test_eof_to_deprecate_conversion_recipe() -> None:
    """The flags suffice to turn an EOF-mode reply into what a DEPRECATE_EOF client expects:
    drop a DEFS_EOF (unless it ends the answer: a cursor), turn end packets into 0xFE-OKs."""
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    for label in ("select", "execute-cursor", "multi", "execute-empty"):
        command, replies = STEPS_EOF[label]
        tracker.expect(bytes.fromhex(command)[0])
        out = []
        for payload in map(bytes.fromhex, replies):
            flags = tracker.feed(payload)
            if flags & r.DEFS_EOF and not flags & r.DONE:
                continue
            out.append(m.eof_to_ok(payload) if flags & (r.DEFS_EOF | r.RESULT_END) else payload)
        expected = [bytes.fromhex(x) for x in STEPS_DEPRECATE[label][1]]
        assert out == expected, label


# ---- hand-made replies ---------------------------------------------------------

EOF = m.build_eof(AC)
EOF_MORE = m.build_eof(AC | MORE)
OK = m.build_ok(m.OkPacket())
OK_MORE = m.build_ok(m.OkPacket(status=AC | MORE))
OK_IN = m.build_ok(m.OkPacket(status=AC | IN))
ERR = m.build_err(c.ER_QUERY_INTERRUPTED, "Query execution was interrupted")
COLDEF = bytes.fromhex("036465660000000131000c3f000100000003810000000000")
ROW = b"\x011"


def test_local_infile() -> None:
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    assert tracker.feed(m.build_local_infile(b"data.csv")) == r.INFILE
    # the client sends the file and an empty packet; then the server answers
    assert tracker.feed(m.build_ok(m.OkPacket(affected_rows=3))) == OK_ | D


def test_local_infile_in_multi_statement() -> None:
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    replies = [OK_MORE, m.build_local_infile(b"f"), OK_MORE, b"\x01", COLDEF, EOF, ROW, EOF]
    flags = [tracker.feed(x) for x in replies]
    assert flags == [OK_, r.INFILE, OK_, 0, DE, DX, 0, RE | D]


def test_local_infile_refused_by_client() -> None:
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    tracker.feed(m.build_local_infile(b"/etc/passwd"))
    assert tracker.feed(ERR) == E | D


def test_stored_procedure_via_execute() -> None:
    """CALL: result sets chained by MORE_RESULTS, then the procedure's own OK."""
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_STMT_EXECUTE)
    out_params = m.build_eof(AC | MORE | c.SERVER_PS_OUT_PARAMS)
    replies = [b"\x01", COLDEF, EOF, b"\x00\x00\x01", EOF_MORE]
    replies += [b"\x01", COLDEF, EOF, b"\x00\x00\x02", out_params, OK]
    flags = [tracker.feed(x) for x in replies]
    assert flags == [0, DE, DX, 0, RE, 0, DE, DX, 0, RE, OK_ | D]


def test_query_killed_mid_rows() -> None:
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    flags = [tracker.feed(x) for x in [b"\x01", COLDEF, EOF, ROW, ROW, ERR]]
    assert flags == [0, DE, DX, 0, 0, E | D]
    assert tracker.errors == 1
    assert tracker.status == AC  # autocommit on, no transaction: an error opens none


def test_error_keeps_an_open_transaction() -> None:
    tracker = ReplyTracker(STEPS_EOF_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    tracker.feed(OK_IN)
    tracker.expect(c.COM_QUERY)
    assert tracker.feed(ERR) == E | D
    assert tracker.in_transaction and not tracker.idle


def test_huge_row_starting_with_fe_is_a_row() -> None:
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    for payload in (b"\x01", COLDEF):
        tracker.feed(payload)
    huge = b"\xfe" + (MAX_CHUNK + 1).to_bytes(8, "little") + bytes(MAX_CHUNK + 1)
    assert tracker.feed(huge) == 0
    assert tracker.feed(m.build_ok(m.OkPacket(), header=0xFE)) == RE | D


def test_binary_row_starting_with_zero_is_a_row() -> None:
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_STMT_EXECUTE)
    flags = [tracker.feed(x) for x in (b"\x01", COLDEF, b"\x00\x00\x07", b"\x00\x00\x08", OK)]
    assert flags == [0, DE, 0, 0, 0]  # an OK (0x00) in the rows is a binary row
    assert tracker.feed(m.build_ok(m.OkPacket(), header=0xFE)) == RE | D


def test_own_commands_flagged() -> None:
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    assert tracker.expect(c.COM_QUERY, own=True)  # replayed settings
    assert tracker.expect(c.COM_STMT_PREPARE, own=True)  # re-prepare
    assert tracker.expect(c.COM_STMT_EXECUTE)  # the client's
    assert tracker.pending == 3
    prepare_ok = cmd.build_prepare_ok(cmd.PrepareOk(41, 1, 0))
    replies = [OK, prepare_ok, COLDEF, b"\x01", COLDEF, b"\x00\x00\x01"]
    replies.append(m.build_ok(m.OkPacket(), header=0xFE))
    flags = [tracker.feed(x) for x in replies]
    own = r.OWN
    assert flags == [own | OK_ | D, own | r.PREPARED, own | DE | D, 0, DE, 0, RE | D]
    assert tracker.prepared == cmd.PrepareOk(41, 1, 0)
    assert tracker.idle


def test_own_commands_do_not_keep_a_connection_busy() -> None:
    """Only the client's commands and an open transaction make a connection busy: a
    command of the proxy's own may still run when it is lent to the next client."""
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    tracker.expect(c.COM_QUERY, own=True)
    assert (tracker.pending, tracker.client_pending, tracker.idle) == (2, 1, False)
    tracker.feed(OK)
    assert (tracker.pending, tracker.client_pending, tracker.idle) == (1, 0, True)
    tracker.feed(OK)
    assert (tracker.pending, tracker.idle) == (0, True)
    tracker.expect(c.COM_QUERY, own=True)
    tracker.feed(OK_IN)
    assert not tracker.idle  # an own BEGIN would still be a transaction


FIRST_ROWS = [
    ("eof", [b"\x02", COLDEF, COLDEF, EOF, b"\x011\xfb", b"\x012\x013", EOF], [b"1", None]),
    ("deprecate", [b"\x01", COLDEF, b"\x0242", m.build_ok(m.OkPacket(), header=0xFE)], [b"42"]),
    ("eof", [b"\x01", COLDEF, EOF, EOF], None),
    ("eof", [ERR], None),
]


@pytest.mark.parametrize(("mode", "replies", "values"), FIRST_ROWS)
def test_first_row(mode: str, replies: list[bytes], values: list[bytes | None] | None) -> None:
    tracker = ReplyTracker(MODES[mode][1])
    tracker.expect(c.COM_QUERY, own=True)
    row = r.FirstRow()
    for payload in replies:
        assert not row.done
        row.feed(payload, tracker.feed(payload))
    assert row.done and row.values == values


def test_commands_without_reply() -> None:
    tracker = ReplyTracker(0)
    for command in (c.COM_STMT_CLOSE, c.COM_STMT_SEND_LONG_DATA, c.COM_QUIT):
        assert not tracker.expect(command)
    assert tracker.pending == 0 and tracker.idle
    with pytest.raises(ProtocolError, match="no command outstanding"):
        tracker.feed(OK)


@pytest.mark.parametrize("command", [c.COM_BINLOG_DUMP, c.COM_BINLOG_DUMP_GTID, 0xFE])
def test_replication_commands_refused(command: int) -> None:
    with pytest.raises(ValueError):
        ReplyTracker(0).expect(command)


def test_unknown_command_gets_ok_or_err() -> None:
    tracker = ReplyTracker(0)
    tracker.expect(0x20)
    assert tracker.feed(m.build_err(c.ER_UNKNOWN_COM_ERROR, "Unknown command")) == E | D


def test_status_and_idle() -> None:
    tracker = ReplyTracker(0, status=AC)
    assert tracker.idle and tracker.autocommit and not tracker.in_transaction
    tracker.expect(c.COM_QUERY)
    assert not tracker.idle
    tracker.feed(OK_IN)
    assert tracker.in_transaction and not tracker.idle
    tracker.expect(c.COM_QUERY)
    tracker.feed(OK)
    assert tracker.idle


@pytest.mark.parametrize(
    ("command", "caps", "replies"),
    [
        (c.COM_QUERY, 0, [b"\xfe\x00\x00\x02\x00"]),  # an EOF where a result starts
        (c.COM_QUERY, 0, [b"\x01", COLDEF, ROW]),  # no EOF after the definitions
        (c.COM_PING, 0, [b"\x05"]),
        (c.COM_QUERY, 0, [b""]),
        (c.COM_STMT_PREPARE, 0, [b"\x00\x01\x00"]),  # a short STMT_PREPARE_OK
        (c.COM_QUERY, 0, [b"\xfc\x01"]),  # a truncated column count
    ],
)
def test_malformed_replies(command: int, caps: int, replies: list[bytes]) -> None:
    tracker = ReplyTracker(caps)
    tracker.expect(command)
    with pytest.raises(ProtocolError):
        for payload in replies:
            tracker.feed(payload)


@pytest.mark.parametrize("deprecate", [False, True])
def test_warning_count_of_the_end_packets(deprecate: bool) -> None:
    """The warnings a statement raised, from its OK or its end-of-rows packet (an EOF,
    or an OK with a 0xFE header under DEPRECATE_EOF): what tells Sluice that the
    statement replaced the session's diagnostics."""
    tracker = ReplyTracker(c.CLIENT_DEPRECATE_EOF if deprecate else 0)
    ok = m.build_ok(m.OkPacket(affected_rows=300, last_insert_id=7, status=AC, warnings=2))
    tracker.expect(c.COM_QUERY)
    flags = tracker.feed(ok)
    assert flags & OK_ and tracker.warnings(ok, flags) == 2
    end = (
        m.build_ok(m.OkPacket(status=AC, warnings=3), header=c.EOF_HEADER)
        if deprecate
        else m.build_eof(AC, 3)
    )
    tracker.expect(c.COM_QUERY)
    for payload in (
        b"\x01",
        b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x00\x00\x00\x00\x00",
    ):
        tracker.feed(payload)
    if not deprecate:
        tracker.feed(m.build_eof(AC))
    assert tracker.feed(b"\x011") == 0  # a row
    flags = tracker.feed(end)
    assert flags & RE and flags & D and tracker.warnings(end, flags) == 3
    bare = b"\x00\x00\x00\x02\x00"  # an OK cut short after its status: no warning count
    tracker.expect(c.COM_PING)
    assert tracker.warnings(bare, tracker.feed(bare)) == 0


# ---- ReplyStream: the reply bytes forwarded as received ----------------------

_LOOKED_AT = ~(DE | DX | S)


def _stream_through(
    stream: bytes,
    cuts: list[int],
    caps: int,
    commands: list[bytes],
    own: frozenset[int] = frozenset(),
    whole: bool = False,
) -> tuple[bytes, list[int], list[bytes]]:
    """Feed `stream` cut at `cuts` through a ReplyStream; return what it forwards, the
    flags of the packets it stopped at and the payloads of the own ones (dropped)."""
    tracker = ReplyTracker(caps)
    for i, command in enumerate(commands):
        tracker.expect(command[0], own=i in own)
    replies = r.ReplyStream(tracker, 1 << 26)
    out, flags, owned = [], [], []
    for start, stop in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        replies.feed(stream[start:stop])
        while (got := replies.next(whole=whole)) != r.NONE:
            flags.append(got)
            if got & r.OWN:
                replies.drop()
                owned.append(replies.payload)
        out.append(replies.take())
        if whole:
            renumber(out[-1], 0)  # ProtocolError on a packet cut short
    assert tracker.pending == 0 and replies.buffered == 0
    return b"".join(out), flags, owned


@pytest.mark.parametrize("mode", MODES)
def test_stream_forwards_the_bytes_as_received(mode: str) -> None:
    """The real replies as one stream, cut at every offset, and fed byte by byte: the
    bytes forwarded are the bytes received, and `next` stops at the packets that
    need a look, with the flags the tracker gives them one by one."""
    steps, caps = MODES[mode]
    commands = [(lb, cm, rp) for lb, cm, rp in _commands(steps) if not lb.startswith("change")]
    stream = b"".join(
        frame(x, seq) for _, _, replies in commands for seq, x in enumerate(replies, 1)
    )
    sent = [command for _, command, _ in commands]
    reference = [f for f in _flags_for(stream, len(stream), caps, commands) if f & _LOOKED_AT]
    for cut in range(len(stream) + 1):
        assert _stream_through(stream, [cut], caps, sent) == (stream, reference, []), cut
    every_byte = list(range(1, len(stream)))
    assert _stream_through(stream, every_byte, caps, sent) == (stream, reference, [])
    whole = _stream_through(stream, every_byte, caps, sent, whole=True)
    assert whole == (stream, reference, [])


def _result(rows: list[bytes], binary: bool = False) -> list[bytes]:
    end = m.build_ok(m.OkPacket(), header=0xFE)
    return [b"\x01", COLDEF, *(b"\x00" + row if binary else row for row in rows), end]


@pytest.mark.parametrize("binary", [False, True])
def test_stream_own_replies_dropped(binary: bool) -> None:
    """Replies to the proxy's own commands around the client's are left out, whole, at
    every cut; the client's reply goes through as the server framed it."""
    caps = STEPS_DEPRECATE_CAPABILITIES
    rows = [b"\x03abc", b"\x0542424", b"\xfb"]
    client = b"".join(frame(x, seq) for seq, x in enumerate(_result(rows, binary), 1))
    own_first = b"".join(frame(x, seq) for seq, x in enumerate(_result([b"\x017"]), 1))
    own_after = frame(OK, 1)
    stream = own_first + client + own_after
    command = bytes((c.COM_STMT_EXECUTE if binary else c.COM_QUERY,))
    commands = [bytes((c.COM_QUERY,)), command, bytes((c.COM_PING,))]
    for cut in range(len(stream) + 1):
        for whole in (False, True):
            out, flags, owned = _stream_through(
                stream, [cut], caps, commands, frozenset((0, 2)), whole
            )
            assert out == client, cut
            assert owned == [b"\x01", COLDEF, b"\x017", _result([])[-1], OK]
            assert flags[-2:] == [RE | D, r.OWN | OK_ | D]


@pytest.mark.parametrize("first", [b"\x00", b"\xfe"])
def test_stream_rows_of_16_mib_and_more(first: bytes) -> None:
    """A row in several packets (a binary row, or a text row whose first value is 16 MiB
    or more: 0xFE) streams through: forwarded as far as it came, never joined."""
    caps = STEPS_DEPRECATE_CAPABILITIES
    row = first + bytes(2 * MAX_CHUNK + 5)
    end = m.build_ok(m.OkPacket(), header=0xFE)
    head = frame(b"\x01", 1) + frame(COLDEF, 2)
    stream = head + frame(row, 3) + frame(end, 6)
    tracker = ReplyTracker(caps)
    tracker.expect(c.COM_QUERY)
    replies = r.ReplyStream(tracker, 1 << 20)  # far below the row: it is not buffered
    taken = []
    for start in range(0, len(stream), 1 << 22):
        replies.feed(stream[start : start + (1 << 22)])
        while (flags := replies.next()) != r.NONE:
            assert flags == RE | D
        taken.append(replies.take())
    assert b"".join(taken) == stream
    assert all(len(chunk) >= (1 << 22) - 4 for chunk in taken[:-1])  # forwarded as it came
    tracker.expect(c.COM_QUERY)  # again, forwarding whole packets only
    taken = []
    for start in range(0, len(stream), 1 << 22):
        replies.feed(stream[start : start + (1 << 22)])
        while (flags := replies.next(whole=True)) != r.NONE:
            assert flags == RE | D
        taken.append(replies.take())
    assert b"".join(taken) == stream
    for chunk in taken:
        renumber(chunk, 0)  # ProtocolError on a packet cut short


def test_stream_refuses_other_packets_beyond_the_maximum() -> None:
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    replies = r.ReplyStream(tracker, 1000)
    replies.feed(frame(b"\x01", 1) + frame(COLDEF + bytes(2000), 2)[:100])
    with pytest.raises(PacketTooLarge):
        replies.next()


def test_stream_replace() -> None:
    """A packet replaced (a PREPARE_OK given the client's statement id) keeps its place."""
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_STMT_PREPARE)
    prepare_ok = cmd.build_prepare_ok(cmd.PrepareOk(41, 1, 0))
    stream = frame(prepare_ok, 1) + frame(COLDEF, 2)
    replies = r.ReplyStream(tracker, 1 << 20)
    replies.feed(stream)
    seen = []
    while (flags := replies.next(every=True)) != r.NONE:
        seen.append(flags)
        if flags & r.PREPARED:
            replies.replace(cmd.with_stmt_id(replies.payload, 7))
    mine = cmd.build_prepare_ok(cmd.PrepareOk(7, 1, 0))
    assert seen == [r.PREPARED, DE | D]
    assert replies.take() == frame(mine, 1) + frame(COLDEF, 2)


def test_stream_waits_for_a_whole_packet_in_linear_time() -> None:
    """A packet that must come whole (a row of 16 MiB or more, to a client with
    compression) arriving in small reads is joined once, not once per read."""
    tracker = ReplyTracker(STEPS_DEPRECATE_CAPABILITIES)
    tracker.expect(c.COM_QUERY)
    end = m.build_ok(m.OkPacket(), header=0xFE)
    stream = frame(b"\x01", 1) + frame(COLDEF, 2) + frame(bytes(MAX_CHUNK + 9), 3) + frame(end, 5)
    replies = r.ReplyStream(tracker, 1 << 20)
    taken, started = [], time.monotonic()
    for start in range(0, len(stream), 4096):
        replies.feed(stream[start : start + 4096])
        while replies.next(whole=True) != r.NONE:
            pass
        taken.append(replies.take())
    assert time.monotonic() - started < 5  # (joined at every read: over 10 s)
    assert b"".join(taken) == stream and tracker.pending == 0
    assert sum(1 for chunk in taken if chunk) <= 4
