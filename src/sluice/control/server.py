"""The control plane's HTTP front: one endpoint for every service, as AWS's SDKs call it.

A request is routed by its SigV4 credential scope (`.../rds/aws4_request`
names the service), authenticated against the IAM store (unknown key:
`InvalidClientTokenId`; wrong signature: `SignatureDoesNotMatch`; expired STS
session: `ExpiredToken`), authorized by the caller's identity policies
(`rds:CreateDBProxy` must be allowed), parsed and answered in that service's
wire protocol by the codecs driven by botocore's models, and handed to the
service object's method named after the operation.

`/sluice/...` paths are Sluice's own operations (adopting an existing database
as a DB instance), signed the same way.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from botocore.model import ServiceModel

from sluice.control import ids, sigv4
from sluice.control.context import Call, Principal
from sluice.control.errors import ApiError, expired_token, internal, invalid_token, missing_auth
from sluice.control.principals import Principals
from sluice.control.protocol import MAX_BODY_BYTES, Reply, codec_for, validate
from sluice.control.protocol.restjson import MAX_REST_BODY_BYTES

log = logging.getLogger("sluice.control")

# Each codec refuses bodies beyond its protocol's limit; this is the largest of them (a
# Lambda deployment package, base64 in JSON). It is read only for a caller whose access
# key exists and who calls Lambda (`_read_body`); any other request stops at 1 MB.
MAX_BODY = MAX_REST_BODY_BYTES
_READ_CHUNK = 1 << 16
# Operations any authenticated caller may make, whatever its policies (as on AWS).
_ALWAYS_ALLOWED = frozenset({"sts:GetCallerIdentity", "sts:AssumeRole"})  # decided by the role


class Backend(Protocol):
    """What the API server answers with: the services, their models, who may call."""

    principals: Principals
    services: dict[str, Any]  # by signing name: objects whose methods are operations
    models: dict[str, ServiceModel]

    def own_operation(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """One of Sluice's own operations (POST /sluice/ACTION)."""
        ...


