"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, free of I/O.

Design: both sides are small state machines fed and returning whole SASL
payloads as bytes; the caller frames them into AuthenticationSASL* and
SASLInitialResponse/SASLResponse messages.  `ScramServer` authenticates a
client against a stored `ScramVerifier` (it never needs the password);
`ScramClient` logs in to a database with a plaintext password.  Channel binding
(SCRAM-SHA-256-PLUS) is never advertised, so gs2 headers `n,,` and `y,,` are
accepted and `p=` is refused.  Like PostgreSQL, the username in
client-first-message is ignored (the startup packet names the role) and a
password that SASLprep rejects is used unchanged.  PBKDF2 is the costly step
and runs for every new backend connection, so the derived keys are kept in a
bounded LRU cache; a hostile server cannot pick an iteration count above
`MAX_ITERATIONS`.  Malformed input raises `ProtocolError`, a wrong client proof
`AuthFailed`, a wrong server signature `ServerAuthFailed`; no message ever
contains the password.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

from sluice.errors import AuthFailed, ProtocolError, ServerAuthFailed

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096
MAX_ITERATIONS = 1_000_000
_KEY_LEN = 32  # SHA-256 digest size
_SALT_LEN = 16
_RAW_NONCE_LEN = 18  # what PostgreSQL uses; 24 characters once base64-encoded
_GS2_HEADERS = (b"n,,", b"y,,")


# ---------------------------------------------------------------- verifier


