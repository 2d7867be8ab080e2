"""Client commands: builders for what the proxy sends, and the fields it must rewrite.

Design: a command packet is one byte naming the command, then its argument;
the client sends it with sequence id 0. The proxy mostly forwards commands
unchanged. What it needs to look into:

- statement ids: the binary protocol's commands (EXECUTE, SEND_LONG_DATA,
  CLOSE, RESET, FETCH) carry the statement id at bytes 1..4, exactly where a
  STMT_PREPARE_OK reply carries it; the proxy maps the client's ids to each
  connection's own, so one pair of helpers serves both directions;
- COM_STMT_EXECUTE's parameter types: a client sends them only with the first
  execution after a prepare (new-params-bound flag 1). When the proxy
  re-prepares a statement on another connection, that server has not seen the
  types yet, so the proxy puts them back in (`bind_types`);
- COM_CHANGE_USER, whose layout is close to a handshake response.

MariaDB's statement id 0xFFFFFFFF ("the statement prepared last") is passed
through like any other id; it is the session's business to resolve it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from sluice.errors import ProtocolError
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.handshake import HandshakeResponse, read_attributes
from sluice.wire.mysql.packets import (
    read_nul_str,
    read_u16,
    read_u32,
    u16,
    u32,
)

_PREPARE_OK: Final = struct.Struct("<BIHHBH")
LAST_STATEMENT: Final = 0xFFFFFFFF  # MariaDB: "the statement prepared last" in EXECUTE


def command(com: int, argument: bytes = b"") -> bytes:
    return bytes((com,)) + argument


def query(sql: str | bytes) -> bytes:
    return command(c.COM_QUERY, sql.encode() if isinstance(sql, str) else sql)


def init_db(schema: str) -> bytes:
    return command(c.COM_INIT_DB, schema.encode())


def stmt_prepare(sql: str | bytes) -> bytes:
    return command(c.COM_STMT_PREPARE, sql.encode() if isinstance(sql, str) else sql)


def stmt_close(stmt_id: int) -> bytes:
    return command(c.COM_STMT_CLOSE, u32(stmt_id))


def stmt_reset(stmt_id: int) -> bytes:
    return command(c.COM_STMT_RESET, u32(stmt_id))


PING: Final = command(c.COM_PING)
QUIT: Final = command(c.COM_QUIT)
RESET_CONNECTION: Final = command(c.COM_RESET_CONNECTION)


# ---- statement ids -----------------------------------------------------------


def stmt_id(payload: bytes) -> int:
    """The statement id at bytes 1..4 (of a binary-protocol command or a STMT_PREPARE_OK)."""
    return read_u32(payload, 1)


def with_id_bytes(payload: bytes, id_bytes: bytes) -> bytes:
    """`payload` with the statement id at bytes 1..4 replaced by `id_bytes` (`u32` of it)."""
    if len(payload) < 5:
        raise ProtocolError("packet too short for a statement id")
    if payload[1:5] == id_bytes:  # (ids are numbered from 1 on both sides)
        return payload
    return payload[:1] + id_bytes + payload[5:]


def with_stmt_id(payload: bytes, new_id: int) -> bytes:
    """`payload` with the statement id at bytes 1..4 replaced."""
    return with_id_bytes(payload, u32(new_id))


@dataclass(frozen=True, slots=True)
class PrepareOk:
    """The first packet of a successful COM_STMT_PREPARE reply."""

    stmt_id: int
    num_columns: int
    num_params: int
    warnings: int = 0


def parse_prepare_ok(payload: bytes) -> PrepareOk:
    if len(payload) < 12 or payload[0] != c.OK_HEADER:
        raise ProtocolError("malformed STMT_PREPARE_OK")
    _, sid, columns, params, _, warnings = _PREPARE_OK.unpack_from(payload)
    return PrepareOk(sid, columns, params, warnings)


def build_prepare_ok(ok: PrepareOk) -> bytes:
    return _PREPARE_OK.pack(0, ok.stmt_id, ok.num_columns, ok.num_params, 0, ok.warnings)


# ---- COM_STMT_EXECUTE --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExecuteHead:
    """The fixed part of a COM_STMT_EXECUTE for a statement with `num_params` parameters."""

    stmt_id: int
    flags: int  # CURSOR_TYPE_*
    iterations: int
    null_bitmap: bytes
    new_params_bound: bool
    types: bytes  # 2 bytes per parameter when new_params_bound, else empty
    values_at: int  # where the parameter values start


def parse_execute(payload: bytes, num_params: int) -> ExecuteHead:
    values_at = execute_values_at(payload, num_params)
    sid, flags, iterations = struct.unpack_from("<IBI", payload, 1)
    if not num_params:
        return ExecuteHead(sid, flags, iterations, b"", False, b"", 10)
    bound_at = 10 + (num_params + 7) // 8
    bound = payload[bound_at] == 1
    types = payload[bound_at + 1 : values_at]
    return ExecuteHead(sid, flags, iterations, payload[10:bound_at], bound, types, values_at)


def execute_values_at(payload: bytes, num_params: int) -> int:
    """Where the parameter values of a COM_STMT_EXECUTE start (its fixed part checked,
    as `parse_execute` does, without decoding it)."""
    if len(payload) < 10 or payload[0] != c.COM_STMT_EXECUTE:
        raise ProtocolError("malformed COM_STMT_EXECUTE")
    if not num_params:
        return 10
    bound_at = 10 + (num_params + 7) // 8
    if len(payload) <= bound_at:
        raise ProtocolError("COM_STMT_EXECUTE too short for its parameters")
    types_end = bound_at + 1 + (2 * num_params if payload[bound_at] == 1 else 0)
    if len(payload) < types_end:
        raise ProtocolError("COM_STMT_EXECUTE too short for its parameter types")
    return types_end


def bind_types(payload: bytes, num_params: int, types: bytes) -> bytes:
    """An EXECUTE that sends `types` (new-params-bound 1), for a server that lacks them."""
    head = parse_execute(payload, num_params)
    if head.new_params_bound or not num_params:
        return payload
    if len(types) != 2 * num_params:
        raise ValueError("two type bytes per parameter")
    bound_at = head.values_at - 1
    return payload[:bound_at] + b"\x01" + types + payload[head.values_at :]


# ---- COM_CHANGE_USER ---------------------------------------------------------


def parse_change_user(payload: bytes, capabilities: int) -> HandshakeResponse:
    """Decode a COM_CHANGE_USER under the capabilities negotiated at connect."""
    if not payload or payload[0] != c.COM_CHANGE_USER:
        raise ProtocolError("not a COM_CHANGE_USER")
    user, pos = read_nul_str(payload, 1)
    if pos >= len(payload):
        raise ProtocolError("COM_CHANGE_USER ends before the auth response")
    end = pos + 1 + payload[pos]
    if end > len(payload):
        raise ProtocolError("auth response runs past the packet")
    auth, pos = payload[pos + 1 : end], end
    schema, pos = read_nul_str(payload, pos) if pos < len(payload) else (b"", pos)
    charset = c.UTF8MB4_GENERAL_CI
    if pos + 2 <= len(payload):
        charset, pos = read_u16(payload, pos) & 0xFF, pos + 2
    plugin = None
    if capabilities & c.CLIENT_PLUGIN_AUTH and pos < len(payload):
        raw, pos = read_nul_str(payload, pos)
        plugin = raw.decode("utf-8", "surrogateescape")
    attrs = {}
    if capabilities & c.CLIENT_CONNECT_ATTRS and pos < len(payload):
        attrs = read_attributes(payload, pos)
    return HandshakeResponse(
        capabilities=capabilities,
        user=user.decode("utf-8", "surrogateescape"),
        auth_response=auth,
        database=schema.decode("utf-8", "surrogateescape") or None,
        auth_plugin=plugin,
        attributes=attrs,
        charset=charset,
    )


def set_option(option: int) -> bytes:
    """COM_SET_OPTION (MYSQL_OPTION_MULTI_STATEMENTS_ON / _OFF)."""
    return command(c.COM_SET_OPTION, u16(option))
