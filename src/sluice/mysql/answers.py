"""Answers Sluice gives itself, for what a pooled connection cannot know.

`SELECT LAST_INSERT_ID()` after an autocommit INSERT must name that INSERT's id,
but the INSERT's connection went back to the pool and this query may run on
another. Sluice learns the session's value before the connection goes back
(see MyClientSession._learn_insert_id) and answers the query from it, as a
one-row result set laid out for the client's capabilities (EOF packets, or
CLIENT_DEPRECATE_EOF's OK), with the status flags of the client's session.
"""

from __future__ import annotations

import re

from sluice.wire.mysql import constants as c
from sluice.wire.mysql.messages import OkPacket, build_eof, build_ok
from sluice.wire.mysql.packets import frame, lenenc_int, lenenc_str

_LAST_INSERT_ID = re.compile(
    rb"\s*select\s+last_insert_id\s*\(\s*\)\s*(?:as\s+`?(\w+)`?)?\s*;?\s*$", re.IGNORECASE
)
_LONGLONG = 0x08
_BINARY_CHARSET = 63
_FLAGS = 0x0001 | 0x0020 | 0x0080  # NOT_NULL, UNSIGNED, BINARY


def last_insert_id_query(sql: bytes) -> bytes | None:
    """The column name if `sql` is just SELECT LAST_INSERT_ID() [AS name], else None."""
    match = _LAST_INSERT_ID.match(sql)
    if match is None:
        return None
    return match.group(1) or b"LAST_INSERT_ID()"


def one_value_result(name: bytes, value: int, capabilities: int, status: int) -> bytes:
    """The framed packets of a one-column, one-row text result set."""
    column = b"".join(
        (
            lenenc_str(b"def"),
            lenenc_str(b""),
            lenenc_str(b""),
            lenenc_str(b""),
            lenenc_str(name),
            lenenc_str(b""),
            lenenc_int(0x0C),
            _BINARY_CHARSET.to_bytes(2, "little"),
            (21).to_bytes(4, "little"),
            bytes((_LONGLONG,)),
            _FLAGS.to_bytes(2, "little"),
            b"\x00\x00\x00",
        )
    )
    packets = [lenenc_int(1), column]
    deprecate_eof = bool(capabilities & c.CLIENT_DEPRECATE_EOF)
    if not deprecate_eof:
        packets.append(build_eof(status))
    packets.append(lenenc_str(str(value).encode()))
    if deprecate_eof:
        packets.append(build_ok(OkPacket(status=status), header=c.EOF_HEADER))
    else:
        packets.append(build_eof(status))
    return b"".join(frame(p, seq) for seq, p in enumerate(packets, 1))
