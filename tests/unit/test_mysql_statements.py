"""MySQL statement keys, cached PREPARE replies, local answers and role resets on exact bytes.

A statement's key must change with everything that changes what its text means
(schema, sql_mode, character set), and only with that; a cached reply given to
another client carries that client's id and status flags; the command that
gives a session its login role back depends on the server family.
"""

from __future__ import annotations

import pytest

from sluice.mysql.answers import last_insert_id_query, one_value_result
from sluice.mysql.server import role_reset
from sluice.mysql.statements import (
    ClientStmt,
    ServerStatements,
    ServerStmt,
    reply_for_client,
    statement_key,
)
from sluice.wire.mysql import commands as cmd
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.messages import build_eof, parse_eof
from sluice.wire.mysql.packets import PacketReader

AC = c.SERVER_STATUS_AUTOCOMMIT
NAMES = "SET NAMES latin1"
MODE = "SET SESSION sql_mode = 'ANSI_QUOTES'"
TZ = "SET SESSION time_zone = '+01:00'"
SQL = b"SELECT DATABASE()"


def test_statement_key_follows_schema_and_reading_settings() -> None:
    base = statement_key("a", {}, SQL)
    assert base == b"1:a0:" + SQL
    assert statement_key("b", {}, SQL) != base
    assert statement_key("a", {"time_zone": TZ}, SQL) == base  # read at execution: no matter
    with_mode = statement_key("a", {"time_zone": TZ, "sql_mode": MODE, "names": NAMES}, SQL)
    assert with_mode == b"1:a%d:%s%d:%s2:%s" % (
        len(MODE),
        MODE.encode(),
        len(NAMES),
        NAMES.encode(),
        SQL,
    )
    # lengths keep the parts apart: no two different keys read the same
    assert statement_key("a0:", {}, b"x") != statement_key("a", {}, b"0:x")
    stmt = ClientStmt(SQL, "a", ())
    assert stmt.key == base


def test_server_statements_by_key() -> None:
    statements = ServerStatements()
    a, b = statement_key("a", {}, SQL), statement_key("b", {}, SQL)
    assert statements.add(a, ServerStmt(1, []), limit=2) == []
    assert statements.add(b, ServerStmt(2, []), limit=2) == []
    got_a, got_b = statements.get(a), statements.get(b)
    assert got_a is not None and got_b is not None
    assert (got_a.stmt_id, got_b.stmt_id) == (1, 2)
    assert statements.add(statement_key("c", {}, SQL), ServerStmt(3, []), limit=2) == [1]


PREPARE_OK = cmd.build_prepare_ok(cmd.PrepareOk(stmt_id=7, num_columns=1, num_params=1))
COLDEF = bytes.fromhex("036465660000000131000c3f000100000003810000000000")


def test_cached_reply_gets_the_clients_id_and_status() -> None:
    reply = [PREPARE_OK, COLDEF, build_eof(AC | c.SERVER_STATUS_IN_TRANS, 3), COLDEF, build_eof(AC)]
    out = reply_for_client(reply, 42, 0)
    assert cmd.stmt_id(out[0]) == 42 and out[0][5:] == PREPARE_OK[5:]
    assert out[1] == COLDEF and out[3] == COLDEF
    assert [parse_eof(out[i]) for i in (2, 4)] == [(3, 0), (0, 0)]  # warnings kept, status ours
    assert reply_for_client(reply[:2], 42, AC)[1:] == [COLDEF]  # DEPRECATE_EOF: no EOFs


@pytest.mark.parametrize("status", [0, AC, AC | c.SERVER_STATUS_NO_BACKSLASH_ESCAPES])
@pytest.mark.parametrize("deprecate_eof", [False, True])
def test_one_value_result_carries_the_status(status: int, deprecate_eof: bool) -> None:
    caps = c.CLIENT_DEPRECATE_EOF if deprecate_eof else 0
    reader = PacketReader(1 << 20)
    reader.feed(one_value_result(b"LAST_INSERT_ID()", 17, caps, status))
    packets = []
    while (packet := reader.next()) is not None:
        packets.append(packet)
    assert [seq for seq, _ in packets] == list(range(1, len(packets) + 1))
    payloads = [payload for _, payload in packets]
    if deprecate_eof:  # count, column, row, OK with a 0xFE header
        assert payloads[2:] == [b"\x0217", b"\xfe\x00\x00" + status.to_bytes(2, "little") + b"\0\0"]
    else:  # count, column, EOF, row, EOF
        assert payloads[2:] == [build_eof(status), b"\x0217", build_eof(status)]


@pytest.mark.parametrize(
    ("sql", "name"),
    [
        (b"SELECT LAST_INSERT_ID()", b"LAST_INSERT_ID()"),
        (b"select last_insert_id( ) as id;", b"id"),
        (b"SELECT LAST_INSERT_ID() + 0", None),
        (b"SELECT LAST_INSERT_ID(5)", None),
    ],
)
def test_last_insert_id_query(sql: bytes, name: bytes | None) -> None:
    assert last_insert_id_query(sql) == name


ROLE_RESETS = [
    ("5.5.5-10.11.19-MariaDB-0+deb12u1", None, b"\x03SET ROLE NONE"),
    ("5.5.5-10.11.19-MariaDB-0+deb12u1", b"app`role", b"\x03SET ROLE `app``role`"),
    ("8.0.36", None, b"\x03SET ROLE DEFAULT"),
    ("5.7.44-log", None, b""),  # no roles before MySQL 8
]


@pytest.mark.parametrize(("version", "login_role", "command"), ROLE_RESETS)
def test_role_reset(version: str, login_role: bytes | None, command: bytes) -> None:
    assert role_reset(version, login_role) == command
