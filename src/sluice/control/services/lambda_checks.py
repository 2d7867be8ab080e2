"""What Lambda checks before it keeps a function: its role, runtime, variables, network.

Each check raises the `ApiError` Lambda answers (mostly `InvalidParameterValueException`
with Lambda's own wording). The execution role is checked twice, as on AWS: the caller must
be allowed `iam:PassRole` on it, and its trust policy must let `lambda.amazonaws.com` assume
it. `RoleSessions` gives the runner that role's STS credentials for the environments.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from sluice.control.context import Params, Plane, Principal
from sluice.control.errors import ApiError
from sluice.control.policy import Principal as TrustPrincipal
from sluice.control.policy import trust_allows
from sluice.control.principals import Principals
from sluice.control.services.lambda_records import Vpc
from sluice.control.services.sts import new_session
from sluice.control.store import Store
from sluice.functions.spec import CredentialsUnavailable, TemporaryCredentials

SESSION_SECONDS = 3600
MAX_VARIABLES_BYTES = 4096
_ROLE_ARN = re.compile(r"arn:aws:iam::(\d{12}):role/(?:[\x21-\x7e]*/)?([\w+=,.@-]+)")
_RESERVED = frozenset({
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
})  # fmt: skip
_CANNOT_ASSUME = "The role defined for the function cannot be assumed by Lambda."


def invalid(message: str) -> ApiError:
    return ApiError("InvalidParameterValueException", message, 400)


def conflict(message: str) -> ApiError:
    return ApiError("ResourceConflictException", message, 409)


def not_found(message: str) -> ApiError:
    return ApiError("ResourceNotFoundException", message, 404)


class RoleSessions:
    """STS sessions of execution roles, for the runner (a `CredentialSource`): each lasts
    `seconds`, or the role's MaxSessionDuration if that is shorter."""

    def __init__(self, plane: Plane, seconds: int = SESSION_SECONDS) -> None:
        self._plane = plane
        self._seconds = seconds

    def credentials(self, role_arn: str, session_name: str) -> TemporaryCredentials:
        role = find_role(self._plane, role_arn)
        if role is None or not lambda_may_assume(role):
            raise CredentialsUnavailable(_CANNOT_ASSUME)
        duration = min(self._seconds, int(role.get("MaxSessionDuration", SESSION_SECONDS)))
        name = session_name if len(session_name) >= 2 else f"{session_name}-fn"
        out = new_session(self._plane, role, name, time.time(), duration)
        creds = out["Credentials"]
        return TemporaryCredentials(
            creds["AccessKeyId"],
            creds["SecretAccessKey"],
            creds["SessionToken"],
            creds["Expiration"].timestamp(),
        )


def find_role(plane: Plane, role_arn: str) -> dict[str, Any] | None:
    match = _ROLE_ARN.fullmatch(role_arn)
    role = plane.store.get("iam_role", match.group(2)) if match else None
    return role if role is not None and role["Arn"] == role_arn else None


def lambda_may_assume(role: dict[str, Any]) -> bool:
    lambda_service = TrustPrincipal(services=["lambda.amazonaws.com"])
    return trust_allows(role["AssumeRolePolicyDocument"], lambda_service)


def check_role(plane: Plane, principals: Principals, principal: Principal, role_arn: str) -> None:
    """The execution role may be passed by the caller, and assumed by Lambda."""
    if not principals.allowed(principal, "iam:PassRole", role_arn):
        raise ApiError("AccessDeniedException", f"User: {principal.arn} is not "
                       f"authorized to perform: iam:PassRole on resource: {role_arn} "
                       "because no identity-based policy allows the iam:PassRole action",
                       403)  # fmt: skip
    role = find_role(plane, role_arn)
    if role is None or not lambda_may_assume(role):
        raise invalid(_CANNOT_ASSUME)


def check_runtime(runtime: str | None, package_type: str | None) -> str:
    if package_type == "Image":
        raise invalid("Sluice runs Zip packages only; container images are not supported.")
    if runtime is None:
        raise invalid("Runtime is required for a function with PackageType Zip.")
    if not re.fullmatch(r"python3\.\d+", runtime):
        raise invalid(
            f"The runtime parameter of {runtime} is not supported by Sluice: "
            "functions run on the machine's Python (python3.x runtimes)."
        )
    return runtime


def check_variables(environment: Params | None) -> dict[str, str]:
    variables = dict((environment or {}).get("Variables", {}))
    reserved = sorted(k for k in variables if k in _RESERVED)
    if reserved:
        raise invalid("Lambda was unable to configure your environment variables because "
                      "the environment variables you have provided contains reserved keys "
                      "that are currently not supported for modification. Reserved keys "
                      f"used in this request: {', '.join(reserved)}")  # fmt: skip
    if len(json.dumps(variables, separators=(",", ":"))) > MAX_VARIABLES_BYTES:
        raise invalid(
            "Lambda was unable to configure your environment variables because the "
            "environment variables you have provided exceeded the 4KB limit."
        )
    return variables


def check_limits(params: Params) -> None:
    """Timeout and MemorySize within what Lambda allows a function (the model allows more)."""
    for member, field, high in (("Timeout", "timeout", 900), ("MemorySize", "memorySize", 10240)):
        value = params.get(member)
        if value is not None and value > high:
            raise ApiError("ValidationException", f"1 validation error detected: Value '{value}' "
                           f"at '{field}' failed to satisfy constraint: Member must have value "
                           f"less than or equal to {high}")  # fmt: skip


def check_vpc(store: Store, config: Params | None) -> Vpc:
    if not config:
        return Vpc()
    subnets = tuple(config.get("SubnetIds", []))
    groups = tuple(config.get("SecurityGroupIds", []))
    vpc_id = ""
    for subnet in subnets:
        doc = store.get("subnet", subnet)
        if doc is None:
            raise invalid(f"Error occurred while DescribeSubnets. EC2 Error Code: "
                          f"InvalidSubnetID.NotFound. EC2 Error Message: The subnet ID "
                          f"'{subnet}' does not exist")  # fmt: skip
        vpc_id = str(doc.get("VpcId", ""))
    for group in groups:
        if store.get("security_group", group) is None:
            raise invalid(f"Error occurred while DescribeSecurityGroups. EC2 Error Code: "
                          f"InvalidGroup.NotFound. EC2 Error Message: The security group "
                          f"'{group}' does not exist")  # fmt: skip
    return Vpc(subnets, groups, vpc_id)


def check_json(event: bytes) -> None:
    try:
        json.loads(event.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            "InvalidRequestContentException",
            f"Could not parse request body into json: Could not parse payload into json: {exc}",
            400,
        ) from None
