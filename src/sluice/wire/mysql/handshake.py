"""The connection phase: the server's greeting, the client's answer, auth switches.

Design: pure builders and parsers over payloads (framing is packets.py's job).
The server speaks first with a HandshakeV10 (sequence id 0); the client answers
with a HandshakeResponse41 (id 1), or first with the 32-byte SSLRequest (id 1),
then, after the TLS handshake, the full response (id 2). The server then runs
the authentication exchange (AuthSwitchRequest, AuthMoreData, both answered by
raw payloads) and ends it with OK or ERR.

Sluice is both sides: the server for clients (it builds greetings and parses
responses) and a client of the database (the reverse). Only the 4.1 protocol
is spoken (CLIENT_PROTOCOL_41 and CLIENT_SECURE_CONNECTION); an older client's
response is a protocol error. Optional trailing fields of a response (database,
plugin name, attributes) may be missing, as real clients sometimes leave them
out; names are decoded as UTF-8 with surrogateescape, so odd bytes survive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from sluice.errors import ProtocolError
from sluice.wire.mysql import constants as c
from sluice.wire.mysql.packets import (
    lenenc_int,
    lenenc_str,
    nul_str,
    read_lenenc_int,
    read_lenenc_str,
    read_nul_str,
    read_u16,
    read_u32,
    u16,
    u32,
)

PROTOCOL_VERSION: Final = 10
SCRAMBLE_LEN: Final = 20
SSL_REQUEST_LEN: Final = 32
DEFAULT_MAX_PACKET: Final = 1 << 24
_REQUIRED: Final = c.CLIENT_PROTOCOL_41 | c.CLIENT_SECURE_CONNECTION


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# ---- HandshakeV10 (server -> client) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Handshake:
    """A server's initial handshake packet."""

    server_version: str
    connection_id: int
    scramble: bytes  # the 20-byte nonce, without the trailing NUL
    capabilities: int
    charset: int
    status: int
    auth_plugin: str
    mariadb_capabilities: int = 0  # MariaDB's extended flags (only when CLIENT_MYSQL is clear)


def build_handshake(hs: Handshake) -> bytes:
    """The HandshakeV10 payload for `hs` (the scramble must be 20 bytes)."""
    if len(hs.scramble) != SCRAMBLE_LEN:
        raise ValueError("the scramble must be 20 bytes")
    caps = hs.capabilities
    plugin_auth = caps & c.CLIENT_PLUGIN_AUTH
    reserved = bytes(6) + u32(hs.mariadb_capabilities) if hs.mariadb_capabilities else bytes(10)
    return b"".join(
        (
            bytes((PROTOCOL_VERSION,)),
            nul_str(hs.server_version),
            u32(hs.connection_id),
            hs.scramble[:8],
            b"\x00",
            u16(caps & 0xFFFF),
            bytes((hs.charset,)),
            u16(hs.status),
            u16(caps >> 16),
            bytes((SCRAMBLE_LEN + 1 if plugin_auth else 0,)),
            reserved,
            hs.scramble[8:] + b"\x00",
            nul_str(hs.auth_plugin) if plugin_auth else b"",
        )
    )


def parse_handshake(payload: bytes) -> Handshake:
    """Decode a server's greeting; an ERR packet or protocol other than 10 is refused."""
    if not payload:
        raise ProtocolError("empty handshake packet")
    if payload[0] != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported handshake protocol {payload[0]}")
    version, pos = read_nul_str(payload, 1)
    conn_id = read_u32(payload, pos)
    part1 = payload[pos + 4 : pos + 12]
    pos += 13  # 8 bytes of scramble and a filler
    caps = read_u16(payload, pos)
    if len(payload) < pos + 18 or len(part1) != 8:
        raise ProtocolError("handshake too short for the 4.1 protocol")
    charset = payload[pos + 2]
    status = read_u16(payload, pos + 3)
    caps |= read_u16(payload, pos + 5) << 16
    auth_len = payload[pos + 7]
    mariadb = 0 if caps & c.CLIENT_LONG_PASSWORD else read_u32(payload, pos + 14)
    pos += 18
    if not caps & c.CLIENT_SECURE_CONNECTION:
        raise ProtocolError("server does not speak 4.1 authentication")
    end = pos + max(13, auth_len - 8)
    if end > len(payload):
        raise ProtocolError("handshake scramble runs past the packet")
    part2 = payload[pos:end]
    if part2.endswith(b"\x00"):
        part2 = part2[:-1]
    plugin = b""
    if caps & c.CLIENT_PLUGIN_AUTH and end < len(payload):
        nul = payload.find(b"\x00", end)  # some old servers leave out this NUL
        plugin = payload[end : nul if nul >= 0 else len(payload)]
    return Handshake(
        server_version=_text(version),
        connection_id=conn_id,
        scramble=(part1 + part2)[:SCRAMBLE_LEN],
        capabilities=caps,
        charset=charset,
        status=status,
        auth_plugin=_text(plugin) or c.NATIVE_PASSWORD,
        mariadb_capabilities=mariadb,
    )


# ---- HandshakeResponse41 and SSLRequest (client -> server) -------------------


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The short answer that asks to switch to TLS before the real response."""

    capabilities: int
    max_packet: int
    charset: int


@dataclass(frozen=True, slots=True)
class HandshakeResponse:
    """A client's HandshakeResponse41."""

    capabilities: int
    user: str
    auth_response: bytes = b""
    database: str | None = None
    auth_plugin: str | None = None  # None: the client does not do CLIENT_PLUGIN_AUTH
    attributes: dict[str, str] = field(default_factory=dict)
    max_packet: int = DEFAULT_MAX_PACKET
    charset: int = c.UTF8MB4_GENERAL_CI

    def __repr__(self) -> str:  # never print the auth response
        return f"HandshakeResponse(user={self.user!r}, database={self.database!r})"


