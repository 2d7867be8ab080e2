"""OK, ERR, EOF, LOCAL INFILE, session state and command packets on exact bytes.

Builders are pinned by hand-written bytes; parsers by the same bytes and by
packets MariaDB 10.11 really sent (mysql_captures), including OK packets with
session state changes (schema, system variables, transaction state).
"""

from __future__ import annotations

import pytest

from mysql_captures import STEPS_DEPRECATE, STEPS_EOF
from sluice.errors import ProtocolError
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql import messages as m
from sluice.wire.mysql.messages import OkPacket
from sluice.wire.mysql.packets import MAX_CHUNK


def _reply(steps: dict[str, tuple[str, list[str]]], label: str, index: int) -> bytes:
    return bytes.fromhex(steps[label][1][index])


# ---- OK ------------------------------------------------------------------------

AC = c.SERVER_STATUS_AUTOCOMMIT
OK_CASES: list[tuple[OkPacket, bytes]] = [
    (OkPacket(), b"\x00\x00\x00\x02\x00\x00\x00"),
    (OkPacket(status=0), b"\x00\x00\x00\x00\x00\x00\x00"),
    (
        OkPacket(affected_rows=300, last_insert_id=70000, status=AC | 1, warnings=2),
        b"\x00\xfc\x2c\x01\xfd\x70\x11\x01\x03\x00\x02\x00",
    ),
    (
        OkPacket(affected_rows=1, info=b"Rows matched: 1  Changed: 1  Warnings: 0"),
        b"\x00\x01\x00\x02\x00\x00\x00\x28Rows matched: 1  Changed: 1  Warnings: 0",
    ),
    (
        OkPacket(status=AC | c.SERVER_SESSION_STATE_CHANGED, session_state=b"\x01\x06\x05mysql"),
        b"\x00\x00\x00\x02\x40\x00\x00\x00\x08\x01\x06\x05mysql",
    ),
]


@pytest.mark.parametrize(("ok", "wire"), OK_CASES)
def test_ok(ok: OkPacket, wire: bytes) -> None:
    assert m.build_ok(ok) == wire
    assert m.parse_ok(wire) == ok
    assert m.ok_status(wire) == ok.status


@pytest.mark.parametrize(("ok", "wire"), OK_CASES)
def test_ok_insert_id(ok: OkPacket, wire: bytes) -> None:
    assert m.ok_insert_id(wire) == ok.last_insert_id


def test_ok_state_flag_follows_the_state() -> None:
    flagged = OkPacket(status=AC | c.SERVER_SESSION_STATE_CHANGED)
    assert m.build_ok(flagged) == m.build_ok(OkPacket())
    assert m.parse_ok(m.build_ok(OkPacket(status=AC, session_state=b"\x02\x011"))).status == (
        AC | c.SERVER_SESSION_STATE_CHANGED
    )


def test_ok_deprecate_eof_form() -> None:
    wire = m.build_ok(OkPacket(status=0x42), header=c.EOF_HEADER)
    assert wire == b"\xfe\x00\x00\x42\x00\x00\x00"
    assert m.parse_ok(wire) == OkPacket(status=0x42)


def test_ok_legacy_info_to_the_end() -> None:
    """An info string that is not length-encoded (old servers) is read to the end."""
    ok = m.parse_ok(b"\x00\x00\x00\x02\x00\x00\x00Records: 1")
    assert ok.info == b"Records: 1"


@pytest.mark.parametrize("bad", [b"", b"\x01\x00\x00\x02\x00\x00\x00", b"\x00\x00", b"\x00\xfc"])
def test_ok_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        m.parse_ok(bad)


# ---- session state changes, as MariaDB sends them ------------------------------


def test_real_ok_schema_change() -> None:
    ok = m.parse_ok(_reply(STEPS_DEPRECATE, "init-db", 0))
    assert ok.status == AC | c.SERVER_SESSION_STATE_CHANGED
    assert ok.session_state == b"\x01\x06\x05mysql"
    assert m.parse_session_state(ok.session_state) == [(c.SESSION_TRACK_SCHEMA, b"\x05mysql")]
    assert m.session_changes(ok.session_state) == m.SessionChanges(schema="mysql")
    use = m.parse_ok(_reply(STEPS_DEPRECATE, "use", 0))
    assert m.session_changes(use.session_state).schema == "information_schema"


def test_real_ok_variable_change() -> None:
    ok = m.parse_ok(_reply(STEPS_DEPRECATE, "autocommit-0", 0))
    assert ok.status == c.SERVER_SESSION_STATE_CHANGED  # autocommit now off
    changes = m.session_changes(ok.session_state)
    assert changes.variables == (("autocommit", "OFF"),)
    assert changes.state_changed


