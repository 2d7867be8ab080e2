"""PostgreSQL md5 password authentication, free of I/O.

Design: PostgreSQL stores `"md5" + md5hex(password + user)` and, given a
4-byte salt from AuthenticationMD5Password, expects the client to answer
`"md5" + md5hex(md5hex(password + user) + salt)`.  Anyone holding the stored
hash can answer, so it must be guarded like the password itself.  Answers are
compared in constant time.
Strings are encoded as UTF-8 (with surrogateescape, so passwords that were not
valid UTF-8 stay byte-exact); PostgreSQL itself hashes the raw bytes.
"""

from __future__ import annotations

import hashlib
import hmac

_PREFIX = "md5"
_SALT_LEN = 4


def md5_hash(user: str, password: str) -> str:
    """Return PostgreSQL's stored form: `"md5" + md5hex(password + user)`."""
    return _PREFIX + _md5hex(_utf8(password) + _utf8(user))


def md5_response(user: str, password: str, salt: bytes) -> bytes:
    """Return what a client sends for `salt` (no trailing NUL)."""
    return _salted(md5_hash(user, password), salt)


def md5_check(stored: str, salt: bytes, response: bytes) -> bool:
    """True if `response` (no trailing NUL) answers `salt` for the stored "md5..." hash.

    Raise ValueError if `stored` is not an md5 hash or `salt` is not 4 bytes.
    """
    return hmac.compare_digest(_salted(stored, salt), response)


def _salted(stored: str, salt: bytes) -> bytes:
    if len(salt) != _SALT_LEN:
        raise ValueError("md5 salt must be 4 bytes")
    digest = stored[len(_PREFIX) :]
    if not (
        stored.startswith(_PREFIX)
        and len(digest) == 32
        and all(ch in "0123456789abcdef" for ch in digest)
    ):
        raise ValueError("not an md5 password hash")
    return (_PREFIX + _md5hex(digest.encode("ascii") + salt)).encode("ascii")


def _md5hex(data: bytes) -> str:
    # Not used for security on its own account: this is PostgreSQL's protocol.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