def _fixed_part(capabilities: int, max_packet: int, charset: int) -> bytes:
    """The first 32 bytes, shared by the SSLRequest and the full response."""
    return u32(capabilities) + u32(max_packet) + bytes((charset,)) + bytes(23)


def build_ssl_request(capabilities: int, max_packet: int, charset: int) -> bytes:
    return _fixed_part(capabilities | c.CLIENT_SSL, max_packet, charset)


def build_handshake_response(resp: HandshakeResponse) -> bytes:
    """The HandshakeResponse41 payload; the flags say which optional fields are written."""
    caps = resp.capabilities
    parts = [_fixed_part(caps, resp.max_packet, resp.charset), nul_str(resp.user)]
    if caps & c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_str(resp.auth_response))
    else:
        if len(resp.auth_response) > 255:
            raise ValueError("auth response too long without CLIENT_PLUGIN_AUTH_LENENC")
        parts.append(bytes((len(resp.auth_response),)) + resp.auth_response)
    if caps & c.CLIENT_CONNECT_WITH_DB:
        parts.append(nul_str(resp.database or ""))
    if caps & c.CLIENT_PLUGIN_AUTH:
        parts.append(nul_str(resp.auth_plugin or c.NATIVE_PASSWORD))
    if caps & c.CLIENT_CONNECT_ATTRS:
        attrs = b"".join(
            lenenc_str(_raw(k)) + lenenc_str(_raw(v)) for k, v in resp.attributes.items()
        )
        parts.append(lenenc_int(len(attrs)) + attrs)
    return b"".join(parts)


def parse_handshake_response(payload: bytes) -> HandshakeResponse | SSLRequest:
    """Decode what a client answers to the greeting: an SSLRequest or the full response."""
    if len(payload) < SSL_REQUEST_LEN:
        raise ProtocolError("handshake response too short")
    caps = read_u32(payload, 0)
    if not caps & c.CLIENT_PROTOCOL_41:
        raise ProtocolError("client does not speak the 4.1 protocol")
    max_packet = read_u32(payload, 4)
    charset = payload[8]
    if len(payload) == SSL_REQUEST_LEN:
        if not caps & c.CLIENT_SSL:
            raise ProtocolError("32-byte handshake response without CLIENT_SSL")
        return SSLRequest(caps, max_packet, charset)
    if caps & _REQUIRED != _REQUIRED:
        raise ProtocolError("client does not speak 4.1 authentication")
    user, pos = read_nul_str(payload, SSL_REQUEST_LEN)
    auth, pos = _read_auth_response(payload, pos, caps)
    database = plugin = None
    if caps & c.CLIENT_CONNECT_WITH_DB and pos < len(payload):
        raw_db, pos = read_nul_str(payload, pos)
        database = _text(raw_db) or None
    if caps & c.CLIENT_PLUGIN_AUTH and pos < len(payload):
        raw_plugin, pos = read_nul_str(payload, pos)
        plugin = _text(raw_plugin)
    attrs: dict[str, str] = {}
    if caps & c.CLIENT_CONNECT_ATTRS and pos < len(payload):
        attrs = read_attributes(payload, pos)
    return HandshakeResponse(
        capabilities=caps,
        user=_text(user),
        auth_response=auth,
        database=database,
        auth_plugin=plugin,
        attributes=attrs,
        max_packet=max_packet,
        charset=charset,
    )


def _read_auth_response(payload: bytes, pos: int, caps: int) -> tuple[bytes, int]:
    if caps & c.CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        return read_lenenc_str(payload, pos)
    if pos >= len(payload):
        raise ProtocolError("handshake response ends before the auth response")
    end = pos + 1 + payload[pos]
    if end > len(payload):
        raise ProtocolError("auth response runs past the packet")
    return payload[pos + 1 : end], end


def read_attributes(payload: bytes, pos: int) -> dict[str, str]:
    """Connection attributes at `pos`: a length-encoded size, then key/value strings."""
    size, pos = read_lenenc_int(payload, pos)
    end = pos + size
    if end > len(payload):
        raise ProtocolError("connection attributes run past the packet")
    block = payload[:end]
    attrs: dict[str, str] = {}
    while pos < end:
        key, pos = read_lenenc_str(block, pos)
        value, pos = read_lenenc_str(block, pos)
        attrs[key.decode(errors="replace")] = value.decode(errors="replace")
    return attrs


# ---- the authentication exchange ---------------------------------------------


def build_auth_switch(plugin: str, data: bytes) -> bytes:
    """AuthSwitchRequest: ask the client to restart authentication with `plugin`.

    For mysql_native_password and caching_sha2_password, `data` is the 20-byte
    scramble followed by a NUL, as MySQL sends it.
    """
    return b"\xfe" + nul_str(plugin) + data


def parse_auth_switch(payload: bytes) -> tuple[str, bytes]:
    """The plugin name and data of an AuthSwitchRequest (data as sent, NUL included)."""
    if not payload or payload[0] != c.EOF_HEADER:
        raise ProtocolError("not an AuthSwitchRequest")
    if len(payload) == 1:
        raise ProtocolError("server asks for the pre-4.1 password hash")
    plugin, pos = read_nul_str(payload, 1)
    return _text(plugin), payload[pos:]


def build_auth_more_data(data: bytes) -> bytes:
    return b"\x01" + data


def parse_auth_more_data(payload: bytes) -> bytes:
    if not payload or payload[0] != c.AUTH_MORE_DATA_HEADER:
        raise ProtocolError("not an AuthMoreData packet")
    return payload[1:]