def test_real_ok_transaction_state() -> None:
    ok = m.parse_ok(_reply(STEPS_DEPRECATE, "begin-ro", 0))
    assert ok.status == (
        c.SERVER_STATUS_IN_TRANS
        | AC
        | c.SERVER_STATUS_IN_TRANS_READONLY
        | c.SERVER_SESSION_STATE_CHANGED
    )
    changes = m.session_changes(ok.session_state)
    assert changes.transaction_state == "T_______"
    assert changes.transaction_characteristics == "START TRANSACTION READ ONLY;"
    end = m.parse_ok(_reply(STEPS_DEPRECATE, "select-in-trans", 3))  # the 0xFE-OK after rows
    assert m.session_changes(end.session_state).transaction_state == "T_____S_"
    commit = m.session_changes(m.parse_ok(_reply(STEPS_DEPRECATE, "commit", 0)).session_state)
    assert (commit.transaction_state, commit.transaction_characteristics) == ("________", "")


def test_session_state_round_trip_and_gtids() -> None:
    blocks = [
        (c.SESSION_TRACK_SYSTEM_VARIABLES, b"\x09time_zone\x06+00:00"),
        (c.SESSION_TRACK_SCHEMA, b"\x05appdb"),
        (c.SESSION_TRACK_STATE_CHANGE, b"1"),
        (c.SESSION_TRACK_GTIDS, b"\x00\x0b0-1-123,0-2"),
        (9, b"future"),  # unknown types are kept by the splitter, skipped by the decoder
    ]
    data = m.build_session_state(blocks)
    assert data.startswith(b"\x00\x11\x09time_zone\x06+00:00\x01\x06\x05appdb\x02\x011")
    assert m.parse_session_state(data) == blocks
    assert m.session_changes(data) == m.SessionChanges(
        variables=(("time_zone", "+00:00"),),
        schema="appdb",
        state_changed=True,
        gtids=b"0-1-123,0-2",
    )


def test_session_state_malformed() -> None:
    with pytest.raises(ProtocolError):
        m.parse_session_state(b"\x01\x09\x05mysql")
    with pytest.raises(ProtocolError):
        m.session_changes(b"\x00\x03\x05abc")


# ---- ERR -------------------------------------------------------------------------


def test_build_err() -> None:
    wire = m.build_err(c.ER_ACCESS_DENIED_ERROR, "Access denied for user 'app'")
    assert wire == b"\xff\x15\x04#28000Access denied for user 'app'"
    assert m.parse_err(wire) == m.ErrPacket(1045, "28000", "Access denied for user 'app'")
    assert m.build_err(c.ER_BORROW_TIMEOUT, "x") == b"\xff\x1d\x25#HY000x"
    with pytest.raises(ValueError):
        m.build_err((1, "HY00"), "x")


@pytest.mark.parametrize(
    ("steps", "label", "expected"),
    [
        (STEPS_EOF, "error", (1109, "42S02", "Unknown table 'nope' in information_schema")),
        (STEPS_EOF, "kill-unknown", (1094, "HY000", "Unknown thread id: 999999")),
        (STEPS_EOF, "unknown-command", (1047, "08S01", "Unknown command")),
        (STEPS_DEPRECATE, "multi-error", (1046, "3D000", "No database selected")),
    ],
)
def test_parse_real_err(
    steps: dict[str, tuple[str, list[str]]], label: str, expected: tuple[int, str, str]
) -> None:
    payload = _reply(steps, label, -1)
    assert m.parse_err(payload) == m.ErrPacket(*expected)


def test_err_without_sqlstate() -> None:
    """Before the handshake completes, a server may send ERR without the SQLSTATE."""
    assert m.parse_err(b"\xff\x10\x04Too many connections") == m.ErrPacket(
        1040, "HY000", "Too many connections"
    )
    with pytest.raises(ProtocolError):
        m.parse_err(b"\xff\x10")


# ---- EOF ---------------------------------------------------------------------------


def test_eof() -> None:
    assert m.build_eof(AC) == b"\xfe\x00\x00\x02\x00"
    assert m.build_eof(0x0A, warnings=3) == b"\xfe\x03\x00\x0a\x00"
    assert m.parse_eof(b"\xfe\x03\x00\x0a\x00") == (3, 0x0A)
    with pytest.raises(ProtocolError):
        m.parse_eof(b"\xfe\x00")


def test_is_eof_tells_a_terminator_from_a_huge_row() -> None:
    assert m.is_eof(b"\xfe\x00\x00\x02\x00")
    assert m.is_eof(_reply(STEPS_DEPRECATE, "select", -1))  # OK with the 0xFE header
    assert not m.is_eof(b"\x01\x31")
    assert not m.is_eof(b"")
    assert m.is_eof(b"\xfe" + bytes(MAX_CHUNK - 2))
    assert not m.is_eof(b"\xfe" + bytes(MAX_CHUNK - 1))  # a 16 MiB text value starts so


def test_eof_ok_conversions() -> None:
    assert m.eof_to_ok(b"\xfe\x01\x00\x22\x00") == b"\xfe\x00\x00\x22\x00\x01\x00"
    ok = m.build_ok(
        OkPacket(status=AC | c.SERVER_SESSION_STATE_CHANGED, session_state=b"\x01\x02\x01a")
    )
    assert m.ok_to_eof(b"\xfe" + ok[1:]) == b"\xfe\x00\x00\x02\x00"
    real = _reply(STEPS_EOF, "select", -1)
    assert m.ok_to_eof(m.eof_to_ok(real)) == real


