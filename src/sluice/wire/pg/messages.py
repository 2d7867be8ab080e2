"""PostgreSQL v3 protocol messages: builders for what Sluice sends, parsers for what it reads.

Pure functions over bytes. A regular message is a type byte, a big-endian
int32 length that counts itself but not the type byte, then the body. Startup
packets (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest) have no type
byte; their first int32 after the length is a code that says which one it is.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias

from sluice.errors import ProtocolError
from sluice.wire.anchors import from_c

PROTOCOL_3_0: Final = 196608
SSL_REQUEST_CODE: Final = 80877103
GSSENC_REQUEST_CODE: Final = 80877104
CANCEL_REQUEST_CODE: Final = 80877102

# Authentication request codes (the int32 at the start of an 'R' body).
AUTH_OK: Final = 0
AUTH_CLEARTEXT: Final = 3
AUTH_MD5: Final = 5
AUTH_SASL: Final = 10
AUTH_SASL_CONTINUE: Final = 11
AUTH_SASL_FINAL: Final = 12

_I: Final = struct.Struct("!I")
_SHORT_CSTR: Final = 64  # `read_cstr` scans this many bytes itself before `nul_at`
_II: Final = struct.Struct("!II")
_HDR: Final = struct.Struct("!cI")

READY_IDLE: Final = b"Z\x00\x00\x00\x05I"
READY_IN_TXN: Final = b"Z\x00\x00\x00\x05T"
READY_FAILED: Final = b"Z\x00\x00\x00\x05E"
PARSE_COMPLETE: Final = b"1\x00\x00\x00\x04"
CLOSE_COMPLETE: Final = b"3\x00\x00\x00\x04"
SYNC: Final = b"S\x00\x00\x00\x04"
TERMINATE: Final = b"X\x00\x00\x00\x04"
FLUSH: Final = b"H\x00\x00\x00\x04"
SSL_YES: Final[bytes] = b"S"
SSL_NO: Final = b"N"


def message(kind: bytes, body: bytes = b"") -> bytes:
    """Frame `body` as a regular message of type `kind`."""
    return _HDR.pack(kind, len(body) + 4) + body


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


# ---- builders: proxy to client -------------------------------------------------


def error_response(sqlstate: str, text: str, severity: str = "ERROR", detail: str = "") -> bytes:
    """An ErrorResponse with the fields libpq and drivers show to users."""
    fields = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate)
    fields += b"M" + cstr(text)
    if detail:
        fields += b"D" + cstr(detail)
    return message(b"E", fields + b"\x00")


def notice_response(text: str, sqlstate: str = "00000") -> bytes:
    fields = b"SNOTICE\x00VNOTICE\x00C" + cstr(sqlstate) + b"M" + cstr(text) + b"\x00"
    return message(b"N", fields)


def auth_request(code: int, payload: bytes = b"") -> bytes:
    return message(b"R", _I.pack(code) + payload)


def auth_sasl(mechanisms: tuple[str, ...]) -> bytes:
    return auth_request(AUTH_SASL, b"".join(cstr(m) for m in mechanisms) + b"\x00")


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstr(name) + cstr(value))


def negotiate_protocol_version(minor: int, options: list[str]) -> bytes:
    """NegotiateProtocolVersion: the newest minor version spoken, and the protocol
    options (`_pq_.` startup parameters) not understood."""
    body = _II.pack(minor, len(options)) + b"".join(cstr(name) for name in options)
    return message(b"v", body)


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(b"K", _II.pack(pid, secret))


def ready_for_query(status: bytes) -> bytes:
    return message(b"Z", status)


def command_complete(tag: str) -> bytes:
    return message(b"C", cstr(tag))


def row_description(columns: list[str]) -> bytes:
    """Describe text columns (type oid 25) for admin-console results."""
    body = struct.pack("!H", len(columns))
    for name in columns:
        body += cstr(name) + struct.pack("!IhIhih", 0, 0, 25, -1, -1, 0)
    return message(b"T", body)


def data_row(values: list[str | None]) -> bytes:
    body = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            raw = value.encode()
            body += struct.pack("!I", len(raw)) + raw
    return message(b"D", body)


# ---- builders: proxy to server -------------------------------------------------


def startup_message(params: dict[str, str]) -> bytes:
    body = _I.pack(PROTOCOL_3_0)
    body += b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return _I.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _II.pack(8, SSL_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return _I.pack(16) + _I.pack(CANCEL_REQUEST_CODE) + _II.pack(pid, secret)


def password_message(payload: bytes) -> bytes:
    return message(b"p", payload)


def sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return message(b"p", cstr(mechanism) + _I.pack(len(data)) + data)


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def parse(name: bytes, sql_and_types: bytes) -> bytes:
    """A Parse of `name`; `sql_and_types` is the original body after the name."""
    return message(b"P", name + b"\x00" + sql_and_types)


def close_statement(name: bytes) -> bytes:
    return message(b"C", b"S" + name + b"\x00")


def describe_statement(name: bytes) -> bytes:
    return message(b"D", b"S" + name + b"\x00")


# ---- parsers -------------------------------------------------------------------


_NUL_AT: Final[Callable[[bytes, int], int] | None] = from_c("nul_at")


def nul_at(data: bytes, start: int) -> int:
    """`data.find(b"\x00", start)`: compiled, `find` is a call by name that parses its
    arguments (about a thousand instructions), the C function a tenth of that."""
    if _NUL_AT is not None:
        return _NUL_AT(data, start)
    return data.find(b"\x00", start)


def read_cstr(body: bytes, pos: int) -> tuple[bytes, int]:
    """Read a NUL-terminated string at `pos`; return it and the position after the NUL."""
    # Names end within a few dozen bytes: a loop over them is C array reads in the
    # compiled build. Longer texts go to `nul_at` (a memchr).
    end = pos
    stop = min(len(body), pos + _SHORT_CSTR)
    while end < stop and body[end] != 0:
        end += 1
    if end >= stop:
        end = nul_at(body, end)
        if end < 0:
            raise ProtocolError("unterminated string in message")
    return body[pos:end], end + 1


@dataclass(frozen=True, slots=True)
class Startup:
    params: dict[str, str]
    minor: int = 0  # the protocol version the client asks for is 3.minor


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int


StartupPacket: TypeAlias = Startup | SSLRequest | GSSENCRequest | CancelRequest


def parse_startup(packet: bytes) -> StartupPacket:
    """Decode a whole startup packet (length prefix included)."""
    if len(packet) < 8:
        raise ProtocolError("startup packet too short")
    code = _I.unpack_from(packet, 4)[0]
    if code == SSL_REQUEST_CODE and len(packet) == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST_CODE and len(packet) == 8:
        return GSSENCRequest()
    if code == CANCEL_REQUEST_CODE and len(packet) == 16:
        pid, secret = _II.unpack_from(packet, 8)
        return CancelRequest(pid, secret)
    if code >> 16 != 3:
        raise ProtocolError(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
    return Startup(_startup_params(packet), code & 0xFFFF)


def _startup_params(packet: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    pos = 8
    while pos < len(packet) and packet[pos] != 0:
        key, pos = read_cstr(packet, pos)
        value, pos = read_cstr(packet, pos)
        try:
            params[key.decode()] = value.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError("startup parameters must be UTF-8") from exc
    if pos != len(packet) - 1:
        raise ProtocolError("malformed startup packet")
    return params


def parse_error_fields(body: bytes) -> dict[str, str]:
    """Fields of an ErrorResponse or NoticeResponse body, keyed by field type letter."""
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos] != 0:
        kind = chr(body[pos])
        value, pos = read_cstr(body, pos + 1)
        fields[kind] = value.decode(errors="replace")
    return fields


def parse_auth(body: bytes) -> tuple[int, bytes]:
    """Split an Authentication ('R') body into its code and payload."""
    if len(body) < 4:
        raise ProtocolError("short authentication message")
    return _I.unpack_from(body, 0)[0], body[4:]


def parse_sasl_mechanisms(payload: bytes) -> list[str]:
    return [m.decode(errors="replace") for m in payload.split(b"\x00") if m]


def parse_sasl_initial(body: bytes) -> tuple[str, bytes]:
    """A SASLInitialResponse body: mechanism name, then int32 length and data."""
    mech, pos = read_cstr(body, 0)
    if len(body) < pos + 4:
        raise ProtocolError("short SASLInitialResponse")
    size = struct.unpack_from("!i", body, pos)[0]
    data = body[pos + 4 :]
    if size != len(data) and not (size == -1 and not data):  # -1: no initial response
        raise ProtocolError("bad SASLInitialResponse length")
    return mech.decode(errors="replace"), data


def parse_data_row(body: bytes) -> list[bytes | None]:
    """The column values of a DataRow body (None for NULL)."""
    if len(body) < 2:
        raise ProtocolError("bad DataRow")
    count = struct.unpack_from("!H", body, 0)[0]
    values: list[bytes | None] = []
    pos = 2
    for _ in range(count):
        if pos + 4 > len(body):
            raise ProtocolError("bad DataRow")
        size = struct.unpack_from("!i", body, pos)[0]
        pos += 4
        if size < 0:
            values.append(None)
            continue
        if pos + size > len(body):
            raise ProtocolError("bad DataRow")
        values.append(body[pos : pos + size])
        pos += size
    return values


def parse_parameter_status(body: bytes) -> tuple[str, str]:
    name, pos = read_cstr(body, 0)
    value, _ = read_cstr(body, pos)
    return name.decode(errors="replace"), value.decode(errors="replace")


def parse_backend_key(body: bytes) -> tuple[int, int]:
    if len(body) != 8:
        raise ProtocolError("bad BackendKeyData")
    pid, secret = _II.unpack_from(body, 0)
    return int(pid), int(secret)
