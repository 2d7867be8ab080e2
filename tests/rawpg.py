"""A PostgreSQL client on a bare socket, for tests that send what drivers never send
or read at their own pace. It logs in with the project's own SCRAM and message codecs.
"""

from __future__ import annotations

import socket
import struct

from helpers import APP_DB, APP_PASSWORD, APP_USER
from sluice.wire.pg import messages as m
from sluice.wire.pg.scram import ScramClient

Message = tuple[bytes, bytes]


class RawClient:
    """A PostgreSQL client on a bare socket, for sending what real drivers never send."""

    def __init__(self, port: int, timeout: float = 5.0, source: str = "") -> None:
        """`source`: the local address to connect from (any of 127.0.0.0/8 on Linux)."""
        where = (source, 0) if source else None
        self.sock = socket.create_connection(("127.0.0.1", port), timeout, where)
        self._buf = b""
        self.key: tuple[int, int] | None = None  # BackendKeyData (proxy-issued)
        self.seen: list[Message] = []  # every message of the last login

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, size: int) -> bool:
        while len(self._buf) < size:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                return False
            self._buf += chunk
        return True

    def read(self) -> Message | None:
        """The next message as (type, body), or None once the proxy closed the stream."""
        if not self._fill(5):
            return None
        kind, length = struct.unpack("!cI", self._buf[:5])
        if not self._fill(1 + length):
            return None
        body, self._buf = self._buf[5 : 1 + length], self._buf[1 + length :]
        return kind, body

    def read_until_ready(self) -> list[Message]:
        """Messages up to and including ReadyForQuery."""
        out: list[Message] = []
        while True:
            msg = self.read()
            assert msg is not None, f"connection closed early after {out}"
            out.append(msg)
            if msg[0] == b"Z":
                return out

    def read_to_end(self) -> list[Message]:
        """Every message until the proxy closes the connection (socket timeout applies)."""
        out: list[Message] = []
        while (msg := self.read()) is not None:
            out.append(msg)
        return out

    def login(self, user: str = APP_USER, password: str = APP_PASSWORD) -> None:
        """Startup and SCRAM-SHA-256, up to the first ReadyForQuery."""
        error = self.try_login(user, password)
        assert error is None, error

    def try_login(
        self,
        user: str = APP_USER,
        password: str = APP_PASSWORD,
        database: str = APP_DB,
        startup: bytes = b"",
    ) -> dict[str, str] | None:
        """Startup (`startup`, or a plain one) and SCRAM-SHA-256: None at the first
        ReadyForQuery, else the ErrorResponse's fields (the proxy then closes)."""
        self.send(startup or m.startup_message({"user": user, "database": database}))
        scram = ScramClient(user, password)
        self.seen = []
        while (msg := self.read()) is not None:
            self.seen.append(msg)
            kind, body = msg
            if kind == b"E":
                return m.parse_error_fields(body)
            if kind == b"K":
                self.key = m.parse_backend_key(body)
            if kind == b"Z":
                assert scram.verified
                return None
            if kind != b"R":
                continue
            code, payload = m.parse_auth(body)
            if code == m.AUTH_SASL:
                self.send(m.sasl_initial_response("SCRAM-SHA-256", scram.client_first()))
            elif code == m.AUTH_SASL_CONTINUE:
                self.send(m.password_message(scram.handle_server_first(payload)))
            elif code == m.AUTH_SASL_FINAL:
                scram.verify_server_final(payload)
        raise AssertionError("connection closed during login")

    def query(self, sql: str) -> list[Message]:
        self.send(m.query(sql))
        return self.read_until_ready()

    def close(self) -> None:
        self.sock.close()