@dataclass(frozen=True)
class ScramVerifier:
    """What a server stores instead of a password (PostgreSQL's `rolpassword`)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("SCRAM verifier salt is empty")
        if self.iterations < 1:
            raise ValueError("SCRAM verifier iteration count must be positive")
        if len(self.stored_key) != _KEY_LEN or len(self.server_key) != _KEY_LEN:
            raise ValueError("SCRAM verifier keys must be 32 bytes")

    def to_string(self) -> str:
        """Return PostgreSQL's stored form `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`."""
        return (
            f"{MECHANISM}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )


def parse_verifier(text: str) -> ScramVerifier:
    """Parse PostgreSQL's stored SCRAM-SHA-256 secret; raise ValueError if malformed."""
    parts = text.split("$")
    if len(parts) != 3 or parts[0] != MECHANISM:
        raise ValueError("not a SCRAM-SHA-256 verifier")
    iter_text, sep1, salt_text = parts[1].partition(":")
    stored_text, sep2, server_text = parts[2].partition(":")
    if not (sep1 and sep2 and iter_text.isascii() and iter_text.isdigit()):
        raise ValueError("malformed SCRAM-SHA-256 verifier")
    try:
        salt, stored, server = (
            base64.b64decode(t, validate=True) for t in (salt_text, stored_text, server_text)
        )
    except binascii.Error as exc:
        raise ValueError("malformed base64 in SCRAM-SHA-256 verifier") from exc
    return ScramVerifier(salt, int(iter_text), stored, server)


def make_verifier(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> ScramVerifier:
    """Build a verifier for `password` as PostgreSQL would (random 16-byte salt by default)."""
    if iterations < 1:
        raise ValueError("SCRAM iteration count must be positive")
    prepared = saslprep(password)
    if salt is None:
        # A fresh salt can never hit the cache; do not let it evict useful entries.
        salt = secrets.token_bytes(_SALT_LEN)
        client_key, server_key = _derive_keys(prepared, salt, iterations)
    else:
        client_key, server_key = _cached_keys(prepared, salt, iterations)
    return ScramVerifier(salt, iterations, _h(client_key), server_key)


# ---------------------------------------------------------------- SASLprep


def saslprep(password: str) -> str:
    """Prepare a password with SASLprep (RFC 4013), falling back to it unchanged.

    As in PostgreSQL, a password SASLprep rejects (prohibited characters, bad
    bidirectional text, empty after mapping) is used as it is.
    """
    if password.isascii():
        return password  # SASLprep maps ASCII to itself or rejects it
    prepared = _saslprep_strict(password)
    return password if prepared is None else prepared


def _saslprep_strict(text: str) -> str | None:
    """RFC 4013 for stored strings; None when the string is not allowed."""
    mapped = "".join(_saslprep_map(ch) for ch in text)
    if not mapped:
        return None
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if any(_saslprep_prohibited(ch) for ch in prepared):
        return None
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        # RFC 3454 section 6: no LCat at all, RandALCat at both ends.
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            return None
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            return None
    return prepared


def _saslprep_map(ch: str) -> str:
    if stringprep.in_table_c12(ch):
        return " "  # non-ASCII space
    if stringprep.in_table_b1(ch):
        return ""  # commonly mapped to nothing
    return ch


def _saslprep_prohibited(ch: str) -> bool:
    return (
        stringprep.in_table_a1(ch)  # unassigned in Unicode 3.2
        or stringprep.in_table_c12(ch)
        or stringprep.in_table_c21_c22(ch)
        or stringprep.in_table_c3(ch)
        or stringprep.in_table_c4(ch)
        or stringprep.in_table_c5(ch)
        or stringprep.in_table_c6(ch)
        or stringprep.in_table_c7(ch)
        or stringprep.in_table_c8(ch)
        or stringprep.in_table_c9(ch)
    )


# ---------------------------------------------------------------- server


class _State(enum.Enum):
    START = enum.auto()
    FIRST_SENT = enum.auto()  # client only: client-first-message is out
    FIRST_DONE = enum.auto()
    FINISHED = enum.auto()
    FAILED = enum.auto()


class ScramServer:
    """Server side of one SCRAM-SHA-256 exchange: the proxy authenticating a client."""

    def __init__(self, verifier: ScramVerifier, nonce: bytes | None = None) -> None:
        """`nonce` is the printable server nonce to append (random by default)."""
        self._verifier = verifier
        self._server_nonce = _nonce_text(nonce)
        self._state = _State.START
        self._gs2_header = b""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def handle_first(self, client_first: bytes) -> bytes:
        """Take the client-first-message; return the server-first-message."""
        if self._state is not _State.START:
            raise ProtocolError("unexpected SCRAM client-first-message")
        self._state = _State.FAILED  # until this step succeeds
        text = _decode(client_first, "client-first-message")
        gs2_end = _gs2_header_end(text)
        self._gs2_header = text[:gs2_end].encode()
        self._client_first_bare = text[gs2_end:]
        attrs = _split_attrs(self._client_first_bare, "client-first-message")
        if attrs and attrs[0][0] == "m":
            raise ProtocolError("SCRAM client requires an unsupported extension")
        _expect(attrs, 0, "n", "client-first-message")  # ignored, like PostgreSQL
        client_nonce = _expect(attrs, 1, "r", "client-first-message")
        if not client_nonce or not _is_printable(client_nonce):
            raise ProtocolError("malformed SCRAM client nonce")
        self._nonce = client_nonce + self._server_nonce
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        self._state = _State.FIRST_DONE
        return self._server_first.encode()

    def handle_final(self, client_final: bytes) -> bytes:
        """Check the client-final-message's proof; return the server-final-message."""
        if self._state is not _State.FIRST_DONE:
            raise ProtocolError("unexpected SCRAM client-final-message")
        self._state = _State.FAILED
        text = _decode(client_final, "client-final-message")
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise ProtocolError("SCRAM client-final-message has no proof")
        attrs = _split_attrs(without_proof, "client-final-message")
        if _b64decode(_expect(attrs, 0, "c", "client-final-message")) != self._gs2_header:
            raise ProtocolError("SCRAM channel binding does not match")
        if _expect(attrs, 1, "r", "client-final-message") != self._nonce:
            raise ProtocolError("SCRAM nonce does not match")
        proof = _b64decode(proof_attr)
        if len(proof) != _KEY_LEN:
            raise ProtocolError("malformed SCRAM client proof")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        v = self._verifier
        client_key = _xor(proof, _hmac(v.stored_key, auth_message))
        if not hmac.compare_digest(_h(client_key), v.stored_key):
            raise AuthFailed("password authentication failed")
        self._state = _State.FINISHED
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode()


# ---------------------------------------------------------------- client


class ScramClient:
    """Client side of one SCRAM-SHA-256 exchange: the proxy logging in to a database."""

    def __init__(
        self,
        user: str,
        password: str,
        nonce: bytes | None = None,
        *,
        send_username: bool = False,
    ) -> None:
        """`nonce` is the printable client nonce (random by default).

        PostgreSQL ignores the SCRAM username, so like libpq an empty `n=` is
        sent unless `send_username` is true (as in the RFC examples).
        """
        self._user = user
        self._password = saslprep(password)
        self._client_nonce = _nonce_text(nonce)
        self._send_username = send_username
        self._state = _State.START
        self._client_first_bare = ""
        self._server_signature = b""

    @property
    def verified(self) -> bool:
        """True once the server has proved it knows the password."""
        return self._state is _State.FINISHED

    def client_first(self) -> bytes:
        """Return the client-first-message (gs2 header `n,,`)."""
        if self._state is not _State.START:
            raise ProtocolError("SCRAM client-first-message already sent")
        name = _saslname(self._user) if self._send_username else ""
        self._client_first_bare = f"n={name},r={self._client_nonce}"
        self._state = _State.FIRST_SENT
        return f"n,,{self._client_first_bare}".encode()

    def handle_server_first(self, data: bytes) -> bytes:
        """Take the server-first-message; return the client-final-message with the proof."""
        if self._state is not _State.FIRST_SENT:
            raise ProtocolError("unexpected SCRAM server-first-message")
        self._state = _State.FAILED
        server_first = _decode(data, "server-first-message")
        attrs = _split_attrs(server_first, "server-first-message")
        if attrs and attrs[0][0] == "m":
            raise ProtocolError("SCRAM server requires an unsupported extension")
        nonce = _expect(attrs, 0, "r", "server-first-message")
        salt = _b64decode(_expect(attrs, 1, "s", "server-first-message"))
        iterations = _parse_iterations(_expect(attrs, 2, "i", "server-first-message"))
        if not (nonce.startswith(self._client_nonce) and len(nonce) > len(self._client_nonce)):
            raise ProtocolError("SCRAM server nonce does not extend the client nonce")
        if not _is_printable(nonce) or not salt:
            raise ProtocolError("malformed SCRAM server-first-message")
        client_key, server_key = _cached_keys(self._password, salt, iterations)
        without_proof = f"c={_b64(b'n,,')},r={nonce}"
        auth_message = f"{self._client_first_bare},{server_first},{without_proof}".encode()
        proof = _xor(client_key, _hmac(_h(client_key), auth_message))
        self._server_signature = _hmac(server_key, auth_message)
        self._state = _State.FIRST_DONE
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify_server_final(self, data: bytes) -> None:
        """Check the server-final-message; raise ServerAuthFailed unless the server is genuine."""
        if self._state is not _State.FIRST_DONE:
            raise ProtocolError("unexpected SCRAM server-final-message")
        self._state = _State.FAILED
        text = _decode(data, "server-final-message")
        if text.startswith("e="):
            raise ServerAuthFailed(f"SCRAM authentication refused by server: {text[2:100]!r}")
        attrs = _split_attrs(text, "server-final-message")
        signature = _b64decode(_expect(attrs, 0, "v", "server-final-message"))
        if not hmac.compare_digest(signature, self._server_signature):
            raise ServerAuthFailed("SCRAM server signature is wrong")
        self._state = _State.FINISHED


# ---------------------------------------------------------------- helpers


def _derive_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, ServerKey) from an already SASLprep-ed password."""
    salted = hashlib.pbkdf2_hmac("sha256", _utf8(password), salt, iterations)
    return _hmac(salted, b"Client Key"), _hmac(salted, b"Server Key")


_cached_keys = functools.lru_cache(maxsize=256)(_derive_keys)


def _gs2_header_end(text: str) -> int:
    """Validate the gs2 header at the start of client-first; return where it ends."""
    if text.startswith("p="):
        raise ProtocolError("SCRAM channel binding is not supported (no SCRAM-SHA-256-PLUS)")
    if text[:2] not in ("n,", "y,"):
        raise ProtocolError("malformed SCRAM gs2 header")
    if not text.startswith(",", 2):
        raise ProtocolError("SCRAM authorization identity is not supported")
    return 3


def _split_attrs(text: str, what: str) -> list[tuple[str, str]]:
    """Split `a=value,b=value,...` into (name, value) pairs; names are one ASCII letter."""
    attrs = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not (item[0].isascii() and item[0].isalpha()):
            raise ProtocolError(f"malformed SCRAM {what}")
        attrs.append((item[0], item[2:]))
    return attrs


def _expect(attrs: list[tuple[str, str]], index: int, name: str, what: str) -> str:
    if index >= len(attrs) or attrs[index][0] != name:
        raise ProtocolError(f"SCRAM {what} lacks attribute {name!r}")
    return attrs[index][1]


def _parse_iterations(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise ProtocolError("malformed SCRAM iteration count")
    iterations = int(text)
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ProtocolError(f"SCRAM iteration count {iterations} out of range")
    return iterations


def _nonce_text(nonce: bytes | None) -> str:
    if nonce is None:
        return _b64(secrets.token_bytes(_RAW_NONCE_LEN))
    text = nonce.decode("ascii", "replace")
    if not text or not _is_printable(text):
        raise ValueError("SCRAM nonce must be printable ASCII without commas")
    return text


def _is_printable(text: str) -> bool:
    """RFC 5802 `printable`: %x21-2B / %x2D-7E."""
    return all("\x21" <= ch <= "\x7e" and ch != "," for ch in text)


def _saslname(user: str) -> str:
    return user.replace("=", "=3D").replace(",", "=2C")


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"SCRAM {what} is not valid UTF-8") from exc


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("malformed base64 in SCRAM message") from exc


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _utf8(text: str) -> bytes:
    # surrogateescape keeps passwords that were not valid UTF-8 byte-exact.
    return text.encode("utf-8", "surrogateescape")


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.digest(key, msg, "sha256")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))
