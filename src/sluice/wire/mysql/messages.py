"""Generic server packets: OK, ERR, EOF, LOCAL INFILE requests, session state changes.

Design: pure builders and parsers over payloads. Only the 4.1 layouts exist
here (Sluice never speaks the older protocol):

- OK: 0x00, affected rows and last insert id (length-encoded), status flags
  and warnings (int2 each), then a length-encoded info string when there is
  one (servers write it length-encoded whatever the documentation says, and
  clients read it so), then, when SERVER_SESSION_STATE_CHANGED is set, the
  length-encoded session state changes. With CLIENT_DEPRECATE_EOF, the same
  layout with a 0xFE header ends a result set instead of an EOF packet.
- ERR: 0xFF, error number (int2), '#' and a 5-character SQLSTATE, message.
  Before the handshake is through, a server may leave out the SQLSTATE.
- EOF: 0xFE, warnings, status (5 bytes). A packet that starts with 0xFE and
  is shorter than 0xFFFFFF bytes always ends something: a row that starts
  with 0xFE must be 16 MiB or more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sluice.errors import ProtocolError
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.packets import (
    MAX_CHUNK,
    lenenc_int,
    lenenc_str,
    read_lenenc_int,
    read_lenenc_str,
    read_u16,
    u16,
)

_DEFAULT_STATE: Final = "HY000"


# ---- OK ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OkPacket:
    affected_rows: int = 0
    last_insert_id: int = 0
    status: int = c.SERVER_STATUS_AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    session_state: bytes = b""  # raw state-change blocks; see parse_session_state


def build_ok(ok: OkPacket, *, header: int = c.OK_HEADER) -> bytes:
    """An OK packet; `header` 0xFE makes the DEPRECATE_EOF end-of-rows form.

    Session state changes are written (and SERVER_SESSION_STATE_CHANGED set)
    only if `ok.session_state` is not empty: only for CLIENT_SESSION_TRACK clients.
    """
    status = ok.status
    if ok.session_state:
        status |= c.SERVER_SESSION_STATE_CHANGED
    else:
        status &= ~c.SERVER_SESSION_STATE_CHANGED
    out = bytes((header,)) + lenenc_int(ok.affected_rows) + lenenc_int(ok.last_insert_id)
    out += u16(status) + u16(ok.warnings)
    if ok.info or ok.session_state:
        out += lenenc_str(ok.info)
    if ok.session_state:
        out += lenenc_str(ok.session_state)
    return out


def parse_ok(payload: bytes) -> OkPacket:
    """Decode an OK packet (header 0x00, or 0xFE in its DEPRECATE_EOF role)."""
    if not payload or payload[0] not in (c.OK_HEADER, c.EOF_HEADER):
        raise ProtocolError("not an OK packet")
    affected, pos = read_lenenc_int(payload, 1)
    insert_id, pos = read_lenenc_int(payload, pos)
    status = read_u16(payload, pos)
    warnings = read_u16(payload, pos + 2)
    pos += 4
    info = state = b""
    if pos < len(payload):
        try:
            info, pos = read_lenenc_str(payload, pos)
        except ProtocolError:  # a pre-5.7 style info string that runs to the end
            info, pos = payload[pos:], len(payload)
    if status & c.SERVER_SESSION_STATE_CHANGED and pos < len(payload):
        state, pos = read_lenenc_str(payload, pos)
    return OkPacket(affected, insert_id, status, warnings, info, state)


def ok_insert_id(payload: bytes) -> int:
    """Just the last insert id of an OK packet (0: the statement made none)."""
    if len(payload) > 2 and payload[1] < 0xFB and payload[2] < 0xFB:  # one byte each
        return payload[2]  # (a shorter packet raises ProtocolError below)
    return read_lenenc_int(payload, read_lenenc_int(payload, 1)[1])[0]


def ok_status(payload: bytes) -> int:
    """Just the status flags of an OK packet (cheaper than parse_ok)."""
    if len(payload) >= 5 and payload[1] < 0xFB and payload[2] < 0xFB:  # one-byte counts
        return payload[3] | payload[4] << 8
    pos = read_lenenc_int(payload, 1)[1]
    pos = read_lenenc_int(payload, pos)[1]
    return read_u16(payload, pos)


def ok_warnings(payload: bytes) -> int:
    """Just the warning count of an OK packet: the statement's own conditions."""
    if len(payload) >= 7 and payload[1] < 0xFB and payload[2] < 0xFB:  # one-byte counts
        return payload[5] | payload[6] << 8
    pos = read_lenenc_int(payload, 1)[1]
    pos = read_lenenc_int(payload, pos)[1]
    return read_u16(payload, pos + 2) if pos + 4 <= len(payload) else 0


# ---- ERR ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrPacket:
    code: int
    sqlstate: str
    message: str


def build_err(error: tuple[int, str], message: str) -> bytes:
    """An ERR packet for one of the (number, SQLSTATE) pairs in constants."""
    code, sqlstate = error
    if len(sqlstate) != 5:
        raise ValueError("an SQLSTATE has 5 characters")
    # (a name the client sent may hold bytes that are not UTF-8: shown replaced)
    return b"\xff" + u16(code) + b"#" + sqlstate.encode() + message.encode(errors="replace")