def test_local_infile() -> None:
    assert m.build_local_infile(b"/tmp/data.csv") == b"\xfb/tmp/data.csv"
    assert m.parse_local_infile(b"\xfb/tmp/data.csv") == b"/tmp/data.csv"
    with pytest.raises(ProtocolError):
        m.parse_local_infile(b"\x00")


# ---- commands ------------------------------------------------------------------------


def test_command_builders() -> None:
    assert cmd.query("SELECT 1") == b"\x03SELECT 1"
    assert cmd.query(b"DO 1") == b"\x03DO 1"
    assert cmd.init_db("appdb") == b"\x02appdb"
    assert cmd.stmt_prepare("SELECT ?") == b"\x16SELECT ?"
    assert cmd.stmt_close(0x01020304) == b"\x19\x04\x03\x02\x01"
    assert cmd.stmt_reset(7) == b"\x1a\x07\x00\x00\x00"
    assert cmd.set_option(c.MYSQL_OPTION_MULTI_STATEMENTS_OFF) == b"\x1b\x01\x00"
    assert (cmd.PING, cmd.QUIT, cmd.RESET_CONNECTION) == (b"\x0e", b"\x01", b"\x1f")


def test_statement_ids_both_ways() -> None:
    prepare_ok = _reply(STEPS_EOF, "prepare", 0)
    ok = cmd.parse_prepare_ok(prepare_ok)
    assert (ok.num_columns, ok.num_params, ok.warnings) == (2, 1, 0)
    assert cmd.stmt_id(prepare_ok) == ok.stmt_id
    assert cmd.build_prepare_ok(ok) == prepare_ok
    renamed = cmd.with_stmt_id(prepare_ok, 0xA0B0C0D0)
    assert renamed == b"\x00\xd0\xc0\xb0\xa0" + prepare_ok[5:]
    execute = bytes.fromhex(STEPS_EOF["execute"][0])
    assert cmd.stmt_id(execute) == ok.stmt_id  # the client's command carries the same id
    assert cmd.stmt_id(cmd.with_stmt_id(execute, 9)) == 9
    with pytest.raises(ProtocolError):
        cmd.with_stmt_id(b"\x19\x01", 1)
    with pytest.raises(ProtocolError):
        cmd.parse_prepare_ok(b"\x00\x01\x00")


def test_parse_real_execute() -> None:
    execute = bytes.fromhex(STEPS_EOF["execute"][0])
    head = cmd.parse_execute(execute, 1)
    assert (head.flags, head.iterations, head.null_bitmap) == (c.CURSOR_TYPE_NO_CURSOR, 1, b"\x00")
    assert head.new_params_bound
    assert head.types == b"\x08\x00"  # MYSQL_TYPE_LONGLONG, signed
    assert execute[head.values_at :] == (7).to_bytes(8, "little")
    cursor = cmd.parse_execute(bytes.fromhex(STEPS_EOF["execute-cursor"][0]), 1)
    assert cursor.flags == c.CURSOR_TYPE_READ_ONLY
    bare = cmd.parse_execute(bytes.fromhex(STEPS_EOF["execute-noresult"][0]), 0)
    assert (bare.null_bitmap, bare.types, bare.values_at) == (b"", b"", 10)


def test_bind_types() -> None:
    bound = bytes.fromhex(STEPS_EOF["execute"][0])
    unbound = bound[:11] + b"\x00" + bound[14:]  # the same execution, types not resent
    assert cmd.parse_execute(unbound, 1).types == b""
    assert cmd.bind_types(unbound, 1, b"\x08\x00") == bound
    assert cmd.bind_types(bound, 1, b"\x08\x00") == bound
    with pytest.raises(ValueError):
        cmd.bind_types(unbound, 1, b"\x08")


@pytest.mark.parametrize(
    "bad", [b"\x17\x01\x00", b"\x16" + bytes(12), b"\x17" + bytes(9), b"\x17" + bytes(10) + b"\x01"]
)
def test_execute_malformed(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        cmd.parse_execute(bad, 1)


def test_parse_change_user() -> None:
    payload = bytes.fromhex(STEPS_EOF["change-user"][0])
    caps = c.CLIENT_PLUGIN_AUTH | c.CLIENT_CONNECT_ATTRS | c.CLIENT_SECURE_CONNECTION
    got = cmd.parse_change_user(payload, caps)
    assert (got.user, got.auth_response, got.database) == ("root", b"", None)
    assert (got.charset, got.auth_plugin, got.attributes) == (45, c.NATIVE_PASSWORD, {})
    full = (
        b"\x11app\x00\x14"
        + b"\x02" * 20
        + b"appdb\x00\x2d\x00mysql_native_password\x00\x04\x01a\x01b"
    )
    got = cmd.parse_change_user(full, caps)
    assert (got.user, got.database, got.attributes) == ("app", "appdb", {"a": "b"})
    assert got.auth_response == b"\x02" * 20
    for cut in (1, 4, 5, 10):
        with pytest.raises(ProtocolError):
            cmd.parse_change_user(full[:cut], caps)
