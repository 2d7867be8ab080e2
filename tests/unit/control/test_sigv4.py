"""SigV4 verification against botocore as the signing oracle (no network is used)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from sluice.control.errors import ApiError
from sluice.control.sigv4 import (
    Credential,
    SigningKeys,
    TokenError,
    Verifier,
    parse_db_auth_token,
    parse_header_auth,
    parse_query_auth,
    verify_db_auth_token,
)
from sluice.control.sigv4_canonical import canonical_request

AK = "AKIAIOSFODNN7EXAMPLE"
SK = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "FwoGZXIvYXdzEXAMPLE//token+with/odd=chars"
FORM = "application/x-www-form-urlencoded; charset=utf-8"


@dataclass
class Wire:
    """A request as the server sees it: raw path, decoded query, headers with Host, body."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes


def to_wire(method: str, url: str, headers: Mapping[str, Any], body: bytes | str | None) -> Wire:
    parts = urlsplit(url)
    wire_headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in headers.items()}
    wire_headers.setdefault("Host", parts.netloc)  # what urllib3 adds (port when non-default)
    query = parse_qsl(parts.query, keep_blank_values=True)
    raw = body.encode() if isinstance(body, str) else body or b""
    return Wire(method, parts.path, query, wire_headers, raw)


def header_signed(
    url: str = "http://localhost:4566/",
    body: bytes = b"Action=DescribeDBProxies&Version=2014-10-31",
    token: str | None = None,
    method: str = "POST",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    service: str = "rds",
) -> Wire:
    req = AWSRequest(
        method=method,
        url=url,
        data=body,
        params=params or {},
        headers=headers if headers is not None else {"Content-Type": FORM},
    )
    SigV4Auth(Credentials(AK, SK, token), service, "us-east-1").add_auth(req)
    prepared = req.prepare()
    return to_wire(prepared.method, prepared.url, prepared.headers, prepared.body)


def verify(
    wire: Wire, secret: str = SK, now: datetime | None = None, verifier: Verifier | None = None
) -> Credential:
    cred = parse_query_auth(wire.query) or parse_header_auth(wire.headers)
    (verifier or Verifier()).verify_request(
        cred,
        wire.method,
        wire.path,
        wire.query,
        wire.headers,
        wire.body,
        secret,
        now or cred.amz_date + timedelta(seconds=1),
    )
    return cred


def expect_code(code: str, wire: Wire, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        verify(wire, **kwargs)
    assert info.value.code == code
    return info.value


# --- header form -------------------------------------------------------------------------


def test_header_signed_request_is_accepted_and_parsed() -> None:
    wire = header_signed()
    cred = verify(wire)
    assert (cred.access_key, cred.region, cred.service) == (AK, "us-east-1", "rds")
    assert cred.signed_headers == ("content-type", "host", "x-amz-date")
    assert cred.expires is None and cred.session_token is None
    assert cred.date == cred.amz_date.strftime("%Y%m%d")


def test_session_token_is_carried_and_signed() -> None:
    wire = header_signed(token=TOKEN)
    assert verify(wire).session_token == TOKEN
    wire.headers["X-Amz-Security-Token"] = TOKEN + "x"
    expect_code("SignatureDoesNotMatch", wire)


def test_get_with_encoded_path_and_query() -> None:
    wire = header_signed(
        url="http://localhost:4566/a%20b/./c//d~e/",
        method="GET",
        body=b"",
        params={"Name": "a b+c/ü", "Empty": "", "z": "~*'"},
        headers={},
    )
    assert dict(wire.query)["Name"] == "a b+c/ü"
    verify(wire)


def test_json_protocol_request_with_target_header() -> None:
    wire = header_signed(
        body=b'{"SecretId":"s"}',
        service="secretsmanager",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "secretsmanager.GetSecretValue",
        },
    )
    verify(wire)
    wire.headers["X-Amz-Target"] = "secretsmanager.DeleteSecret"
    expect_code("SignatureDoesNotMatch", wire)


@pytest.mark.parametrize("change", ["body", "header", "secret", "method", "path", "host"])
def test_any_tampering_is_refused(change: str) -> None:
    wire, secret = header_signed(), SK
    if change == "body":
        wire.body = wire.body[:-1] + b"2"
    elif change == "header":
        wire.headers["Content-Type"] = "text/plain"
    elif change == "secret":
        secret = SK[:-1] + "X"
    elif change == "method":
        wire.method = "PUT"
    elif change == "path":
        wire.path = "/other"
    else:
        wire.headers["Host"] = "localhost:4567"
    err = expect_code("SignatureDoesNotMatch", wire, secret=secret)
    assert err.status == 403 and SK not in err.message


