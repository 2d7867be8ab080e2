"""The SigV4 canonical request, rebuilt from what arrived on the wire.

Why it is built this way: a signature can only be checked by rebuilding, byte for byte,
the canonical request botocore signed - canonical URI (dot segments removed, encoded
once more), sorted RFC 3986 query, signed headers lower-cased with whitespace folded,
payload hash. API requests (`sigv4.Verifier`) and RDS IAM auth tokens
(`sigv4.verify_db_auth_token`) share this exact form, so it is one set of pure string
functions apart from the key handling, time checks and error choices in `sigv4`. No
I/O, no clock, no secrets: nothing here ever sees a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote


def lower_headers(headers: Mapping[str, str]) -> dict[str, list[str]]:
    """Group header values by lower-cased name (a multidict's repeats are kept)."""
    grouped: dict[str, list[str]] = {}
    for name, value in headers.items():
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def canonical_path(raw_path: str) -> str:
    """botocore's canonical URI: dot segments and empty segments removed, then encoded.

    ``raw_path`` is the path exactly as sent (still percent-encoded); it is encoded once
    more, as botocore does for every service but S3.
    """
    if not raw_path:
        return "/"
    segments: list[str] = []
    for segment in raw_path.split("/"):
        if segment == "..":
            if segments:
                segments.pop()
        elif segment and segment != ".":
            segments.append(segment)
    lead = "/" if raw_path.startswith("/") else ""
    trail = "/" if raw_path.endswith("/") and segments else ""
    return quote(lead + "/".join(segments) + trail, safe="/~")


def canonical_query(query: list[tuple[str, str]]) -> str:
    """Encode each decoded pair (RFC 3986 unreserved kept), sort by key then value."""
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    method: str,
    path: str,
    query: list[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...] | list[str],
    payload_hash: str,
) -> str:
    """The SigV4 canonical request for what arrived (query excludes X-Amz-Signature)."""
    grouped = lower_headers(headers)
    names = sorted({name.lower() for name in signed_headers})
    lines = [
        f"{name}:{','.join(' '.join(v.split()) for v in grouped.get(name, []))}" for name in names
    ]
    parts = [method.upper(), canonical_path(path), canonical_query(query)]
    return "\n".join([*parts, "\n".join(lines) + "\n", ";".join(names), payload_hash])


def unsigned_query(query: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """A presigned URL's query as it was signed: without X-Amz-Signature."""
    return [(k, v) for k, v in query if k != "X-Amz-Signature"]