def parse_err(payload: bytes) -> ErrPacket:
    if len(payload) < 3 or payload[0] != c.ERR_HEADER:
        raise ProtocolError("not an ERR packet")
    code = read_u16(payload, 1)
    if payload[3:4] == b"#" and len(payload) >= 9:
        sqlstate, text = payload[4:9].decode(errors="replace"), payload[9:]
    else:
        sqlstate, text = _DEFAULT_STATE, payload[3:]
    return ErrPacket(code, sqlstate, text.decode(errors="replace"))


# ---- EOF ---------------------------------------------------------------------


def build_eof(status: int, warnings: int = 0) -> bytes:
    return b"\xfe" + u16(warnings) + u16(status)


def is_eof(payload: bytes) -> bool:
    """True for an EOF, or an OK with a 0xFE header (rather than a 16 MiB+ row)."""
    return bool(payload) and payload[0] == c.EOF_HEADER and len(payload) < MAX_CHUNK


def parse_eof(payload: bytes) -> tuple[int, int]:
    """(warnings, status) of an EOF packet."""
    if len(payload) < 5 or payload[0] != c.EOF_HEADER:
        raise ProtocolError("not an EOF packet")
    return read_u16(payload, 1), read_u16(payload, 3)


def eof_to_ok(payload: bytes) -> bytes:
    """An EOF ending rows, as a CLIENT_DEPRECATE_EOF client expects it (OK, 0xFE header)."""
    warnings, status = parse_eof(payload)
    return build_ok(OkPacket(status=status, warnings=warnings), header=c.EOF_HEADER)


def ok_to_eof(payload: bytes) -> bytes:
    """An OK ending rows, as a client without CLIENT_DEPRECATE_EOF expects it (EOF)."""
    ok = parse_ok(payload)
    return build_eof(ok.status & ~c.SERVER_SESSION_STATE_CHANGED, ok.warnings)


# ---- LOAD DATA LOCAL INFILE --------------------------------------------------


def build_local_infile(filename: bytes) -> bytes:
    return b"\xfb" + filename


def parse_local_infile(payload: bytes) -> bytes:
    """The file name a server asks the client to send."""
    if not payload or payload[0] != c.LOCAL_INFILE_HEADER:
        raise ProtocolError("not a LOCAL INFILE request")
    return payload[1:]


# ---- session state changes (CLIENT_SESSION_TRACK) ----------------------------


@dataclass(frozen=True, slots=True)
class SessionChanges:
    """What one OK packet's session state says changed."""

    variables: tuple[tuple[str, str], ...] = ()
    schema: str | None = None
    state_changed: bool = False
    gtids: bytes | None = None
    transaction_characteristics: str | None = None
    transaction_state: str | None = None


def parse_session_state(data: bytes) -> list[tuple[int, bytes]]:
    """Split the session state of an OK packet into (type, data) blocks."""
    blocks = []
    pos = 0
    while pos < len(data):
        kind = data[pos]
        block, pos = read_lenenc_str(data, pos + 1)
        blocks.append((kind, block))
    return blocks


def session_changes(data: bytes) -> SessionChanges:
    """Decode the blocks of `parse_session_state`; unknown block types are skipped.

    Each block's data is a length-encoded string, except STATE_CHANGE ("1",
    raw) and GTIDS (an encoding byte, then the string); SYSTEM_VARIABLES holds
    name/value pairs.
    """
    variables: list[tuple[str, str]] = []
    text: dict[int, str] = {}
    state_changed, gtids = False, None
    for kind, block in parse_session_state(data):
        if kind == c.SESSION_TRACK_SYSTEM_VARIABLES:
            pos = 0
            while pos < len(block):
                name, pos = read_lenenc_str(block, pos)
                value, pos = read_lenenc_str(block, pos)
                variables.append((name.decode(errors="replace"), value.decode(errors="replace")))
        elif kind == c.SESSION_TRACK_STATE_CHANGE:
            state_changed = block == b"1"
        elif kind == c.SESSION_TRACK_GTIDS:
            gtids = read_lenenc_str(block, 1)[0]
        elif kind in _TEXT_BLOCKS:
            text[kind] = read_lenenc_str(block, 0)[0].decode(errors="replace")
    return SessionChanges(
        variables=tuple(variables),
        schema=text.get(c.SESSION_TRACK_SCHEMA),
        state_changed=state_changed,
        gtids=gtids,
        transaction_characteristics=text.get(c.SESSION_TRACK_TRANSACTION_CHARACTERISTICS),
        transaction_state=text.get(c.SESSION_TRACK_TRANSACTION_STATE),
    )


_TEXT_BLOCKS: Final = frozenset(
    (
        c.SESSION_TRACK_SCHEMA,
        c.SESSION_TRACK_TRANSACTION_CHARACTERISTICS,
        c.SESSION_TRACK_TRANSACTION_STATE,
    )
)


def build_session_state(blocks: list[tuple[int, bytes]]) -> bytes:
    """Join (type, data) blocks into an OK packet's session state field."""
    return b"".join(bytes((kind,)) + lenenc_str(block) for kind, block in blocks)