def test_unsigned_headers_may_change() -> None:
    wire = header_signed()
    wire.headers["User-Agent"] = "something else"  # botocore never signs User-Agent
    verify(wire)


def test_real_client_request_is_accepted() -> None:
    captured: list[Any] = []

    class Stop(Exception):
        pass

    def grab(request: Any, **_: Any) -> None:
        captured.append(request)
        raise Stop

    client = boto3.client(
        "rds",
        region_name="eu-west-1",
        endpoint_url="http://127.0.0.1:9000",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=TOKEN,
    )
    client.meta.events.register("before-send", grab)
    with pytest.raises(Stop):
        client.describe_db_proxies(DBProxyName="prx")
    sent = captured[0]
    cred = verify(to_wire(sent.method, sent.url, sent.headers, sent.body))
    assert (cred.region, cred.session_token) == ("eu-west-1", TOKEN)


def test_content_sha256_header_must_match_body() -> None:
    body = b"Action=GetUser"
    good = header_signed(
        body=body, headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    )
    verify(good)
    unsigned = header_signed(body=body, headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    err = expect_code("SignatureDoesNotMatch", unsigned)
    assert "x-amz-content-sha256" in err.message
    good.body = b"Action=DeleteUser"  # the header still names the old body's hash
    assert "x-amz-content-sha256" in expect_code("SignatureDoesNotMatch", good).message


def test_clock_skew_window() -> None:
    wire = header_signed()
    signed = parse_header_auth(wire.headers).amz_date
    verify(wire, now=signed + timedelta(seconds=300))
    verify(wire, now=signed - timedelta(seconds=300))
    late = expect_code("SignatureDoesNotMatch", wire, now=signed + timedelta(seconds=301))
    assert late.message.startswith("Signature expired: ") and "- 5 min.)" in late.message
    early = expect_code("SignatureDoesNotMatch", wire, now=signed - timedelta(seconds=301))
    assert early.message.startswith("Signature not yet current: ")
    verify(wire, now=signed + timedelta(seconds=500), verifier=Verifier(max_skew=600))


def test_scope_date_must_match_request_date() -> None:
    wire = header_signed()
    auth = wire.headers["Authorization"]
    day = parse_header_auth(wire.headers).date
    other = (datetime.strptime(day, "%Y%m%d") + timedelta(days=1)).strftime("%Y%m%d")
    wire.headers["Authorization"] = auth.replace(f"/{day}/", f"/{other}/")
    err = expect_code("SignatureDoesNotMatch", wire)
    assert "Credential scope" in err.message


def test_missing_authorization() -> None:
    with pytest.raises(ApiError) as info:
        parse_header_auth({"Host": "x", "X-Amz-Date": "20261127T000000Z"})
    assert info.value.code == "MissingAuthenticationToken"


SIG = "0" * 64
SCOPE = f"{AK}/20261127/us-east-1/rds/aws4_request"


@pytest.mark.parametrize(
    "authorization, date",
    [
        (f"AWS4-HMAC-SHA1 Credential={SCOPE}, SignedHeaders=host, Signature={SIG}", "ok"),
        (f"AWS4-HMAC-SHA256 SignedHeaders=host, Signature={SIG}", "ok"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, Signature={SIG}", "ok"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host", "ok"),
        (
            f"AWS4-HMAC-SHA256 Credential={AK}/20261127/us-east-1/rds, SignedHeaders=host, "
            f"Signature={SIG}",
            "ok",
        ),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=x-amz-date, Signature={SIG}", "ok"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature=zz", "ok"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature={SIG}", "bad"),
        (f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders=host, Signature={SIG}", None),
    ],
)
def test_malformed_authorization_is_incomplete(authorization: str, date: str | None) -> None:
    headers = {"Authorization": authorization, "Host": "h"}
    if date is not None:
        headers["X-Amz-Date"] = "20261127T000000Z" if date == "ok" else "2026-11-27"
    with pytest.raises(ApiError) as info:
        parse_header_auth(headers)
    assert (info.value.code, info.value.status) == ("IncompleteSignature", 400)


def test_http_date_header_instead_of_x_amz_date() -> None:
    wire = header_signed(headers={"Date": "Fri, 27 Nov 2026 00:00:00 GMT"})
    assert "X-Amz-Date" not in wire.headers
    cred = verify(wire)
    assert cred.amz_date.tzinfo is not None


def test_canonical_request_matches_botocore() -> None:
    req = AWSRequest(
        method="POST",
        url="http://h:81/x/../a%2Fb//c",
        data=b"abc",
        params={"b": "2", "a": "x y", "a~": "1"},
        headers={"Host": "h:81", "X-Amz-Date": "20261127T000000Z", "X-Odd": "  a   b  "},
    )
    expected = SigV4Auth(Credentials(AK, SK), "rds", "us-east-1").canonical_request(req)
    got = canonical_request(
        "post",
        "/x/../a%2Fb//c",
        [("b", "2"), ("a", "x y"), ("a~", "1")],
        {"host": "h:81", "x-amz-date": "20261127T000000Z", "x-odd": "  a   b  "},
        ("x-odd", "host", "x-amz-date"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    )
    assert got == expected


# --- presigned query form ----------------------------------------------------------------


def presigned(expires: int = 60, token: str | None = None) -> Wire:
    req = AWSRequest(
        method="GET",
        url="https://sts.amazonaws.com/",
        params={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
    )
    SigV4QueryAuth(Credentials(AK, SK, token), "sts", "us-east-1", expires=expires).add_auth(req)
    prepared = req.prepare()
    return to_wire(prepared.method, prepared.url, prepared.headers, prepared.body)


def test_presigned_url_is_accepted() -> None:
    wire = presigned(token=TOKEN)
    assert "Authorization" not in wire.headers
    cred = verify(wire)
    assert (cred.service, cred.expires, cred.session_token) == ("sts", 60, TOKEN)
    assert cred.signed_headers == ("host",)


def test_client_generate_presigned_url_is_accepted() -> None:
    client = boto3.client(
        "sts",
        region_name="us-west-2",
        endpoint_url="http://localhost:4566",
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
    )
    url = client.generate_presigned_url("get_caller_identity", ExpiresIn=120, HttpMethod="GET")
    cred = verify(to_wire("GET", url, {}, b""))
    assert (cred.region, cred.expires) == ("us-west-2", 120)
    # Without HttpMethod botocore signs a query-protocol operation as POST, and so must we.
    url = client.generate_presigned_url("get_caller_identity", ExpiresIn=120)
    verify(to_wire("POST", url, {}, b""))
    expect_code("SignatureDoesNotMatch", to_wire("GET", url, {}, b""))


def test_presigned_expiry_and_tampering() -> None:
    wire = presigned(expires=60)
    signed = parse_query_auth(wire.query)
    assert signed is not None
    verify(wire, now=signed.amz_date + timedelta(seconds=360))
    err = expect_code("AccessDenied", wire, now=signed.amz_date + timedelta(seconds=361))
    assert err.message == "Request has expired"
    expect_code("AccessDenied", wire, now=signed.amz_date - timedelta(seconds=301))
    wire.query = [(k, "GetSessionToken" if k == "Action" else v) for k, v in wire.query]
    expect_code("SignatureDoesNotMatch", wire)


def test_parse_query_auth_cases() -> None:
    assert parse_query_auth([("Action", "X")]) is None
    good = presigned().query
    for bad in (
        [*good, ("X-Amz-Signature", SIG)],
        [(k, "99999999") if k == "X-Amz-Expires" else (k, v) for k, v in good],
        [(k, v) for k, v in good if k != "X-Amz-Date"],
        [(k, "AWS4-HMAC-SHA512") if k == "X-Amz-Algorithm" else (k, v) for k, v in good],
    ):
        with pytest.raises(ApiError) as info:
            parse_query_auth(bad)
        assert info.value.code == "IncompleteSignature"


# --- signing key cache -------------------------------------------------------------------


class CountingKeys(SigningKeys):
    def __init__(self, max_entries: int = 1024) -> None:
        super().__init__(max_entries)
        self.derived = 0

    def _derive(self, secret: str, date: str, region: str, service: str) -> bytes:
        self.derived += 1
        return super()._derive(secret, date, region, service)


def test_signing_keys_are_cached_and_bounded() -> None:
    keys = CountingKeys(max_entries=2)
    first = keys.key(SK, "20261127", "us-east-1", "rds")
    assert keys.key(SK, "20261127", "us-east-1", "rds") is first
    assert keys.derived == 1
    keys.key(SK, "20261127", "us-east-1", "sts")
    keys.key(SK, "20261127", "us-east-1", "rds")  # refreshes rds: sts is now the oldest
    keys.key(SK, "20261128", "us-east-1", "rds")
    assert (len(keys), keys.derived) == (2, 3)
    keys.key(SK, "20261127", "us-east-1", "rds")
    keys.key(SK, "20261127", "us-east-1", "sts")
    assert keys.derived == 4


def test_verifier_uses_its_key_cache() -> None:
    keys = CountingKeys()
    verifier = Verifier(keys)
    for _ in range(3):
        verify(header_signed(), verifier=verifier)
    assert keys.derived == 1


# --- RDS IAM auth tokens -----------------------------------------------------------------


def rds_token(
    host: str = "prx.host",
    port: int = 3306,
    user: str = "app",
    token: str | None = None,
    region: str = "us-east-1",
) -> str:
    client = boto3.client(
        "rds",
        region_name=region,
        aws_access_key_id=AK,
        aws_secret_access_key=SK,
        aws_session_token=token,
    )
    return str(client.generate_db_auth_token(host, port, user))


def check_token(text: str, secret: str = SK, now: datetime | None = None) -> Credential:
    tok = parse_db_auth_token(text)
    verify_db_auth_token(tok, secret, now or tok.credential.amz_date, SigningKeys())
    return tok.credential


@pytest.mark.parametrize(
    "host, port, user, header",
    [
        ("prx.host", 3306, "app", "prx.host:3306"),
        ("Prx.Example.COM", 5432, "app user+x/ü", "prx.example.com:5432"),
        ("prx.host", 443, "app", "prx.host"),
        ("[::1]", 5432, "app", "[::1]:5432"),
        ("10.0.0.5", 3306, "a=b&c", "10.0.0.5:3306"),
    ],
)
def test_db_token_accepted(host: str, port: int, user: str, header: str) -> None:
    text = rds_token(host, port, user)
    tok = parse_db_auth_token(text)
    assert (tok.port, tok.user, tok.host_header) == (port, user, header)
    assert tok.credential.service == "rds-db" and tok.credential.expires == 900
    check_token(text)


def test_db_token_with_session_token_and_region() -> None:
    text = rds_token(token=TOKEN, region="ap-south-1")
    cred = check_token(text)
    assert (cred.session_token, cred.region, cred.access_key) == (TOKEN, "ap-south-1", AK)


def test_db_token_lifetime() -> None:
    text = rds_token()
    signed = parse_db_auth_token(text).credential.amz_date
    check_token(text, now=signed + timedelta(seconds=900 + 300))
    for now, reason in [
        (signed + timedelta(seconds=1201), "expired"),
        (signed - timedelta(seconds=301), "not yet valid"),
    ]:
        with pytest.raises(TokenError, match=reason):
            check_token(text, now=now)


@pytest.mark.parametrize("how", ["secret", "user", "signature"])
def test_db_token_tampering_refused(how: str) -> None:
    text, secret = rds_token(user="app"), SK
    if how == "secret":
        secret = "not-the-secret"
    elif how == "user":
        text = text.replace("DBUser=app&", "DBUser=adm&")
    else:
        text = text[:-1] + ("0" if text[-1] != "0" else "1")
    with pytest.raises(TokenError, match="signature does not match") as info:
        check_token(text, secret=secret)
    assert text[-64:] not in str(info.value)


def test_db_token_host_is_signed() -> None:
    text = rds_token(host="prx.host", port=3306)
    moved = text.replace("prx.host:3306", "prx.host:3307", 1)
    with pytest.raises(TokenError, match="signature does not match"):
        check_token(moved)


def _presigned_token(service: str = "rds-db", expires: int = 900, action: str = "connect") -> str:
    req = AWSRequest(
        method="GET", url="https://prx.host:3306/", data={"Action": action, "DBUser": "app"}
    )
    SigV4QueryAuth(Credentials(AK, SK), service, "us-east-1", expires=expires).add_auth(req)
    return str(req.prepare().url)[len("https://") :]


def test_our_own_presigned_helper_matches_boto3_format() -> None:
    check_token(_presigned_token())


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hunter2-secret-password",
        "https://" + "prx.host:3306/?Action=connect&DBUser=app",
        "prx.host:3306/?Action=connect&DBUser=app",
        "prx.host/?Action=connect&DBUser=app&X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "prx.host:notaport/?Action=connect",
        "prx.host:3306/path?Action=connect",
        "prx.host:3306/?Action=connect&&DBUser=app",
        "x" * 20000,
    ],
)
def test_garbage_refused_without_echo(garbage: str) -> None:
    with pytest.raises(TokenError) as info:
        check_token(garbage)
    message = str(info.value)
    assert "hunter2" not in message and "DBUser=" not in message and len(message) < 80


@pytest.mark.parametrize(
    "text, reason",
    [
        (_presigned_token(service="rds"), "service rds-db"),
        (_presigned_token(expires=901), "lifetime"),
        (_presigned_token(action="ModifyDBInstance"), "action"),
        (_presigned_token().replace("DBUser=app&", ""), "DBUser"),
        (_presigned_token().replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"), "malformed"),
        (_presigned_token() + "&DBUser=root", "repeated"),
        (_presigned_token().replace("X-Amz-Algorithm=AWS4-HMAC-SHA256&", ""), "not signed"),
    ],
)
def test_malformed_tokens_refused(text: str, reason: str) -> None:
    with pytest.raises(TokenError, match=reason):
        parse_db_auth_token(text)
