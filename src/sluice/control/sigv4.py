"""Server-side verification of AWS Signature Version 4.

Why it is built this way: the control plane must accept requests signed by the real
botocore (header form and presigned query form) and the data plane must accept RDS IAM
auth tokens (`generate_db_auth_token`, a presigned URL for service ``rds-db``). Both are
the same computation - rebuild botocore's canonical request from what arrived on the
wire (`sigv4_canonical`), HMAC it with a key derived from the caller's secret, compare
in constant time - so one pure module serves both. It does no I/O and never reads the
clock: callers pass ``now``. Derived keys are cached in an explicit, bounded
`SigningKeys` object owned by the caller (no module-level state), because the HMAC
chain is four times the work of the final signature and a proxy verifies many tokens
with the same key each day.

Error choices: malformed signature claims are ``IncompleteSignature`` (400); a wrong
signature is ``SignatureDoesNotMatch`` (403). A header-signed request whose date is more
than ``max_skew`` away from ``now`` gets AWS's own ``SignatureDoesNotMatch`` "Signature
expired" / "Signature not yet current" texts (botocore has no special handling for any
skew code, so AWS's wording is the most useful). An expired presigned URL gets
``AccessDenied`` "Request has expired", as S3 answers. Payload hashes sent in
``X-Amz-Content-Sha256`` must equal the body's SHA-256 (``UNSIGNED-PAYLOAD`` is refused:
none of the emulated services allows it, and the body carries the action).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

from sluice.control.errors import ApiError, bad_signature, missing_auth
from sluice.control.sigv4_canonical import canonical_request, lower_headers, unsigned_query

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_PRESIGN_EXPIRES = 604800  # seven days, AWS's bound for X-Amz-Expires
DB_SERVICE = "rds-db"
DB_TOKEN_MAX_EXPIRES = 900
_TIMESTAMP = "%Y%m%dT%H%M%SZ"
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_MAX_TOKEN_LEN = 16384
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class Credential:
    """The signature claim of one request: who signed, for which scope, and when."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: datetime
    expires: int | None  # None for header auth, X-Amz-Expires for presigned URLs
    session_token: str | None

    @property
    def scope(self) -> str:
        """The credential scope, ``date/region/service/aws4_request``."""
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _incomplete(message: str) -> ApiError:
    return ApiError("IncompleteSignature", message, 400)