class ApiServer:
    """The aiohttp application answering the AWS APIs."""

    def __init__(self, plane: Backend) -> None:
        self.plane = plane
        self.verifier = sigv4.Verifier()
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_route("*", "/sluice/{action}", self._own)
        self.app.router.add_route("*", "/{tail:.*}", self._aws)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, reuse_address=True).start()
        log.info("control plane listening on http://%s:%d", host, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ---- AWS services ----

    async def _aws(self, request: web.Request) -> web.Response:
        rid = ids.request_id()
        service_name = _guess_service(request.headers)
        try:
            cred = _credential(request)
            service_name = cred.service
            body = await self._read_body(request, cred)
            principal = self._authenticate(request, body, cred)
            reply = await self._dispatch(request, body, cred, principal, rid)
        except ApiError as exc:
            reply = self._error(service_name, exc, rid)
        except Exception:  # our bug: the caller gets a 500, the server stays up
            log.exception("internal error answering a %s request", service_name)
            reply = self._error(service_name, internal(), rid)
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)

    async def _read_body(self, request: web.Request, cred: sigv4.Credential) -> bytes:
        """The request's body, refused before it is read past its limit: 1 MB, or a
        deployment package's size for a Lambda call by an existing access key (so that no
        one without a key can make the server hold 70 MB per connection)."""
        limit = MAX_BODY_BYTES
        if cred.service == "lambda" and self.plane.principals.lookup(cred.access_key):
            limit = MAX_REST_BODY_BYTES
        length = request.content_length
        if length is not None and length > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        while chunk := await request.content.read(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
        return b"".join(parts)

    def _authenticate(
        self, request: web.Request, body: bytes, cred: sigv4.Credential
    ) -> Principal:
        info = self.plane.principals.lookup(cred.access_key)
        if info is None:
            raise invalid_token()
        if info.session_token is not None and not hmac.compare_digest(
            (cred.session_token or "").encode(), info.session_token.encode()
        ):
            raise invalid_token()
        now = datetime.now(UTC)
        if info.expires is not None and info.expires < now.timestamp():
            raise expired_token()
        path = request.raw_path.split("?")[0]
        query = list(request.query.items())
        self.verifier.verify_request(
            cred, request.method, path, query, request.headers, body, info.secret, now
        )
        return info.principal

    async def _dispatch(
        self,
        request: web.Request,
        body: bytes,
        cred: sigv4.Credential,
        principal: Principal,
        rid: str,
    ) -> Reply:
        service = self.plane.services.get(cred.service)
        if service is None:
            raise ApiError("UnknownService", f"Sluice does not serve {cred.service}", 400)
        model = self.plane.models[cred.service]
        codec = codec_for(model)
        query = dict(request.query)
        where = {"method": request.method, "path": request.raw_path.split("?")[0]}
        name = codec.operation_name(model, body, query, request.headers, **where)  # modelled
        handler = getattr(service, name, None)
        if handler is None:
            raise ApiError("InvalidAction", f"{name} is not supported by Sluice", 400)
        op = model.operation_model(name)
        params = codec.parse(op, body, query, request.headers, **where)
        validate(op, params)
        # A service that names its IAM actions and resources itself (Lambda: `Invoke` is
        # `lambda:InvokeFunction` on the function's ARN) says so; the others are `prefix:Name`
        # on "*".
        scoped = getattr(service, "authorization", None)
        action, resource = (
            scoped(name, params) if scoped else (f"{model.endpoint_prefix}:{name}", "*")
        )
        if action not in _ALWAYS_ALLOWED and not self.plane.principals.allowed(
            principal, action, resource
        ):
            raise _denied(model.protocol, principal, action, resource)
        call = Call(principal, cred.region, rid, time.time())
        output = handler(call, params)
        if inspect.isawaitable(output):  # a handler that waits (Lambda's Invoke) is a coroutine
            output = await output
        log.info("%s %s by %s", cred.service, name, principal.arn)
        return codec.serialize(op, output or {}, rid)

    def _error(self, service_name: str, exc: ApiError, rid: str) -> Reply:
        model = self.plane.models.get(service_name) or self.plane.models["sts"]
        return codec_for(model).serialize_error(model, exc, rid)

    # ---- Sluice's own operations ----

    async def _own(self, request: web.Request) -> web.Response:
        try:
            cred = _credential(request)
            body = await self._read_body(request, cred)
            principal = self._authenticate(request, body, cred)
            action = request.match_info["action"]
            if not self.plane.principals.allowed(principal, f"sluice:{action}", "*"):
                raise ApiError("AccessDenied", f"not authorized to perform: sluice:{action}", 403)
            params = json.loads(body or b"{}")
            if not isinstance(params, dict):
                raise ApiError("InvalidParameterValue", "expected a JSON object", 400)
            result = self.plane.own_operation(action, params)
            return web.json_response(result)
        except ApiError as exc:
            return web.json_response({"Code": exc.code, "Message": exc.message}, status=exc.status)
        except ValueError:
            return web.json_response({"Code": "InvalidParameterValue"}, status=400)


def _denied(protocol: str, principal: Principal, action: str, resource: str) -> ApiError:
    message = f"User: {principal.arn} is not authorized to perform: {action}"
    if resource != "*":
        message += f" on resource: {resource}"
    code = "AccessDeniedException" if protocol == "rest-json" else "AccessDenied"
    return ApiError(code, message, 403)


def _credential(request: web.Request) -> sigv4.Credential:
    cred = sigv4.parse_query_auth(list(request.query.items()))
    if cred is not None:
        if "Authorization" in request.headers:
            raise ApiError(
                "InvalidRequest",
                "Only one auth mechanism allowed: the X-Amz-Algorithm query parameter "
                "or the Authorization header",
                400,
            )
        return cred
    if "Authorization" not in request.headers:
        raise missing_auth()
    return sigv4.parse_header_auth(request.headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        "RequestEntityTooLargeException", f"Request must be smaller than {limit} bytes", 413
    )


def _guess_service(headers: Mapping[str, Any]) -> str:
    """The service to word an error in when the request did not say (no valid signature)."""
    target = str(headers.get("X-Amz-Target", ""))
    if target.startswith("secretsmanager"):
        return "secretsmanager"
    return "lambda" if "/lambda/" in str(headers.get("Authorization", "")) else "sts"
