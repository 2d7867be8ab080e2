"""Identifiers in the forms AWS uses, from a cryptographic random source.

Callers and scripts parse these (the recipe takes the 7th ':' field of a
proxy ARN), so their shapes follow AWS: `AKIA` + 16 upper-case characters for
an access key, 40 characters for a secret key, `sg-` + 17 hex digits, ...
"""

from __future__ import annotations

import secrets
import string

_UPPER = string.ascii_uppercase + string.digits
_SECRET = string.ascii_letters + string.digits + "+/"


def _pick(alphabet: str, n: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def account_id() -> str:
    return str(secrets.randbelow(9 * 10**11) + 10**11)  # 12 digits, no leading zero


def access_key_id(temporary: bool = False) -> str:
    return ("ASIA" if temporary else "AKIA") + _pick(_UPPER, 16)


def secret_access_key() -> str:
    return _pick(_SECRET, 40)


def unique_id(prefix: str) -> str:
    """IAM unique ids: AIDA (user), AROA (role), ANPA (policy) + 17 characters."""
    return prefix + _pick(_UPPER, 17)


def hex_id(prefix: str, digits: int = 17) -> str:
    """EC2 and RDS resource ids: sg-..., vpc-..., subnet-..., prx-..., eni-..."""
    return f"{prefix}-{secrets.token_hex((digits + 1) // 2)[:digits]}"


def token(n: int = 32) -> str:
    return secrets.token_urlsafe(n)


def request_id() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