def _parse_amz_date(value: str) -> datetime:
    try:
        return datetime.strptime(value, _TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise _incomplete("Date must be in ISO-8601 'basic format'.") from None


def _parse_scope(value: str) -> tuple[str, str, str, str]:
    parts = value.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not all(parts[:4]):
        raise _incomplete(
            "Credential should be scoped to a valid region, service and "
            "terminated by 'aws4_request'."
        )
    return parts[0], parts[1], parts[2], parts[3]


def _parse_signed_headers(value: str) -> tuple[str, ...]:
    names = tuple(sorted({n.strip().lower() for n in value.split(";") if n.strip()}))
    if "host" not in names:
        raise _incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    return names


def _claim(
    scope: str, signed: str, signature: str, when: datetime, expires: int | None,
    token: str | None,
) -> Credential:  # fmt: skip
    access_key, date, region, service = _parse_scope(scope)
    if not _SIGNATURE_RE.fullmatch(signature):
        raise _incomplete("Signature must be 64 lower-case hexadecimal characters.")
    headers = _parse_signed_headers(signed)
    return Credential(access_key, date, region, service, headers, signature, when, expires, token)


def _header_date(grouped: dict[str, list[str]]) -> datetime:
    if "x-amz-date" in grouped:
        return _parse_amz_date(grouped["x-amz-date"][0].strip())
    if "date" in grouped:
        try:
            parsed = parsedate_to_datetime(grouped["date"][0])
        except (TypeError, ValueError):
            raise _incomplete("Date header is not a valid HTTP date.") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise _incomplete(
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    )


def parse_header_auth(headers: Mapping[str, str]) -> Credential:
    """Parse an ``Authorization: AWS4-HMAC-SHA256 ...`` header (plus date and token headers).

    Raises `missing_auth` when there is no Authorization header and ``IncompleteSignature``
    when it is malformed or uses another algorithm.
    """
    grouped = lower_headers(headers)
    if "authorization" not in grouped:
        raise missing_auth()
    algorithm, _, rest = grouped["authorization"][0].strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Authorization header must use the {ALGORITHM} algorithm.")
    fields: dict[str, str] = {}
    for item in rest.split(","):
        key, _, value = item.strip().partition("=")
        fields[key] = value
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise _incomplete(f"Authorization header requires '{missing[0]}' parameter.")
    token = grouped.get("x-amz-security-token")
    return _claim(
        fields["Credential"], fields["SignedHeaders"], fields["Signature"],
        _header_date(grouped), None, token[0].strip() if token else None,
    )  # fmt: skip


def _parse_expires(value: str | None) -> int:
    if value is None or not value.isdigit():
        raise _incomplete("X-Amz-Expires must be a whole number of seconds.")
    expires = int(value)
    if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
        raise _incomplete(f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES}.")
    return expires


def parse_query_auth(query: list[tuple[str, str]]) -> Credential | None:
    """Parse presigned-URL parameters from decoded query pairs.

    Returns None when there is no ``X-Amz-Algorithm`` (the request is not presigned);
    raises ``IncompleteSignature`` for a malformed or repeated parameter.
    """
    params: dict[str, str] = {}
    for key, value in query:
        if key.startswith("X-Amz-") and key in params:
            raise _incomplete(f"Query parameter '{key}' must appear only once.")
        params.setdefault(key, value)
    if "X-Amz-Algorithm" not in params:
        return None
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise _incomplete(f"X-Amz-Algorithm must be {ALGORITHM}.")
    for required in ("X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if not params.get(required):
            raise _incomplete(f"Query-string authentication requires the {required} parameter.")
    return _claim(
        params["X-Amz-Credential"], params["X-Amz-SignedHeaders"], params["X-Amz-Signature"],
        _parse_amz_date(params["X-Amz-Date"]), _parse_expires(params.get("X-Amz-Expires")),
        params.get("X-Amz-Security-Token"),
    )  # fmt: skip


class SigningKeys:
    """A bounded LRU cache of derived signing keys, one per (secret, date, region, service)."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._max = max(1, max_entries)
        self._cache: OrderedDict[tuple[str, str, str, str], bytes] = OrderedDict()

    def key(self, secret: str, date: str, region: str, service: str) -> bytes:
        """The SigV4 signing key for this scope, derived once and then reused."""
        index = (secret, date, region, service)
        found = self._cache.get(index)
        if found is not None:
            self._cache.move_to_end(index)
            return found
        derived = self._derive(secret, date, region, service)
        self._cache[index] = derived
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return derived

    def __len__(self) -> int:
        return len(self._cache)

    def _derive(self, secret: str, date: str, region: str, service: str) -> bytes:
        key = ("AWS4" + secret).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return _utc(moment).strftime(_TIMESTAMP)


def _signature_matches(cred: Credential, creq: str, secret: str, keys: SigningKeys) -> bool:
    """Recompute the signature over ``creq`` and compare it in constant time."""
    string_to_sign = "\n".join(
        [ALGORITHM, _stamp(cred.amz_date), cred.scope, hashlib.sha256(creq.encode()).hexdigest()]
    )
    key = keys.key(secret, cred.date, cred.region, cred.service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), cred.signature.encode())


def _skew_text(seconds: float) -> str:
    return f"{int(seconds // 60)} min." if seconds % 60 == 0 else f"{seconds:g} sec."


class Verifier:
    """Checks API requests against the caller's secret (service/region are the caller's)."""

    def __init__(self, keys: SigningKeys | None = None, max_skew: float = 300.0) -> None:
        self.keys = keys if keys is not None else SigningKeys()
        self.max_skew = max_skew

    def verify_request(
        self,
        cred: Credential,
        method: str,
        path: str,
        query: list[tuple[str, str]],
        headers: Mapping[str, str],
        body: bytes,
        secret: str,
        now: datetime,
    ) -> None:
        """Raise an `ApiError` unless ``cred`` is a valid, current signature of this request.

        ``path`` is the raw (percent-encoded) path, ``query`` the decoded pairs as sent.
        """
        self._check_time(cred, _utc(now))
        if cred.date != _stamp(cred.amz_date)[:8]:
            raise bad_signature("Date in Credential scope does not match the request date.")
        if cred.expires is not None:
            query = unsigned_query(query)
        payload = _payload_hash(headers, body)
        creq = canonical_request(method, path, query, headers, cred.signed_headers, payload)
        if not _signature_matches(cred, creq, secret, self.keys):
            raise bad_signature(_MISMATCH)

    def _check_time(self, cred: Credential, now: datetime) -> None:
        skew = timedelta(seconds=self.max_skew)
        if cred.expires is not None:
            if now > cred.amz_date + timedelta(seconds=cred.expires) + skew:
                raise ApiError("AccessDenied", "Request has expired", 403)
            if now < cred.amz_date - skew:
                raise ApiError("AccessDenied", "Request is not yet valid", 403)
            return
        date, text = _stamp(cred.amz_date), _skew_text(self.max_skew)
        if cred.amz_date < now - skew:
            raise bad_signature(
                f"Signature expired: {date} is now earlier than "
                f"{_stamp(now - skew)} ({_stamp(now)} - {text})"
            )
        if cred.amz_date > now + skew:
            raise bad_signature(
                f"Signature not yet current: {date} is still later than "
                f"{_stamp(now + skew)} ({_stamp(now)} + {text})"
            )


def _payload_hash(headers: Mapping[str, str], body: bytes) -> str:
    actual = hashlib.sha256(body).hexdigest()
    claimed = lower_headers(headers).get("x-amz-content-sha256")
    if claimed is not None and claimed[0].strip() != actual:
        raise bad_signature(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return actual


class TokenError(Exception):
    """An RDS IAM auth token was refused; the message never contains the token."""


@dataclass(frozen=True)
class DbAuthToken:
    """A parsed ``generate_db_auth_token`` password (host is lower-case, unbracketed)."""

    host: str
    port: int
    user: str
    credential: Credential
    query: list[tuple[str, str]]

    @property
    def host_header(self) -> str:
        """The Host value botocore signed: brackets for IPv6, port unless it is 443."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == 443 else f"{host}:{self.port}"


def _split_token(token: str) -> tuple[str, int, list[tuple[str, str]]]:
    token = token.strip()
    if not token or len(token) > _MAX_TOKEN_LEN or "://" in token:
        raise TokenError("not an RDS IAM auth token")
    try:
        parts = urlsplit("https://" + token)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise TokenError("not an RDS IAM auth token") from None
    if not host or port is None or parts.path != "/" or parts.fragment or not parts.query:
        raise TokenError("not an RDS IAM auth token")
    pairs: list[tuple[str, str]] = []
    for item in parts.query.split("&"):
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise TokenError("malformed token query")
        pairs.append((unquote(key), unquote(value)))
    return host, port, pairs


def _token_credential(pairs: list[tuple[str, str]]) -> Credential:
    try:
        cred = parse_query_auth(pairs)
    except ApiError:
        raise TokenError("malformed token signature parameters") from None
    if cred is None:
        raise TokenError("token is not signed")
    if cred.service != DB_SERVICE:
        raise TokenError(f"token is not signed for service {DB_SERVICE}")
    if cred.expires is None or cred.expires > DB_TOKEN_MAX_EXPIRES:
        raise TokenError(f"token lifetime exceeds {DB_TOKEN_MAX_EXPIRES} seconds")
    if cred.signed_headers != ("host",):
        raise TokenError("token must sign exactly the host header")
    return cred


def parse_db_auth_token(token: str) -> DbAuthToken:
    """Parse an RDS IAM auth token (``host:port/?Action=connect&DBUser=...&X-Amz-...``).

    Raises `TokenError` for anything malformed. Checking that ``host``/``port`` name this
    proxy and ``user`` is the login user is the caller's job.
    """
    host, port, pairs = _split_token(token)
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise TokenError("repeated token parameter")
    params = dict(pairs)
    if params.get("Action") != "connect":
        raise TokenError("token action is not connect")
    if not params.get("DBUser"):
        raise TokenError("token names no DBUser")
    cred = _token_credential(pairs)
    return DbAuthToken(host=host, port=port, user=params["DBUser"], credential=cred, query=pairs)


def check_token_time(tok: DbAuthToken, now: datetime, skew: float = 300.0) -> None:
    """Raise `TokenError` unless ``now`` is within the token's lifetime (give or take skew)."""
    cred, moment, slack = tok.credential, _utc(now), timedelta(seconds=skew)
    lifetime = timedelta(seconds=cred.expires or 0)
    if moment > cred.amz_date + lifetime + slack:
        raise TokenError("expired")
    if moment < cred.amz_date - slack:
        raise TokenError("not yet valid")


def verify_db_auth_token(
    tok: DbAuthToken, secret: str, now: datetime, keys: SigningKeys, skew: float = 300.0
) -> None:
    """Raise `TokenError` unless ``tok`` is current and signed with ``secret``."""
    check_token_time(tok, now, skew)
    cred = tok.credential
    if cred.date != _stamp(cred.amz_date)[:8]:
        raise TokenError("signature does not match")
    query, host = unsigned_query(tok.query), {"host": tok.host_header}
    creq = canonical_request("GET", "/", query, host, ("host",), EMPTY_SHA256)
    if not _signature_matches(cred, creq, secret, keys):
        raise TokenError("signature does not match")
